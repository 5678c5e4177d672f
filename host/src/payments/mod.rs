//! The isolated payment host (`bazaar payments serve`): the payment core (records, state
//! machine, idempotency, provider routing, fraud check), card tokenization, signed webhooks and
//! the provider plugins, each in its own limited wasmtime instance. It runs outside the Spin app
//! so card numbers never enter it (ARCHITECTURE principle 7); see docs/payments.md.

pub mod config;
pub mod core;
pub mod domain;
pub mod fraud;
pub mod outbox;
pub mod plugins;
pub mod server;
pub mod simulator;
pub mod store;
pub mod vault;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

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
            });
            tokio::select! {
                _ = simulator::serve(simulator, listener) => {}
                _ = shutdown_signal() => {}
            }
            Ok(())
        }
    }
}

/// The vault key ring from config, or one generated once into `<dir>/payments-vault-keys`.
fn key_ring(resolved: &config::Resolved) -> anyhow::Result<vault::KeyRing> {
    if let Some(spec) = &resolved.vault_keys {
        return vault::KeyRing::parse(spec).context("vault_keys");
    }
    let dir = resolved
        .database
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("payments-vault-keys");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return vault::KeyRing::parse(existing.trim())
            .with_context(|| format!("{}", path.display()));
    }
    std::fs::create_dir_all(&dir)?;
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

/// A payment host that is loaded and bound, ready to serve.
pub struct Prepared {
    server: Arc<server::Server>,
    listener: tokio::net::TcpListener,
    background: Vec<tokio::task::JoinHandle<()>>,
    pub addr: std::net::SocketAddr,
    pub providers: Vec<String>,
}

/// Loads the config, the database, the vault keys and the plugins and binds the listeners, so
/// every startup error surfaces before anything is served.
pub async fn prepare(
    config_path: &std::path::Path,
    listen: Option<&str>,
) -> anyhow::Result<Prepared> {
    let resolved = config::load(config_path, listen)?;
    let store = Arc::new(store::Store::open(&resolved.database)?);
    let vault = key_ring(&resolved)?;
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
    let specs = std::mem::take(&mut { resolved.plugins });
    let plugin_host =
        plugins::PluginHost::load(specs, crate::engine::default_cache_dir().as_deref())?;
    let providers = plugin_host.names();
    let core = Arc::new(core::Core::new(
        store.clone(),
        vault,
        plugin_host,
        resolved.fraud,
    ));
    let listener = tokio::net::TcpListener::bind(&resolved.listen)
        .await
        .with_context(|| format!("binding the payment host to {}", resolved.listen))?;
    let addr = listener.local_addr()?;
    if let Some(redis) = resolved.redis_address.clone() {
        background.push(tokio::spawn(outbox::relay(store.clone(), redis)));
    }
    let server = Arc::new(server::Server {
        core,
        internal_token: resolved.internal_token,
    });
    Ok(Prepared {
        server,
        listener,
        background,
        addr,
        providers,
    })
}

impl Prepared {
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        drain: Duration,
    ) -> anyhow::Result<()> {
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "Payment host serving http://{}", self.addr);
            let _ = writeln!(out, "Payment providers: {}", self.providers.join(", "));
            let _ = out.flush();
        }
        let served = server::serve(self.server, self.listener, shutdown, drain).await;
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
    prepare(&args.config, args.listen.as_deref())
        .await?
        .serve(shutdown, Duration::from_secs(args.drain_timeout_secs))
        .await
}

/// For `bazaar up`: starts the payment host configured by `payments.toml` beside the manifest,
/// if there is one, as a task of this process that stops on SIGTERM/SIGINT like the app.
pub async fn start_beside_manifest(
    manifest: &std::path::Path,
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
    let prepared = prepare(&config, None)
        .await
        .context("starting the payment host (payments.toml; --no-payments skips it)")?;
    Ok(Some(tokio::spawn(async move {
        if let Err(err) = prepared
            .serve(shutdown_signal(), Duration::from_secs(30))
            .await
        {
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
