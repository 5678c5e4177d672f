//! Bazaar's social login component (private routes; the gateway forwards to it):
//!
//! * `GET /auth/oidc/{provider}/start` → 302 to the provider's authorization endpoint
//!   (authorization code flow, PKCE S256, `state`, `nonce`), setting the browser-binding cookie;
//! * `GET /auth/oidc/{provider}/callback` → validates state, cookie, code, ID token (or GitHub's
//!   API), asks the users service for a Bazaar token pair and answers it as JSON (200);
//! * `GET /health/live`; `POST /internal/jobs/expire-logins` (sweeps expired pending logins).
//!
//! Pure modules (unit-tested natively): [`config`], [`pkce`], [`pending`], [`cookie`],
//! [`discovery`], [`idtoken`], [`routes`]; the flow ([`flow`]) runs against the [`ports`]
//! traits. Only the `spin` module below touches the host, and only on wasm.
//!
//! Component variables: `providers` (JSON, see [`config`]), `public_base_url`.

// `Problem` is the error type of every handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod cookie;
pub mod discovery;
pub mod flow;
pub mod idtoken;
pub mod pending;
pub mod pkce;
pub mod ports;
pub mod routes;

/// Component name in logs.
pub const COMPONENT: &str = "oidc";
/// The key-value store of pending logins and provider metadata.
pub const STORE_LABEL: &str = "oidc";
/// Largest provider or users-service response body read (discovery documents, JWKS and token
/// responses are a few kilobytes).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[cfg(target_arch = "wasm32")]
mod spin {
    use bazaar_platform::{Ctx, Problem};
    use futures::StreamExt as _;
    use spin_sdk::http::{IncomingResponse, Request, Response};
    use spin_sdk::key_value::Store as KvStore;

    use crate::config::{Config, PROVIDERS_VARIABLE, PUBLIC_BASE_URL_VARIABLE};
    use crate::flow::{CallbackParams, Flow};
    use crate::ports::{Outbound, Store, SystemClock};
    use crate::routes::{Route, route};
    use crate::{COMPONENT, MAX_RESPONSE_BYTES, STORE_LABEL};

    #[spin_sdk::http_component]
    async fn handle(request: Request) -> Response {
        let ctx = Ctx::new(COMPONENT, &request);
        let method = http::Method::from_bytes(request.method().to_string().as_bytes())
            .unwrap_or(http::Method::OPTIONS);
        let path = request.path().to_owned();
        match route(&method, &path) {
            Route::Live => ctx.json(200, &serde_json::json!({"status": "ok"})),
            Route::NotFound => ctx.problem(
                Problem::not_found(format!("No route for {path}")).with_instance(path.clone()),
            ),
            Route::MethodNotAllowed { allow } => {
                let mut response = ctx.problem(Problem::method_not_allowed(method.as_str(), allow));
                response.set_header("allow", allow.join(", "));
                response
            }
            Route::Start { provider } => {
                let result = with_flow(&ctx, async |flow| flow.start(provider).await).await;
                match result {
                    Ok(redirect) => {
                        let mut response = ctx.empty(302);
                        response.set_header("location", redirect.location);
                        response.set_header("set-cookie", redirect.set_cookie);
                        response.set_header("cache-control", "no-store");
                        response
                    }
                    Err(problem) => ctx.problem(problem.with_instance(path.clone())),
                }
            }
            Route::Callback { provider } => {
                let params = CallbackParams::from_query(request.query());
                let cookies: Vec<&str> = request
                    .headers()
                    .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
                    .filter_map(|(_, value)| value.as_str())
                    .collect();
                let result = with_flow(&ctx, async |flow| {
                    flow.callback(provider, &params, &cookies).await
                })
                .await;
                let mut response = match result {
                    Ok(relayed) => {
                        let mut response = ctx.empty(relayed.status);
                        response.set_header("content-type", relayed.content_type);
                        *response.body_mut() = relayed.body;
                        response
                    }
                    Err(problem) => ctx.problem(problem.with_instance(path.clone())),
                };
                // Whatever the outcome the login is over: drop the binding cookie, and never
                // let a cache keep tokens.
                if let Ok(config) = load_config() {
                    response
                        .set_header("set-cookie", crate::cookie::clear(&config.public_base_url));
                }
                response.set_header("cache-control", "no-store");
                response
            }
            Route::Sweep => {
                let result = with_flow(&ctx, async |flow| flow.sweep_expired()).await;
                match result {
                    Ok(removed) => ctx.json(200, &serde_json::json!({"removed": removed})),
                    Err(problem) => ctx.problem(problem),
                }
            }
        }
    }

    /// Runs `body` with the configured flow; configuration and store failures become problems.
    async fn with_flow<T>(
        ctx: &Ctx,
        body: impl AsyncFnOnce(&Flow<'_, SpinStore, SpinOutbound, SystemClock>) -> Result<T, Problem>,
    ) -> Result<T, Problem> {
        let config = load_config().map_err(|e| {
            ctx.log
                .error("configuration invalid", &[("error", e.into())]);
            Problem::internal("Social login is not configured correctly")
        })?;
        let store = KvStore::open(STORE_LABEL).map_err(|e| {
            ctx.log.error(
                "opening the key-value store failed",
                &[("error", format!("{e:?}").into())],
            );
            Problem::service_unavailable("Login state storage is unavailable; try again")
        })?;
        let flow = Flow {
            config: &config,
            store: &SpinStore(store),
            outbound: &SpinOutbound,
            clock: &SystemClock,
            log: &ctx.log,
            request_id: &ctx.request_id,
        };
        body(&flow).await
    }

    fn load_config() -> Result<Config, String> {
        let get = |name: &str| {
            spin_sdk::variables::get(name).map_err(|e| format!("variable {name}: {e:?}"))
        };
        Config::parse(&get(PROVIDERS_VARIABLE)?, &get(PUBLIC_BASE_URL_VARIABLE)?)
    }

    struct SpinStore(KvStore);

    impl Store for SpinStore {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            self.0.get(key).map_err(|e| format!("{e:?}"))
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.0.set(key, value).map_err(|e| format!("{e:?}"))
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.0.delete(key).map_err(|e| format!("{e:?}"))
        }
        fn keys(&self) -> Result<Vec<String>, String> {
            self.0.get_keys().map_err(|e| format!("{e:?}"))
        }
    }

    struct SpinOutbound;

    impl Outbound for SpinOutbound {
        async fn send(
            &self,
            request: http::Request<Vec<u8>>,
        ) -> Result<http::Response<Vec<u8>>, String> {
            // The URL without its query: safe to log (no codes or tokens).
            let target = format!(
                "{}://{}{}",
                request.uri().scheme_str().unwrap_or("?"),
                request.uri().authority().map(|a| a.as_str()).unwrap_or("?"),
                request.uri().path()
            );
            let response: IncomingResponse = spin_sdk::http::send(request)
                .await
                .map_err(|e| format!("{target}: {e}"))?;
            let status = response.status();
            let headers = response.headers().entries();
            let mut body = Vec::new();
            let mut stream = response.take_body_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| format!("{target}: reading body: {e:?}"))?;
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "{target}: response body over {MAX_RESPONSE_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            let mut out = http::Response::new(body);
            *out.status_mut() = http::StatusCode::from_u16(status)
                .map_err(|_| format!("{target}: invalid status {status}"))?;
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_bytes(&value),
                ) {
                    out.headers_mut().append(name, value);
                }
            }
            Ok(out)
        }
    }
}
