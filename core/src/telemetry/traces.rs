//! Traces: `tracing` spans around a task's creation, each step (from its
//! claim to its recorded outcome), the handler's run and the outcome's
//! statement, and the advances the sweep and operators make; exported over
//! OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, as the service
//! `OTEL_SERVICE_NAME` (default `tasker_core`).
//!
//! The spans are at TRACE level: with no exporter (and a log filter below
//! trace) they are disabled at their call sites and cost a cached check.
//! The exporter's layer ([`otlp_layer`]) takes tasker_core's spans only
//! (never log events), whatever the log filter says.
//!
//! A task carries its trace across processes: the W3C `traceparent` it was
//! created with (or, when the caller gave none and the creation was traced
//! here, that of its `create_task` span) is stored on its row, and every
//! step's span, in whichever worker runs it, is its child. A task with no
//! traceparent still has one trace: its id is the task's uuid.
//!
//! The exporter's HTTP client is a small one of our own (plain `http://`,
//! HTTP/1.1, one connection per export, on the batch processor's own
//! thread): no hyper, reqwest or TLS stack is built for it. A collector
//! reached over TLS is reached through a local collector or sidecar.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
use uuid::Uuid;

use crate::error::{Error, ErrorKind, Result};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How long one export may take (connect, send, answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a collector's answer read.
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// The layer that exports tasker_core's spans, when an OTLP endpoint is
/// configured; None otherwise. Add it to the process's subscriber (the
/// `tasker-orchestrator` binary and the Ruby extension do).
pub fn otlp_layer<S>() -> Result<Option<Box<dyn Layer<S> + Send + Sync + 'static>>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let configured = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if configured("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let provider = match PROVIDER.get() {
        Some(provider) => provider.clone(),
        None => {
            // The endpoint is read from the environment by the exporter
            // (`<OTEL_EXPORTER_OTLP_ENDPOINT>/v1/traces`).
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(PlainHttp)
                .with_protocol(Protocol::HttpBinary)
                .build()
                .map_err(|e| Error::new(ErrorKind::Config, format!("OTLP trace exporter: {e}")))?;
            let service = configured("OTEL_SERVICE_NAME").unwrap_or_else(|| "tasker_core".to_owned());
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
                .build();
            PROVIDER.get_or_init(|| provider).clone()
        }
    };
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tasker_core")).with_filter(TaskerSpans);
    Ok(Some(Box::new(layer)))
}

/// The exporter's filter: tasker_core's spans, no events. Its interest is
/// "sometimes", never "always": with "always" a span's macro skips the
/// per-call `enabled` check, and the per-layer filter state the registry
/// reads when the span is created can be a stale one left by another
/// callsite's check (the span was then created without this layer, with
/// no trace context: seen with a filter_fn, whose interest is "always").
struct TaskerSpans;

impl TaskerSpans {
    fn wanted(meta: &tracing::Metadata<'_>) -> bool {
        meta.is_span() && meta.target().starts_with("tasker_core")
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for TaskerSpans {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        Self::wanted(meta)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if Self::wanted(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}

/// Sends the spans finished so far (a process about to exit calls it).
pub fn flush_traces() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.force_flush() {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }
}

/// A W3C traceparent's parts, if `text` is one (version 00).
pub(crate) fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let parts: Vec<&str> = text.trim().split('-').collect();
    let [version, trace, span, flags] = parts.as_slice() else { return None };
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if *version != "00" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

/// Checks a traceparent given by a caller.
pub(crate) fn check_traceparent(text: &str) -> Result<()> {
    match parse_traceparent(text) {
        Some(_) => Ok(()),
        None => Err(Error::new(
            ErrorKind::Validation,
            format!(
                "traceparent {text:?} is not a W3C traceparent (00-<32 hex trace id>-<16 hex parent id>-<2 hex \
                 flags>, ids not all zero)"
            ),
        )),
    }
}

/// Makes `span` a child of the caller's span that `traceparent` names.
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if let Some(remote) = parse_traceparent(traceparent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Makes a step's `span` a child of its task's trace: the stored
/// traceparent, else a trace whose id is the task's uuid.
pub(crate) fn continue_task_trace(span: &tracing::Span, traceparent: Option<&str>, task_uuid: Uuid) {
    if span.is_disabled() {
        return;
    }
    let remote = traceparent.and_then(parse_traceparent).unwrap_or_else(|| {
        let bytes = *task_uuid.as_bytes();
        let mut low = [0u8; 8];
        low.copy_from_slice(&bytes[8..]);
        let span_id =
            if low == [0; 8] { SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]) } else { SpanId::from_bytes(low) };
        SpanContext::new(TraceId::from_bytes(bytes), span_id, TraceFlags::SAMPLED, true, TraceState::default())
    });
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The traceparent naming `span`, when it is exported.
pub(crate) fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!("00-{}-{}-{:02x}", span_context.trace_id(), span_context.span_id(), span_context.trace_flags().to_u8())
    })
}

/// The exporter's HTTP client: one `POST` per export over a fresh
/// connection, blocking (the batch processor runs exports on a thread of
/// its own, outside any async runtime).
#[derive(Debug, Clone, Copy)]
struct PlainHttp;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for PlainHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> std::result::Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        Ok(post(&request)?)
    }
}

fn post(request: &http::Request<bytes::Bytes>) -> std::io::Result<http::Response<bytes::Bytes>> {
    let uri = request.uri();
    if uri.scheme_str() != Some("http") {
        return Err(std::io::Error::other(format!(
            "OTLP endpoint {uri}: only http:// is supported (reach a TLS collector through a local one)"
        )));
    }
    let host = uri.host().ok_or_else(|| std::io::Error::other(format!("OTLP endpoint {uri} has no host")))?;
    let port = uri.port_u16().unwrap_or(80);
    let address = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("OTLP endpoint {uri}: {host} does not resolve")))?;
    let mut stream = TcpStream::connect_timeout(&address, EXPORT_TIMEOUT)?;
    stream.set_read_timeout(Some(EXPORT_TIMEOUT))?;
    stream.set_write_timeout(Some(EXPORT_TIMEOUT))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!("{} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n", request.method());
    for (name, value) in request.headers() {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", request.body().len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(request.body())?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("the OTLP collector's answer has no end of head"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("the OTLP collector answered {head:?}")))?;
    let mut body = answer[split + 4..].to_vec();
    if head.lines().any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked") {
        body = dechunk(&body);
    }
    let mut response = http::Response::builder().status(status);
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            response = response.header(name.trim(), value.trim());
        }
    }
    response.body(bytes::Bytes::from(body)).map_err(std::io::Error::other)
}

/// A chunked body's data.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        body = &body[end + 2..];
        if size == 0 || body.len() < size {
            break;
        }
        data.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_parsed_and_checked() {
        let context = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
            assert_eq!(check_traceparent(bad).unwrap_err().kind(), ErrorKind::Validation);
        }
    }

    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"), b"Wikipedia");
        assert_eq!(dechunk(b"0\r\n\r\n"), b"");
    }
}
