//! The validated dependency graph and its plan.
//!
//! The graph is a petgraph [`DiGraph`] with an edge `d -> i` when `i` depends on `d`
//! (node indices are registration indices); its algorithms find every cycle (strongly
//! connected components), a restart's subgraph (reachability) and the dependencies
//! implied through others (transitive reduction). The start order is Kahn's algorithm
//! written here, because petgraph's `toposort` is depth-first and would not keep
//! registration order among independent components.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use petgraph::algo::tarjan_scc;
use petgraph::algo::tred::{dag_to_toposorted_adjacency_list, dag_transitive_reduction_closure};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Dfs;

use crate::error::BuildError;

/// A validated dependency graph: no unknown names, no duplicates, no cycles.
///
/// Nodes are indices in registration order. `order` is a topological order (every node
/// after all its dependencies), ties broken by registration order so plans are
/// deterministic.
#[derive(Debug, Clone)]
pub struct Plan {
    graph: DiGraph<String, ()>,
    /// Each node's dependencies and dependents as slices, in declaration order, for the
    /// engine's wavefronts (petgraph lists a node's neighbours newest first).
    dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    order: Vec<usize>,
    levels: Vec<usize>,
}

impl Plan {
    /// Validates `nodes` (each a name and the names it depends on) into a plan.
    pub(crate) fn new(nodes: &[(String, Vec<String>)]) -> Result<Plan, BuildError> {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
        let mut graph = DiGraph::with_capacity(nodes.len(), nodes.len());
        for (i, (name, _)) in nodes.iter().enumerate() {
            if name.is_empty() {
                return Err(BuildError::EmptyName);
            }
            if index.insert(name, i).is_some() {
                return Err(BuildError::DuplicateName(name.clone()));
            }
            graph.add_node(name.clone());
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
                    graph.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
                }
            }
        }

        // Kahn's algorithm, first come first served: registration order among equals.
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
            return Err(BuildError::Cycle {
                cycles: cycles(&graph, &dependencies)
                    .into_iter()
                    .map(|cycle| cycle.into_iter().map(|i| nodes[i].0.clone()).collect())
                    .collect(),
            });
        }

        Ok(Plan {
            graph,
            dependencies,
            dependents,
            order,
            levels,
        })
    }

    /// The number of components.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the plan has no components.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Component names in a start order: every component after all its dependencies.
    /// Components without a path between them may start concurrently.
    pub fn start_order(&self) -> Vec<&str> {
        self.order.iter().map(|&i| self.name(i)).collect()
    }

    /// Component names in a stop order: the start order reversed.
    pub fn stop_order(&self) -> Vec<&str> {
        self.order.iter().rev().map(|&i| self.name(i)).collect()
    }

    /// The graph's levels: level 0 has no dependencies, level `n` depends on something
    /// at level `n - 1`. Components of one level start concurrently.
    pub fn levels(&self) -> Vec<Vec<&str>> {
        let depth = self.levels.iter().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        for &i in &self.order {
            levels[self.levels[i]].push(self.name(i));
        }
        levels
    }

    /// The names `name` depends on, or `None` if no component has that name.
    pub fn dependencies_of(&self, name: &str) -> Option<Vec<&str>> {
        let i = self
            .graph
            .node_indices()
            .position(|n| self.graph[n] == name)?;
        Some(self.dependencies[i].iter().map(|&d| self.name(d)).collect())
    }

    /// The index of the component named `name`, which the plan has validated.
    pub(crate) fn index(&self, name: &str) -> usize {
        self.graph
            .node_indices()
            .position(|n| self.graph[n] == name)
            .expect("a name the plan has validated")
    }

    pub(crate) fn name(&self, node: usize) -> &str {
        &self.graph[NodeIndex::new(node)]
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

    /// `node` and everything that depends on it, directly or not: what a restart of
    /// `node` cycles.
    pub(crate) fn with_dependents(&self, node: usize) -> Vec<bool> {
        let mut members = vec![false; self.len()];
        let mut dfs = Dfs::new(&self.graph, NodeIndex::new(node));
        while let Some(next) = dfs.next(&self.graph) {
            members[next.index()] = true;
        }
        members
    }

    /// For each node, the dependencies it declares that it also has through another of
    /// its dependencies, each with the first such other one: `(db, cache)` when the node
    /// depends on `db` and on `cache`, which depends on `db`. Such an edge changes no
    /// order; the transitive reduction leaves it out.
    pub(crate) fn implied_dependencies(&self) -> Vec<Vec<(usize, usize)>> {
        let order: Vec<NodeIndex> = self.order.iter().map(|&i| NodeIndex::new(i)).collect();
        let (sorted, rank) = dag_to_toposorted_adjacency_list::<_, u32>(&self.graph, &order);
        let (reduction, closure) = dag_transitive_reduction_closure(&sorted);
        let rank = |i: usize| rank[i];
        (0..self.len())
            .map(|i| {
                self.dependencies[i]
                    .iter()
                    .filter(|&&d| !reduction.contains_edge(rank(d), rank(i)))
                    .filter_map(|&d| {
                        let through = self.dependencies[i]
                            .iter()
                            .find(|&&e| e != d && closure.contains_edge(rank(d), rank(e)))?;
                        Some((d, *through))
                    })
                    .collect()
            })
            .collect()
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

/// One cycle per strongly connected component of more than one node, ordered by their
/// first registered node: the shortest cycle through that node, in dependency
/// direction, the node repeated at the end.
fn cycles(graph: &DiGraph<String, ()>, dependencies: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut components: Vec<Vec<usize>> = tarjan_scc(graph)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let mut members: Vec<usize> = component.iter().map(|n| n.index()).collect();
            members.sort_unstable();
            members
        })
        .collect();
    components.sort_unstable();
    components
        .iter()
        .map(|members| {
            // Breadth first along dependency edges inside the component, back to its start.
            let start = members[0];
            let mut came_from: HashMap<usize, usize> = HashMap::new();
            let mut queue = VecDeque::from([start]);
            let last = 'search: loop {
                let next = queue
                    .pop_front()
                    .expect("a strongly connected component has a cycle");
                for &d in &dependencies[next] {
                    if d == start {
                        break 'search next;
                    }
                    if members.binary_search(&d).is_ok() && !came_from.contains_key(&d) {
                        came_from.insert(d, next);
                        queue.push_back(d);
                    }
                }
            };
            // Back from the last node to the start, then turned around.
            let mut cycle = vec![last];
            while let Some(&before) = came_from.get(cycle.last().expect("not empty")) {
                cycle.push(before);
            }
            cycle.reverse();
            cycle.push(start);
            cycle
        })
        .collect()
}

/// Names close to `wanted`, closest first: equal ignoring case, or within an edit
/// distance of about a third of the name, or containing one another.
fn closest_names<'a>(wanted: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let wanted_lower = wanted.to_lowercase();
    let limit = (wanted.chars().count() / 3).max(1);
    let mut close: Vec<(usize, &str)> = names
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let distance = strsim::levenshtein(&wanted_lower, &lower);
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
    fn every_separate_cycle_is_named_shortest_first_registered_first() {
        let err = plan(&[
            ("x", &["y"]),
            ("a", &["b", "d"]),
            ("b", &["c"]),
            ("c", &["a"]),
            ("d", &["a"]),
            ("y", &["x"]),
            ("free", &[]),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dependency cycles: x -> y -> x; a -> d -> a"
        );
    }

    #[test]
    fn a_restart_cycles_the_node_and_everything_depending_on_it() {
        let plan = plan(&[
            ("metrics", &[]),
            ("db", &["metrics"]),
            ("cache", &["db"]),
            ("http", &["cache"]),
            ("worker", &["db"]),
            ("audit", &["metrics"]),
        ])
        .unwrap();
        let members = |name| {
            let cycled = plan.with_dependents(plan.index(name));
            (0..plan.len())
                .filter(|&i| cycled[i])
                .map(|i| plan.name(i))
                .collect::<Vec<_>>()
        };
        assert_eq!(members("db"), ["db", "cache", "http", "worker"]);
        assert_eq!(members("cache"), ["cache", "http"]);
        assert_eq!(members("audit"), ["audit"]);
    }

    #[test]
    fn dependencies_implied_through_others_are_found() {
        let plan = plan(&[
            ("db", &[]),
            ("cache", &["db"]),
            ("http", &["db", "cache"]),
            ("worker", &["db"]),
        ])
        .unwrap();
        let implied = plan.implied_dependencies();
        let http = plan.index("http");
        assert_eq!(implied[http], [(plan.index("db"), plan.index("cache"))]);
        assert!(implied
            .iter()
            .enumerate()
            .all(|(i, implied)| i == http || implied.is_empty()));
    }

    #[test]
    fn suggestions_rank_closest_first() {
        let names = ["database", "metrics", "db", "cache"];
        assert_eq!(closest_names("dbb", names.into_iter()), ["db"]);
        assert_eq!(closest_names("Metric", names.into_iter()), ["metrics"]);
        assert!(closest_names("queue", names.into_iter()).is_empty());
    }
}
