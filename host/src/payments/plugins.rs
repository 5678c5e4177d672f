//! Provider plugins: each call runs in a fresh instance of the plugin's component with
//! * only `wasi:http` to the plugin's configured hosts (everything else is denied, and no
//!   filesystem, environment, sockets or inherited stdio),
//! * a linear-memory cap (`StoreLimits`),
//! * a CPU budget (fuel) and a wall-clock deadline,
//!
//! so a hung, greedy or hostile plugin fails that one call with an error, never the host or
//! other payments. Card numbers reach the provider through the "detokenizing egress": the plugin
//! writes the vault token where the number goes, and this host swaps in the number only in
//! request bodies bound for the plugin's declared hosts.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bazaar_routing::allowed_hosts::AllowedHosts;
use http_body_util::BodyExt as _;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "bazaar:payments/payment-provider",
    exports: { default: async },
});

pub use bazaar::payments::types::{
    AuthorizeRequest, CardSource, ErrorKind, EventKind, Money, PaymentSource, ProviderError,
    ProviderPayment, ProviderStatus, WebhookEvent,
};

/// Per-plugin resource limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    pub fuel: u64,
    pub timeout: Duration,
}

pub struct Plugin {
    pub name: String,
    pre: PaymentProviderPre<PluginState>,
    allowed: Arc<AllowedHosts>,
    settings: Vec<(String, String)>,
    limits: Limits,
}

pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    egress: Egress,
    limits: StoreLimits,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

/// A card number to substitute for its token in outgoing bodies. Not `Debug`.
pub struct Detokenize {
    pub token: String,
    pub pan: String,
}

impl Drop for Detokenize {
    fn drop(&mut self) {
        // SAFETY: ASCII zeros keep the String valid UTF-8.
        unsafe { self.pan.as_bytes_mut().fill(b'0') }
    }
}

/// The plugin's outbound HTTP policy.
struct Egress {
    plugin: Arc<str>,
    allowed: Arc<AllowedHosts>,
    detokenize: Option<Arc<Detokenize>>,
    /// Set once a request passed the policy and left for the provider: without it, whatever
    /// the plugin says, the provider cannot have done anything.
    sent: Arc<AtomicBool>,
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

/// Request bodies a plugin sends are small forms/JSON; bigger ones are refused.
const MAX_EGRESS_BODY: usize = 256 * 1024;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let plugin = self.plugin.clone();
        let allowed = self.allowed.clone();
        let detokenize = self.detokenize.clone();
        let sent = self.sent.clone();
        Box::new(async move {
            let uri = request.uri().to_string();
            let Ok(url) = url::Url::parse(&uri) else {
                return Err(HttpError::HttpRequestUriInvalid);
            };
            if !allowed.allows(&url) {
                // Log the origin only: paths and queries may carry provider ids.
                tracing::warn!(plugin = %plugin, origin = %url.origin().ascii_serialization(), "plugin outbound request denied: host not configured for this plugin");
                return Err(HttpError::HttpRequestDenied);
            }
            let (parts, body) = request.into_parts();
            let collected = http_body_util::Limited::new(body, MAX_EGRESS_BODY)
                .collect()
                .await
                .map_err(|_| HttpError::HttpRequestBodySize(None))?
                .to_bytes();
            let bytes = match &detokenize {
                Some(d) if !d.token.is_empty() => {
                    let text = String::from_utf8_lossy(&collected);
                    if text.contains(&d.token) {
                        bytes::Bytes::from(text.replace(&d.token, &d.pan))
                    } else {
                        collected
                    }
                }
                _ => collected,
            };
            let body: WasiBody = http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync();
            let request = http::Request::from_parts(parts, body);
            sent.store(true, Ordering::SeqCst);
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(io);
            Ok((response.map(|body| body.boxed_unsync()), done))
        })
    }
}

pub struct PluginHost {
    engine: Engine,
    plugins: BTreeMap<String, Arc<Plugin>>,
}

/// One plugin's configuration, resolved by `config`.
pub struct PluginSpec {
    pub name: String,
    pub component: std::path::PathBuf,
    pub allowed_outbound_hosts: Vec<String>,
    pub settings: Vec<(String, String)>,
    pub limits: Limits,
}

/// Why a plugin call failed: the provider's own error value, or the plugin misbehaved (trap,
/// out of fuel or memory, timeout), which the core treats as "provider unavailable".
#[derive(Debug)]
pub enum CallError {
    Provider(ProviderError),
    Plugin(String),
}

pub fn build_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    // Fuel is the CPU budget: deterministic, so a busy loop is stopped at the same point every
    // time. Yielding periodically keeps one plugin from starving the executor meanwhile.
    config.consume_fuel(true);
    Engine::new(&config).map_err(anyhow::Error::from)
}

impl PluginHost {
    pub fn load(specs: Vec<PluginSpec>, cache_dir: Option<&Path>) -> anyhow::Result<Self> {
        let engine = build_engine()?;
        let mut linker: Linker<PluginState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        let mut plugins = BTreeMap::new();
        for spec in specs {
            let component: Component =
                crate::engine::load_component(&engine, &spec.component, cache_dir)
                    .with_context(|| format!("payment provider `{}`", spec.name))?;
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "payment provider `{}` imports something the payment host does not offer",
                        spec.name
                    )
                })?;
            let pre = PaymentProviderPre::new(instance_pre)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "payment provider `{}` does not implement bazaar:payments/payment-provider",
                        spec.name
                    )
                })?;
            let allowed =
                AllowedHosts::parse(&spec.allowed_outbound_hosts, &[]).with_context(|| {
                    format!("payment provider `{}`: allowed_outbound_hosts", spec.name)
                })?;
            plugins.insert(
                spec.name.clone(),
                Arc::new(Plugin {
                    name: spec.name,
                    pre,
                    allowed: Arc::new(allowed),
                    settings: spec.settings,
                    limits: spec.limits,
                }),
            );
        }
        Ok(Self { engine, plugins })
    }

    pub fn names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.get(name).cloned()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The longest wall-clock limit of any plugin: how long one provider call can take at most.
    pub fn max_timeout(&self) -> Option<Duration> {
        self.plugins.values().map(|p| p.limits.timeout).max()
    }
}

/// The operations of the provider interface, for `Plugin::call`.
pub enum Op {
    Authorize(AuthorizeRequest),
    Capture(String, Money),
    Void(String),
    Refund(String, Money, String),
    Status(String),
    VerifyWebhook(Vec<(String, String)>, Vec<u8>, u64),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Self::Authorize(_) => "authorize",
            Self::Capture(..) => "capture",
            Self::Void(_) => "void",
            Self::Refund(..) => "refund",
            Self::Status(_) => "status",
            Self::VerifyWebhook(..) => "verify-webhook",
        }
    }
}

pub enum Output {
    Payment(ProviderPayment),
    Event(WebhookEvent),
}

impl Plugin {
    fn new_store(
        &self,
        engine: &Engine,
        detokenize: Option<Arc<Detokenize>>,
        sent: Arc<AtomicBool>,
    ) -> anyhow::Result<Store<PluginState>> {
        // No args, env, preopens or inherited stdio: the plugin's only window is wasi:http.
        let wasi = WasiCtxBuilder::new().build();
        let state = PluginState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            egress: Egress {
                plugin: Arc::from(self.name.as_str()),
                allowed: self.allowed.clone(),
                detokenize,
                sent,
            },
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(4)
                .tables(8)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_fuel(self.limits.fuel)?;
        store.fuel_async_yield_interval(Some(100_000))?;
        Ok(store)
    }

    /// Runs `op` in a fresh instance under this plugin's limits.
    pub async fn call(
        &self,
        engine: &Engine,
        op: Op,
        detokenize: Option<Arc<Detokenize>>,
    ) -> Result<Output, CallError> {
        let op_name = op.name();
        let started = std::time::Instant::now();
        let sent = Arc::new(AtomicBool::new(false));
        let run = async {
            let mut store = self
                .new_store(engine, detokenize, sent.clone())
                .map_err(|e| CallError::Plugin(e.to_string()))?;
            let instance = self
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| CallError::Plugin(format!("instantiation failed: {e}")))?;
            let provider = instance.bazaar_payments_provider();
            let settings = &self.settings;
            let trap = |e: wasmtime::Error| {
                CallError::Plugin(format!("plugin trapped: {}", root_cause(&e)))
            };
            let result = match op {
                Op::Authorize(req) => provider
                    .call_authorize(&mut store, settings, &req)
                    .await
                    .map_err(trap)?
                    .map(Output::Payment),
                Op::Capture(reference, amount) => provider
                    .call_capture(&mut store, settings, &reference, &amount)
                    .await
                    .map_err(trap)?
                    .map(Output::Payment),
                Op::Void(reference) => provider
                    .call_void(&mut store, settings, &reference)
                    .await
                    .map_err(trap)?
                    .map(Output::Payment),
                Op::Refund(reference, amount, key) => provider
                    .call_refund(&mut store, settings, &reference, &amount, &key)
                    .await
                    .map_err(trap)?
                    .map(Output::Payment),
                Op::Status(reference) => provider
                    .call_status(&mut store, settings, &reference)
                    .await
                    .map_err(trap)?
                    .map(Output::Payment),
                Op::VerifyWebhook(headers, body, now) => provider
                    .call_verify_webhook(&mut store, settings, &headers, &body, now)
                    .await
                    .map_err(trap)?
                    .map(Output::Event),
            };
            result.map_err(CallError::Provider)
        };
        let outcome = match tokio::time::timeout(self.limits.timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => Err(CallError::Plugin(format!(
                "plugin exceeded its {} ms deadline",
                self.limits.timeout.as_millis()
            ))),
        };
        let outcome = settle_unavailable(outcome, sent.load(Ordering::SeqCst));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Ok(_) => {
                tracing::info!(plugin = %self.name, op = op_name, elapsed_ms, "plugin call succeeded")
            }
            Err(CallError::Provider(e)) => {
                tracing::info!(plugin = %self.name, op = op_name, elapsed_ms, kind = ?e.kind, code = %e.code, "plugin returned a provider error")
            }
            Err(CallError::Plugin(reason)) => {
                tracing::warn!(plugin = %self.name, op = op_name, elapsed_ms, reason = %reason, "plugin call failed")
            }
        }
        outcome
    }
}

/// Whether an outcome is definite follows from what the host saw leave, not from what the
/// plugin says:
/// * a plugin that reports its provider `unavailable` although no request left for the
///   provider (its egress was denied, or it never tried) reports an *unknown* outcome that
///   cannot exist — nothing can have happened at the provider. That is a plugin failure, which
///   the core treats as definite ("nothing was charged");
/// * a plugin stopped (deadline, fuel, memory, trap) *after* a request left may have been
///   stopped while the provider acted on it — the common case is a slow provider running past
///   the deadline. That outcome is unknown (`unavailable`, `provider_outcome_unknown`), so the
///   core keeps the payment retryable under the same provider idempotency key instead of
///   declaring that nothing was charged.
fn settle_unavailable(outcome: Result<Output, CallError>, sent: bool) -> Result<Output, CallError> {
    match outcome {
        Err(CallError::Provider(e)) if matches!(e.kind, ErrorKind::Unavailable) && !sent => {
            Err(CallError::Plugin(format!(
                "the plugin reported the provider unavailable ({}) but sent it nothing",
                e.code
            )))
        }
        Err(CallError::Plugin(reason)) if sent => {
            tracing::warn!(reason = %reason, "plugin stopped after its request left: outcome unknown");
            Err(CallError::Provider(ProviderError {
                kind: ErrorKind::Unavailable,
                code: "provider_outcome_unknown".into(),
                message: "the provider plugin was stopped after sending its request".into(),
            }))
        }
        other => other,
    }
}

fn root_cause(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::OutOfFuel => "CPU budget (fuel) exhausted".to_string(),
            other => other.to_string(),
        };
    }
    e.root_cause().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Result<Output, CallError> {
        Err(CallError::Provider(ProviderError {
            kind: ErrorKind::Unavailable,
            code: "network_error".into(),
            message: "the provider could not be reached".into(),
        }))
    }

    #[test]
    fn unavailable_is_an_unknown_outcome_only_when_a_request_left() {
        // Something reached the wire: the provider may have acted, the outcome stays unknown.
        assert!(matches!(
            settle_unavailable(unavailable(), true),
            Err(CallError::Provider(ProviderError {
                kind: ErrorKind::Unavailable,
                ..
            }))
        ));
        // Nothing left the host: the plugin failed, nothing can have happened at the provider.
        match settle_unavailable(unavailable(), false) {
            Err(CallError::Plugin(reason)) => assert!(reason.contains("network_error"), "{reason}"),
            _ => panic!("expected a plugin failure"),
        }
        // Stopped after a request left: the provider may have acted.
        match settle_unavailable(Err(CallError::Plugin("deadline".into())), true) {
            Err(CallError::Provider(e)) => {
                assert!(matches!(e.kind, ErrorKind::Unavailable));
                assert_eq!(e.code, "provider_outcome_unknown");
            }
            _ => panic!("expected an unknown outcome"),
        }
        // Stopped before anything left: a definite plugin failure.
        assert!(matches!(
            settle_unavailable(Err(CallError::Plugin("fuel".into())), false),
            Err(CallError::Plugin(_))
        ));
        // Definite provider answers are left alone either way.
        let declined = Err(CallError::Provider(ProviderError {
            kind: ErrorKind::Declined,
            code: "card_declined".into(),
            message: "declined".into(),
        }));
        assert!(matches!(
            settle_unavailable(declined, false),
            Err(CallError::Provider(ProviderError {
                kind: ErrorKind::Declined,
                ..
            }))
        ));
    }
}
