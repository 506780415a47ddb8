//! Logging like runc: `--log FILE` with `--log-format text|json`. JSON lines are
//! `{"level":"...","msg":"...","time":"RFC 3339"}`, the format podman reads a runtime's errors
//! from.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `time="..." level=info msg="..."`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where log lines go, kept to write the final error line too.
#[derive(Debug, Clone)]
pub struct Log {
    file: Option<Arc<Mutex<File>>>,
    format: LogFormat,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn line(format: LogFormat, level: &str, msg: &str, fields: &[(String, String)]) -> String {
    match format {
        LogFormat::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("level".into(), level.into());
            obj.insert("msg".into(), msg.into());
            obj.insert("time".into(), now().into());
            for (k, v) in fields {
                obj.insert(k.clone(), v.clone().into());
            }
            serde_json::Value::Object(obj).to_string()
        }
        LogFormat::Text => {
            let mut s = format!("time={:?} level={level} msg={msg:?}", now());
            for (k, v) in fields {
                let _ = write!(s, " {k}={v:?}");
            }
            s
        }
    }
}

struct Fields {
    msg: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.rest
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.rest
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

struct Formatter(LogFormat);

impl<S, N> FormatEvent<S, N> for Formatter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields {
            msg: String::new(),
            rest: Vec::new(),
        };
        event.record(&mut f);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        writeln!(w, "{}", line(self.0, level, &f.msg, &f.rest))
    }
}

impl Log {
    /// Installs the subscriber: to `path` (appending) or stderr; debug level with `debug`.
    pub fn init(path: Option<&Path>, format: LogFormat, debug: bool) -> anyhow::Result<Log> {
        let file = match path {
            Some(p) => Some(Arc::new(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("opening log file {}: {e}", p.display()))?,
            ))),
            None => None,
        };
        let level = if debug {
            Level::DEBUG
        } else if file.is_some() {
            Level::INFO
        } else {
            Level::WARN
        };
        let builder = tracing_subscriber::fmt()
            .with_max_level(level)
            .event_format(Formatter(format));
        let installed = match &file {
            Some(f) => {
                let f = f.clone();
                builder
                    .with_writer(move || LockedFile(f.clone()))
                    .try_init()
            }
            None => builder.with_writer(std::io::stderr).try_init(),
        };
        // A second init (tests) keeps the first subscriber.
        drop(installed);
        Ok(Log { file, format })
    }

    /// Records the command's error in the log file (stderr gets it from main).
    pub fn error(&self, msg: &str) {
        if let Some(f) = &self.file {
            if let Ok(mut f) = f.lock() {
                let _ = writeln!(f, "{}", line(self.format, "error", msg, &[]));
            }
        }
    }
}

struct LockedFile(Arc<Mutex<File>>);

impl Write for LockedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut f) => f.write(buf),
            Err(_) => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
