//! The `magpie` command's logs: `tracing` events on stderr, filtered by `MAGPIE_LOG`
//! (an `EnvFilter` directive such as `magpie=debug,warn`; default `warn`), as text or
//! one JSON object per line (`--log-format json`). Colour codes only when stderr is a
//! terminal, so log files and collectors get plain text.

use std::io::IsTerminal;

use clap::ValueEnum;

/// The environment variable holding the log filter.
pub(crate) const LOG_ENV: &str = "MAGPIE_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, span).
    Json,
}

/// Installs the process's subscriber. A malformed `MAGPIE_LOG` is reported on stderr and
/// the default filter is used.
pub(crate) fn init(format: LogFormat) {
    let filter = match tracing_subscriber::EnvFilter::try_from_env(LOG_ENV) {
        Ok(f) => f,
        Err(e) => {
            if std::env::var_os(LOG_ENV).is_some() {
                eprintln!("warning: {LOG_ENV} is not a valid log filter ({e}); using \"warn\"");
            }
            tracing_subscriber::EnvFilter::new("warn")
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
