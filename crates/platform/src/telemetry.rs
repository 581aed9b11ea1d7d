//! Logging: JSON lines (or pretty text on a terminal) with the fields of the enclosing spans, so every line
//! written while serving a request carries its `request_id`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};

/// The metadata key (and HTTP header) that carries the request id between the gateway and the services.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Installs the global log subscriber. Calling it again (tests do) is harmless: the first one stays.
pub fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = settings.log_format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
