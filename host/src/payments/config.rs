//! The payment host's configuration file (`payments.toml`): where it listens, the vault keys,
//! the payment core's manifest, the provider plugins and their limits, and the local sandbox.
//! The core's own settings (database, Redis, internal token, fraud thresholds) are variables of
//! its manifest (`payments/spin.toml`). Secret values may be written as `env:NAME` so they come
//! from the environment instead of the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::plugins::{Limits, PluginSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the payment API listens.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `kid=base64url(32 bytes)` entries, comma-separated; the first encrypts. Usually
    /// `env:BAZAAR_PAYMENTS_VAULT_KEYS`. When unset, a key is generated once into the core
    /// app's state dir (`<core manifest dir>/.spin/payments-vault-keys`, mode 0600) for local use.
    pub vault_keys: Option<String>,
    pub core: CoreConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Start the local sandbox simulators (stand-ins for the real provider APIs) in-process.
    pub simulator: Option<SimulatorConfig>,
}

/// The payment core component, run as a Spin app.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// Its `spin.toml` (relative to the config file), e.g. `payments/spin.toml`.
    pub manifest: PathBuf,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub memory_bytes: Option<usize>,
    pub fuel: Option<u64>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The plugin component (`.wasm`), relative to the config file.
    pub component: PathBuf,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Passed to the plugin with every call (api_base, api_key, webhook_secrets ...).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    pub listen: String,
    #[serde(default)]
    pub latency_ms: u64,
    /// Fraction (0.0..=1.0) of requests answered 503 to exercise failure handling.
    #[serde(default)]
    pub failure_rate: f64,
    /// The API key the simulator accepts.
    #[serde(default = "default_sim_key")]
    pub api_key: String,
    /// Where the crypto simulator delivers invoice webhooks, e.g.
    /// `http://127.0.0.1:3100/webhooks/payments/crypto`, and the secret it signs them with.
    pub crypto_webhook_url: Option<String>,
    pub crypto_webhook_secret: Option<String>,
    /// Where the wallet simulator delivers `CHECKOUT.ORDER.APPROVED` when a payer approves at
    /// its sandbox, e.g. `http://127.0.0.1:3100/webhooks/payments/wallet`, and the secret it
    /// signs them with.
    #[serde(default)]
    pub wallet_webhook_url: Option<String>,
    #[serde(default)]
    pub wallet_webhook_secret: Option<String>,
}

fn default_sim_key() -> String {
    "sk_test_bazaar".to_string()
}

fn default_listen() -> String {
    "127.0.0.1:3100".to_string()
}

/// The resolved configuration.
pub struct Resolved {
    pub listen: String,
    pub vault_keys: Option<String>,
    /// The core's `spin.toml`, resolved against the config file's directory.
    pub core_manifest: PathBuf,
    pub plugins: Vec<PluginSpec>,
    pub simulator: Option<SimulatorConfig>,
    pub base_dir: PathBuf,
}

/// Resolves `env:NAME` references (an unset variable is an error, never an empty secret).
pub fn resolve_value(value: &str) -> anyhow::Result<String> {
    match value.strip_prefix("env:") {
        Some(name) => {
            std::env::var(name).with_context(|| format!("environment variable {name} is not set"))
        }
        None => Ok(value.to_string()),
    }
}

const DEFAULT_LIMITS: Limits = Limits {
    memory_bytes: 32 * 1024 * 1024,
    fuel: 2_000_000_000,
    timeout: Duration::from_secs(10),
};

fn limits(base: LimitsConfig, specific: LimitsConfig) -> Limits {
    Limits {
        memory_bytes: specific
            .memory_bytes
            .or(base.memory_bytes)
            .unwrap_or(DEFAULT_LIMITS.memory_bytes),
        fuel: specific.fuel.or(base.fuel).unwrap_or(DEFAULT_LIMITS.fuel),
        timeout: specific
            .timeout_ms
            .or(base.timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_LIMITS.timeout),
    }
}

pub fn load(path: &Path, listen_override: Option<&str>) -> anyhow::Result<Resolved> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let mut plugins = Vec::new();
    for (name, provider) in file.providers {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("provider name `{name}` must be lower-case letters, digits or -");
        }
        let mut settings = Vec::new();
        for (key, value) in provider.settings {
            let value = resolve_value(&value)
                .with_context(|| format!("provider `{name}` setting `{key}`"))?;
            settings.push((key, value));
        }
        plugins.push(PluginSpec {
            component: base_dir.join(&provider.component),
            allowed_outbound_hosts: provider.allowed_outbound_hosts,
            settings,
            limits: limits(file.limits, provider.limits),
            name,
        });
    }
    let mut simulator = file.simulator;
    if let Some(sim) = &mut simulator {
        if !(0.0..=1.0).contains(&sim.failure_rate) {
            bail!("simulator.failure_rate must be between 0 and 1");
        }
        if let Some(secret) = &sim.crypto_webhook_secret {
            sim.crypto_webhook_secret =
                Some(resolve_value(secret).context("simulator.crypto_webhook_secret")?);
        }
        if let Some(secret) = &sim.wallet_webhook_secret {
            sim.wallet_webhook_secret =
                Some(resolve_value(secret).context("simulator.wallet_webhook_secret")?);
        }
    }
    Ok(Resolved {
        listen: listen_override.map(str::to_string).unwrap_or(file.listen),
        core_manifest: base_dir.join(&file.core.manifest),
        vault_keys: file
            .vault_keys
            .as_deref()
            .map(resolve_value)
            .transpose()
            .context("vault_keys")?,
        plugins,
        simulator,
        base_dir,
    })
}
