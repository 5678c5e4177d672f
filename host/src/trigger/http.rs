//! The HTTP trigger: Spin's routing and request shape (spin-reference §2), in-process service
//! chaining (§3.1), a fresh instance per request, plus what Bazaar adds: a cap on concurrently
//! running instances with bounded queueing (503 + `Retry-After` instead of a hard failure) and
//! graceful draining on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bazaar_manifest::{HttpRoute, StaticResponse};
use bazaar_routing::routes::{self, RouteMatch, Router};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{Error as HttpError, WasiBody, WasiHttpView as _};

use crate::app::{App, AppComponent};
use crate::factors::outbound_http::{BoxFuture, ServiceChaining};

/// Serving options beyond the app itself.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub listen: SocketAddr,
    /// Instances allowed to run at once for inbound requests.
    pub max_concurrent_instances: usize,
    /// How long a request over the cap waits for a slot before it gets 503.
    pub queue_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// Longest an instance may run (including streaming its body) before it is stopped;
    /// `None` = unlimited, as in Spin for WASIp2 components.
    pub request_timeout: Option<Duration>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            max_concurrent_instances: 256,
            queue_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            request_timeout: None,
        }
    }
}

#[derive(Debug, Clone)]
enum RouteTarget {
    Component(String),
    Static(StaticResponse),
}

pub type ResponseBody = WasiBody;

/// The running HTTP trigger. Held in an `Arc`; instances reach it back through a `Weak` for
/// service chaining.
pub struct HttpTrigger {
    app: Arc<App>,
    router: Router<RouteTarget>,
    /// Components reachable by chaining: every HTTP-triggered component, public or private.
    http_components: std::collections::BTreeSet<String>,
    options: HttpOptions,
    local_addr: SocketAddr,
    limiter: Arc<Semaphore>,
    this: Weak<HttpTrigger>,
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(
        Empty::new()
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

impl HttpTrigger {
    /// Builds the router (errors on invalid routes) and binds nothing yet.
    pub fn new(
        app: Arc<App>,
        options: HttpOptions,
        local_addr: SocketAddr,
    ) -> anyhow::Result<Arc<Self>> {
        let mut public = Vec::new();
        let mut http_components = std::collections::BTreeSet::new();
        for trigger in &app.manifest.http_triggers {
            if let Some(id) = &trigger.component {
                http_components.insert(id.clone());
            }
            let target = match (&trigger.component, &trigger.static_response) {
                (Some(id), _) => RouteTarget::Component(id.clone()),
                (None, Some(response)) => RouteTarget::Static(response.clone()),
                (None, None) => anyhow::bail!(
                    "HTTP trigger `{}` has neither a component nor a static_response",
                    trigger.id
                ),
            };
            if let HttpRoute::Path(route) = &trigger.route {
                public.push((route.clone(), target));
            }
        }
        let (router, warnings) = Router::build(public)?;
        for warning in warnings {
            tracing::error!(warning = %warning, "route configuration");
        }
        let limiter = Arc::new(Semaphore::new(options.max_concurrent_instances));
        Ok(Arc::new_cyclic(|this| Self {
            app,
            router,
            http_components,
            options,
            local_addr,
            limiter,
            this: this.clone(),
        }))
    }

    /// `(route, component id or "static response")` for every public route, in routing order.
    pub fn route_table(&self) -> Vec<(String, String)> {
        self.app.public_routes()
    }

    /// Accepts connections until `shutdown` resolves, then stops accepting and waits up to the
    /// drain timeout for in-flight requests.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, client) = match accepted {
                        Ok(pair) => pair,
                        Err(err) => {
                            // Typically EMFILE: retrying at once would spin; give in-flight
                            // requests a moment to release descriptors.
                            tracing::warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let trigger = self.clone();
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let trigger = trigger.clone();
                        async move { Ok::<_, Infallible>(trigger.handle_inbound(req, client).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!(
            drain_timeout_s = self.options.drain_timeout.as_secs_f64(),
            "shutting down: no longer accepting, draining in-flight requests"
        );
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections drained"),
            () = tokio::time::sleep(self.options.drain_timeout) => tracing::warn!("drain timeout reached; closing remaining connections"),
        }
        Ok(())
    }

    async fn handle_inbound(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        strip_forbidden_headers(&mut req);
        // Spin takes the authority from `Host`; an absolute-form request line
        // (`GET http://other/ HTTP/1.1`) must not smuggle a different one past the check above.
        let origin_form = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        if let Ok(uri) = http::Uri::try_from(origin_form) {
            *req.uri_mut() = uri;
        }
        let span = crate::telemetry::server_span(&method, &path, req.headers());
        let (response, component) = self
            .route_inbound(req, client)
            .instrument(span.clone())
            .await;
        span.record("http.response.status_code", response.status().as_u16());
        if let Some(id) = &component {
            crate::telemetry::record_request("http", &self.app.manifest.application.name, id);
        }
        tracing::info!(
            method = %method,
            path = %path,
            status = response.status().as_u16(),
            component_id = component.as_deref().unwrap_or(""),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    async fn route_inbound(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> (Response<ResponseBody>, Option<String>) {
        let path = req.uri().path().to_string();
        if routes::is_reserved(&path) {
            return (self.well_known(&path), None);
        }
        let Some(matched) = self.router.route(&path) else {
            return (empty(StatusCode::NOT_FOUND), None);
        };
        let component_id = match matched.target() {
            RouteTarget::Static(response) => return (static_response(response), None),
            RouteTarget::Component(id) => id.clone(),
        };
        let Some(component) = self.app.components.get(&component_id).cloned() else {
            return (empty(StatusCode::INTERNAL_SERVER_ERROR), Some(component_id));
        };
        let permit = match tokio::time::timeout(
            self.options.queue_timeout,
            self.limiter.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                tracing::warn!(component_id = %component_id, "concurrency cap reached; answering 503");
                let mut response = empty(StatusCode::SERVICE_UNAVAILABLE);
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return (response, Some(component_id));
            }
        };
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned);
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let full_url = routes::full_url("http", host.as_deref(), &path_and_query);
        let spin_headers = routes::spin_headers(&matched, &full_url, &client.to_string());
        let req = req.map(|body| body.map_err(HttpError::from).boxed_unsync());
        (
            self.execute(component, req, spin_headers, Some(permit))
                .await,
            Some(component_id),
        )
    }

    fn well_known(&self, path: &str) -> Response<ResponseBody> {
        match path.trim_end_matches('/') {
            "/.well-known/spin/health" => full(StatusCode::OK, "text/plain", "OK"),
            "/.well-known/spin/info" => {
                let app = &self.app.manifest.application;
                let info = serde_json::json!({ "name": app.name, "version": app.version, "oci_image_digest": null });
                full(StatusCode::OK, "application/json", info.to_string())
            }
            _ => empty(StatusCode::NOT_FOUND),
        }
    }

    /// Runs one fresh instance of `component` on `req`. Never fails: a trap, a missing response
    /// or an instantiation error is logged with the component id and answered with 500.
    async fn execute(
        &self,
        component: Arc<AppComponent>,
        mut req: Request<WasiBody>,
        spin_headers: Vec<(HeaderName, HeaderValue)>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Response<ResponseBody> {
        for (name, value) in spin_headers {
            req.headers_mut().insert(name, value);
        }
        if req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST) {
            // HTTP/1.0 clients may omit Host; wasi:http needs an authority.
            let authority = HeaderValue::from_str(&self.local_addr.to_string())
                .unwrap_or(HeaderValue::from_static("localhost"));
            req.headers_mut().insert(http::header::HOST, authority);
        }
        match self.start_instance(&component, req, permit).await {
            Ok(response) => response,
            Err(err) => {
                tracing::error!(component_id = %component.id, error = format!("{err:#}"), "component failed to handle the request");
                empty(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    async fn start_instance(
        &self,
        component: &Arc<AppComponent>,
        req: Request<WasiBody>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> anyhow::Result<Response<ResponseBody>> {
        let pre = component
            .http
            .clone()
            .context("component does not export wasi:http/incoming-handler")?;
        let chaining: Option<Arc<dyn ServiceChaining>> =
            self.this.upgrade().map(|t| t as Arc<dyn ServiceChaining>);
        let mut store = self.app.new_store(component, chaining)?;
        let (sender, receiver) = oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let outparam = store.data_mut().http().new_response_outparam(sender)?;
        let component_id = component.id.clone();
        // The instance runs in its own task: the response head comes back through the outparam
        // while the guest may keep streaming the body. The permit is released when it finishes.
        let span = crate::telemetry::execute_span(&component_id);
        let timeout = self.options.request_timeout;
        let task = tokio::spawn(
            async move {
                let _permit = permit;
                let run = async {
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, request, outparam)
                        .await
                };
                // Guests yield at every epoch tick, so the timer fires even for a guest stuck in
                // a loop; dropping the call stops the instance.
                match timeout {
                    Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                        Err(wasmtime::Error::msg(format!(
                            "instance exceeded the request timeout of {limit:?}"
                        )))
                    }),
                    None => run.await,
                }
            }
            .instrument(span),
        );
        // If our caller goes away before the response head (client disconnect), the instance is
        // stopped and its concurrency permit released instead of running on unobserved.
        let mut task = AbortOnDrop(Some(task));
        match receiver.await {
            Ok(Ok(response)) => {
                let task = task.disarm();
                // Surface traps that happen after the head was sent (the body is then truncated).
                tokio::spawn(async move {
                    if let Ok(Err(err)) = task.await {
                        tracing::error!(component_id = %component_id, error = format!("{err:#}"), "component failed while streaming its response");
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => anyhow::bail!("component answered with error code {code:?}"),
            Err(_) => match task.disarm().await {
                Ok(Err(err)) => Err(err.into()),
                Ok(Ok(())) => anyhow::bail!("component returned without setting a response"),
                Err(join) => Err(anyhow::anyhow!("instance task failed: {join}")),
            },
        }
    }
}

impl HttpTrigger {
    /// Runs a request in-process, without the network or the concurrency cap: how the job
    /// scheduler calls job routes. With `component`, the request goes straight to that
    /// component with Spin's synthetic `/...` match (like a chained call, so private components
    /// work); without, it is routed like an inbound request.
    pub async fn invoke_in_process(
        &self,
        component: Option<&str>,
        method: http::Method,
        path_and_query: &str,
    ) -> Response<ResponseBody> {
        let path = path_and_query.split('?').next().unwrap_or("/").to_string();
        let build = |authority: &str| {
            Request::builder()
                .method(method.clone())
                .uri(format!("http://{authority}{path_and_query}"))
                .header("x-bazaar-job", "1")
                .body(
                    Empty::new()
                        .map_err(|never: Infallible| match never {})
                        .boxed_unsync(),
                )
        };
        let full_url = routes::full_url("http", None, path_and_query);
        let (component_id, spin_headers, request) = match component {
            Some(id) => {
                let request = build(&format!("{id}.spin.internal"));
                let headers = match &request {
                    Ok(request) => synthetic_spin_headers(request.uri()),
                    Err(_) => Vec::new(),
                };
                (id.to_string(), headers, request)
            }
            None => {
                let Some(matched) = self.router.route(&path) else {
                    return empty(StatusCode::NOT_FOUND);
                };
                let id = match matched.target() {
                    RouteTarget::Static(response) => return static_response(response),
                    RouteTarget::Component(id) => id.clone(),
                };
                let headers =
                    routes::spin_headers(&matched, &full_url, routes::CHAINED_CLIENT_ADDR);
                (id, headers, build("localhost"))
            }
        };
        let Ok(request) = request else {
            return empty(StatusCode::BAD_REQUEST);
        };
        let Some(target) = self.app.components.get(&component_id).cloned() else {
            return empty(StatusCode::NOT_FOUND);
        };
        self.execute(target, request, spin_headers, None).await
    }
}

/// Aborts the instance task when dropped, unless disarmed.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    fn disarm(&mut self) -> tokio::task::JoinHandle<T> {
        self.0.take().expect("disarmed once")
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl ServiceChaining for HttpTrigger {
    fn dispatch(
        &self,
        component_id: &str,
        request: Request<WasiBody>,
    ) -> Option<BoxFuture<Result<Response<WasiBody>, HttpError>>> {
        if !self.http_components.contains(component_id) {
            return None;
        }
        let component = self.app.components.get(component_id)?.clone();
        let this = self.this.upgrade()?;
        let spin_headers = synthetic_spin_headers(request.uri());
        Some(Box::pin(async move {
            Ok(this.execute(component, request, spin_headers, None).await)
        }))
    }

    fn self_origin(&self) -> Option<(http::uri::Scheme, http::uri::Authority)> {
        let authority = http::uri::Authority::try_from(self.local_addr.to_string()).ok()?;
        Some((http::uri::Scheme::HTTP, authority))
    }
}

/// Spin's synthetic `/...` match for a request that bypasses the router (a chained call or a
/// component job): `spin-path-info` is the whole path, there is no Host header so the URL
/// falls back to localhost, and the client address is unspecified.
fn synthetic_spin_headers(uri: &http::Uri) -> Vec<(HeaderName, HeaderValue)> {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let matched = RouteMatch::synthetic(&(), uri.path());
    routes::spin_headers(
        &matched,
        &routes::full_url("http", None, path_and_query),
        routes::CHAINED_CLIENT_ADDR,
    )
}

/// Inbound requests may not claim to be chained: a Host naming `*.spin.internal` is removed.
fn strip_forbidden_headers(req: &mut Request<Incoming>) {
    let spoofed = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.split(':')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
                .ends_with(".spin.internal")
        })
        .unwrap_or(false);
    if spoofed {
        req.headers_mut().remove(http::header::HOST);
    }
}

fn static_response(spec: &StaticResponse) -> Response<ResponseBody> {
    let status =
        StatusCode::from_u16(spec.status_code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match &spec.body {
        Some(body) => full(status, "text/plain", body.clone()),
        None => empty(status),
    };
    if spec.body.is_some()
        && spec
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-type"))
    {
        response.headers_mut().remove(http::header::CONTENT_TYPE);
    }
    for (name, value) in &spec.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Binds the listener: `SocketAddr` parsing happens in the CLI.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}
