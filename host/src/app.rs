//! A loaded application: the manifest, resolved variables, every factor's app-wide state and
//! each component pre-instantiated (`InstancePre`), ready to create one fresh instance per
//! request the way Spin does for WASIp2 components.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bazaar_manifest::runtime_config::RuntimeConfig;
use bazaar_manifest::variables::{ResolvedVariables, VariableResolver, component_variables};
use bazaar_manifest::{HttpRoute, Manifest};
use bazaar_routing::allowed_hosts::{AllowedHosts, BlockedNetworks};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::engine::{self, EngineOptions};
use crate::factors::key_value::{self, KeyValueFactor, KeyValueInstance};
use crate::factors::outbound_http::{OutboundHttpHooks, ServiceChaining};
use crate::factors::postgres::{self as postgres_factor, PostgresFactor, PostgresInstance};
use crate::factors::redis::{self as redis_factor, RedisFactor, RedisInstance};
use crate::factors::sqlite::{self, SqliteFactor, SqliteInstance};
use crate::factors::variables::{self as variables_factor, VariablesInstance};
use crate::factors::wasi::{self as wasi_factor, ComponentOutput, StreamKind, WasiTemplate};
use crate::payments::core_host::{self, PaymentServices, PaymentsInstance};

/// How to load an app: the `bazaar up` options that are not about serving.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// `spin.toml`, or a directory containing it.
    pub manifest: PathBuf,
    pub runtime_config_file: Option<PathBuf>,
    /// `--state-dir`; wins over the runtime config's `state_dir`.
    pub state_dir: Option<PathBuf>,
    /// `--variable k=v`: highest-precedence variable values.
    pub variables: BTreeMap<String, String>,
    /// `--env K=V`: WASI environment for every component.
    pub env: Vec<(String, String)>,
    /// Compiled-component cache; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    pub engine: EngineOptions,
    /// Echo component stdout/stderr to the runner's stderr (`spin up` does unless `--quiet`).
    pub echo_component_output: bool,
}

pub struct App {
    pub manifest: Manifest,
    pub engine: Engine,
    pub runtime_config: RuntimeConfig,
    pub variables: ResolvedVariables,
    pub state_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub key_value: KeyValueFactor,
    pub sqlite: SqliteFactor,
    /// PostgreSQL connection pools, one per connection string, shared by all components.
    pub postgres: PostgresFactor,
    /// Outbound Redis connections and the embedded pub/sub broker, shared with the Redis trigger.
    pub redis: RedisFactor,
    pub components: BTreeMap<String, Arc<AppComponent>>,
    pub blocked_networks: Arc<BlockedNetworks>,
    /// `[application.tool.bazaar] generated_secrets` this load generated or reused.
    pub generated_secrets: Vec<crate::secrets::GeneratedSecret>,
    /// The payment host's `bazaar:payments/providers` and `vault`, linked for every component
    /// of this app: set only for the payment host's own app (the payment core, see
    /// [`App::load_payment_core`]). Without it a component importing them fails to load.
    pub payment_services: Option<Arc<PaymentServices>>,
}

/// A component ready to instantiate, with everything its instances are allowed to use.
pub struct AppComponent {
    pub id: Arc<str>,
    /// The component linked against every factor; trigger-specific worlds (HTTP, Redis) are
    /// typed views of it.
    pub pre: wasmtime::component::InstancePre<InstanceState>,
    /// Pre-instantiated `wasi:http/incoming-handler` world; `None` if the component does not
    /// export it (it may still be used by another trigger type).
    pub http: Option<ProxyPre<InstanceState>>,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub variables: Arc<BTreeMap<String, String>>,
    pub key_value_stores: Vec<String>,
    pub sqlite_databases: Vec<String>,
    pub wasi: WasiTemplate,
}

/// The `T` of every `Store<T>`: one per instance, composed of each factor's instance state.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: OutboundHttpHooks,
    key_value: KeyValueInstance,
    sqlite: SqliteInstance,
    postgres: PostgresInstance,
    redis: RedisInstance,
    variables: VariablesInstance,
    /// `Some` exactly when the app links the payment host's imports.
    payments: Option<PaymentsInstance>,
    limits: StoreLimits,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

fn build_linker(engine: &Engine, payments: bool) -> anyhow::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    key_value::add_to_linker(&mut linker, |s: &mut InstanceState| &mut s.key_value)?;
    sqlite::add_to_linker(&mut linker, |s: &mut InstanceState| &mut s.sqlite)?;
    postgres_factor::add_to_linker(&mut linker, |s: &mut InstanceState| &mut s.postgres)?;
    redis_factor::add_to_linker(&mut linker, |s: &mut InstanceState| &mut s.redis)?;
    variables_factor::add_to_linker(&mut linker, |s: &mut InstanceState| &mut s.variables)?;
    if payments {
        core_host::add_to_linker(&mut linker, |s: &mut InstanceState| {
            // `new_store` fills the slot in every store of an app that links these imports.
            s.payments
                .as_mut()
                .expect("payment services are set for every instance of the payment host's app")
        })?;
    }
    Ok(linker)
}

impl App {
    pub async fn load(options: &AppOptions) -> anyhow::Result<Self> {
        Self::load_with(options, None).await
    }

    /// Loads the payment host's app (`payments/spin.toml`): like [`App::load`], with the
    /// payment host's `bazaar:payments/providers` and `vault` imports linked.
    pub async fn load_payment_core(
        options: &AppOptions,
        services: Arc<PaymentServices>,
    ) -> anyhow::Result<Self> {
        Self::load_with(options, Some(services)).await
    }

    async fn load_with(
        options: &AppOptions,
        payment_services: Option<Arc<PaymentServices>>,
    ) -> anyhow::Result<Self> {
        let manifest = Manifest::load(&options.manifest)?;
        for warning in &manifest.warnings {
            tracing::warn!(manifest = %manifest.path.display(), "{warning}");
        }
        let runtime_config = match &options.runtime_config_file {
            Some(path) => RuntimeConfig::load(path)?,
            None => RuntimeConfig::default(),
        };
        let state_dir = resolve_state_dir(options.state_dir.as_deref(), &runtime_config, &manifest);
        let log_dir = match runtime_config.log_dir.as_deref() {
            Some("") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => state_dir.as_ref().map(|d| d.join("logs")),
        };
        if let Some(dir) = &state_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating state dir {}", dir.display()))?;
        }

        let resolver = VariableResolver::new()
            .cli_values(options.variables.clone())
            .providers(&runtime_config.variables_providers)
            .env_lookup(|name| std::env::var(name).ok());
        let (generated, generated_secrets) =
            crate::secrets::resolve(&manifest, &resolver, state_dir.as_deref())?;
        let variables = resolver
            .fallback_values(generated)
            .resolve(&manifest.variables)?;
        let blocked_networks = Arc::new(
            BlockedNetworks::parse(&runtime_config.block_networks)
                .context("[outbound_networking] block_networks")?,
        );
        let key_value =
            KeyValueFactor::new(&runtime_config.key_value_stores, state_dir.as_deref()).await?;
        let sqlite =
            SqliteFactor::new(&runtime_config.sqlite_databases, state_dir.as_deref()).await?;
        let redis = RedisFactor::new(&manifest, &variables).await?;

        let mut engine_options = options.engine.clone();
        if engine_options.max_instance_memory.is_none() {
            engine_options.max_instance_memory = runtime_config.max_instance_memory;
        }
        let engine = engine::build_engine(&engine_options)?;
        let linker = build_linker(&engine, payment_services.is_some())?;
        let component_ids: Vec<String> = manifest.components.keys().cloned().collect();

        let mut components = BTreeMap::new();
        for (id, spec) in &manifest.components {
            if !spec.ai_models.is_empty() {
                bail!("component `{id}`: ai_models is not supported by bazaar (no LLM backend)");
            }
            key_value.check_component(id, &spec.key_value_stores)?;
            sqlite.check_component(id, &spec.sqlite_databases)?;
            let allowed = spec
                .allowed_outbound_hosts
                .iter()
                .map(|t| variables.render(t))
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(|| format!("component `{id}`: allowed_outbound_hosts"))?;
            let allowed_hosts = AllowedHosts::parse(&allowed, &component_ids)
                .with_context(|| format!("component `{id}`: allowed_outbound_hosts"))?;
            let component_variables = component_variables(&variables, spec)?.values;

            if !spec.source.exists() {
                bail!(
                    "component `{id}`: source {} does not exist (build it first, e.g. `bazaar up --build`)",
                    spec.source.display()
                );
            }
            let component =
                engine::load_component(&engine, &spec.source, options.cache_dir.as_deref())
                    .with_context(|| format!("component `{id}`"))?;
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component `{id}` imports something this runner does not provide")
                })?;
            let http = ProxyPre::new(instance_pre.clone()).ok();

            let mut env: Vec<(String, String)> = spec
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            env.extend(options.env.iter().cloned());
            let mount_root = match &state_dir {
                Some(dir) => wasi_factor::stage_files(&spec.files, &dir.join("mounts").join(id))?,
                None if spec.files.is_empty() => None,
                None => bail!("component `{id}` mounts files, which needs a state dir"),
            };
            let wasi = WasiTemplate {
                env,
                mount_root,
                stdout: ComponentOutput::new(
                    id,
                    StreamKind::Stdout,
                    log_dir.as_deref(),
                    options.echo_component_output,
                )?,
                stderr: ComponentOutput::new(
                    id,
                    StreamKind::Stderr,
                    log_dir.as_deref(),
                    options.echo_component_output,
                )?,
            };
            components.insert(
                id.clone(),
                Arc::new(AppComponent {
                    id: id.as_str().into(),
                    pre: instance_pre,
                    http,
                    allowed_hosts: Arc::new(allowed_hosts),
                    variables: Arc::new(component_variables),
                    key_value_stores: spec.key_value_stores.clone(),
                    sqlite_databases: spec.sqlite_databases.clone(),
                    wasi,
                }),
            );
        }

        for trigger in &manifest.http_triggers {
            if let Some(id) = &trigger.component
                && components.get(id).is_some_and(|c| c.http.is_none())
            {
                bail!(
                    "component `{id}` is used by an HTTP trigger but does not export wasi:http/incoming-handler@0.2.x (build it with spin-sdk's #[http_component])"
                );
            }
        }

        Ok(Self {
            manifest,
            engine,
            runtime_config,
            variables,
            state_dir,
            log_dir,
            key_value,
            sqlite,
            postgres: PostgresFactor::new(),
            redis,
            components,
            blocked_networks,
            generated_secrets,
            payment_services,
        })
    }

    /// A fresh store for one instance of `component`.
    pub fn new_store(
        &self,
        component: &AppComponent,
        chaining: Option<Arc<dyn ServiceChaining>>,
    ) -> anyhow::Result<Store<InstanceState>> {
        let mut limits = StoreLimitsBuilder::new();
        if let Some(max) = self.runtime_config.max_instance_memory {
            limits = limits.memory_size(usize::try_from(max).unwrap_or(usize::MAX));
        }
        let state = InstanceState {
            wasi: component.wasi.build()?,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: OutboundHttpHooks::new(
                component.id.clone(),
                component.allowed_hosts.clone(),
                chaining,
                self.blocked_networks.clone(),
            ),
            key_value: self.key_value.instance_state(&component.key_value_stores),
            sqlite: self.sqlite.instance_state(&component.sqlite_databases),
            postgres: self
                .postgres
                .instance_state(component.allowed_hosts.clone()),
            redis: self.redis.instance_state(
                component.id.clone(),
                component.allowed_hosts.clone(),
                self.blocked_networks.clone(),
            ),
            variables: VariablesInstance::new(component.variables.clone()),
            payments: self
                .payment_services
                .clone()
                .map(core_host::PaymentsInstance::new),
            limits: limits.build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // The runner ticks the engine's epoch; yielding on every tick keeps one busy guest from
        // starving the other requests sharing the async runtime.
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }

    /// HTTP routes as (route, component id) pairs in manifest order, for the startup table.
    pub fn public_routes(&self) -> Vec<(String, String)> {
        self.manifest
            .http_triggers
            .iter()
            .filter_map(|t| match &t.route {
                HttpRoute::Path(route) => Some((
                    route.clone(),
                    t.component.clone().unwrap_or_else(|| t.id.clone()),
                )),
                HttpRoute::Private => None,
            })
            .collect()
    }
}

fn resolve_state_dir(
    cli: Option<&Path>,
    runtime_config: &RuntimeConfig,
    manifest: &Manifest,
) -> Option<PathBuf> {
    if let Some(dir) = cli {
        return if dir.as_os_str().is_empty() {
            None
        } else {
            Some(dir.to_path_buf())
        };
    }
    match runtime_config.state_dir.as_deref() {
        Some("") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(manifest.dir.join(".spin")),
    }
}
