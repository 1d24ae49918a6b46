//! `logs`: tracing to stdout and to a file, through tracing-appender's non-blocking
//! writer while the app serves, so a slow disk never holds a request.
//!
//! Its log filter comes from the settings file (else `RUST_LOG`, else `info`), and a
//! reload swaps it through tracing-subscriber's reload layer, with no line lost.
//!
//! Its flush drains the writer's queue into the file and switches to writing straight to
//! the file, so what is logged after it (the other flushes, the report) is not lost.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lifecycle::prelude::*;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::settings::Settings;

pub struct Logs {
    file: LogFile,
    path: PathBuf,
    filter: reload::Handle<EnvFilter, Registry>,
}

/// The filter of the settings, else `RUST_LOG`, else `info`.
fn filter(settings: &Settings) -> Result<EnvFilter, BoxError> {
    Ok(match settings.log() {
        Some(directives) => EnvFilter::try_new(directives)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    })
}

impl Logs {
    /// Installs the global subscriber: stdout and `path`, at the settings' filter. Call
    /// it first, so the engine's own lines reach the file too.
    /// With a `tracer`, spans are exported to OpenTelemetry too.
    pub fn init(
        path: &Path,
        settings: &Settings,
        tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    ) -> io::Result<Logs> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let file = LogFile::new(file);
        let filter = self::filter(settings).map_err(io::Error::other)?;
        let (filter, handle) = reload::Layer::new(filter);
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(io::stdout().is_terminal())
                    .with_writer(io::stdout),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .fmt_fields(PlainFields(DefaultFields::new()))
                    .with_writer(file.clone()),
            )
            .with(tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer)))
            .try_init()
            .map_err(io::Error::other)?;
        Ok(Logs {
            file,
            path: path.to_owned(),
            filter: handle,
        })
    }
}

#[async_trait]
impl Component for Logs {
    fn name(&self) -> &str {
        "logs"
    }

    fn options(&self) -> Options {
        Options::new()
            .uses::<Settings>()
            .stop_timeout(Duration::from_secs(1))
            .flush_timeout(Duration::from_secs(1))
    }

    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        tracing::info!(file = %self.path.display(), "logging to stdout and to the file");
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }

    async fn flush(&mut self, _: &StopContext) -> Result<(), BoxError> {
        self.file.write_through();
        Ok(())
    }

    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        let filter = filter(&ctx.resource::<Settings>()?)?;
        let shown = filter.to_string();
        self.filter.reload(filter)?;
        tracing::info!(filter = %shown, "log filter applied");
        Ok(())
    }
}

/// The file's writer: queued to tracing-appender's worker thread, then, after the
/// flush, straight to the file.
#[derive(Clone)]
struct LogFile(Arc<Shared>);

struct Shared {
    queue: RwLock<Option<NonBlocking>>,
    guard: Mutex<Option<WorkerGuard>>,
    file: File,
}

impl LogFile {
    fn new(file: File) -> Self {
        let (queue, guard) = NonBlockingBuilder::default()
            .lossy(false) // a full queue waits rather than dropping lines
            .finish(file.try_clone().expect("a log file handle"));
        LogFile(Arc::new(Shared {
            queue: RwLock::new(Some(queue)),
            guard: Mutex::new(Some(guard)),
            file,
        }))
    }

    /// Waits until every queued line is in the file, then writes straight through.
    /// Writers wait meanwhile, so no line overtakes a queued one.
    fn write_through(&self) {
        let mut queue = self.0.queue.write().unwrap_or_else(|e| e.into_inner());
        *queue = None;
        // Dropping the guard ends the worker once it has written everything queued.
        drop(
            self.0
                .guard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = Box<dyn Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match &*self.0.queue.read().unwrap_or_else(|e| e.into_inner()) {
            Some(queue) => Box::new(queue.clone()),
            None => Box::new(&self.0.file),
        }
    }
}

/// The default field format, as a type of its own: span fields are formatted once per
/// field format type, and the file must not get the terminal's colours.
struct PlainFields(DefaultFields);

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        self.0.format_fields(writer, fields)
    }
}
