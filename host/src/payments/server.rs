//! The payment host's HTTP server: parses requests, applies the caller identity the Spin
//! `payments` component forwards, and renders answers (problem+json for errors). All payment
//! logic is in `core`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::core::{Answer, Caller, Core, Problem};

/// JSON bodies are small; card data and webhook events fit comfortably.
pub const MAX_BODY: usize = 64 * 1024;

pub struct Server {
    pub core: Arc<Core>,
    pub internal_token: Option<String>,
}

fn respond(status: u16, body: &Value, request_id: &str, problem: bool) -> Response<Full<Bytes>> {
    let content_type = if problem {
        "application/problem+json"
    } else {
        "application/json"
    };
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .header("x-request-id", request_id)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts")
}

fn problem(p: &Problem, request_id: &str, path: &str) -> Response<Full<Bytes>> {
    let mut body = p.to_json();
    body["instance"] = json!(path);
    respond(p.status, &body, request_id, true)
}

fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Server {
    fn caller(&self, req: &Request<Incoming>, request_id: &str) -> Result<Caller, Problem> {
        let user_id = header(req, "x-bazaar-user-id")
            .filter(|u| !u.is_empty() && u.len() <= 128)
            .ok_or_else(|| Problem::new(401, "Unauthorized", "authentication is required"))?;
        Ok(Caller {
            request_id: request_id.to_string(),
            user_id: user_id.to_string(),
            admin: header(req, "x-bazaar-role") == Some("admin"),
            client_addr: header(req, "x-bazaar-client-addr")
                .filter(|a| a.len() <= 64)
                .map(str::to_string),
        })
    }

    fn internal_token_ok(&self, req: &Request<Incoming>) -> bool {
        use subtle::ConstantTimeEq as _;
        match &self.internal_token {
            None => true,
            Some(expected) => header(req, "x-bazaar-payments-token")
                .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes()))),
        }
    }

    async fn read_body(
        req: Request<Incoming>,
        json: bool,
    ) -> Result<(Vec<(String, String)>, Bytes), Problem> {
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), v.to_string()))
            })
            .collect();
        if let Some(len) = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            // Hopelessly large declared bodies are refused unread; moderately oversized ones are
            // read up to the limit first so the client sees the 413 instead of a reset.
            if len > 16 * MAX_BODY {
                return Err(Problem::new(
                    413,
                    "Content Too Large",
                    format!("the body exceeds {MAX_BODY} bytes"),
                ));
            }
        }
        if json {
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let media = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if media != "application/json"
                && !(media.starts_with("application/") && media.ends_with("+json"))
            {
                return Err(Problem::new(
                    415,
                    "Unsupported Media Type",
                    "the body must be application/json",
                ));
            }
        }
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| {
                Problem::new(
                    413,
                    "Content Too Large",
                    format!("the body exceeds {MAX_BODY} bytes"),
                )
            })?
            .to_bytes();
        Ok((headers, body))
    }

    async fn json_body(req: Request<Incoming>) -> Result<Value, Problem> {
        let (_, body) = Self::read_body(req, true).await?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| Problem::new(400, "Bad Request", "the body is not valid JSON"))?;
        if !value.is_object() {
            return Err(Problem::validation(vec![(
                "body".into(),
                "must be a JSON object".into(),
            )]));
        }
        Ok(value)
    }

    fn idempotency_key(req: &Request<Incoming>) -> Result<Option<String>, Problem> {
        match req.headers().get("idempotency-key") {
            None => Ok(None),
            Some(v) => match v.to_str() {
                Ok(k) if (1..=255).contains(&k.len()) => Ok(Some(k.to_string())),
                _ => Err(Problem::new(
                    400,
                    "Bad Request",
                    "Idempotency-Key must be 1 to 255 visible characters",
                )),
            },
        }
    }

    async fn route(&self, req: Request<Incoming>, request_id: &str) -> Result<Answer, Problem> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["health", "live"]) => Ok(Answer {
                status: 200,
                body: json!({"status": "ok"}),
            }),
            (Method::GET, ["health", "ready"]) => match self.core.store.ping() {
                Ok(()) => Ok(Answer {
                    status: 200,
                    body: json!({"status": "ok", "providers": self.core.plugins.names()}),
                }),
                Err(_) => Err(Problem::new(
                    503,
                    "Service Unavailable",
                    "the payment database does not answer",
                )),
            },
            (Method::POST, ["webhooks", "payments", provider]) => {
                let provider = provider.to_string();
                let (headers, body) = Self::read_body(req, false).await?;
                self.core.webhook(&provider, headers, body.to_vec()).await
            }
            (_, ["api", "v1", "payments", ..]) => {
                if !self.internal_token_ok(&req) {
                    return Err(Problem::new(
                        401,
                        "Unauthorized",
                        "missing or wrong internal token",
                    ));
                }
                let caller = self.caller(&req, request_id)?;
                let key = Self::idempotency_key(&req)?;
                match (method, &segments[3..]) {
                    (Method::POST, ["methods"]) => {
                        let body = Self::json_body(req).await?;
                        // Optional Idempotency-Key: a retried save answers the first token.
                        let fingerprint = self.core.method_request_fingerprint(&body);
                        self.core
                            .idempotent(
                                format!("methods:{}", caller.user_id),
                                key.as_deref(),
                                &["methods", &fingerprint],
                                |_| async { self.core.tokenize(&caller, &body) },
                            )
                            .await
                    }
                    (Method::POST, []) => {
                        let Some(key) = key else {
                            return Err(Problem::new(
                                400,
                                "Bad Request",
                                "the Idempotency-Key header is required",
                            ));
                        };
                        let body = Self::json_body(req).await?;
                        let canonical = body.to_string();
                        self.core
                            .idempotent(
                                format!("create:{}", caller.user_id),
                                Some(&key),
                                &["create", &canonical],
                                |takeover| self.core.create(&caller, &body, takeover),
                            )
                            .await
                    }
                    (Method::GET, [id]) => self.core.get(id, &caller),
                    (Method::GET, [id, "events"]) => self.core.events(id, &caller),
                    (Method::POST, [id, action @ ("capture" | "void" | "refund")]) => {
                        let (id, action) = (id.to_string(), action.to_string());
                        let (_, raw) = Self::read_body(req, false).await?;
                        let body: Value = if raw.is_empty() {
                            json!({})
                        } else {
                            serde_json::from_slice(&raw).map_err(|_| {
                                Problem::new(400, "Bad Request", "the body is not valid JSON")
                            })?
                        };
                        if !body.is_object() {
                            return Err(Problem::validation(vec![(
                                "body".into(),
                                "must be a JSON object".into(),
                            )]));
                        }
                        let canonical = body.to_string();
                        // Scoped to the caller too: another user's key can neither replay this
                        // payment's answer nor reveal that it exists.
                        let scope = format!("{action}:{}:{id}", caller.user_id);
                        // A takeover simply runs the operation again: the ledger checks the
                        // payment's current state first.
                        let run = |_takeover| async {
                            match action.as_str() {
                                "capture" => self.core.capture(&id, &caller, &body).await,
                                "void" => self.core.void(&id, &caller).await,
                                _ => self.core.refund(&id, &caller, &body, key.as_deref()).await,
                            }
                        };
                        self.core
                            .idempotent(scope, key.as_deref(), &[&action, &canonical], run)
                            .await
                    }
                    (_, [] | ["methods"] | [_] | [_, "events" | "capture" | "void" | "refund"]) => {
                        Err(Problem::new(
                            405,
                            "Method Not Allowed",
                            "method not allowed on this route",
                        ))
                    }
                    _ => Err(Problem::new(404, "Not Found", "no such route")),
                }
            }
            _ => Err(Problem::new(404, "Not Found", "no such route")),
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let request_id = header(&req, "x-request-id")
            .filter(|id| valid_request_id(id))
            .map(str::to_string)
            .unwrap_or_else(|| super::core::new_id("req"));
        let path = req.uri().path().to_string();
        let method = req.method().to_string();
        let span = tracing::info_span!("payments_request", request_id = %request_id, method = %method, path = %path);
        async move {
            let started = std::time::Instant::now();
            let response = match self.route(req, &request_id).await {
                Ok(answer) => {
                    let is_problem = answer.body.get("status").is_some_and(|s| s.is_u64())
                        && answer.status >= 400;
                    respond(answer.status, &answer.body, &request_id, is_problem)
                }
                Err(p) => problem(&p, &request_id, &path),
            };
            tracing::info!(
                request_id = %request_id,
                method = %method,
                path = %path,
                status = response.status().as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "request handled"
            );
            Ok(response)
        }
        .instrument(span)
        .await
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (up to `drain`).
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
                    Ok(x) => x,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let server = server.clone();
                let service = hyper::service::service_fn(move |req| server.clone().handle(req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("payment host drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!("payment host drain timed out"),
    }
    Ok(())
}
