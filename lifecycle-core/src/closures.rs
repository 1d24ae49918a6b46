//! Components from closures, for the two shapes most services have: a [`Provider`] that
//! opens a value at start, hands it to its dependents and closes it at stop (a pool, a
//! client), and a [`Background`] loop that runs until shutdown and finishes its current
//! item (a queue worker, a ticker).
//!
//! Their closures take what they use as arguments ([`StartFn`]): the parameter types are
//! the component's resource uses, declared once, where the closure is written.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use futures_util::FutureExt;

use crate::component::{Component, StartContext, StopContext};
use crate::config::Options;
use crate::error::BoxError;
use crate::health::Health;
use crate::resources::ResourceError;
use crate::runtime::BoxFuture;
use crate::task::{Task, TaskError};

/// A closure that a closure component ([`Provider`], [`Background`], and the `lifecycle`
/// crate's `HttpServer::serve_with`) calls at each start, with the resources it takes as
/// arguments.
///
/// Each parameter is a resource of that type, provided by another component: the
/// parameter types *are* the component's [uses](Options::uses), so a resource is declared
/// once, where it is used. [`Builder::build`](crate::Builder::build) fails, naming the
/// component and the type, when no component provides one (or several do: then take it
/// from the start context with [`resource_from`](StartContext::resource_from) in a
/// component of your own). The closure may take the [`StartContext`] first, by value,
/// for its tokens, runtime or spawner: it can move into the future the closure returns
/// (a task it spawns later is the component's, tracked like the others).
///
/// It is implemented for closures and functions of up to six resources:
///
/// ```
/// use lifecycle_core::{Background, BoxError, Provider, StartContext};
///
/// #[derive(Clone)]
/// struct Pool;
/// #[derive(Clone)]
/// struct Settings { batch: usize }
///
/// async fn drain_queue(pool: Pool, batch: usize) -> Result<(), BoxError> { Ok(()) }
///
/// // No argument: uses nothing.
/// let settings = Provider::new("settings", || async { Ok::<_, BoxError>(Settings { batch: 10 }) }, |_| async {});
/// // Two resources: `worker` starts after `db` and `settings`, and stops before them.
/// let worker = Background::new("worker", |pool: Pool, settings: Settings| {
///     drain_queue(pool, settings.batch)
/// });
/// // The start context first, then the resources.
/// let ticker = Background::new("ticker", |ctx: StartContext, pool: Pool| {
///     let stop = ctx.stop_token();
///     async move { stop.wait().await; drop(pool); Ok::<(), BoxError>(()) }
/// });
/// ```
pub trait StartFn<Args>: Send + Sync + 'static {
    /// What the closure returns.
    type Output;

    /// `options` with this closure's resource uses added.
    fn uses(options: Options) -> Options;

    /// Takes the resources from `ctx` and calls the closure; fails, naming the type,
    /// when one is missing.
    fn call(&self, ctx: &StartContext) -> Result<Self::Output, ResourceError>;
}

/// Marks the [`StartFn`] implementations whose closure takes the [`StartContext`] first.
#[doc(hidden)]
#[derive(Debug)]
pub struct WithContext;

macro_rules! start_fn {
    ($($resource:ident),*) => {
        impl<Func, Out, $($resource),*> StartFn<($($resource,)*)> for Func
        where
            Func: Fn($($resource),*) -> Out + Send + Sync + 'static,
            $($resource: Clone + Send + Sync + 'static,)*
        {
            type Output = Out;

            fn uses(options: Options) -> Options {
                options$(.uses::<$resource>())*
            }

            #[allow(unused_variables)]
            fn call(&self, ctx: &StartContext) -> Result<Out, ResourceError> {
                Ok(self($(ctx.resource::<$resource>()?),*))
            }
        }

        impl<Func, Out, $($resource),*> StartFn<(WithContext, $($resource,)*)> for Func
        where
            Func: Fn(StartContext, $($resource),*) -> Out + Send + Sync + 'static,
            $($resource: Clone + Send + Sync + 'static,)*
        {
            type Output = Out;

            fn uses(options: Options) -> Options {
                options$(.uses::<$resource>())*
            }

            fn call(&self, ctx: &StartContext) -> Result<Out, ResourceError> {
                Ok(self(ctx.duplicate(), $(ctx.resource::<$resource>()?),*))
            }
        }
    };
}

start_fn!();
start_fn!(A);
start_fn!(A, B);
start_fn!(A, B, C);
start_fn!(A, B, C, D);
start_fn!(A, B, C, D, E);
start_fn!(A, B, C, D, E, F);

/// A future of the user's, boxed with its error as a [`BoxError`]. A combinator, not an
/// `async` block, which would hold the user's future twice (a loop's for as long as it
/// runs).
fn erased<T, E, F>(future: F) -> BoxFuture<Result<T, BoxError>>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
{
    // A closure, not `Into::into`: a function's type would ask `E: 'static` of callers.
    Box::pin(future.map(|result| result.map_err(|error| error.into())))
}

/// A health check's future, boxed with its answer as a [`Health`] (held once, as
/// [`erased`]'s).
fn checked<R: Into<Health>>(check: impl Future<Output = R> + Send + 'static) -> BoxFuture<Health> {
    Box::pin(check.map(|answer| answer.into()))
}

type Open<T> = Box<dyn Fn(&StartContext) -> BoxFuture<Result<T, BoxError>> + Send + Sync>;
type Make =
    Box<dyn Fn(&StartContext) -> Result<BoxFuture<Result<(), BoxError>>, BoxError> + Send + Sync>;
type Close<T> = Box<dyn FnMut(T) -> BoxFuture<()> + Send + Sync>;
type Check<T> = Box<dyn Fn(T) -> BoxFuture<Health> + Send + Sync>;

/// A component that opens a `T` at start, [provides](StartContext::provide) it to the
/// components that [use](Options::uses) it, and closes it at stop, under the stop
/// deadline (a close that does not finish by then fails the stop and is dropped).
///
/// It can be restarted (under a [`Restart`](crate::Restart) policy of its own or of a
/// dependency): each start calls `open` again, and its dependents, restarted with it,
/// receive the new value.
///
/// # Examples
///
/// ```
/// use lifecycle_core::{App, Provider};
///
/// #[derive(Clone)]
/// struct Pool;
/// impl Pool {
///     async fn connect(_url: &str) -> Result<Pool, std::io::Error> { Ok(Pool) }
///     async fn close(self) {}
/// }
///
/// let db = Provider::new("db", || Pool::connect("sqlite://data.db"), Pool::close);
/// let app = App::builder().add(db).build()?;
/// # Ok::<(), lifecycle_core::BuildError>(())
/// ```
#[must_use = "a component does nothing until it is added to an App"]
pub struct Provider<T> {
    name: String,
    options: Options,
    open: Open<T>,
    close: Close<T>,
    check: Option<Check<T>>,
    value: Option<T>,
}

impl<T: Clone + Send + Sync + 'static> Provider<T> {
    /// A component named `name` whose start runs `open` and whose stop runs `close`.
    /// `open` takes the resources it needs as arguments (see [`StartFn`]); an error it
    /// returns fails the start. `open` is called once per start: once, unless the
    /// component is restarted.
    pub fn new<Args, O, OF, E, C, CF>(name: impl Into<String>, open: O, mut close: C) -> Self
    where
        O: StartFn<Args, Output = OF>,
        OF: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
        C: FnMut(T) -> CF + Send + Sync + 'static,
        CF: Future<Output = ()> + Send + 'static,
    {
        Provider {
            name: name.into(),
            options: O::uses(Options::new().provides::<T>()),
            open: Box::new(move |ctx: &StartContext| match open.call(ctx) {
                Ok(opening) => erased(opening),
                Err(missing) => Box::pin(std::future::ready(Err(missing.into()))),
            }),
            close: Box::new(move |value| Box::pin(close(value))),
            check: None,
            value: None,
        }
    }

    /// Checks the value while it is open, as the component's
    /// [health](Component::health): `check` gets a clone of it and returns a [`Health`],
    /// or a `Result<(), E>` (`Ok` is up, an error is down with its message). Checks run
    /// under the health check timeout, cached briefly (see
    /// [`Config`](crate::Config)); a check that hangs or panics is down.
    ///
    /// ```
    /// use lifecycle_core::Provider;
    ///
    /// #[derive(Clone)]
    /// struct Pool;
    /// impl Pool {
    ///     async fn connect(_url: &str) -> Result<Pool, std::io::Error> { Ok(Pool) }
    ///     async fn ping(self) -> Result<(), std::io::Error> { Ok(()) }
    ///     async fn close(self) {}
    /// }
    ///
    /// let db = Provider::new("db", || Pool::connect("sqlite://data.db"), Pool::close)
    ///     .health_check(Pool::ping); // readiness follows the database
    /// ```
    pub fn health_check<H, HF, R>(mut self, check: H) -> Self
    where
        H: Fn(T) -> HF + Send + Sync + 'static,
        HF: Future<Output = R> + Send + 'static,
        R: Into<Health>,
    {
        self.check = Some(Box::new(move |value| checked(check(value))));
        self
    }
}

impl<T> fmt::Debug for Provider<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("provides", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> Component for Provider<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> Options {
        self.options.clone()
    }

    async fn health(&self) -> Health {
        match (&self.check, &self.value) {
            (Some(check), Some(value)) => check(value.clone()).await,
            _ => Health::Up,
        }
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let value = (self.open)(ctx).await?;
        ctx.provide(value.clone());
        self.value = Some(value);
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        if let Some(value) = self.value.take() {
            ctx.until_deadline((self.close)(value)).await.map_err(|_| {
                format!(
                    "closing the {} did not finish by the stop deadline",
                    std::any::type_name::<T>()
                )
            })?;
        }
        Ok(())
    }
}

/// A component that runs one loop as a tracked task: `make` builds it at start, and the
/// stop waits for it to end, until the stop deadline. The loop should end once its
/// [stop token](StartContext::stop_token) resolves, after finishing its current item: at
/// its turn in the shutdown, once the components that depend on it have stopped (so it
/// runs through the drain), or at a restart's stop. (Its
/// [shutdown token](StartContext::shutdown_token) would end it at the trigger instead.)
/// What is still running at the deadline is cancelled and the stop fails. An error
/// or panic of the loop while the app runs triggers shutdown, naming the component, or
/// restarts it under a [`Restart`](crate::Restart) policy: each start calls `make` again
/// for a new loop (with [`Restart::always`](crate::Restart::always), also when the loop
/// ends while the app runs).
///
/// # Examples
///
/// ```
/// use lifecycle_core::{App, Background, BoxError, StartContext};
///
/// let worker = Background::new("worker", |ctx: StartContext| {
///     let stop = ctx.stop_token();
///     async move {
///         while !stop.is_triggered() {
///             // take a job, do it
/// #           break;
///         }
///         Ok::<(), BoxError>(())
///     }
/// });
/// let app = App::builder().add(worker).build()?;
/// # Ok::<(), lifecycle_core::BuildError>(())
/// ```
#[must_use = "a component does nothing until it is added to an App"]
pub struct Background {
    name: String,
    options: Options,
    make: Make,
    check: Option<Check<()>>,
    task: Option<Task>,
}

impl Background {
    /// A component named `name` running the loop `make` returns. `make` takes the
    /// resources the loop needs as arguments, and the [`StartContext`] first if it needs
    /// its stop token (see [`StartFn`]); it is called once per start: once, unless the
    /// component is restarted.
    pub fn new<Args, M, F, E>(name: impl Into<String>, make: M) -> Self
    where
        M: StartFn<Args, Output = F>,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Background {
            name: name.into(),
            options: M::uses(Options::new()),
            make: Box::new(move |ctx: &StartContext| Ok(erased(make.call(ctx)?))),
            check: None,
            task: None,
        }
    }

    /// The loop's [health](Component::health): `check` returns a [`Health`] or a
    /// `Result<(), E>` (an error is down with its message), under the health check
    /// timeout. For a loop whose health is in shared state it updates (the age of its last
    /// item, the depth of its queue).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use lifecycle_core::{Background, BoxError, Health};
    ///
    /// let connected = Arc::new(AtomicBool::new(true));
    /// let watched = connected.clone();
    /// let worker = Background::new("worker", || async { Ok::<(), BoxError>(()) })
    ///     .health_check(move || {
    ///         let up = watched.load(Ordering::Relaxed);
    ///         async move { if up { Health::Up } else { Health::Down("queue lost".into()) } }
    ///     });
    /// ```
    pub fn health_check<H, HF, R>(mut self, check: H) -> Self
    where
        H: Fn() -> HF + Send + Sync + 'static,
        HF: Future<Output = R> + Send + 'static,
        R: Into<Health>,
    {
        self.check = Some(Box::new(move |()| checked(check())));
        self
    }
}

impl fmt::Debug for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Background")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Component for Background {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> Options {
        self.options.clone()
    }

    async fn health(&self) -> Health {
        match &self.check {
            Some(check) => check(()).await,
            None => Health::Up,
        }
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        self.task = Some(ctx.spawn_fallible((self.make)(ctx)?));
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match ctx.until_deadline(task).await {
            // A failure was reported (and triggered shutdown) when it happened.
            Ok(Ok(()) | Err(TaskError::Failed(_) | TaskError::Panicked(_) | TaskError::Cancelled)) => Ok(()),
            Err(_) => Err("the loop did not end by the stop deadline (it should end once the shutdown token resolves)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{checked, erased};
    use crate::error::BoxError;
    use crate::health::Health;

    /// A future that keeps 16 KiB across an await, as a loop with a buffer does.
    async fn large() -> Result<(), std::io::Error> {
        let buffer = [7u8; 16 * 1024];
        std::future::ready(()).await;
        assert_eq!(buffer[100], 7);
        Ok(())
    }

    #[test]
    fn a_boxed_loop_and_a_boxed_check_hold_the_users_future_once() {
        let size = std::mem::size_of_val(&large());
        assert!(size >= 16 * 1024);
        let run = erased(large());
        assert!(
            std::mem::size_of_val(&*run) < size + 64,
            "{} bytes for a {size}-byte future",
            std::mem::size_of_val(&*run)
        );
        let check = checked(large());
        assert!(std::mem::size_of_val(&*check) < size + 64);
        // And what they answer.
        let run: Result<(), BoxError> = futures_executor::block_on(run);
        assert!(run.is_ok());
        assert_eq!(futures_executor::block_on(check), Health::Up);
    }
}
