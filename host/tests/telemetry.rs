//! OpenTelemetry like Spin: off unless `OTEL_*` says otherwise; when on, W3C trace context
//! crosses chained calls and spans/metrics reach an OTLP endpoint (here a capture server).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, get_json, runner};
use serde_json::Value;

const CHAIN_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "traced"
[[trigger.http]]
route = "/front/..."
component = "front"
[[trigger.http]]
route = { private = true }
component = "back"
[component.front]
source = "{probe}"
allowed_outbound_hosts = ["http://back.spin.internal"]
[component.back]
source = "{probe}"
"#;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CHAIN_URL: &str = "/front?probe=outbound&url=http%3A%2F%2Fback.spin.internal%2Fhello";

/// Collects the bodies POSTed to it: a stand-in OTLP/HTTP collector on loopback.
async fn capture_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            store
                                .lock()
                                .unwrap()
                                .push((path, String::from_utf8_lossy(&body).into_owned()));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn trace_context_crosses_chained_calls_and_spans_are_exported() {
    let (collector, seen) = capture_server().await;
    let mut app = runner(CHAIN_APP)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://{collector}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .start();
    let response = client()
        .get(app.url(CHAIN_URL))
        .header("traceparent", format!("00-{TRACE_ID}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    let callee: Value =
        serde_json::from_str(answer["body"].as_str().expect("chained call answered")).unwrap();
    let traceparent = callee["headers"]["traceparent"]
        .as_str()
        .expect("traceparent injected into the chained request");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts[1], TRACE_ID,
        "the inbound trace continues into the chained call"
    );
    assert_ne!(
        parts[2], "b7ad6b7169203331",
        "the chained call has its own parent span"
    );

    // SIGTERM flushes the exporters.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = app.child.wait();
        app
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (traces, metrics) = loop {
        let seen = seen.lock().unwrap().clone();
        let traces: String = seen
            .iter()
            .filter(|(p, _)| p == "/v1/traces")
            .map(|(_, b)| b.as_str())
            .collect();
        let metrics: String = seen
            .iter()
            .filter(|(p, _)| p == "/v1/metrics")
            .map(|(_, b)| b.as_str())
            .collect();
        if (traces.contains("execute_wasm_component back")
            && metrics.contains("spin.request_count"))
            || Instant::now() > deadline
        {
            break (traces, metrics);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        traces.contains(TRACE_ID),
        "exported spans carry the inbound trace id: {traces}"
    );
    assert!(traces.contains("execute_wasm_component front"), "{traces}");
    assert!(traces.contains("execute_wasm_component back"), "{traces}");
    assert!(
        metrics.contains("spin.request_count") && metrics.contains("trigger_type"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_otel_variables_nothing_is_injected() {
    let app = runner(CHAIN_APP).start();
    let (_, answer) = get_json(&app.url(CHAIN_URL)).await;
    let callee: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert!(callee["headers"].get("traceparent").is_none(), "{callee}");
}
