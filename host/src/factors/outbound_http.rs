//! Outbound `wasi:http` for guests: every request is checked against the component's
//! `allowed_outbound_hosts` (Spin's grammar, `bazaar_routing::allowed_hosts`), requests to
//! `<id>.spin.internal` are dispatched in-process to that component (service chaining, §3.1),
//! `self.alt` requests go back to our own listener (§3.2), and the rest go to the network.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bazaar_routing::allowed_hosts::{AllowedHosts, BlockedNetworks};
use tracing::Instrument as _;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

/// Implemented by the HTTP trigger: in-process dispatch for service chaining and the origin
/// used for self requests.
pub trait ServiceChaining: Send + Sync {
    /// Runs `request` through the HTTP-triggered component `component_id` of this app. `None`
    /// when no such component exists.
    fn dispatch(
        &self,
        component_id: &str,
        request: http::Request<WasiBody>,
    ) -> Option<BoxFuture<Result<http::Response<WasiBody>, HttpError>>>;
    /// `scheme://authority` of the runner's own listener, for `self.alt` requests.
    fn self_origin(&self) -> Option<(http::uri::Scheme, http::uri::Authority)>;
}

/// The per-instance `WasiHttpHooks`.
pub struct OutboundHttpHooks {
    component_id: Arc<str>,
    allowed: Arc<AllowedHosts>,
    /// Present only for HTTP-triggered callers: Spin offers chaining and self requests only there.
    chaining: Option<Arc<dyn ServiceChaining>>,
    /// `[outbound_networking] block_networks` from the runtime config.
    blocked: Arc<BlockedNetworks>,
}

impl OutboundHttpHooks {
    pub fn new(
        component_id: Arc<str>,
        allowed: Arc<AllowedHosts>,
        chaining: Option<Arc<dyn ServiceChaining>>,
        blocked: Arc<BlockedNetworks>,
    ) -> Self {
        Self {
            component_id,
            allowed,
            chaining,
            blocked,
        }
    }

    fn route(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> BoxFuture<SendResult> {
        let denied = |component: &str, url: &str| -> BoxFuture<SendResult> {
            tracing::warn!(
                component_id = component,
                url,
                "outbound request denied: host not in allowed_outbound_hosts"
            );
            Box::pin(async { Err(HttpError::HttpRequestDenied) })
        };
        let uri = request.uri().clone();
        let url_text = uri.to_string();
        let Ok(url) = url::Url::parse(&url_text) else {
            return Box::pin(async { Err(HttpError::HttpRequestUriInvalid) });
        };
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();

        if let Some(target) = host.strip_suffix(".spin.internal") {
            if !self.allowed.allows(&url) {
                return denied(&self.component_id, &redacted(&url));
            }
            let Some(chaining) = &self.chaining else {
                return denied(&self.component_id, &redacted(&url));
            };
            // Spin strips Host from chained requests: the callee sees the authority only through
            // the URI (`<id>.spin.internal`).
            request.headers_mut().remove(http::header::HOST);
            let method = request.method().clone();
            let span = crate::telemetry::client_span(
                &method,
                &redacted(&url),
                &host,
                request.headers_mut(),
            );
            let Some(response) = chaining.dispatch(target, request) else {
                tracing::warn!(component_id = %self.component_id, target, "service chaining to a component that is not HTTP-triggered in this app");
                return Box::pin(async { Err(HttpError::DestinationNotFound) });
            };
            return Box::pin(
                async move {
                    let response = response.await?;
                    tracing::Span::current()
                        .record("http.response.status_code", response.status().as_u16());
                    let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                        Box::new(async { Ok(()) });
                    Ok((response, done))
                }
                .instrument(span),
            );
        }

        if host == "self.alt" {
            let scheme = url.scheme().to_string();
            let origin = self.chaining.as_ref().and_then(|c| c.self_origin());
            let Some((listener_scheme, authority)) =
                origin.filter(|_| self.allowed.allows_relative(&scheme))
            else {
                return denied(&self.component_id, &redacted(&url));
            };
            let mut parts = uri.into_parts();
            parts.scheme = Some(listener_scheme);
            parts.authority = Some(authority.clone());
            match http::Uri::from_parts(parts) {
                Ok(uri) => *request.uri_mut() = uri,
                Err(_) => return Box::pin(async { Err(HttpError::HttpRequestUriInvalid) }),
            }
            if let Ok(value) = http::HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(http::header::HOST, value);
            }
            return send_to_network(request, options, self.blocked.clone());
        }

        if !self.allowed.allows(&url) {
            return denied(&self.component_id, &redacted(&url));
        }
        send_to_network(request, options, self.blocked.clone())
    }
}

/// A URL fit for logs and traces: credentials and the query string (where API keys tend to
/// travel) removed.
fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

/// Whether any address `authority` resolves to is in a blocked network. The client resolves the
/// name again when it connects; a DNS answer that changes in between is not caught.
async fn resolves_to_blocked(uri: &http::Uri, blocked: &BlockedNetworks) -> bool {
    let Some(host) = uri.host() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return blocked.blocks(ip);
    }
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        });
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.into_iter().any(|addr| blocked.blocks(addr.ip())),
        Err(_) => false,
    }
}

fn send_to_network(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    blocked: Arc<BlockedNetworks>,
) -> BoxFuture<SendResult> {
    use http_body_util::BodyExt as _;
    let url = url::Url::parse(&request.uri().to_string())
        .map(|u| redacted(&u))
        .unwrap_or_default();
    let server = request.uri().host().unwrap_or_default().to_string();
    let method = request.method().clone();
    let span = crate::telemetry::client_span(&method, &url, &server, request.headers_mut());
    Box::pin(async move {
        if !blocked.is_empty() && resolves_to_blocked(request.uri(), &blocked).await {
            tracing::warn!(url = %request.uri(), "outbound request denied: destination is in a blocked network");
            return Err(HttpError::DestinationIpProhibited);
        }
        let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
        tracing::Span::current().record("http.response.status_code", response.status().as_u16());
        let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(io);
        Ok((response.map(|body| body.boxed_unsync()), done))
    }
    .instrument(span))
}

impl WasiHttpHooks for OutboundHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        Box::new(self.route(request, options))
    }
}
