//! The `spin.toml` v2 walker behind [`Manifest::parse_str`](crate::Manifest::parse_str). Kept out
//! of `manifest.rs` so that file stays a readable description of the data model.
//!
//! Errors produced here carry no file name (the caller prefixes it) and are one line each.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use toml::{Table, Value};

use crate::glob;
use crate::ids::{validate_kebab_id, validate_lower_snake_id, validate_store_label};
use crate::manifest::*;
use crate::toml_util::{Tbl, join_normalized, parse_toml};

const TOP_KEYS: &[&str] = &[
    "spin_manifest_version",
    "application",
    "variables",
    "trigger",
    "component",
];
const APP_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "authors",
    "targets",
    "trigger",
    "tool",
];
const VARIABLE_KEYS: &[&str] = &["default", "required", "secret", "description"];
const COMPONENT_KEYS: &[&str] = &[
    "source",
    "description",
    "files",
    "exclude_files",
    "allowed_outbound_hosts",
    "allowed_http_hosts",
    "key_value_stores",
    "sqlite_databases",
    "ai_models",
    "environment",
    "variables",
    "targets",
    "build",
    "tool",
    "dependencies_inherit_configuration",
    "dependencies",
];
const HTTP_TRIGGER_KEYS: &[&str] = &[
    "id",
    "component",
    "components",
    "route",
    "static_response",
    "executor",
];
const REDIS_TRIGGER_KEYS: &[&str] = &["id", "component", "components", "channel", "address"];

pub(crate) fn parse_manifest(text: &str, path: PathBuf, dir: PathBuf) -> Result<Manifest> {
    let root = parse_toml(text)?;
    check_version(&root)?;
    let top = Tbl::new(&root, "the top level");
    top.check_keys(TOP_KEYS)?;

    let mut warnings = Vec::new();
    let app_table = top
        .table("application")?
        .ok_or_else(|| anyhow!("missing required table [application]"))?;
    let application = parse_application(app_table, &mut warnings)?;
    let variables = parse_variables(top.table("variables")?)?;

    let mut components = BTreeMap::new();
    if let Some(comps) = top.table("component")? {
        for (id, value) in comps {
            let loc = format!("[component.{id}]");
            validate_kebab_id(id).with_context(|| format!("invalid component id in {loc}"))?;
            let Value::Table(t) = value else {
                bail!("{loc} must be a table, found {}", value.type_str());
            };
            components.insert(
                id.clone(),
                parse_component(id, t, &loc, &dir, &mut warnings)?,
            );
        }
    }

    let triggers = top.table("trigger")?.ok_or_else(|| {
        anyhow!("missing triggers: add at least one [[trigger.http]] or [[trigger.redis]]")
    })?;
    let (http_triggers, redis_triggers) =
        parse_triggers(triggers, &mut components, &dir, &mut warnings)?;

    let manifest = Manifest {
        path,
        dir,
        application,
        variables,
        http_triggers,
        redis_triggers,
        components,
        warnings,
    };
    check_redis_addresses(&manifest)?;
    check_template_references(&manifest)?;
    Ok(manifest)
}

/// Version first, before unknown keys: a v1 manifest is full of keys v2 does not know, and
/// "unknown key `name`" would hide the real problem.
fn check_version(root: &Table) -> Result<()> {
    const V1: &str = "this is a version 1 manifest, which bazaar does not support: convert it to `spin_manifest_version = 2` (`spin doctor` can do it)";
    if root.contains_key("spin_version") {
        bail!("{V1}");
    }
    match root.get("spin_manifest_version") {
        None => bail!("missing `spin_manifest_version` (must be the integer 2)"),
        Some(Value::Integer(2)) => Ok(()),
        Some(Value::String(s)) if s.trim() == "1" => bail!("{V1}"),
        Some(Value::String(s)) => {
            bail!("`spin_manifest_version` must be the integer 2, not the string \"{s}\"")
        }
        Some(Value::Integer(n)) => {
            bail!("unsupported `spin_manifest_version = {n}` (bazaar supports 2)")
        }
        Some(v) => bail!(
            "`spin_manifest_version` must be the integer 2, found {}",
            v.type_str()
        ),
    }
}

fn parse_application(t: &Table, warnings: &mut Vec<String>) -> Result<Application> {
    let app = Tbl::new(t, "[application]");
    app.check_keys(APP_KEYS)?;
    app.array("targets")?; // deployment targets are for `spin build` tooling; accepted, ignored
    let mut application = Application {
        name: app.req_str("name")?.to_string(),
        version: app.str("version")?.map(str::to_string),
        description: app.str("description")?.map(str::to_string),
        authors: app.str_array("authors")?,
        redis_address: None,
        tool: parse_tools(&app)?,
    };
    if let Some(triggers) = app.table("trigger")? {
        for (ty, value) in triggers {
            let loc = format!("[application.trigger.{ty}]");
            let Value::Table(t) = value else {
                bail!("{loc} must be a table, found {}", value.type_str());
            };
            let tt = Tbl::new(t, &loc);
            match ty.as_str() {
                "http" => {
                    tt.check_keys(&["base"])?;
                    match tt.str("base")? {
                        None | Some("/") => {
                            if tt.has("base") {
                                warnings.push(format!("{loc} `base` is deprecated and ignored (only \"/\" is allowed); remove it"));
                            }
                        }
                        Some(other) => bail!(
                            "{loc} base = \"{other}\" is not supported (Spin only accepts \"/\"): put the prefix into each trigger's `route`"
                        ),
                    }
                }
                "redis" => {
                    tt.check_keys(&["address"])?;
                    if let Some(a) = tt.str("address")? {
                        application.redis_address = Some(
                            Template::parse(a).with_context(|| format!("`address` in {loc}"))?,
                        );
                    }
                }
                other => bail!(
                    "{loc}: trigger type `{other}` is not supported by bazaar (only http and redis)"
                ),
            }
        }
    }
    Ok(application)
}

/// `[x.tool.<name>]` tables are for third-party tools; Spin ignores their content, so do we.
fn parse_tools(t: &Tbl<'_>) -> Result<BTreeMap<String, Table>> {
    let Some(tools) = t.table("tool")? else {
        return Ok(BTreeMap::new());
    };
    tools
        .iter()
        .map(|(name, v)| match v {
            Value::Table(tt) => Ok((name.clone(), tt.clone())),
            other => bail!(
                "`tool.{name}` in {} must be a table, found {}",
                t.loc,
                other.type_str()
            ),
        })
        .collect()
}

fn parse_variables(t: Option<&Table>) -> Result<BTreeMap<String, VariableDecl>> {
    let mut out = BTreeMap::new();
    for (name, value) in t.into_iter().flatten() {
        validate_lower_snake_id(name)
            .with_context(|| "invalid variable name in [variables]".to_string())?;
        let loc = format!("variable `{name}` in [variables]");
        let Value::Table(vt) = value else {
            bail!(
                "{loc} must be a table like {{ default = \"...\" }} or {{ required = true }}, found {}",
                value.type_str()
            );
        };
        let v = Tbl::new(vt, &loc);
        v.check_keys(VARIABLE_KEYS)?;
        let decl = VariableDecl {
            default: v.str("default")?.map(str::to_string),
            required: v.bool("required")?.unwrap_or(false),
            secret: v.bool("secret")?.unwrap_or(false),
            description: v.str("description")?.map(str::to_string),
        };
        // Spin's lock step demands exactly one of the two (`required` XOR `default`).
        match (decl.required, &decl.default) {
            (true, Some(_)) => bail!(
                "{loc} is `required = true` and also has a `default`; Spin rejects this, keep only one"
            ),
            (false, None) => bail!("{loc} needs either `required = true` or a `default`"),
            _ => {}
        }
        out.insert(name.clone(), decl);
    }
    Ok(out)
}

fn parse_component(
    id: &str,
    t: &Table,
    loc: &str,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Component> {
    let c = Tbl::new(t, loc);
    c.check_keys(COMPONENT_KEYS)?;

    let source = parse_source(&c, dir)?;
    c.array("targets")?; // per-component deployment targets: accepted, ignored

    let exclude = c.str_array("exclude_files")?;
    let files = parse_files(&c, dir, &exclude)?;

    let mut allowed_outbound_hosts = Vec::new();
    for raw in c.str_array("allowed_outbound_hosts")? {
        let t = Template::parse(&raw)
            .with_context(|| format!("`allowed_outbound_hosts` entry in {loc}"))?;
        allowed_outbound_hosts.push(t);
    }
    let http_hosts = c.str_array("allowed_http_hosts")?;
    if !http_hosts.is_empty() {
        warnings.push(format!(
            "{loc} `allowed_http_hosts` is deprecated: use `allowed_outbound_hosts`"
        ));
        for host in &http_hosts {
            for converted in convert_allowed_http_host(host)
                .with_context(|| format!("`allowed_http_hosts` in {loc}"))?
            {
                allowed_outbound_hosts.push(Template::literal(&converted));
            }
        }
    }

    let key_value_stores = labels(&c, "key_value_stores")?;
    let sqlite_databases = labels(&c, "sqlite_databases")?;

    let mut variables = BTreeMap::new();
    if let Some(vars) = c.table("variables")? {
        for (name, value) in vars {
            validate_lower_snake_id(name)
                .with_context(|| format!("invalid variable name in `variables` of {loc}"))?;
            let Value::String(raw) = value else {
                bail!(
                    "`variables.{name}` in {loc} must be a string, found {}",
                    value.type_str()
                );
            };
            let t = Template::parse(raw).with_context(|| format!("`variables.{name}` in {loc}"))?;
            variables.insert(name.clone(), t);
        }
    }

    c.bool("dependencies_inherit_configuration")?;
    if let Some(deps) = c.table("dependencies")?
        && !deps.is_empty()
    {
        bail!(
            "{loc}: component `dependencies` (composition) are not supported by bazaar; compose the component before running it"
        );
    }

    Ok(Component {
        id: id.to_string(),
        source,
        description: c.str("description")?.map(str::to_string),
        files,
        allowed_outbound_hosts,
        key_value_stores,
        sqlite_databases,
        ai_models: c.str_array("ai_models")?,
        environment: c.str_map("environment")?,
        variables,
        build: parse_build(&c, dir)?,
        tool: parse_tools(&c)?,
    })
}

fn labels(c: &Tbl<'_>, key: &str) -> Result<Vec<String>> {
    let labels = c.str_array(key)?;
    for l in &labels {
        validate_store_label(l)
            .with_context(|| format!("invalid label in `{key}` of {}", c.loc))?;
    }
    Ok(labels)
}

fn parse_source(c: &Tbl<'_>, dir: &Path) -> Result<PathBuf> {
    let loc = c.loc;
    match c.get("source") {
        None => Err(c.missing("source")),
        Some(Value::String(s)) if s.trim().is_empty() => {
            bail!("`source` in {loc} must not be empty")
        }
        Some(Value::String(s)) => Ok(join_normalized(dir, s)),
        Some(Value::Table(t)) => {
            let kind = if t.contains_key("url") || t.contains_key("digest") {
                Some(("{ url, digest }", &["url", "digest"][..]))
            } else if t.contains_key("package")
                || t.contains_key("registry")
                || t.contains_key("version")
            {
                Some((
                    "{ registry, package, version }",
                    &["registry", "package", "version"][..],
                ))
            } else {
                None
            };
            let sloc = format!("`source` of {loc}");
            match kind {
                Some((shape, keys)) => {
                    Tbl::new(t, &sloc).check_keys(keys)?;
                    bail!(
                        "{sloc} is a remote {shape} source; bazaar only runs local sources: download or build the .wasm and set `source` to its path"
                    )
                }
                None => bail!(
                    "{sloc} must be a path string, {{ url, digest }} or {{ registry, package, version }}"
                ),
            }
        }
        Some(v) => Err(c.type_err("source", "a path string", v)),
    }
}

fn parse_files(c: &Tbl<'_>, dir: &Path, exclude: &[String]) -> Result<Vec<FileMount>> {
    let loc = c.loc;
    let mut mounts = Vec::new();
    for (i, entry) in c.array("files")?.into_iter().flatten().enumerate() {
        let eloc = format!("`files` entry #{} of {loc}", i + 1);
        match entry {
            Value::String(pattern) => {
                let trimmed = pattern.trim_start_matches("./");
                if trimmed.starts_with('/') || trimmed.split('/').any(|s| s == "..") {
                    bail!(
                        "{eloc} `{pattern}` must be a relative path inside the application directory; use {{ source, destination }} for other places"
                    );
                }
                let found = glob::expand(dir, trimmed).map_err(|e| {
                    anyhow!("{eloc} `{pattern}`: cannot read {}: {e}", dir.display())
                })?;
                for rel in found {
                    if exclude.iter().any(|x| glob::matches(x, &rel)) {
                        continue;
                    }
                    mounts.push(FileMount {
                        source: dir.join(&rel),
                        destination: format!("/{rel}"),
                    });
                }
            }
            Value::Table(t) => {
                let ft = Tbl::new(t, &eloc);
                ft.check_keys(&["source", "destination"])?;
                let source = ft.req_str("source")?;
                let destination = ft.req_str("destination")?;
                if !destination.starts_with('/') {
                    bail!(
                        "`destination` in {eloc} must be an absolute guest path (start with `/`), got `{destination}`"
                    );
                }
                mounts.push(FileMount {
                    source: join_normalized(dir, source),
                    destination: destination.to_string(),
                });
            }
            other => bail!(
                "{eloc} must be a glob string or {{ source, destination }}, found {}",
                other.type_str()
            ),
        }
    }
    Ok(mounts)
}

fn parse_build(c: &Tbl<'_>, dir: &Path) -> Result<Option<BuildConfig>> {
    let Some(t) = c.table("build")? else {
        return Ok(None);
    };
    let loc = match c.loc.strip_suffix(']') {
        Some(table) if table.starts_with("[component.") => format!("{table}.build]"),
        _ => format!("`build` of {}", c.loc),
    };
    let b = Tbl::new(t, &loc);
    b.check_keys(&["command", "workdir", "watch"])?;
    let command = match b.get("command") {
        None => return Err(b.missing("command")),
        Some(Value::String(s)) => BuildCommand::Shell(s.clone()),
        Some(Value::Array(_)) => {
            let cmds = b.str_array("command")?;
            if cmds.is_empty() {
                bail!("`command` in {loc} must not be an empty array");
            }
            BuildCommand::Sequence(cmds)
        }
        Some(v) => return Err(b.type_err("command", "a string or an array of strings", v)),
    };
    let workdir = match b.str("workdir")? {
        Some(w) => join_normalized(dir, w),
        None => dir.to_path_buf(),
    };
    Ok(Some(BuildConfig {
        command,
        workdir,
        watch: b.str_array("watch")?,
    }))
}

/// Spin's conversion of the deprecated `allowed_http_hosts` list: `insecure:allow-all` becomes
/// `*://*:*`; every other entry (`host`, `host:port`, `http(s)://host[:port][/]`) becomes an
/// `http://` and an `https://` entry for the same host and port.
fn convert_allowed_http_host(entry: &str) -> Result<Vec<String>> {
    let e = entry.trim();
    if e == "insecure:allow-all" {
        return Ok(vec!["*://*:*".to_string()]);
    }
    let authority = if let Some((scheme, rest)) = e.split_once("://") {
        if scheme != "http" && scheme != "https" {
            bail!("`{entry}` must be a host, host:port or an http(s) URL");
        }
        rest
    } else {
        e
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains('/') {
        bail!("`{entry}` must be a host and optional port only (no path)");
    }
    Ok(vec![
        format!("http://{authority}"),
        format!("https://{authority}"),
    ])
}

/// A trigger's `component` before inline components are given ids.
enum ComponentSpec<'a> {
    Reference(String),
    Inline(&'a Table),
}

struct RawTrigger<'a> {
    ty: &'static str,
    loc: String,
    id: Option<String>,
    component: Option<ComponentSpec<'a>>,
    table: Tbl<'a>,
}

fn parse_triggers(
    triggers: &Table,
    components: &mut BTreeMap<String, Component>,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<(Vec<HttpTrigger>, Vec<RedisTrigger>)> {
    // Pass 1: shape checks and explicit ids.
    let mut raws: Vec<RawTrigger<'_>> = Vec::new();
    let locs: Vec<(String, &'static str, &Table)> = collect_trigger_tables(triggers)?;
    for (loc, ty, t) in &locs {
        let tbl = Tbl::new(t, loc);
        tbl.check_keys(if *ty == "http" {
            HTTP_TRIGGER_KEYS
        } else {
            REDIS_TRIGGER_KEYS
        })?;
        if tbl.has("components") {
            bail!(
                "`components` in {loc} is reserved by Spin for future use and not supported; use `component`"
            );
        }
        let id = tbl.str("id")?.filter(|s| !s.is_empty()).map(str::to_string);
        let component = match tbl.get("component") {
            None => None,
            Some(Value::String(s)) => Some(ComponentSpec::Reference(s.clone())),
            Some(Value::Table(t)) => Some(ComponentSpec::Inline(t)),
            Some(v) => {
                return Err(tbl.type_err(
                    "component",
                    "a component id or an inline component table",
                    v,
                ));
            }
        };
        raws.push(RawTrigger {
            ty,
            loc: loc.clone(),
            id,
            component,
            table: tbl,
        });
    }
    let mut seen = BTreeSet::new();
    for r in &raws {
        if let Some(id) = &r.id
            && !seen.insert(id.clone())
        {
            bail!("duplicate trigger id `{id}` ({} reuses it)", r.loc);
        }
    }

    // Pass 2: Spin's id scheme for triggers without one: `<component>-<type>-trigger` when the
    // trigger references a component and that id is free, else `<type>-trigger<n>` with the
    // lowest free n (counted per trigger type).
    let mut taken = seen;
    let mut counters: BTreeMap<&str, u32> = BTreeMap::new();
    let mut ids = Vec::with_capacity(raws.len());
    for r in &raws {
        if let Some(id) = &r.id {
            ids.push(id.clone());
            continue;
        }
        if let Some(ComponentSpec::Reference(c)) = &r.component {
            let natural = format!("{c}-{}-trigger", r.ty);
            if taken.insert(natural.clone()) {
                ids.push(natural);
                continue;
            }
        }
        let n = counters.entry(r.ty).or_insert(1);
        let id = loop {
            let candidate = format!("{}-trigger{n}", r.ty);
            *n += 1;
            if taken.insert(candidate.clone()) {
                break candidate;
            }
        };
        ids.push(id);
    }

    // Pass 3: component references and inline components. An inline component is named
    // `<trigger-id>-component` if that is a valid, unused component id, else `inline-component<n>`
    // (lowest free n), as Spin does, so ids (and thus log file names and `*.spin.internal` hosts)
    // match what `spin up` would use.
    let explicit: BTreeSet<String> = components.keys().cloned().collect();
    let mut http = Vec::new();
    let mut redis = Vec::new();
    for (r, id) in raws.iter().zip(ids) {
        let component = match &r.component {
            None => None,
            Some(ComponentSpec::Reference(c)) => {
                if !explicit.contains(c) {
                    bail!(
                        "{} references component `{c}`, but there is no [component.{c}]",
                        r.loc
                    );
                }
                Some(c.clone())
            }
            Some(ComponentSpec::Inline(t)) => {
                let natural = format!("{id}-component");
                let cid =
                    if validate_kebab_id(&natural).is_ok() && !components.contains_key(&natural) {
                        natural
                    } else {
                        (1..)
                            .map(|n| format!("inline-component{n}"))
                            .find(|c| !components.contains_key(c))
                            .unwrap_or_default()
                    };
                let cloc = format!("the inline component of {}", r.loc);
                let comp = parse_component(&cid, t, &cloc, dir, warnings)?;
                components.insert(cid.clone(), comp);
                Some(cid)
            }
        };
        match r.ty {
            "http" => http.push(parse_http_trigger(r, id, component)?),
            _ => redis.push(parse_redis_trigger(r, id, component)?),
        }
    }
    Ok((http, redis))
}

fn collect_trigger_tables(triggers: &Table) -> Result<Vec<(String, &'static str, &Table)>> {
    let mut out = Vec::new();
    for (ty, value) in triggers {
        let ty: &'static str = match ty.as_str() {
            "http" => "http",
            "redis" => "redis",
            other => bail!(
                "trigger type `{other}` ([[trigger.{other}]]) is not supported by bazaar (only http and redis)"
            ),
        };
        let Value::Array(items) = value else {
            bail!(
                "`trigger.{ty}` must be an array of tables: write [[trigger.{ty}]], not [trigger.{ty}]"
            );
        };
        for (i, item) in items.iter().enumerate() {
            let loc = format!("[[trigger.{ty}]] #{}", i + 1);
            let Value::Table(t) = item else {
                bail!("{loc} must be a table, found {}", item.type_str());
            };
            out.push((loc, ty, t));
        }
    }
    Ok(out)
}

fn parse_http_trigger(
    r: &RawTrigger<'_>,
    id: String,
    component: Option<String>,
) -> Result<HttpTrigger> {
    let t = &r.table;
    let loc = r.loc.as_str();
    let route = match t.get("route") {
        None => return Err(t.missing("route")),
        Some(Value::String(s)) => HttpRoute::Path(s.clone()),
        Some(Value::Table(rt)) => {
            let rloc = format!("`route` of {loc}");
            let rtbl = Tbl::new(rt, &rloc);
            rtbl.check_keys(&["private"])?;
            match rtbl.bool("private")? {
                Some(true) => HttpRoute::Private,
                Some(false) => bail!(
                    "{loc}: route = {{ private = false }} is not allowed; give a route string, or {{ private = true }} for a component reachable only by service chaining"
                ),
                None => return Err(rtbl.missing("private")),
            }
        }
        Some(v) => return Err(t.type_err("route", "a route string or { private = true }", v)),
    };

    if let Some(e) = t.table("executor")? {
        let eloc = format!("`executor` of {loc}");
        let et = Tbl::new(e, &eloc);
        match et.req_str("type")? {
            "http" | "spin" => et.check_keys(&["type"])?,
            "wagi" => bail!(
                "{loc}: the WAGI executor is not supported by bazaar (only WASI HTTP components)"
            ),
            other => {
                bail!("{loc}: unknown executor type `{other}` (bazaar supports \"http\"/\"spin\")")
            }
        }
    }

    let static_response = match t.table("static_response")? {
        None => None,
        Some(s) => {
            let sloc = format!("`static_response` of {loc}");
            let st = Tbl::new(s, &sloc);
            st.check_keys(&["status_code", "headers", "body"])?;
            let status_code = match st.uint("status_code")? {
                None => 200,
                Some(c) if (100..=999).contains(&c) => c as u16,
                Some(c) => {
                    bail!("`status_code` in {sloc} must be an HTTP status (100-999), got {c}")
                }
            };
            Some(StaticResponse {
                status_code,
                headers: st.str_map("headers")?,
                body: st.str("body")?.map(str::to_string),
            })
        }
    };
    match (&component, &static_response) {
        (Some(_), Some(_)) => {
            bail!("{loc} has both `component` and `static_response`; use exactly one")
        }
        (None, None) => bail!("{loc} needs a `component` or a `static_response`"),
        _ => {}
    }
    Ok(HttpTrigger {
        id,
        route,
        component,
        static_response,
    })
}

fn parse_redis_trigger(
    r: &RawTrigger<'_>,
    id: String,
    component: Option<String>,
) -> Result<RedisTrigger> {
    let t = &r.table;
    let loc = r.loc.as_str();
    let component = component.ok_or_else(|| t.missing("component"))?;
    let channel =
        Template::parse(t.req_str("channel")?).with_context(|| format!("`channel` in {loc}"))?;
    let address = match t.str("address")? {
        Some(a) => Some(Template::parse(a).with_context(|| format!("`address` in {loc}"))?),
        None => None,
    };
    Ok(RedisTrigger {
        id,
        component,
        channel,
        address,
    })
}

/// A Redis trigger cannot run without a server; failing at load is clearer than at subscribe.
fn check_redis_addresses(m: &Manifest) -> Result<()> {
    if m.application.redis_address.is_some() {
        return Ok(());
    }
    if let Some((i, _)) = m
        .redis_triggers
        .iter()
        .enumerate()
        .find(|(_, t)| t.address.is_none())
    {
        bail!(
            "[[trigger.redis]] #{} has no `address` and [application.trigger.redis] sets none",
            i + 1
        );
    }
    Ok(())
}

/// Spin resolves templates against application variables only; a typo in a reference is a load
/// error, not a runtime surprise.
fn check_template_references(m: &Manifest) -> Result<()> {
    let check = |t: &Template, what: &str| -> Result<()> {
        if let Some(v) = t.variables().find(|v| !m.variables.contains_key(*v)) {
            bail!(
                "{what} `{}` references undeclared variable `{v}` (declare it in [variables])",
                t.raw
            );
        }
        Ok(())
    };
    if let Some(a) = &m.application.redis_address {
        check(a, "[application.trigger.redis] address")?;
    }
    for (i, t) in m.redis_triggers.iter().enumerate() {
        check(
            &t.channel,
            &format!("`channel` of [[trigger.redis]] #{}", i + 1),
        )?;
        if let Some(a) = &t.address {
            check(a, &format!("`address` of [[trigger.redis]] #{}", i + 1))?;
        }
    }
    for (id, c) in &m.components {
        for h in &c.allowed_outbound_hosts {
            check(
                h,
                &format!("`allowed_outbound_hosts` entry of component `{id}`"),
            )?;
        }
        for (name, t) in &c.variables {
            check(t, &format!("component `{id}` variable `{name}`"))?;
        }
    }
    Ok(())
}
