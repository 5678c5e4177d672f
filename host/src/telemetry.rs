//! Logs, traces and metrics the way Spin does them (spin-reference §8): the runner's own logs
//! are JSON lines on stderr filtered by `RUST_LOG`; OpenTelemetry export is switched on only by
//! the standard `OTEL_*` variables, so with none set there is no exporter, no tracing layer and
//! no span is even created on the request path.
//!
//! - traces: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set
//! - metrics: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set
//! - `OTEL_SDK_DISABLED` (non-empty) turns both off; the protocol is `http/protobuf` by default,
//!   `http/json` via `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL` (gRPC is not built in).
//! - W3C `traceparent` is extracted from inbound requests and injected into outbound and
//!   chained ones.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

static TRACING_ON: OnceLock<bool> = OnceLock::new();
static REQUEST_COUNT: OnceLock<Counter<u64>> = OnceLock::new();

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn disabled() -> bool {
    env_set("OTEL_SDK_DISABLED")
}

/// Whether spans are exported; request-path code creates spans only when this is true.
pub fn tracing_enabled() -> bool {
    *TRACING_ON.get().unwrap_or(&false)
}

/// Keeps the exporters alive; dropping it flushes what is buffered.
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            let _ = tracer.shutdown();
        }
        if let Some(meter) = self.meter.take() {
            let _ = meter.shutdown();
        }
    }
}

fn resource() -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder();
    // Spin's rule: OTEL_SERVICE_NAME, then OTEL_RESOURCE_ATTRIBUTES, then "spin". The SDK's
    // builder already reads both variables; only the fallback is ours.
    let named = env_set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attrs| attrs.contains("service.name="));
    let builder = if named {
        builder
    } else {
        builder.with_service_name("spin")
    };
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Installs the global subscriber (JSON logs, plus the OpenTelemetry layer when traces are on)
/// and the meter provider when metrics are on. Call once, inside the tokio runtime.
pub fn init() -> TelemetryGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr);
    let traces_on = !disabled()
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    let metrics_on = !disabled()
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || env_set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"));

    let mut guard = TelemetryGuard {
        tracer: None,
        meter: None,
    };
    let mut problems = Vec::new();
    let otel_layer = if traces_on {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource())
                    .build();
                let tracer = provider.tracer("bazaar");
                guard.tracer = Some(provider);
                opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
                Some(tracing_opentelemetry::layer().with_tracer(tracer))
            }
            Err(err) => {
                problems.push(format!("trace exporter: {err}"));
                None
            }
        }
    } else {
        None
    };
    // The OpenTelemetry layer sees every span; the filter applies to the log output only.
    let _ = tracing_subscriber::registry()
        .with(otel_layer)
        .with(logs.with_filter(filter))
        .try_init();
    let _ = TRACING_ON.set(guard.tracer.is_some());

    if metrics_on {
        match opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkMeterProvider::builder()
                    .with_periodic_exporter(exporter)
                    .with_resource(resource())
                    .build();
                opentelemetry::global::set_meter_provider(provider.clone());
                let meter = opentelemetry::global::meter("bazaar");
                let _ = REQUEST_COUNT.set(
                    meter
                        .u64_counter("spin.request_count")
                        .with_description("Requests handled, by trigger and component")
                        .build(),
                );
                guard.meter = Some(provider);
            }
            Err(err) => problems.push(format!("metric exporter: {err}")),
        }
    }
    for problem in problems {
        tracing::error!(error = %problem, "OpenTelemetry export disabled");
    }
    guard
}

use tracing_subscriber::Layer as _;

/// Counts one handled request or message (`spin.request_count`). A no-op when metrics are off.
pub fn record_request(trigger_type: &'static str, app_id: &str, component_id: &str) {
    if let Some(counter) = REQUEST_COUNT.get() {
        counter.add(
            1,
            &[
                KeyValue::new("trigger_type", trigger_type),
                KeyValue::new("app_id", app_id.to_string()),
                KeyValue::new("component_id", component_id.to_string()),
            ],
        );
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(key),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The server span of an inbound request, parented on the caller's `traceparent`.
pub fn server_span(method: &http::Method, path: &str, headers: &http::HeaderMap) -> tracing::Span {
    if !tracing_enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "http_request",
        otel.name = format!("{method} {path}"),
        otel.kind = "server",
        http.request.method = %method,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
    span
}

/// The span around one component execution, named like Spin's.
pub fn execute_span(component_id: &str) -> tracing::Span {
    if !tracing_enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!("execute_wasm", otel.name = format!("execute_wasm_component {component_id}"), component_id = %component_id)
}

/// A client span for an outbound request; its context is injected as `traceparent`.
pub fn client_span(
    method: &http::Method,
    url: &str,
    server_address: &str,
    headers: &mut http::HeaderMap,
) -> tracing::Span {
    if !tracing_enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "outbound_http",
        otel.name = format!("{method}"),
        otel.kind = "client",
        http.request.method = %method,
        url.full = %url,
        server.address = %server_address,
        http.response.status_code = tracing::field::Empty,
    );
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    span
}

/// The span of one Redis message delivered to one component, named like Spin's.
pub fn redis_message_span(component_id: &str, channel: &str) -> tracing::Span {
    if !tracing_enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "spin_trigger_redis.handle_message",
        otel.name = format!("execute_wasm_component {component_id}"),
        component_id = %component_id,
        messaging.destination.name = %channel,
    )
}
