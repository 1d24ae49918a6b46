//! The axum example against the same service on plain axum: its orchestration (the code
//! between the `orchestration` markers: components, signals, deadlines, drain, main) is
//! shorter on lifecycle, and the README says by how much.

fn orchestration_lines(path: &str) -> usize {
    let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, rest) = source
        .split_once("// --- orchestration: begin")
        .unwrap_or_else(|| panic!("{path} has no begin marker"));
    let (section, _) = rest
        .split_once("// --- orchestration: end")
        .unwrap_or_else(|| panic!("{path} has no end marker"));
    section
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .count()
}

#[test]
fn the_lifecycle_version_is_shorter_and_the_readme_says_so() {
    let root = env!("CARGO_MANIFEST_DIR");
    let lifecycle = orchestration_lines(&format!("{root}/examples/axum/main.rs"));
    let plain = orchestration_lines(&format!("{root}/examples/axum/plain.rs"));
    assert!(
        lifecycle < plain,
        "lifecycle's orchestration ({lifecycle} lines) is not shorter than plain axum's ({plain})"
    );
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let claim = format!("{lifecycle} lines of orchestration on lifecycle, {plain} on plain axum");
    assert!(readme.contains(&claim), "the README should say: {claim}");
}
