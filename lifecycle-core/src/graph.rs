//! The validated dependency graph and its plan.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::error::BuildError;

/// A validated dependency graph: no unknown names, no duplicates, no cycles.
///
/// Nodes are indices in registration order. `order` is a topological order (every node
/// after all its dependencies), ties broken by registration order so plans are
/// deterministic.
#[derive(Debug, Clone)]
pub struct Plan {
    names: Vec<String>,
    dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    order: Vec<usize>,
    levels: Vec<usize>,
}

impl Plan {
    /// Validates `nodes` (each a name and the names it depends on) into a plan.
    pub(crate) fn new(nodes: &[(String, Vec<String>)]) -> Result<Plan, BuildError> {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
        for (i, (name, _)) in nodes.iter().enumerate() {
            if name.is_empty() {
                return Err(BuildError::EmptyName);
            }
            if index.insert(name, i).is_some() {
                return Err(BuildError::DuplicateName(name.clone()));
            }
        }

        let mut dependencies = vec![Vec::new(); nodes.len()];
        let mut dependents = vec![Vec::new(); nodes.len()];
        for (i, (name, deps)) in nodes.iter().enumerate() {
            for dep in deps {
                if dep == name {
                    return Err(BuildError::SelfLoop(name.clone()));
                }
                let Some(&d) = index.get(dep.as_str()) else {
                    return Err(BuildError::UnknownDependency {
                        component: name.clone(),
                        missing: dep.clone(),
                        suggestions: closest_names(
                            dep,
                            nodes.iter().map(|(n, _)| n.as_str()).filter(|n| n != name),
                        ),
                    });
                };
                if !dependencies[i].contains(&d) {
                    dependencies[i].push(d);
                    dependents[d].push(i);
                }
            }
        }

        // Kahn's algorithm; whatever is left over lies on or behind a cycle.
        let mut waiting: Vec<usize> = dependencies.iter().map(Vec::len).collect();
        let mut queue: VecDeque<usize> = (0..nodes.len()).filter(|&i| waiting[i] == 0).collect();
        let mut order = Vec::with_capacity(nodes.len());
        let mut levels = vec![0; nodes.len()];
        while let Some(i) = queue.pop_front() {
            order.push(i);
            for &d in &dependents[i] {
                levels[d] = levels[d].max(levels[i] + 1);
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    queue.push_back(d);
                }
            }
        }
        if order.len() < nodes.len() {
            let cycle = find_cycle(&dependencies, &waiting);
            return Err(BuildError::Cycle {
                cycle: cycle.into_iter().map(|i| nodes[i].0.clone()).collect(),
            });
        }

        Ok(Plan {
            names: nodes.iter().map(|(n, _)| n.clone()).collect(),
            dependencies,
            dependents,
            order,
            levels,
        })
    }

    /// The number of components.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the plan has no components.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Component names in a start order: every component after all its dependencies.
    /// Components without a path between them may start concurrently.
    pub fn start_order(&self) -> Vec<&str> {
        self.order.iter().map(|&i| self.names[i].as_str()).collect()
    }

    /// Component names in a stop order: the start order reversed.
    pub fn stop_order(&self) -> Vec<&str> {
        self.order
            .iter()
            .rev()
            .map(|&i| self.names[i].as_str())
            .collect()
    }

    /// The graph's levels: level 0 has no dependencies, level `n` depends on something
    /// at level `n - 1`. Components of one level start concurrently.
    pub fn levels(&self) -> Vec<Vec<&str>> {
        let depth = self.levels.iter().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        for &i in &self.order {
            levels[self.levels[i]].push(self.names[i].as_str());
        }
        levels
    }

    /// The names `name` depends on, or `None` if no component has that name.
    pub fn dependencies_of(&self, name: &str) -> Option<Vec<&str>> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(
            self.dependencies[i]
                .iter()
                .map(|&d| self.names[d].as_str())
                .collect(),
        )
    }

    /// The index of the component named `name`, which the plan has validated.
    pub(crate) fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("a name the plan has validated")
    }

    pub(crate) fn name(&self, node: usize) -> &str {
        &self.names[node]
    }

    pub(crate) fn order(&self) -> &[usize] {
        &self.order
    }

    pub(crate) fn dependencies(&self, node: usize) -> &[usize] {
        &self.dependencies[node]
    }

    pub(crate) fn dependents(&self, node: usize) -> &[usize] {
        &self.dependents[node]
    }
}

impl fmt::Display for Plan {
    /// One line per level: `level 0: metrics`, `level 1: db, cache`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (level, names) in self.levels().iter().enumerate() {
            writeln!(f, "level {level}: {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Walks dependency edges among the nodes Kahn's algorithm could not order (each has at
/// least one unordered dependency) until a node repeats; the walk from its first visit
/// is a cycle. Returns it with the first node repeated at the end.
fn find_cycle(dependencies: &[Vec<usize>], waiting: &[usize]) -> Vec<usize> {
    let blocked = |i: usize| waiting[i] > 0;
    let start = (0..waiting.len())
        .find(|&i| blocked(i))
        .expect("a node is on or behind a cycle");
    let mut path = vec![start];
    let mut seen_at = HashMap::from([(start, 0)]);
    let mut current = start;
    loop {
        current = *dependencies[current]
            .iter()
            .find(|&&d| blocked(d))
            .expect("a blocked node has a blocked dependency");
        if let Some(&at) = seen_at.get(&current) {
            let mut cycle = path.split_off(at);
            cycle.push(current);
            return cycle;
        }
        seen_at.insert(current, path.len());
        path.push(current);
    }
}

/// Names close to `wanted`, closest first: equal ignoring case, or within an edit
/// distance of about a third of the name, or containing one another.
fn closest_names<'a>(wanted: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let wanted_lower = wanted.to_lowercase();
    let limit = (wanted.chars().count() / 3).max(1);
    let mut close: Vec<(usize, &str)> = names
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let distance = edit_distance(&wanted_lower, &lower);
            let contains = lower.contains(&wanted_lower) || wanted_lower.contains(&lower);
            (distance <= limit || contains).then_some((distance, name))
        })
        .collect();
    close.sort();
    close
        .into_iter()
        .take(3)
        .map(|(_, n)| n.to_owned())
        .collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nodes: &[(&str, &[&str])]) -> Result<Plan, BuildError> {
        let nodes: Vec<(String, Vec<String>)> = nodes
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect();
        Plan::new(&nodes)
    }

    #[test]
    fn orders_dependencies_first_and_groups_levels() {
        let plan = plan(&[
            ("http", &["db", "cache"]),
            ("db", &["metrics"]),
            ("cache", &["metrics"]),
            ("metrics", &[]),
        ])
        .unwrap();
        assert_eq!(plan.start_order(), ["metrics", "db", "cache", "http"]);
        assert_eq!(plan.stop_order(), ["http", "cache", "db", "metrics"]);
        assert_eq!(
            plan.levels(),
            vec![vec!["metrics"], vec!["db", "cache"], vec!["http"]]
        );
        assert_eq!(
            plan.to_string(),
            "level 0: metrics\nlevel 1: db, cache\nlevel 2: http\n"
        );
        assert_eq!(plan.dependencies_of("http"), Some(vec!["db", "cache"]));
        assert_eq!(plan.dependencies_of("nope"), None);
    }

    #[test]
    fn cycle_is_printed_whole_in_dependency_direction() {
        let err = plan(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn cycle_behind_an_acyclic_prefix_is_found() {
        let err = plan(&[("x", &["db"]), ("db", &["cache"]), ("cache", &["db"])]).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: db -> cache -> db");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "db"), 2);
        assert_eq!(edit_distance("db", "db"), 0);
    }

    #[test]
    fn suggestions_rank_closest_first() {
        let names = ["database", "metrics", "db", "cache"];
        assert_eq!(closest_names("dbb", names.into_iter()), ["db"]);
        assert_eq!(closest_names("Metric", names.into_iter()), ["metrics"]);
        assert!(closest_names("queue", names.into_iter()).is_empty());
    }
}
