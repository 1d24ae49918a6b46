//! Typed resources: values a component provides when it starts (a pool, a client) and
//! its dependents receive by type.
//!
//! A provider declares what it provides ([`Options::provides`](crate::Options::provides))
//! and hands the value over in its start ([`StartContext::provide`](crate::StartContext::provide)).
//! A dependent declares what it uses ([`Options::uses`](crate::Options::uses)), which is
//! what makes it depend on the provider, and takes the value in its start
//! ([`StartContext::resource`](crate::StartContext::resource)). So the data edge and the
//! graph edge are one declaration and cannot drift: a resource nobody provides is a
//! [`BuildError`](crate::BuildError) naming both sides.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The type of a resource, as declared in [`Options`](crate::Options): its [`TypeId`] and
/// its name for messages.
#[derive(Clone, Copy)]
pub struct ResourceType {
    id: TypeId,
    name: &'static str,
}

impl ResourceType {
    /// The resource type `T`.
    pub fn of<T: Any>() -> Self {
        ResourceType {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
        }
    }

    /// The type's name, as `std::any::type_name` gives it.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl PartialEq for ResourceType {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ResourceType {}

impl fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The type's name without its module paths, in messages: `Pool<Sqlite>`, not
/// `sqlx_core::pool::Pool<sqlx_sqlite::database::Sqlite>` (crates the user may never have
/// named).
impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&short_type_name(self.name))
    }
}

/// `type_name` without the paths: each `a::b::C` is `C`, generics and all.
pub(crate) fn short_type_name(name: &str) -> String {
    let mut short = String::with_capacity(name.len());
    // Where the path segment being written began.
    let mut segment = 0;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            short.truncate(segment);
        } else {
            short.push(c);
            if !(c.is_alphanumeric() || c == '_') {
                segment = short.len();
            }
        }
    }
    short
}

/// Why [`StartContext::resource`](crate::StartContext::resource) found no value. Each
/// message names the component, the type and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// No component that this one depends on (directly or transitively) provides the type.
    #[error(
        "component `{component}` asked for a `{resource}`, which none of the components it \
         depends on provides; declare the use with `Options::uses::<{resource}>()`"
    )]
    NotVisible {
        /// The component that asked.
        component: String,
        /// The type asked for.
        resource: ResourceType,
    },
    /// Several of the components this one depends on provide the type.
    #[error(
        "component `{component}` asked for a `{resource}`, which {} provide; name one with \
         `resource_from`", names(.providers)
    )]
    Ambiguous {
        /// The component that asked.
        component: String,
        /// The type asked for.
        resource: ResourceType,
        /// The components that provide it, in registration order.
        providers: Vec<String>,
    },
    /// The named provider is not one this component depends on, or does not provide the
    /// type.
    #[error(
        "component `{component}` asked for the `{resource}` of `{provider}`, which is not a \
         component it depends on that provides one"
    )]
    NotFrom {
        /// The component that asked.
        component: String,
        /// The type asked for.
        resource: ResourceType,
        /// The provider it named.
        provider: String,
    },
    /// The provider's value is gone: it has stopped, or its start has not provided it.
    #[error("the `{resource}` of `{provider}` is not available: `{provider}` is not running")]
    Gone {
        /// The provider.
        provider: String,
        /// The type asked for.
        resource: ResourceType,
    },
}

pub(crate) fn names(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

type Value = Arc<dyn Any + Send + Sync>;

/// What a reload provides, held until it completes (a failed reload changes nothing).
#[derive(Default)]
pub(crate) struct Staged(Mutex<Vec<(ResourceType, Value)>>);

impl Staged {
    pub(crate) fn provide<T: Any + Send + Sync>(&self, value: T) {
        let resource = ResourceType::of::<T>();
        let mut staged = Resources::lock(&self.0);
        staged.retain(|(provided, _)| *provided != resource);
        staged.push((resource, Arc::new(value)));
    }
}

/// The resources of one node: what it declared, and what its start provided.
#[derive(Default)]
struct Slot {
    declared: Vec<ResourceType>,
    /// The declared uses, each resolved at build to its provider.
    uses: Vec<(ResourceType, usize)>,
    values: Mutex<Vec<(ResourceType, Value)>>,
    /// Types provided without being declared: the start fails, naming them.
    undeclared: Mutex<Vec<ResourceType>>,
}

/// Every node's resources, shared by the engine and the start contexts.
pub(crate) struct Resources {
    names: Vec<Arc<str>>,
    dependencies: Vec<Vec<usize>>,
    slots: Vec<Slot>,
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resources").finish_non_exhaustive()
    }
}

impl Resources {
    /// `declared[i]` and `uses[i]` are node `i`'s declared provisions and resolved uses;
    /// `dependencies[i]` its direct dependencies.
    pub(crate) fn new(
        names: Vec<Arc<str>>,
        dependencies: Vec<Vec<usize>>,
        declared: Vec<Vec<ResourceType>>,
        uses: Vec<Vec<(ResourceType, usize)>>,
    ) -> Self {
        let slots = declared
            .into_iter()
            .zip(uses)
            .map(|(declared, uses)| Slot {
                declared,
                uses,
                ..Slot::default()
            })
            .collect();
        Resources {
            names,
            dependencies,
            slots,
        }
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // Nothing panics under these locks; a poisoned one is still consistent.
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Node `node` provides `value`, replacing what it provided before.
    pub(crate) fn provide<T: Any + Send + Sync>(&self, node: usize, value: T) {
        let slot = &self.slots[node];
        let resource = ResourceType::of::<T>();
        if !slot.declared.contains(&resource) {
            Self::lock(&slot.undeclared).push(resource);
            return;
        }
        let mut values = Self::lock(&slot.values);
        values.retain(|(provided, _)| *provided != resource);
        values.push((resource, Arc::new(value)));
    }

    /// After node `node`'s start: why it fails, if it did not provide what it declared
    /// or provided what it did not declare.
    pub(crate) fn check_provided(&self, node: usize) -> Result<(), String> {
        let slot = &self.slots[node];
        let name = &self.names[node];
        if let Some(undeclared) = Self::lock(&slot.undeclared).first() {
            return Err(format!(
                "`{name}` provided a `{undeclared}` without declaring it: add \
                 `Options::new().provides::<{undeclared}>()` to its options"
            ));
        }
        let values = Self::lock(&slot.values);
        for declared in &slot.declared {
            if !values.iter().any(|(provided, _)| provided == declared) {
                return Err(format!(
                    "`{name}` declares that it provides a `{declared}`, but its start did not \
                     provide one (`ctx.provide(value)`)"
                ));
            }
        }
        Ok(())
    }

    /// Replaces what node `node` provided with what its reload staged, type by type:
    /// or why the reload fails instead (an undeclared type), changing nothing.
    pub(crate) fn commit(&self, node: usize, staged: Staged) -> Result<(), String> {
        let slot = &self.slots[node];
        let staged = staged
            .0
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((undeclared, _)) = staged
            .iter()
            .find(|(resource, _)| !slot.declared.contains(resource))
        {
            let name = &self.names[node];
            return Err(format!(
                "`{name}` provided a `{undeclared}` without declaring it: add \
                 `Options::new().provides::<{undeclared}>()` to its options"
            ));
        }
        let mut values = Self::lock(&slot.values);
        for (resource, value) in staged {
            values.retain(|(provided, _)| *provided != resource);
            values.push((resource, value));
        }
        Ok(())
    }

    /// Drops what node `node` provided: after its stop, or when its start did not complete.
    pub(crate) fn release(&self, node: usize) {
        let slot = &self.slots[node];
        Self::lock(&slot.values).clear();
        Self::lock(&slot.undeclared).clear();
    }

    /// The `T` that node `node` may see: from the provider its declared use resolved to,
    /// else from the one dependency (direct or transitive) that declares providing `T`.
    pub(crate) fn get<T: Any + Clone>(
        &self,
        node: usize,
        from: Option<&str>,
    ) -> Result<T, ResourceError> {
        let resource = ResourceType::of::<T>();
        let provider = match from {
            Some(from) => self
                .reachable(node)
                .into_iter()
                .find(|&p| &*self.names[p] == from && self.slots[p].declared.contains(&resource))
                .ok_or_else(|| ResourceError::NotFrom {
                    component: self.names[node].to_string(),
                    resource,
                    provider: from.to_owned(),
                })?,
            None => match self.slots[node].uses.iter().find(|(r, _)| *r == resource) {
                Some(&(_, provider)) => provider,
                None => {
                    let providers: Vec<usize> = self
                        .reachable(node)
                        .into_iter()
                        .filter(|&p| self.slots[p].declared.contains(&resource))
                        .collect();
                    match providers.as_slice() {
                        [one] => *one,
                        [] => {
                            return Err(ResourceError::NotVisible {
                                component: self.names[node].to_string(),
                                resource,
                            })
                        }
                        many => {
                            let mut many = many.to_vec();
                            many.sort_unstable();
                            return Err(ResourceError::Ambiguous {
                                component: self.names[node].to_string(),
                                resource,
                                providers: many
                                    .iter()
                                    .map(|&p| self.names[p].to_string())
                                    .collect(),
                            });
                        }
                    }
                }
            },
        };
        let values = Self::lock(&self.slots[provider].values);
        values
            .iter()
            .find(|(provided, _)| *provided == resource)
            .and_then(|(_, value)| value.downcast_ref::<T>().cloned())
            .ok_or_else(|| ResourceError::Gone {
                provider: self.names[provider].to_string(),
                resource,
            })
    }

    /// Every node `node` depends on, directly or transitively (not itself).
    fn reachable(&self, node: usize) -> Vec<usize> {
        let mut seen = vec![false; self.dependencies.len()];
        let mut queue: VecDeque<usize> = self.dependencies[node].iter().copied().collect();
        let mut found = Vec::new();
        while let Some(next) = queue.pop_front() {
            if std::mem::replace(&mut seen[next], true) {
                continue;
            }
            found.push(next);
            queue.extend(self.dependencies[next].iter().copied());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(
            short_type_name("sqlx_core::pool::Pool<sqlx_sqlite::database::Sqlite>"),
            "Pool<Sqlite>"
        );
        assert_eq!(
            short_type_name("alloc::sync::Arc<dyn core::any::Any + core::marker::Send>"),
            "Arc<dyn Any + Send>"
        );
        assert_eq!(
            short_type_name("(u32, alloc::string::String)"),
            "(u32, String)"
        );
        assert_eq!(short_type_name("u32"), "u32");
    }
}
