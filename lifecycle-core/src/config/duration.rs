//! Durations as people write them, and the bounds every configured duration keeps.

use std::time::Duration;

use crate::error::BuildError;

/// The longest duration [`parse_duration`] and [`Config::validate`](crate::Config::validate) accept: anything
/// longer is surely a typo (`25m` meant as `25s`), and would hold a deploy for that long.
/// There is no "no timeout" value: nothing may hang forever.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Refuses `value` for `what()` if it is zero (when `positive`) or longer than
/// [`MAX_DURATION`]; `what` is formatted only then, as this runs for every component at
/// build.
pub(crate) fn check_duration(
    value: Duration,
    positive: bool,
    what: impl FnOnce() -> String,
) -> Result<(), BuildError> {
    let why = if positive && value.is_zero() {
        "must be greater than zero".to_owned()
    } else if value > MAX_DURATION {
        format!(
            "({value:?}) is longer than the maximum of {}h",
            MAX_DURATION.as_secs() / 3600
        )
    } else {
        return Ok(());
    };
    Err(BuildError::InvalidConfig(format!("{} {why}", what())))
}

/// Reads a duration written for humans: a number and a unit, `ms`, `s`, `m` or `h`
/// (`500ms`, `5s`, `1.5s`, `2m`); `0` alone is zero.
///
/// # Errors
///
/// A message saying what is wrong: no unit, an unknown unit, a negative value, not a
/// number, or more than [`MAX_DURATION`] (an hour).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lifecycle_core::config::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("5").unwrap_err().contains("unit"));
/// assert!(parse_duration("-1s").unwrap_err().contains("negative"));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXAMPLES: &str = "write a number and a unit, like 500ms, 5s, 2m or 2m30s";
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".to_owned());
    }
    let duration = match humantime::parse_duration(text) {
        // Compound durations (`2m30s`, `1h 5m`), as `explain` prints them.
        Ok(duration) => duration,
        // humantime takes whole numbers only: `0.25s` and `6.5s` are read here.
        Err(_) => {
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let seconds_per_unit = match unit.trim() {
                "ms" => 0.001,
                "s" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "" if number.is_empty() => return Err(format!("it is empty; {EXAMPLES}")),
                "" => return Err(format!("it has no unit; {EXAMPLES}")),
                other => return Err(format!("`{other}` is not a unit (ms, s, m, h); {EXAMPLES}")),
            };
            let value: f64 = number
                .parse()
                .map_err(|_| format!("`{number}` is not a number; {EXAMPLES}"))?;
            let seconds = value * seconds_per_unit;
            if seconds > MAX_DURATION.as_secs_f64() {
                return Err(too_long());
            }
            Duration::from_secs_f64(seconds)
        }
    };
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

fn too_long() -> String {
    format!(
        "it is longer than {}h, surely a mistake",
        MAX_DURATION.as_secs() / 3600
    )
}
