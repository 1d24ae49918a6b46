//! A component's health, its severity, and how they add up; the app's and the
//! components' lifecycle states.

use std::fmt;

/// A component's health, as its [`Component::health`](crate::Component::health) reports it. Serialized (feature
/// `serde`) as `{"status": "down", "reason": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "status", content = "reason", rename_all = "lowercase")
)]
pub enum Health {
    /// Working normally.
    Up,
    /// Working, but impaired; the reason says how.
    Degraded(String),
    /// Not working; the reason says why.
    Down(String),
}

/// `Ok` is [`Up`](Health::Up), an error [`Down`](Health::Down) with its message: a
/// check written with `?` (`sqlx::query("SELECT 1").execute(&pool).await?`) reports as
/// it fails.
///
/// ```
/// use lifecycle_core::Health;
///
/// assert_eq!(Health::from(Ok::<(), String>(())), Health::Up);
/// assert_eq!(
///     Health::from(Err::<(), _>("connection refused")),
///     Health::Down("connection refused".into())
/// );
/// ```
impl<E: fmt::Display> From<Result<(), E>> for Health {
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Health::Up,
            Err(error) => Health::Down(error.to_string()),
        }
    }
}

/// The severity of a [`Health`], and the aggregate over all components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
pub enum Status {
    /// Working normally.
    Up,
    /// Working, impaired.
    Degraded,
    /// Not working.
    Down,
}

impl Status {
    /// `"up"`, `"degraded"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Degraded => "degraded",
            Status::Down => "down",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Health {
    /// The status without the reason.
    pub fn status(&self) -> Status {
        match self {
            Health::Up => Status::Up,
            Health::Degraded(_) => Status::Degraded,
            Health::Down(_) => Status::Down,
        }
    }

    /// Why the component is degraded or down.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Up => None,
            Health::Degraded(reason) | Health::Down(reason) => Some(reason),
        }
    }
}

/// Aggregates component health: any critical component down makes the app
/// [`Down`](Status::Down); any non-critical one down, or any degraded, makes it
/// [`Degraded`](Status::Degraded); otherwise it is [`Up`](Status::Up).
///
/// # Examples
///
/// ```
/// use lifecycle_core::{aggregate, Health, Status};
///
/// let cache_down = Health::Down("connection refused".into());
/// // A non-critical cache that is down degrades the app; a critical one takes it down.
/// assert_eq!(aggregate([(false, &cache_down), (true, &Health::Up)]), Status::Degraded);
/// assert_eq!(aggregate([(true, &cache_down), (true, &Health::Up)]), Status::Down);
/// ```
pub fn aggregate<'a>(checks: impl IntoIterator<Item = (bool, &'a Health)>) -> Status {
    checks
        .into_iter()
        .map(|(critical, health)| match health.status() {
            Status::Down if !critical => Status::Degraded,
            status => status,
        })
        .max()
        .unwrap_or(Status::Up)
}

macro_rules! state_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The lower-case name, as in the probe server's JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            pub(crate) fn from_u8(value: u8) -> Self {
                Self::ALL[usize::from(value)]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum! {
    /// Where the app is in its lifecycle.
    Phase {
        /// Components are starting; not ready.
        Starting = "starting",
        /// Every component has started; ready unless the aggregate health is down or
        /// the engine does not respond.
        Running = "running",
        /// Shutdown was triggered; everything keeps serving while load balancers stop
        /// routing here. Not ready.
        Draining = "draining",
        /// Components are stopping, in reverse order.
        Stopping = "stopping",
        /// Components are flushing.
        Flushing = "flushing",
        /// The app has exited.
        Exited = "exited",
    }
}

state_enum! {
    /// Where one component is in its lifecycle.
    ComponentState {
        /// Not started: waiting for its dependencies, or never started because the
        /// start was aborted.
        Pending = "pending",
        /// Its start is running.
        Starting = "starting",
        /// Started.
        Running = "running",
        /// Its stop is running.
        Stopping = "stopping",
        /// Stopped, or its start was cancelled when the start was aborted.
        Stopped = "stopped",
        /// Its start or stop failed, panicked or timed out.
        Failed = "failed",
        /// Stopped by a restart, waiting for its backoff before it starts again.
        Restarting = "restarting",
    }
}
