//! The isolated payment host (`bazaar payments serve`). It runs outside the shop's Spin app so
//! card numbers never enter it (ARCHITECTURE principle 7); see docs/payments.md.
//!
//! * the payment core (records, state machine, idempotency, provider routing, fraud check) is a
//!   component of our `bazaar:payments/payment-core` world (`components/payment-core`), run as
//!   the one-component Spin app named by `[core] manifest` (`payments/spin.toml`) with this
//!   host's runner: its HTTP routes on `listen`, its migrations before serving, its jobs on
//!   their schedule, its state in SQLite or PostgreSQL by its `payments_database` variable;
//! * the core's imports are served here (`core_host`): the provider plugins, each call in its
//!   own limited wasmtime instance (`plugins`), and the card vault (`vault`).

pub mod config;
pub mod core_host;
pub mod plugins;
pub mod simulator;
pub mod vault;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::app::{App, AppOptions};
use crate::engine::EngineOptions;
use crate::trigger::http::{HttpOptions, HttpTrigger};
use crate::trigger::scheduler;

#[derive(Debug, Clone, Args)]
pub struct PaymentsArgs {
    #[command(subcommand)]
    pub command: PaymentsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PaymentsCommand {
    /// Serve the payment API with the providers named in the config file.
    Serve(ServeArgs),
    /// Run only the local sandbox simulators (stand-ins for the card, wallet and crypto provider APIs).
    Simulate(SimulateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The payment host's configuration file.
    #[arg(
        long,
        short = 'c',
        env = "BAZAAR_PAYMENTS_CONFIG",
        default_value = "payments.toml"
    )]
    pub config: PathBuf,
    /// Override the config's `listen` address.
    #[arg(long)]
    pub listen: Option<String>,
    /// Set a variable of the payment core's app: `name=value` (repeatable; also `name=@file`,
    /// `@vars.json`, `@vars.toml`; beats SPIN_VARIABLE_<NAME>), as `bazaar up --variable`.
    #[arg(long = "variable", value_name = "NAME=VALUE")]
    pub variables: Vec<String>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    #[arg(long, default_value = "127.0.0.1:3101")]
    pub listen: String,
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    #[arg(long, default_value = "sk_test_bazaar")]
    pub api_key: String,
}

pub async fn main(args: PaymentsArgs) -> anyhow::Result<()> {
    match args.command {
        PaymentsCommand::Serve(serve) => run(serve, shutdown_signal()).await,
        PaymentsCommand::Simulate(sim) => {
            let listener = tokio::net::TcpListener::bind(&sim.listen)
                .await
                .with_context(|| format!("binding the simulator to {}", sim.listen))?;
            println!(
                "Provider sandbox simulators (local stand-ins for card, wallet, crypto APIs) on http://{}",
                listener.local_addr()?
            );
            let simulator = simulator::Simulator::new(config::SimulatorConfig {
                listen: sim.listen,
                latency_ms: sim.latency_ms,
                failure_rate: sim.failure_rate.clamp(0.0, 1.0),
                api_key: sim.api_key,
                crypto_webhook_url: None,
                crypto_webhook_secret: None,
                wallet_webhook_url: None,
                wallet_webhook_secret: None,
            });
            tokio::select! {
                _ = simulator::serve(simulator, listener) => {}
                _ = shutdown_signal() => {}
            }
            Ok(())
        }
    }
}

/// Where the vault key is generated when `vault_keys` is unset: the core app's state dir.
const GENERATED_KEYS_FILE: &str = "payments-vault-keys";

/// The vault key ring from config, or one generated once into `<state dir>/payments-vault-keys`.
fn key_ring(configured: Option<&str>, state_dir: &Path) -> anyhow::Result<vault::KeyRing> {
    if let Some(spec) = configured {
        return vault::KeyRing::parse(spec).context("vault_keys");
    }
    let path = state_dir.join(GENERATED_KEYS_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return vault::KeyRing::parse(existing.trim())
            .with_context(|| format!("{}", path.display()));
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let entry = vault::KeyRing::generate_entry("local1");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(entry.as_bytes())?;
    }
    tracing::warn!(path = %path.display(), "no vault_keys configured: generated a local vault key (set vault_keys in production)");
    vault::KeyRing::parse(&entry)
}

/// The directory of a manifest given as a file or a directory, as `Manifest::load` takes it.
fn manifest_dir(manifest: &Path) -> PathBuf {
    if manifest.is_dir() {
        return manifest.to_path_buf();
    }
    match manifest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The payment core's instances: enough pooled slots for the concurrency cap below plus jobs
/// and migrations, fewer than the shop's engine reserves (both run in one `bazaar up` process).
const CORE_POOLED_INSTANCES: u32 = 300;
const CORE_MAX_CONCURRENT_INSTANCES: usize = 256;

/// A payment host that is loaded, migrated and bound, ready to serve.
pub struct Prepared {
    app: Arc<App>,
    trigger: Arc<HttpTrigger>,
    listener: tokio::net::TcpListener,
    jobs: Vec<scheduler::Job>,
    background: Vec<tokio::task::JoinHandle<()>>,
    pub addr: std::net::SocketAddr,
    pub providers: Vec<String>,
}

/// Loads the config, the vault keys, the plugins and the payment core's app, applies the core's
/// migrations and binds the listeners, so every startup error surfaces before anything is
/// served.
pub async fn prepare(
    config_path: &Path,
    listen: Option<&str>,
    variables: BTreeMap<String, String>,
    drain: Duration,
) -> anyhow::Result<Prepared> {
    let resolved = config::load(config_path, listen)?;
    // The core app's state dir (`.spin` beside its manifest, as `bazaar up` picks it): its
    // SQLite `default` database, its logs and the generated vault key live there.
    let state_dir = manifest_dir(&resolved.core_manifest).join(".spin");
    let vault = key_ring(resolved.vault_keys.as_deref(), &state_dir)?;
    let mut background = Vec::new();
    if let Some(sim) = resolved.simulator.clone() {
        let listener = tokio::net::TcpListener::bind(&sim.listen)
            .await
            .with_context(|| format!("binding the card simulator to {}", sim.listen))?;
        println!(
            "Provider sandbox simulators (local stand-ins for card, wallet, crypto APIs) on http://{}",
            listener.local_addr()?
        );
        background.push(tokio::spawn(simulator::serve(
            simulator::Simulator::new(sim),
            listener,
        )));
    }
    let cache_dir = crate::engine::default_cache_dir();
    let plugin_host = plugins::PluginHost::load(resolved.plugins, cache_dir.as_deref())?;
    let providers = plugin_host.names();
    let services = Arc::new(core_host::PaymentServices::new(plugin_host, vault));

    let options = AppOptions {
        manifest: resolved.core_manifest.clone(),
        runtime_config_file: None,
        state_dir: Some(state_dir),
        variables,
        env: Vec::new(),
        cache_dir,
        engine: EngineOptions {
            pooled_instances: CORE_POOLED_INSTANCES,
            ..EngineOptions::default()
        },
        echo_component_output: true,
    };
    let app = Arc::new(
        App::load_payment_core(&options, services)
            .await
            .with_context(|| format!("payment core ({})", resolved.core_manifest.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(&resolved.listen)
        .await
        .with_context(|| format!("binding the payment host to {}", resolved.listen))?;
    let addr = listener.local_addr()?;
    let trigger = HttpTrigger::new(
        app.clone(),
        HttpOptions {
            listen: addr,
            max_concurrent_instances: CORE_MAX_CONCURRENT_INSTANCES,
            drain_timeout: drain,
            ..HttpOptions::default()
        },
        addr,
    )?;
    let jobs = scheduler::jobs_from_manifest(&app.manifest)?;
    // The payment host's release phase: the core's schema is current before it serves.
    for migrated in crate::admin::migrate_all(&app, &trigger).await? {
        let component = migrated["component"].as_str().unwrap_or_default();
        println!("Migrated {component}: {}", migrated["result"]);
    }
    Ok(Prepared {
        app,
        trigger,
        listener,
        jobs,
        background,
        addr,
        providers,
    })
}

impl Prepared {
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "Payment host serving http://{}", self.addr);
            let _ = writeln!(out, "Payment providers: {}", self.providers.join(", "));
            let _ = writeln!(
                out,
                "Payment core: {} (state dir {})",
                self.app.manifest.path.display(),
                self.app
                    .state_dir
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            );
            let _ = out.flush();
        }
        crate::cli::start_epoch_ticker(&self.app.engine);
        let scheduled = scheduler::start(self.trigger.clone(), self.jobs);
        let shutdown = async move {
            shutdown.await;
            // Jobs stop with the listener; in-flight requests then drain under the deadline.
            for job in &scheduled {
                job.abort();
            }
        };
        let served = self.trigger.serve(self.listener, shutdown).await;
        for task in self.background {
            task.abort();
        }
        served
    }
}

pub async fn run(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let variables = bazaar_manifest::variables::parse_cli_variables(
        &args.variables,
        &std::env::current_dir()?,
    )?;
    prepare(
        &args.config,
        args.listen.as_deref(),
        variables,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await?
    .serve(shutdown)
    .await
}

/// For `bazaar up`: starts the payment host configured by `payments.toml` beside the manifest,
/// if there is one, as a task of this process that stops on SIGTERM/SIGINT like the app. The
/// payment core's variables come from SPIN_VARIABLE_<NAME> and its manifest's defaults (the
/// shop's `--variable`s belong to the shop's app).
pub async fn start_beside_manifest(
    manifest: &Path,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let dir = if manifest.is_dir() {
        manifest.to_path_buf()
    } else {
        manifest.parent().map(PathBuf::from).unwrap_or_default()
    };
    let config = if dir.as_os_str().is_empty() {
        PathBuf::from("payments.toml")
    } else {
        dir.join("payments.toml")
    };
    if !config.exists() {
        return Ok(None);
    }
    let prepared = prepare(&config, None, BTreeMap::new(), Duration::from_secs(30))
        .await
        .context("starting the payment host (payments.toml; --no-payments skips it)")?;
    Ok(Some(tokio::spawn(async move {
        if let Err(err) = prepared.serve(shutdown_signal()).await {
            tracing::error!(error = %format!("{err:#}"), "payment host stopped");
        }
    })))
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "payment host shutdown requested"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "payment host shutdown requested"),
    }
}
