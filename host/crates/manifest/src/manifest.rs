//! `spin.toml` (manifest version 2) loading with Spin's rules (spin-reference §1): unknown keys
//! are errors naming the key and the file, component/variable IDs follow Spin's ID grammar,
//! component sources resolve relative to the manifest, and `{{ var }}` templates are accepted
//! only where Spin accepts them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A validated manifest. Templates are kept raw (see [`Template`]); they are resolved once the
/// variable values are known.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file itself (absolute).
    pub path: PathBuf,
    /// Its directory (absolute): the base for component sources and build workdirs.
    pub dir: PathBuf,
    pub application: Application,
    /// `[variables]`, keyed by the (lower snake case) variable name.
    pub variables: BTreeMap<String, VariableDecl>,
    /// `[[trigger.http]]` in file order.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[[trigger.redis]]` in file order.
    pub redis_triggers: Vec<RedisTrigger>,
    /// `[component.<id>]`, plus inline trigger components. Following Spin (so log file names and
    /// `<id>.spin.internal` hosts match `spin up`), an inline component is named
    /// `<trigger-id>-component` when that is a valid, unused component id, else
    /// `inline-component<n>` (lowest free n).
    pub components: BTreeMap<String, Component>,
    /// Non-fatal findings Spin would warn about (deprecated `allowed_http_hosts`,
    /// `[application.trigger.http] base = "/"`). Kept here instead of printed so the host can log
    /// them through its own logger.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Application {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub authors: Vec<String>,
    /// `[application.trigger.redis] address` (raw template).
    pub redis_address: Option<Template>,
    /// `[application.tool.<name>]`, opaque (Bazaar's own settings live under `bazaar`).
    pub tool: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariableDecl {
    pub default: Option<String>,
    pub required: bool,
    pub secret: bool,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRoute {
    /// A route pattern exactly as written in the manifest (e.g. `/api/cart/...`).
    Path(String),
    /// `route = { private = true }`: reachable only through service chaining.
    Private,
}

#[derive(Debug, Clone)]
pub struct HttpTrigger {
    /// The manifest's `id`, or Spin's generated one: `<component>-<type>-trigger` when the
    /// trigger references a component by id and that is free, else `<type>-trigger<n>`
    /// (`http-trigger1`, ...; lowest free n per trigger type). Same scheme for Redis triggers.
    pub id: String,
    pub route: HttpRoute,
    /// Component id. `None` when the trigger has a `static_response` instead.
    pub component: Option<String>,
    pub static_response: Option<StaticResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticResponse {
    pub status_code: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RedisTrigger {
    pub id: String,
    pub component: String,
    pub channel: Template,
    /// Per-trigger address; falls back to `application.redis_address`.
    pub address: Option<Template>,
}

#[derive(Debug, Clone)]
pub struct Component {
    pub id: String,
    /// Absolute path of the `.wasm` (local sources only; URL/registry sources are rejected with
    /// a clear error since this runner cannot fetch).
    pub source: PathBuf,
    pub description: Option<String>,
    /// Glob entries are expanded (minus `exclude_files`) when the manifest is loaded, so load it
    /// again after a build that creates files. `{ source, destination }` entries are kept as is.
    pub files: Vec<FileMount>,
    /// Includes the `http://`/`https://` pairs converted from deprecated `allowed_http_hosts`.
    pub allowed_outbound_hosts: Vec<Template>,
    pub key_value_stores: Vec<String>,
    pub sqlite_databases: Vec<String>,
    /// `ai_models`: kept so the host can refuse (or one day serve) them explicitly instead of the
    /// manifest silently dropping a capability the app asked for.
    pub ai_models: Vec<String>,
    pub environment: BTreeMap<String, String>,
    /// `[component.<id>.variables]`: name → template over application variables.
    pub variables: BTreeMap<String, Template>,
    pub build: Option<BuildConfig>,
    /// `[component.<id>.tool.<name>]`, opaque.
    pub tool: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    /// Host path (absolute) of a file or directory.
    pub source: PathBuf,
    /// Absolute guest path.
    pub destination: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// The command, one shell string (Spin runs string commands through the shell) or argv.
    pub command: BuildCommand,
    /// Absolute working directory (manifest dir unless `workdir` is set).
    pub workdir: PathBuf,
    pub watch: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildCommand {
    Shell(String),
    /// Not produced by [`Manifest::load`]: Spin gives an array `command` a different meaning
    /// (see [`BuildCommand::Sequence`]). Kept only so existing code matching on it compiles.
    Argv(Vec<String>),
    /// `command = ["npm install", "npm run build"]`: in Spin an array is a *sequence of shell
    /// commands* run left to right (stopping at the first failure), not an argv.
    Sequence(Vec<String>),
}

impl BuildConfig {
    /// The shell command lines to run, in order, in [`BuildConfig::workdir`]. Callers should run
    /// each through the platform shell (`sh -c`), stopping at the first failure, as `spin build`.
    pub fn shell_commands(&self) -> Vec<String> {
        match &self.command {
            BuildCommand::Shell(c) => vec![c.clone()],
            BuildCommand::Sequence(cs) => cs.clone(),
            BuildCommand::Argv(argv) => vec![argv.join(" ")],
        }
    }
}

/// A string that may contain `{{ variable }}` references to application variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub raw: String,
    pub parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    Variable(String),
}

impl Template {
    /// Parses `{{ name }}` references; an unterminated `{{` or an invalid name is an error.
    ///
    /// Syntax (Spin's): `{{` opens a reference, the text up to the next `}}` (trimmed) must be a
    /// lower_snake_case variable name. There is no escape; a lone `}}` is literal text.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(TemplatePart::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| anyhow::anyhow!("unterminated `{{{{` in template `{raw}`"))?;
            let name = after[..close].trim();
            crate::ids::validate_lower_snake_id(name).map_err(|e| {
                anyhow::anyhow!(
                    "invalid variable reference `{{{{{}}}}}` in template `{raw}`: {e}",
                    &after[..close]
                )
            })?;
            parts.push(TemplatePart::Variable(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Literal(rest.to_string()));
        }
        Ok(Self {
            raw: raw.to_string(),
            parts,
        })
    }

    /// A template with no variable references (used for values that came from somewhere that is
    /// not templated, e.g. converted `allowed_http_hosts`).
    pub fn literal(s: &str) -> Self {
        let parts = if s.is_empty() {
            vec![]
        } else {
            vec![TemplatePart::Literal(s.to_string())]
        };
        Self {
            raw: s.to_string(),
            parts,
        }
    }

    /// Names of the application variables this template references.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Variable(v) => Some(v.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// Renders with `lookup` giving each variable's resolved value.
    pub fn render(
        &self,
        mut lookup: impl FnMut(&str) -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Variable(v) => out.push_str(&lookup(v)?),
            }
        }
        Ok(out)
    }
}

impl Manifest {
    /// Loads `spin.toml` from a file path or a directory containing `spin.toml`.
    ///
    /// Every error is a single line starting with the manifest path, e.g.
    /// `app/spin.toml: unknown key `rout` in [[trigger.http]] #2 (allowed: ...)`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let file = if path.is_dir() {
            path.join("spin.toml")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("{}: cannot read manifest: {e}", file.display()))?;
        Self::parse_str(&text, &file)
    }

    /// Parses manifest text as if it had been read from `path` (which need not exist): `path`'s
    /// directory is the base for relative sources, `files` globs and build workdirs, and `path`
    /// prefixes every error. Used by [`Manifest::load`] and by tests.
    pub fn parse_str(text: &str, path: &Path) -> anyhow::Result<Self> {
        let fail = |e: anyhow::Error| {
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                crate::toml_util::one_line(&format!("{e:#}"))
            )
        };
        let abs = std::path::absolute(path).map_err(|e| fail(e.into()))?;
        let dir = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        crate::load::parse_manifest(text, abs, dir).map_err(fail)
    }

    /// Looks up a component by id.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.get(id)
    }
}
