//! What an app will do, before it does it: the plan explained, and the graph exported.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::config::{Config, Timeouts};
use crate::graph::Plan;
use crate::report::name_column;
use crate::supervision::Restart;

/// One component as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedComponent {
    /// Its name.
    pub name: String,
    /// What it depends on, declared and added by options (not the implicit edges to
    /// components that start [before all](crate::Options::before_all)).
    pub dependencies: Vec<String>,
    /// Dependencies among those that it also has through another one, each with the
    /// first such other one: `("db", "cache")` when it depends on `db` and on `cache`,
    /// which depends on `db`. Harmless (the order is the same without them), and worth
    /// a look: perhaps it uses `db` only through `cache`.
    pub implied: Vec<(String, String)>,
    /// How long its start may take.
    pub start_timeout: Duration,
    /// How long its stop may take (the budget may cut it shorter).
    pub stop_timeout: Duration,
    /// How long its flush may take (the flush reserve may cut it shorter).
    pub flush_timeout: Duration,
    /// Whether it being down makes the app down (else degraded).
    pub critical: bool,
    /// Whether it starts before, and stops after, every other component.
    pub before_all: bool,
    /// What happens when it fails while the app runs.
    pub restart: Restart,
}

/// The plan of an app explained: levels, orders, timeouts, the longest paths and the
/// budget, with warnings where the timeouts cannot fit. Made by
/// [`App::explain`](crate::App::explain); its `Display` is the text an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Explanation {
    /// The graph's levels: components of one level start concurrently.
    pub levels: Vec<Vec<String>>,
    /// A start order.
    pub start_order: Vec<String>,
    /// The stop order (the start order reversed; the flush follows it too).
    pub stop_order: Vec<String>,
    /// Every component, in registration order.
    pub components: Vec<PlannedComponent>,
    /// The longest chain by start timeouts: the longest a start can take.
    pub start_path: (Vec<String>, Duration),
    /// The longest chain by stop timeouts, in stop order: the longest the stop phase
    /// may need.
    pub stop_path: (Vec<String>, Duration),
    /// The whole shutdown budget.
    pub shutdown_timeout: Duration,
    /// The drain delay, first in the budget.
    pub drain_delay: Duration,
    /// What the drain and the flush reserve leave for stopping components.
    pub stop_phase: Duration,
    /// The end of the budget kept for the flush.
    pub flush_reserve: Duration,
    /// The flush timeouts of the components that flush (those that declare a flush
    /// timeout in their options) added up: flushes run one after another.
    pub flush_total: Duration,
    /// The deadline after which the process is killed, if known
    /// ([`Config::grace_period`]).
    pub grace_period: Option<Duration>,
    /// What does not fit, naming the components.
    pub warnings: Vec<String>,
}

impl Explanation {
    pub(crate) fn new(
        plan: &Plan,
        config: &Config,
        timeouts: &[Timeouts],
        critical: &[bool],
        before_all: &[bool],
        restart: &[Restart],
    ) -> Explanation {
        let name = |i: usize| plan.name(i).to_owned();
        let names = |path: &[usize]| path.iter().map(|&i| name(i)).collect::<Vec<_>>();
        let declared = |i: usize| -> Vec<usize> {
            plan.dependencies(i)
                .iter()
                .copied()
                .filter(|&d| before_all[i] || !before_all[d])
                .collect()
        };
        let implied = plan.implied_dependencies();
        let components = (0..plan.len())
            .map(|i| PlannedComponent {
                name: name(i),
                dependencies: names(&declared(i)),
                implied: implied[i]
                    .iter()
                    .filter(|(d, _)| declared(i).contains(d))
                    .map(|&(d, through)| (name(d), name(through)))
                    .collect(),
                start_timeout: timeouts[i].start,
                stop_timeout: timeouts[i].stop,
                flush_timeout: timeouts[i].flush,
                critical: critical[i],
                before_all: before_all[i],
                restart: restart[i],
            })
            .collect();
        let order = plan.order();
        let start = longest_path(
            plan.len(),
            order.iter().copied(),
            |i| plan.dependencies(i),
            |i| timeouts[i].start,
        );
        let stop = longest_path(
            plan.len(),
            order.iter().rev().copied(),
            |i| plan.dependents(i),
            |i| timeouts[i].stop,
        );
        let flush_total = timeouts.iter().filter(|t| t.flushes).map(|t| t.flush).sum();

        let mut warnings = Vec::new();
        let stop_phase = config.stop_phase();
        if stop.1 > stop_phase {
            warnings.push(format!(
                "the stop timeouts along {} add up to {}, more than the {} stop phase \
                 ({} budget - {} drain - {} flush reserve): the last of these stops may be cut short",
                names(&stop.0).join(" -> "),
                human(stop.1),
                human(stop_phase),
                human(config.shutdown_timeout),
                human(config.drain_delay),
                human(config.flush_reserve),
            ));
        }
        if flush_total > config.flush_reserve {
            warnings.push(format!(
                "the flush timeouts add up to {}, more than the {} flush reserve: \
                 the last flushes ({}) may be cut short",
                human(flush_total),
                human(config.flush_reserve),
                names(
                    &order
                        .iter()
                        .copied()
                        .filter(|&i| timeouts[i].flushes)
                        .take(2)
                        .collect::<Vec<_>>()
                )
                .join(", "),
            ));
        }
        if let Some(grace) = config.grace_period {
            if config.shutdown_timeout >= grace {
                warnings.push(format!(
                    "the {} shutdown budget does not fit the {} grace period: the process \
                     would be killed before its flush ends; keep the budget a few seconds shorter",
                    human(config.shutdown_timeout),
                    human(grace),
                ));
            }
        }

        Explanation {
            levels: plan
                .levels()
                .into_iter()
                .map(|level| level.into_iter().map(str::to_owned).collect())
                .collect(),
            start_order: plan.start_order().into_iter().map(str::to_owned).collect(),
            stop_order: plan.stop_order().into_iter().map(str::to_owned).collect(),
            components,
            start_path: (names(&start.0), start.1),
            stop_path: (names(&stop.0), stop.1),
            shutdown_timeout: config.shutdown_timeout,
            drain_delay: config.drain_delay,
            stop_phase,
            flush_reserve: config.flush_reserve,
            flush_total,
            grace_period: config.grace_period,
            warnings,
        }
    }

    /// The graph in Graphviz DOT (`dot -Tsvg`): an arrow from each component to what
    /// it depends on, the timeouts as labels; components that start before all are
    /// drawn doubled, without their implicit edges.
    pub fn to_dot(&self) -> String {
        let mut dot = String::from("digraph lifecycle {\n  rankdir=LR;\n  node [shape=box];\n");
        for c in &self.components {
            let shape = if c.before_all { ", peripheries=2" } else { "" };
            let style = if c.critical { "" } else { ", style=dashed" };
            let _ = writeln!(
                dot,
                "  \"{}\" [label=\"{}\\n{}\"{shape}{style}];",
                escape(&c.name),
                escape(&c.name),
                label(c)
            );
        }
        for c in &self.components {
            for d in &c.dependencies {
                let _ = writeln!(dot, "  \"{}\" -> \"{}\";", escape(&c.name), escape(d));
            }
        }
        dot.push_str("}\n");
        dot
    }

    /// The graph as a Mermaid flowchart (renders in GitHub Markdown), like
    /// [`to_dot`](Explanation::to_dot).
    pub fn to_mermaid(&self) -> String {
        let id = |name: &str| {
            self.components
                .iter()
                .position(|c| c.name == name)
                .map_or_else(String::new, |i| format!("n{i}"))
        };
        let mut mermaid = String::from("flowchart LR\n");
        for (i, c) in self.components.iter().enumerate() {
            let (open, close) = if c.before_all {
                ("[[", "]]")
            } else {
                ("[", "]")
            };
            let _ = writeln!(
                mermaid,
                "  n{i}{open}\"{}<br/>{}\"{close}",
                c.name.replace('"', "#quot;"),
                label(c)
            );
        }
        for c in &self.components {
            for d in &c.dependencies {
                let _ = writeln!(mermaid, "  {} --> {}", id(&c.name), id(d));
            }
        }
        mermaid
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} components in {} levels (each level starts concurrently):",
            self.components.len(),
            self.levels.len()
        )?;
        for (n, level) in self.levels.iter().enumerate() {
            writeln!(f, "  {n}: {}", level.join(", "))?;
        }
        writeln!(f, "start order: {}", self.start_order.join(", "))?;
        writeln!(
            f,
            "stop order:  {} (then the flushes, in this order)",
            self.stop_order.join(", ")
        )?;
        let width = name_column(self.components.iter().map(|c| c.name.as_str()));
        writeln!(
            f,
            "{:width$}  {:>7}  {:>7}  {:>7}  notes",
            "component", "start", "stop", "flush"
        )?;
        for c in &self.components {
            let mut notes = Vec::new();
            if !c.dependencies.is_empty() {
                notes.push(format!("depends on {}", c.dependencies.join(", ")));
            }
            for (dependency, through) in &c.implied {
                notes.push(format!("{dependency} also through {through}"));
            }
            if c.before_all {
                notes.push("before all".to_owned());
            }
            if !c.critical {
                notes.push("not critical".to_owned());
            }
            if c.restart.restarts() {
                notes.push(format!("restart {}", c.restart));
            }
            let line = format!(
                "{:width$}  {:>7}  {:>7}  {:>7}  {}",
                c.name,
                human(c.start_timeout),
                human(c.stop_timeout),
                human(c.flush_timeout),
                notes.join("; ")
            );
            writeln!(f, "{}", line.trim_end())?;
        }
        writeln!(
            f,
            "longest start: {} ({} at most)",
            self.start_path.0.join(" -> "),
            human(self.start_path.1)
        )?;
        writeln!(
            f,
            "longest stop:  {} ({} at most)",
            self.stop_path.0.join(" -> "),
            human(self.stop_path.1)
        )?;
        write!(
            f,
            "shutdown budget {}: drain {}, stop phase {}, flush reserve {} ({})",
            human(self.shutdown_timeout),
            human(self.drain_delay),
            human(self.stop_phase),
            human(self.flush_reserve),
            if self.flush_total.is_zero() {
                "no component declares a flush".to_owned()
            } else {
                format!("flushes need up to {}", human(self.flush_total))
            }
        )?;
        match self.grace_period {
            Some(grace) => writeln!(f, "; grace period {}", human(grace))?,
            None => writeln!(f)?,
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

/// The heaviest path through `nodes` (visited so that every node comes after all its
/// `before` nodes), each weighing `weight`; its nodes in visiting order and its weight.
fn longest_path<'a>(
    count: usize,
    nodes: impl Iterator<Item = usize>,
    before: impl Fn(usize) -> &'a [usize],
    weight: impl Fn(usize) -> Duration,
) -> (Vec<usize>, Duration) {
    let mut total = vec![Duration::ZERO; count];
    let mut previous = vec![None; count];
    let mut best: Option<usize> = None;
    for i in nodes {
        let heaviest = before(i).iter().copied().max_by_key(|&b| total[b]);
        total[i] = weight(i) + heaviest.map_or(Duration::ZERO, |b| total[b]);
        previous[i] = heaviest;
        if best.is_none_or(|b| total[i] > total[b]) {
            best = Some(i);
        }
    }
    let mut path = Vec::new();
    let mut at = best;
    while let Some(i) = at {
        path.push(i);
        at = previous[i];
    }
    path.reverse();
    (path, best.map_or(Duration::ZERO, |b| total[b]))
}

fn label(c: &PlannedComponent) -> String {
    format!(
        "start {} · stop {} · flush {}",
        human(c.start_timeout),
        human(c.stop_timeout),
        human(c.flush_timeout)
    )
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `250ms`, `5s`, `1.5s`, `2m`, `2m30s`.
/// A duration as an operator reads it, and as `LIFECYCLE_*` variables accept it:
/// `500ms`, `6.5s`, `2m`, `2m30s`.
pub(crate) fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    let secs = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 != 0 {
        format!("{:.1}s", duration.as_secs_f64())
    } else if secs < 120 {
        format!("{secs}s")
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod human_tests {
    use super::human;
    use crate::config::parse_duration;
    use std::time::Duration;

    /// What `explain` prints, a `LIFECYCLE_*` variable accepts.
    #[test]
    fn explain_output_is_valid_input() {
        for ms in [
            0, 1, 250, 999, 1000, 6500, 25_000, 120_000, 150_000, 3_599_000,
        ] {
            let duration = Duration::from_millis(ms);
            assert_eq!(
                parse_duration(&human(duration)),
                Ok(duration),
                "{}",
                human(duration)
            );
        }
    }
}
