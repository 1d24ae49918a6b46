//! Errors of building and running an app.

use std::io;

/// The error type components return from their hooks and tracked tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an app could not be built. Returned by `Builder::build`, never at run time.
///
/// Its `Debug` output is its message, so `main` can return it (or a `Box<dyn Error>` of
/// it) and print something a person can read.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A component has an empty name.
    #[error("a component has an empty name; every component needs a unique, non-empty name")]
    EmptyName,
    /// Two components were added under the same name.
    #[error("component name `{0}` is used twice; component names must be unique")]
    DuplicateName(String),
    /// A component lists itself as a dependency.
    #[error("component `{0}` depends on itself")]
    SelfLoop(String),
    /// A component depends on a name that no component has.
    #[error(
        "component `{component}` depends on `{missing}`, which was not added{}",
        suggestion(suggestions)
    )]
    UnknownDependency {
        /// The component that declared the dependency.
        component: String,
        /// The name that matches no component.
        missing: String,
        /// Added components whose names are close to `missing`, closest first.
        suggestions: Vec<String>,
    },
    /// The dependencies form cycles.
    #[error("{}", cycles_message(.cycles))]
    Cycle {
        /// One cycle per group of components that depend on one another, each in
        /// dependency direction with its first component repeated at the end (`a -> b ->
        /// a`: `a` depends on `b`, which depends on `a`); several when the graph has
        /// separate cycles, so one build names them all.
        cycles: Vec<Vec<String>>,
    },
    /// A component uses a resource type that no component provides.
    #[error(
        "component `{component}` uses a `{resource}`, which no component provides; add one: \
         a `Provider` whose `open` returns a `{resource}`, or a component whose options \
         declare `Options::provides::<{resource}>()`"
    )]
    MissingResource {
        /// The component that uses the resource.
        component: String,
        /// The resource's type.
        resource: String,
    },
    /// A component uses a resource type that several components provide, without naming one.
    #[error(
        "component `{component}` uses a `{resource}`, which {} provide; name one with \
         `Options::uses_from`", crate::resources::names(.providers)
    )]
    AmbiguousResource {
        /// The component that uses the resource.
        component: String,
        /// The resource's type.
        resource: String,
        /// The components that provide it, in registration order.
        providers: Vec<String>,
    },
    /// A component uses a resource from a named component that does not provide it.
    #[error(
        "component `{component}` uses the `{resource}` of `{provider}`, which `{provider}` \
         does not provide{}", provided_instead(.provided)
    )]
    ResourceNotProvided {
        /// The component that uses the resource.
        component: String,
        /// The component it named as the provider.
        provider: String,
        /// The resource's type.
        resource: String,
        /// What that provider does provide.
        provided: Vec<String>,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

fn provided_instead(provided: &[String]) -> String {
    if provided.is_empty() {
        " (it provides nothing)".to_owned()
    } else {
        format!(" (it provides {})", crate::resources::names(provided))
    }
}

fn suggestion(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [only] => format!("; did you mean `{only}`?"),
        many => {
            let names: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
            format!("; did you mean one of {}?", names.join(", "))
        }
    }
}

/// Why an app could not run at all. Everything that happens once components start is
/// in the [`Report`](crate::Report) instead.
///
/// Its `Display` is its own message; the cause (an `io::Error`) is its `source()`. Its
/// `Debug` is the message with its causes (`setup failed: cannot bind 0.0.0.0:80:
/// permission denied`), so `main` can return it and print something a person can read;
/// `{:#?}` gives the structure.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The app is invalid.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The termination signal handlers could not be installed.
    #[error("could not register signal handlers")]
    Signals(#[source] io::Error),
    /// The async runtime could not be created.
    #[error("could not create the async runtime")]
    Runtime(#[source] io::Error),
    /// A call that blocks the thread (`run()`, `run_tokio()`) was made inside an async
    /// runtime, whose thread it would block; the message says what to call instead.
    #[error("{0}")]
    InsideRuntime(&'static str),
    /// The app's own setup failed before it ran: a port that cannot be bound, a file that
    /// cannot be opened (`?` on an `io::Error` in `main` gives this).
    #[error("setup failed")]
    Setup(#[source] io::Error),
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Error::Setup(error)
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !f.alternate() {
            return f.write_str(&error_chain(self));
        }
        match self {
            Error::Build(error) => f.debug_tuple("Build").field(error).finish(),
            Error::Signals(error) => f.debug_tuple("Signals").field(error).finish(),
            Error::Runtime(error) => f.debug_tuple("Runtime").field(error).finish(),
            Error::InsideRuntime(message) => f.debug_tuple("InsideRuntime").field(message).finish(),
            Error::Setup(error) => f.debug_tuple("Setup").field(error).finish(),
        }
    }
}

/// Formats an error with its chain of sources: `connect failed: connection refused`.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Extracts the message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// `dependency cycle: a -> b -> a`, or `dependency cycles: a -> b -> a; c -> d -> c`.
fn cycles_message(cycles: &[Vec<String>]) -> String {
    let plural = if cycles.len() > 1 { "s" } else { "" };
    let cycles: Vec<String> = cycles.iter().map(|cycle| cycle.join(" -> ")).collect();
    format!("dependency cycle{plural}: {}", cycles.join("; "))
}
