//! The `bazaar` command line. `bazaar up` mirrors `spin up` (spin-reference §7) for the options
//! Bazaar needs; every failure is reported as one line and a non-zero exit, never a panic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bazaar_manifest::Manifest;
use clap::{Args, Parser, Subcommand};

use crate::app::{App, AppOptions};
use crate::engine::{self, EngineOptions};
use crate::trigger::http::{self, HttpOptions, HttpTrigger};
use crate::trigger::redis::{RedisTrigger, Subscription};

#[derive(Debug, Parser)]
#[command(
    name = "bazaar",
    version,
    about = "Bazaar's wasmtime host: runs a Spin app locally with Spin's semantics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Spin application (like `spin up`).
    Up(UpArgs),
    /// Run every component's build command (like `spin build`).
    Build(AppSourceArgs),
    /// Run the local OpenID provider for social-login development (never deploy it).
    DevIdp(crate::dev_idp::DevIdpArgs),
    /// One-off admin processes against the app's stores: `migrate`, `create-admin`.
    Admin(crate::admin::AdminArgs),
    /// The isolated payment host: serve the payment API, or run the local card-network simulator.
    Payments(crate::payments::PaymentsArgs),
}

/// Options that locate an app and its configuration; shared by every subcommand that loads one.
#[derive(Debug, Clone, Args)]
pub struct AppSourceArgs {
    /// The application manifest file, or a directory containing `spin.toml`.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    pub from: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub source: AppSourceArgs,
    /// Address to serve HTTP on.
    #[arg(long, env = "SPIN_HTTP_LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    pub listen: String,
    /// Runtime configuration (key-value stores, SQLite databases, variable providers).
    #[arg(long = "runtime-config-file", env = "RUNTIME_CONFIG_FILE")]
    pub runtime_config_file: Option<PathBuf>,
    /// Directory for default stores and logs; default `.spin/` beside the manifest.
    #[arg(long = "state-dir")]
    pub state_dir: Option<PathBuf>,
    /// Set an application variable: `name=value` (repeatable; beats every other source).
    #[arg(long = "variable", value_name = "NAME=VALUE")]
    pub variables: Vec<String>,
    /// Add an environment variable to every component: `KEY=VALUE` (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Run every component's build command before starting.
    #[arg(long, env = "SPIN_ALWAYS_BUILD", value_parser = clap::builder::BoolishValueParser::new())]
    pub build: bool,
    /// Do not echo component output to this process's stderr (log files are still written).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Instances allowed to run at once for inbound requests; more wait, then get 503.
    #[arg(long, env = "BAZAAR_MAX_CONCURRENT_INSTANCES", default_value_t = 256)]
    pub max_concurrent_instances: usize,
    /// Seconds a request waits for an instance slot before it gets 503 + Retry-After.
    #[arg(long, env = "BAZAAR_QUEUE_TIMEOUT_SECS", default_value_t = 5.0)]
    pub queue_timeout_secs: f64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "BAZAAR_DRAIN_TIMEOUT_SECS", default_value_t = 30.0)]
    pub drain_timeout_secs: f64,
    /// Stop an instance that runs longer than this many seconds (500 if it has not answered
    /// yet). Unlimited by default, as in Spin.
    #[arg(long, env = "BAZAAR_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<f64>,
    /// Disable the pooling instance allocator.
    #[arg(long)]
    pub disable_pooling: bool,
    /// Do not read or write the compiled-component cache.
    #[arg(long)]
    pub disable_cache: bool,
    /// Do not run the components' migrations (`bazaar admin migrate`) before serving.
    #[arg(long)]
    pub no_migrate: bool,
    /// Do not start the payment host (`payments.toml` beside the manifest) alongside the app.
    #[arg(long, env = "BAZAAR_NO_PAYMENTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_payments: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return fail(anyhow::Error::from(err)),
    };
    let result = runtime.block_on(async {
        // Exporters need the runtime; the guard flushes them when the command ends.
        let _telemetry = crate::telemetry::init();
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::Build(args) => build(&Manifest::load(&args.from)?),
            Command::DevIdp(args) => crate::dev_idp::run(args).await,
            Command::Admin(args) => crate::admin::main(args).await,
            Command::Payments(args) => crate::payments::main(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err),
    }
}

fn fail(err: anyhow::Error) -> ExitCode {
    // One line: the context chain joined with ": ".
    let message = format!("{err:#}").replace('\n', " ");
    eprintln!("Error: {message}");
    ExitCode::FAILURE
}

pub(crate) fn parse_pairs(pairs: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid {what} `{pair}`: expected NAME=VALUE"),
        })
        .collect()
}

async fn resolve_listen(listen: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("invalid --listen address `{listen}`"))?
        .collect();
    // Like Spin, prefer IPv4 when a name resolves to both.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("--listen `{listen}` resolved to no address"))
}

/// Runs each component's `[component.<id>.build]` command from its workdir, as `spin build`.
pub fn build(manifest: &Manifest) -> anyhow::Result<()> {
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else {
            continue;
        };
        eprintln!("Building component {id}");
        for line in build.shell_commands() {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(&line)
                .current_dir(&build.workdir)
                .status()
                .with_context(|| format!("component `{id}`: running `{line}`"))?;
            if !status.success() {
                bail!("component `{id}`: build command `{line}` failed ({status})");
            }
        }
    }
    Ok(())
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let manifest_path = args.source.from.clone();
    if args.build {
        build(&Manifest::load(&manifest_path)?)?;
    }
    let options = AppOptions {
        manifest: manifest_path,
        runtime_config_file: args.runtime_config_file.clone(),
        state_dir: args.state_dir.clone(),
        variables: bazaar_manifest::variables::parse_cli_variables(
            &args.variables,
            &std::env::current_dir()?,
        )?,
        env: parse_pairs(&args.env, "--env")?,
        cache_dir: if args.disable_cache {
            None
        } else {
            engine::default_cache_dir()
        },
        engine: EngineOptions {
            pooling: !args.disable_pooling,
            ..EngineOptions::default()
        },
        echo_component_output: !args.quiet,
    };
    let app = Arc::new(App::load(&options).await?);
    let listen = resolve_listen(&args.listen).await?;
    let listener = http::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let drain_timeout = seconds(args.drain_timeout_secs, "--drain-timeout-secs")?;
    let http_options = HttpOptions {
        listen: local_addr,
        max_concurrent_instances: args.max_concurrent_instances.max(1),
        queue_timeout: seconds(args.queue_timeout_secs, "--queue-timeout-secs")?,
        drain_timeout,
        request_timeout: args
            .request_timeout_secs
            .map(|s| seconds(s, "--request-timeout-secs"))
            .transpose()?,
    };
    let trigger = HttpTrigger::new(app.clone(), http_options, local_addr)?;
    // The local release phase: schemas are current before the first request is served.
    if !args.no_migrate {
        for migrated in crate::admin::migrate_all(&app, &trigger).await? {
            let component = migrated["component"].as_str().unwrap_or_default();
            println!("Migrated {component}: {}", migrated["result"]);
        }
    }
    // The isolated payment host (docs/payments.md) runs beside the app, so the shop is one command.
    let payments = if args.no_payments {
        None
    } else {
        crate::payments::start_beside_manifest(&args.source.from).await?
    };
    let redis_trigger = RedisTrigger::new(app.clone())?;
    let jobs = crate::trigger::scheduler::jobs_from_manifest(&app.manifest)?;
    // Subscribed before "Serving" is printed, so nothing published after that is missed.
    let redis = redis_trigger.start().await;
    print_banner(&app, local_addr, &trigger.route_table());
    print_redis(&app, &redis_trigger.subscriptions());
    print_jobs(&jobs);
    start_epoch_ticker(&app.engine);
    let scheduled = crate::trigger::scheduler::start(trigger.clone(), jobs);
    let (redis_stopping, redis_stopped) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        shutdown_signal().await;
        // Everything stops taking new work at the same moment, and HTTP and Redis drain side by
        // side under one deadline, so a SIGTERM fits the orchestrator's grace period.
        for job in &scheduled {
            job.abort();
        }
        let _ = redis_stopping.send(tokio::spawn(redis.stop(drain_timeout)));
    };
    let served = trigger.serve(listener, shutdown).await;
    if let Ok(redis_stop) = redis_stopped.await {
        let _ = redis_stop.await;
    }
    if let Some(payments) = payments {
        // It saw the same signal and drains on its own; it gets the same deadline.
        let _ = tokio::time::timeout(drain_timeout, payments).await;
    }
    served
}

fn print_banner(app: &App, addr: SocketAddr, routes: &[(String, String)]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Serving http://{addr}");
    if let Some(dir) = &app.state_dir {
        let _ = writeln!(out, "State dir: {}", dir.display());
    }
    for secret in &app.generated_secrets {
        let _ = writeln!(out, "{}", secret.describe());
    }
    for (label, description) in app.key_value.describe() {
        let _ = writeln!(out, "Key-value store `{label}`: {description}");
    }
    for (label, description) in app.sqlite.describe() {
        let _ = writeln!(out, "SQLite database `{label}`: {description}");
    }
    let _ = writeln!(out, "Available Routes:");
    for (route, component) in routes {
        let (path, wildcard) = match route.strip_suffix("/...") {
            Some(prefix) => (prefix.to_string(), " (wildcard)"),
            None => (route.trim_end_matches('/').to_string(), ""),
        };
        let _ = writeln!(out, "  {component}: http://{addr}{path}{wildcard}");
    }
    let _ = out.flush();
}

fn print_jobs(jobs: &[crate::trigger::scheduler::Job]) {
    use std::io::Write as _;
    if jobs.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Scheduled jobs:");
    for job in jobs {
        let target = job
            .component
            .as_deref()
            .map(|c| format!(" -> {c}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}: {} {}{target} every {}",
            job.name,
            job.method,
            job.route,
            humantime::format_duration(job.every)
        );
    }
    let _ = out.flush();
}

/// Which addresses the embedded broker serves, then the Redis subscriptions (Spin prints its
/// "Active Channels" the same way).
fn print_redis(app: &App, subscriptions: &[Subscription]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for address in app.redis.embedded_addresses() {
        let _ = writeln!(
            out,
            "Redis {address} did not answer: bazaar's embedded broker serves its publish/subscribe in-process (other Redis commands against it fail)"
        );
    }
    if !subscriptions.is_empty() {
        let _ = writeln!(out, "Redis subscriptions:");
    }
    for s in subscriptions {
        let broker = if s.embedded { " (embedded broker)" } else { "" };
        let _ = writeln!(
            out,
            "  {}: {} channel `{}`{broker}",
            s.component, s.address, s.channel
        );
    }
    let _ = out.flush();
}

/// A non-negative, finite number of seconds; anything else is a one-line error, not a panic.
fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        anyhow::anyhow!("{flag} must be a non-negative number of seconds, got {value}")
    })
}

/// Advances the engine epoch so guests yield periodically (see `App::new_store`).
pub(crate) fn start_epoch_ticker(engine: &wasmtime::Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .ok();
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
}
