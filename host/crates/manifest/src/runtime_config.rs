//! `runtime-config.toml`: which backend each key-value / SQLite label uses, variable providers,
//! and the state/log directories (spin-reference §5). Unknown keys are errors, as in Spin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed runtime config with every relative path already resolved by Spin's rules.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where the file was read from (None for the built-in defaults).
    pub source: Option<PathBuf>,
    /// `state_dir`: `Some("")` in the file means "no state dir" (in-memory defaults).
    pub state_dir: Option<String>,
    /// `log_dir`: `Some("")` disables component log files.
    pub log_dir: Option<String>,
    pub max_instance_memory: Option<u64>,
    /// `[key_value_store.<label>]`
    pub key_value_stores: BTreeMap<String, KeyValueStoreConfig>,
    /// `[sqlite_database.<label>]`
    pub sqlite_databases: BTreeMap<String, SqliteDatabaseConfig>,
    /// `[[variables_provider]]` / `[[config_provider]]`, in file order.
    pub variables_providers: Vec<VariablesProviderConfig>,
    pub outbound_http: OutboundHttpConfig,
    /// `[outbound_networking] block_networks`: CIDRs, plus the word "private".
    pub block_networks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValueStoreConfig {
    /// `type = "spin"`: SQLite-file store. `path` is resolved against the runtime-config file's
    /// directory; `None` means in-memory.
    Spin { path: Option<PathBuf> },
    /// `type = "redis"`, `url = "redis://..."`.
    Redis { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteDatabaseConfig {
    /// `type = "spin"`: `path` is resolved against the process's current directory (Spin's rule);
    /// `None` means in-memory.
    Spin {
        path: Option<PathBuf>,
        allow_attach_file: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariablesProviderConfig {
    /// `type = "env"`: `prefix` (default `SPIN_VARIABLE`, joined to the name with `_`), optional
    /// `dotenv_path` (relative to the current directory).
    Env {
        prefix: String,
        dotenv_path: Option<PathBuf>,
    },
    /// `type = "static"`, `values = { name = "value" }`.
    Static { values: BTreeMap<String, String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundHttpConfig {
    pub connection_pooling: bool,
    pub max_concurrent_requests: Option<usize>,
}

impl Default for OutboundHttpConfig {
    fn default() -> Self {
        Self {
            connection_pooling: true,
            max_concurrent_requests: None,
        }
    }
}

impl RuntimeConfig {
    /// Reads and validates a runtime config file. Errors are one line and name the file and key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read runtime config: {e}", path.display()))?;
        Self::parse_str(&text, path)
    }

    /// Parses runtime-config text as if read from `source` (which need not exist); SQLite and
    /// dotenv paths resolve against the process's current directory.
    pub fn parse_str(text: &str, source: &Path) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot determine the current directory: {e}",
                source.display()
            )
        })?;
        Self::parse_with_cwd(text, source, &cwd)
    }

    /// [`RuntimeConfig::parse_str`] with an explicit "current directory", so the two different
    /// relative-path rules (file-relative for key-value, cwd-relative for SQLite and dotenv) can
    /// be tested without changing the process's cwd.
    pub fn parse_with_cwd(text: &str, source: &Path, cwd: &Path) -> anyhow::Result<Self> {
        let fail = |e: anyhow::Error| {
            anyhow::anyhow!(
                "{}: {}",
                source.display(),
                crate::toml_util::one_line(&format!("{e:#}"))
            )
        };
        let abs = std::path::absolute(source).map_err(|e| fail(e.into()))?;
        let file_dir = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut rc = parse::parse(text, &file_dir, cwd).map_err(fail)?;
        rc.source = Some(abs);
        Ok(rc)
    }
}

mod parse {
    //! The walker behind [`RuntimeConfig::parse_with_cwd`]. Like Spin (`validate_all_keys_used`)
    //! every key must be understood; backends Spin knows but Bazaar cannot provide get a
    //! "not supported by bazaar" error rather than "unknown", so users know the file is valid
    //! Spin config that simply needs Spin (or another backend) to run.

    use super::*;
    use crate::toml_util::{Tbl, join_normalized, parse_toml};
    use anyhow::{Result, anyhow, bail};
    use toml::{Table, Value};

    const TOP_KEYS: &[&str] = &[
        "state_dir",
        "log_dir",
        "max_instance_memory",
        "key_value_store",
        "sqlite_database",
        "variables_provider",
        "config_provider",
        "outbound_http",
        "outbound_networking",
        "llm_compute",
        "client_tls",
    ];

    pub(super) fn parse(text: &str, file_dir: &Path, cwd: &Path) -> Result<RuntimeConfig> {
        let root = parse_toml(text)?;
        let top = Tbl::new(&root, "the top level");
        top.check_keys(TOP_KEYS)?;
        for unsupported in ["llm_compute", "client_tls"] {
            if top.has(unsupported) {
                bail!("`{unsupported}` is valid Spin runtime config but not supported by bazaar");
            }
        }
        let mut rc = RuntimeConfig {
            source: None,
            state_dir: top.str("state_dir")?.map(str::to_string),
            log_dir: top.str("log_dir")?.map(str::to_string),
            max_instance_memory: top.uint("max_instance_memory")?,
            ..RuntimeConfig::default()
        };

        for (label, t) in labelled_tables(&top, "key_value_store")? {
            let loc = format!("[key_value_store.{label}]");
            rc.key_value_stores
                .insert(label.clone(), key_value_store(Tbl::new(t, &loc), file_dir)?);
        }
        for (label, t) in labelled_tables(&top, "sqlite_database")? {
            let loc = format!("[sqlite_database.{label}]");
            rc.sqlite_databases
                .insert(label.clone(), sqlite_database(Tbl::new(t, &loc), cwd)?);
        }
        // Both spellings are accepted; `variables_provider` entries come first (Spin checks that
        // name first), then the older `config_provider` ones.
        for key in ["variables_provider", "config_provider"] {
            for (i, v) in top.array(key)?.into_iter().flatten().enumerate() {
                let loc = format!("[[{key}]] #{}", i + 1);
                let Value::Table(t) = v else {
                    bail!("{loc} must be a table, found {}", v.type_str());
                };
                rc.variables_providers
                    .push(variables_provider(Tbl::new(t, &loc), cwd)?);
            }
        }
        if let Some(t) = top.table("outbound_http")? {
            let oh = Tbl::new(t, "[outbound_http]");
            oh.check_keys(&["connection_pooling", "max_concurrent_requests"])?;
            rc.outbound_http = OutboundHttpConfig {
                // Spin quirk, reproduced on purpose: once the table exists, a missing key means
                // `false` (serde default), not the built-in `true`.
                connection_pooling: oh.bool("connection_pooling")?.unwrap_or(false),
                max_concurrent_requests: oh.uint("max_concurrent_requests")?.map(|n| n as usize),
            };
        }
        if let Some(t) = top.table("outbound_networking")? {
            let on = Tbl::new(t, "[outbound_networking]");
            on.check_keys(&["block_networks"])?;
            let nets = on.str_array("block_networks")?;
            for n in &nets {
                if n != "private" && !is_cidr_or_ip(n) {
                    bail!(
                        "`block_networks` in [outbound_networking]: `{n}` is neither \"private\" nor an IP network like 10.0.0.0/8"
                    );
                }
            }
            rc.block_networks = nets;
        }
        Ok(rc)
    }

    fn labelled_tables<'a>(top: &Tbl<'a>, key: &str) -> Result<Vec<(&'a String, &'a Table)>> {
        let Some(t) = top.table(key)? else {
            return Ok(Vec::new());
        };
        t.iter()
            .map(|(label, v)| match v {
                Value::Table(tt) => Ok((label, tt)),
                other => bail!(
                    "[{key}.{label}] must be a table, found {}",
                    other.type_str()
                ),
            })
            .collect()
    }

    fn not_supported(loc: &str, ty: &str, supported: &str) -> anyhow::Error {
        anyhow!(
            "{loc}: type \"{ty}\" is valid in Spin but not supported by bazaar (supported: {supported})"
        )
    }

    fn key_value_store(t: Tbl<'_>, file_dir: &Path) -> Result<KeyValueStoreConfig> {
        let loc = t.loc;
        match t.req_str("type")? {
            "spin" => {
                t.check_keys(&["type", "path"])?;
                // Spin: relative to the runtime-config file's directory.
                Ok(KeyValueStoreConfig::Spin {
                    path: t.str("path")?.map(|p| join_normalized(file_dir, p)),
                })
            }
            "redis" => {
                t.check_keys(&["type", "url"])?;
                Ok(KeyValueStoreConfig::Redis {
                    url: t.req_str("url")?.to_string(),
                })
            }
            ty @ ("azure_cosmos" | "aws_dynamo") => Err(not_supported(loc, ty, "spin, redis")),
            other => bail!(
                "{loc}: unknown key-value store type \"{other}\" (bazaar supports spin, redis)"
            ),
        }
    }

    fn sqlite_database(t: Tbl<'_>, cwd: &Path) -> Result<SqliteDatabaseConfig> {
        let loc = t.loc;
        match t.req_str("type")? {
            "spin" => {
                t.check_keys(&["type", "path", "allow_attach_file"])?;
                Ok(SqliteDatabaseConfig::Spin {
                    // Spin: relative to the process's working directory, NOT the file's.
                    path: t.str("path")?.map(|p| join_normalized(cwd, p)),
                    allow_attach_file: t.bool("allow_attach_file")?.unwrap_or(false),
                })
            }
            "libsql" => Err(not_supported(loc, "libsql", "spin")),
            other => {
                bail!("{loc}: unknown SQLite database type \"{other}\" (bazaar supports spin)")
            }
        }
    }

    fn variables_provider(t: Tbl<'_>, cwd: &Path) -> Result<VariablesProviderConfig> {
        let loc = t.loc;
        match t.req_str("type")? {
            "env" => {
                t.check_keys(&["type", "prefix", "dotenv_path"])?;
                Ok(VariablesProviderConfig::Env {
                    prefix: t
                        .str("prefix")?
                        .unwrap_or(crate::variables::DEFAULT_ENV_PREFIX)
                        .to_string(),
                    dotenv_path: t.str("dotenv_path")?.map(|p| join_normalized(cwd, p)),
                })
            }
            "static" => {
                t.check_keys(&["type", "values"])?;
                Ok(VariablesProviderConfig::Static {
                    values: t.str_map("values")?,
                })
            }
            ty @ ("vault" | "azure_key_vault") => Err(not_supported(loc, ty, "env, static")),
            other => bail!(
                "{loc}: unknown variables provider type \"{other}\" (bazaar supports env, static)"
            ),
        }
    }

    /// `a.b.c.d/n` or `x:y::z/n` with a prefix length that fits, or a bare IP address.
    fn is_cidr_or_ip(s: &str) -> bool {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
            return false;
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= max))
    }
}
