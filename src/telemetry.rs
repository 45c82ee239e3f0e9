//! Logging and tracing for the `snapgate` command: the log on stderr (`log.format`,
//! `log.level`), and, with `--features otel` and `log.otlp_endpoint` set, every span exported
//! to an OpenTelemetry collector over OTLP/HTTP (protobuf).
//!
//! Exported: the `request` span of each HTTP request (method, route, request id, team, job id),
//! a `store.<operation>` span per store call (job id where there is one), the worker's
//! `dispatch` span (job id) and an `mps.call` span per MPS call (action, `mps_request_id`, code,
//! HTTP status), with INFO and higher events as span events. The log keeps its own filter: the
//! DEBUG-level store spans cost nothing unless one of the two wants them.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Settings;

/// Held until the process ends: [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "call shutdown() before exit, or buffered spans are lost"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends what is buffered and stops the exporter (a no-op without export).
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: OTLP export did not finish: {e}");
            }
        }
    }
}

/// Makes every panic an ERROR event in the log's own format (JSON lines stay parseable), with
/// where it happened and its message; axum's `CatchPanicLayer` keeps the message out of the HTTP
/// answer. Replaces the default hook (which prints to stderr outside the log).
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(location, panic = payload, "panic");
    }));
}

/// Installs the process's subscriber: the log, and the OTLP exporter when configured.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let log = &settings.log;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colours only for a person at a terminal: not in a file, a pipe or a container log.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // Logs go to stderr: stdout carries command output (e.g. `key create` JSON).
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = if log.format == "json" {
        fmt.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (otel, telemetry) = otel_layer(settings)?;
    tracing_subscriber::registry().with(otel).with(fmt).init();
    Ok(telemetry)
}

#[cfg(not(feature = "otel"))]
fn otel_layer(
    settings: &Settings,
) -> anyhow::Result<(Option<tracing_subscriber::layer::Identity>, Telemetry)> {
    anyhow::ensure!(
        settings.log.otlp_endpoint.is_empty(),
        "log.otlp_endpoint is set, but this snapgate was built without OpenTelemetry export: \
         build with `cargo build --release --features otel`, or unset it"
    );
    Ok((None, Telemetry {}))
}

#[cfg(feature = "otel")]
fn otel_layer<S>(
    settings: &Settings,
) -> anyhow::Result<(Option<impl Layer<S> + Send + Sync>, Telemetry)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use anyhow::Context;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use tracing::Level;

    let log = &settings.log;
    if log.otlp_endpoint.is_empty() {
        return Ok((None, Telemetry { provider: None }));
    }
    let url = format!("{}/v1/traces", log.otlp_endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&url)
        .build()
        .with_context(|| format!("log.otlp_endpoint: cannot export to {url}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(log.otlp_service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("snapgate");
    // snapgate's spans down to DEBUG (the store calls), others' from INFO; events from INFO.
    let filter = tracing_subscriber::filter::filter_fn(|m| {
        if m.is_span() && m.target().starts_with("snapgate") {
            *m.level() <= Level::DEBUG
        } else {
            *m.level() <= Level::INFO
        }
    });
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter);
    Ok((
        Some(layer),
        Telemetry {
            provider: Some(provider),
        },
    ))
}
