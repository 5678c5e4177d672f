//! Variable resolution with Spin's precedence: `--variable` > runtime-config providers (in file
//! order) > the always-present `SPIN_VARIABLE_<NAME>` env provider (and `.env`) > manifest
//! default. All application variables are resolved at startup so a missing required one is a
//! startup error naming it; secret values are never logged.

use std::collections::BTreeMap;

/// Resolved application variable values (name → value), plus which ones are secret.
#[derive(Clone, Default)]
pub struct ResolvedVariables {
    pub values: BTreeMap<String, String>,
    pub secrets: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for ResolvedVariables {
    // Secret values must never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.values {
            if self.secrets.contains(k) {
                map.entry(k, &"<redacted>");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

use crate::manifest::{Component, Template, VariableDecl};
use crate::runtime_config::VariablesProviderConfig;
use crate::toml_util::one_line;

/// The env provider prefix Spin uses when none is configured (`SPIN_VARIABLE_<NAME>`).
pub const DEFAULT_ENV_PREFIX: &str = "SPIN_VARIABLE";

impl ResolvedVariables {
    /// The resolved value of an application variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn is_secret(&self, name: &str) -> bool {
        self.secrets.contains(name)
    }

    /// Renders a manifest template (redis address/channel, `allowed_outbound_hosts`, component
    /// variable) with these values. Load-time validation already guarantees every reference is a
    /// declared variable, so an error here means the values did not come from [`VariableResolver`].
    pub fn render(&self, template: &Template) -> Result<String> {
        template.render(|name| {
            self.get(name).map(str::to_string).ok_or_else(|| {
                anyhow!(
                    "template `{}` references variable `{name}`, which has no value",
                    template.raw
                )
            })
        })
    }
}

/// The variables one component's guest may read: exactly the names in its
/// `[component.<id>.variables]` table, each rendered from its template (spin-reference §1.7: a
/// guest cannot read application variables directly). A component variable counts as secret if
/// its template references any secret application variable, so its value stays redacted in logs.
pub fn component_variables(
    resolved: &ResolvedVariables,
    component: &Component,
) -> Result<ResolvedVariables> {
    let mut out = ResolvedVariables::default();
    for (name, template) in &component.variables {
        let value = resolved
            .render(template)
            .map_err(|e| anyhow!("component `{}` variable `{name}`: {e}", component.id))?;
        if template.variables().any(|v| resolved.is_secret(v)) {
            out.secrets.insert(name.clone());
        }
        out.values.insert(name.clone(), value);
    }
    Ok(out)
}

/// How the resolver reads the process environment (injectable for tests).
type EnvLookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Resolves every application variable once, at startup, so a missing required variable stops
/// the app before it serves anything (instead of failing the first request that reads it).
///
/// Layers, highest first: CLI `--variable` values; runtime-config providers in file order; the
/// always-present default env provider (`SPIN_VARIABLE_<NAME>`, then `<cwd>/.env`); the manifest
/// `default`. The process environment and current directory are injectable so tests never touch
/// global state.
pub struct VariableResolver<'a> {
    cli: BTreeMap<String, String>,
    providers: Vec<VariablesProviderConfig>,
    env: EnvLookup<'a>,
    cwd: PathBuf,
    /// Values used when no other source supplies one, before the manifest default (the
    /// runner's generated development secrets).
    fallback: BTreeMap<String, String>,
}

impl Default for VariableResolver<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> VariableResolver<'a> {
    /// A resolver reading the real process environment, with `.env` looked up in the current
    /// directory; no CLI values or runtime-config providers yet.
    pub fn new() -> Self {
        Self {
            cli: BTreeMap::new(),
            providers: Vec::new(),
            env: Box::new(|k| std::env::var(k).ok()),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            fallback: BTreeMap::new(),
        }
    }

    /// `--variable` values (name → value). Every name must be declared in the manifest.
    pub fn cli_values(mut self, values: BTreeMap<String, String>) -> Self {
        self.cli = values;
        self
    }

    /// The runtime config's `[[variables_provider]]`s, in file order.
    pub fn providers(mut self, providers: &[VariablesProviderConfig]) -> Self {
        self.providers = providers.to_vec();
        self
    }

    /// Replaces the process-environment lookup (tests pass a map).
    pub fn env_lookup(mut self, lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        self.env = Box::new(lookup);
        self
    }

    /// The directory the default `.env` file (and relative `dotenv_path`s) are read from.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = dir.into();
        self
    }

    /// Resolves all `decls`. Errors (one line): a `--variable` for an undeclared name, an
    /// unreadable/malformed dotenv file, or a required variable nobody provided.
    pub fn resolve(&self, decls: &BTreeMap<String, VariableDecl>) -> Result<ResolvedVariables> {
        if let Some(name) = self.cli.keys().find(|n| !decls.contains_key(*n)) {
            bail!("--variable `{name}`: the manifest declares no such variable in [variables]");
        }
        let mut dotenv_cache: HashMap<PathBuf, BTreeMap<String, String>> = HashMap::new();
        let mut out = ResolvedVariables::default();
        for (name, decl) in decls {
            if decl.secret {
                out.secrets.insert(name.clone());
            }
            let value = self.provided_cached(name, &mut dotenv_cache)?;
            match value
                .or_else(|| self.fallback.get(name).cloned())
                .or_else(|| decl.default.clone())
            {
                Some(v) => {
                    out.values.insert(name.clone(), v);
                }
                None => bail!(
                    "variable `{name}` is required but no value was provided (set {DEFAULT_ENV_PREFIX}_{} or --variable {name}=...)",
                    name.to_ascii_uppercase()
                ),
            }
        }
        Ok(out)
    }

    /// Values for names no other source supplies, consulted before the manifest default.
    pub fn fallback_values(mut self, values: BTreeMap<String, String>) -> Self {
        self.fallback = values;
        self
    }

    /// The value `--variable`, a runtime-config provider or the environment gives `name`, if
    /// any (no fallback, no manifest default).
    pub fn provided(&self, name: &str) -> Result<Option<String>> {
        self.provided_cached(name, &mut HashMap::new())
    }

    fn provided_cached(
        &self,
        name: &str,
        dotenv_cache: &mut HashMap<PathBuf, BTreeMap<String, String>>,
    ) -> Result<Option<String>> {
        let default_provider = VariablesProviderConfig::Env {
            prefix: DEFAULT_ENV_PREFIX.to_string(),
            dotenv_path: Some(self.cwd.join(".env")),
        };
        let layers: Vec<&VariablesProviderConfig> = self
            .providers
            .iter()
            .chain(std::iter::once(&default_provider))
            .collect();
        // Dotenv files are read lazily (only when a variable gets that far) and at most once.
        let mut value = self.cli.get(name).cloned();
        for layer in &layers {
            if value.is_some() {
                break;
            }
            value = match layer {
                VariablesProviderConfig::Static { values } => values.get(name).cloned(),
                VariablesProviderConfig::Env {
                    prefix,
                    dotenv_path,
                } => {
                    let key = format!("{prefix}_{}", name.to_ascii_uppercase());
                    match (self.env)(&key) {
                        Some(v) => Some(v),
                        None => match dotenv_path {
                            Some(p) => {
                                let p = self.cwd.join(p);
                                if !dotenv_cache.contains_key(&p) {
                                    let parsed = read_dotenv(&p)?;
                                    dotenv_cache.insert(p.clone(), parsed);
                                }
                                dotenv_cache[&p].get(&key).cloned()
                            }
                            None => None,
                        },
                    }
                }
            };
        }
        Ok(value)
    }
}

/// Reads a dotenv file without touching the process environment. A missing file is simply
/// empty (the default `.env` is optional, as in Spin); a malformed one is an error.
fn read_dotenv(path: &Path) -> Result<BTreeMap<String, String>> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(e) if e.not_found() => return Ok(BTreeMap::new()),
        Err(e) => bail!(
            "dotenv file {}: {}",
            path.display(),
            one_line(&e.to_string())
        ),
    };
    iter.map(|item| {
        item.map_err(|e| {
            anyhow!(
                "dotenv file {}: {}",
                path.display(),
                one_line(&e.to_string())
            )
        })
    })
    .collect()
}

/// Parses one `--variable` argument the way `spin up` accepts it: `name=value`, `name=@file`
/// (the value is the file's content), or `@file.json` / `@file.toml` (a flat object/table of
/// string values). Relative files resolve against `cwd`.
pub fn parse_cli_variable(arg: &str, cwd: &Path) -> Result<Vec<(String, String)>> {
    if let Some(file) = arg.strip_prefix('@') {
        let path = cwd.join(file);
        let ext = path.extension().and_then(|e| e.to_str());
        if !matches!(ext, Some("json" | "toml")) {
            bail!("--variable {arg}: a file of variables must end in .json or .toml");
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow!("--variable {arg}: cannot read {}: {e}", path.display()))?;
        let pairs: Vec<(String, String)> = if ext == Some("json") {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                anyhow!(
                    "--variable {arg}: invalid JSON: {}",
                    one_line(&e.to_string())
                )
            })?;
            let obj = v
                .as_object()
                .ok_or_else(|| anyhow!("--variable {arg}: expected a JSON object"))?;
            obj.iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => bail!("--variable {arg}: value of `{k}` must be a string"),
                })
                .collect::<Result<_>>()?
        } else {
            let t = crate::toml_util::parse_toml(&text)
                .map_err(|e| anyhow!("--variable {arg}: {e}"))?;
            t.iter()
                .map(|(k, v)| match v {
                    toml::Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => bail!("--variable {arg}: value of `{k}` must be a string"),
                })
                .collect::<Result<_>>()?
        };
        return Ok(pairs);
    }
    let (name, value) = arg.split_once('=').ok_or_else(|| {
        anyhow!("--variable `{arg}` must look like name=value, name=@file or @file.json")
    })?;
    let name = name.trim();
    crate::ids::validate_lower_snake_id(name)
        .map_err(|e| anyhow!("--variable {arg}: invalid name: {e}"))?;
    let value = match value.strip_prefix('@') {
        Some(file) => {
            let path = cwd.join(file);
            std::fs::read_to_string(&path)
                .map_err(|e| anyhow!("--variable {name}: cannot read {}: {e}", path.display()))?
        }
        None => value.to_string(),
    };
    Ok(vec![(name.to_string(), value)])
}

/// Parses all `--variable` arguments into one map; a later argument overrides an earlier one
/// for the same name.
pub fn parse_cli_variables<S: AsRef<str>>(
    args: &[S],
    cwd: &Path,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        out.extend(parse_cli_variable(a.as_ref(), cwd)?);
    }
    Ok(out)
}
