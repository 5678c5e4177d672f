//! `bazaar admin`: one-off admin processes (12-factor XII) against the same app, stores and
//! variables `bazaar up` would use, runnable as a Kubernetes Job.
//!
//! * `bazaar admin migrate` POSTs, in-process, to every component whose
//!   `[component.<id>.tool.bazaar] migrate = "<path>"` is set, and prints what each applied;
//! * `bazaar admin create-admin --email E (--password-file F | env BAZAAR_ADMIN_PASSWORD |
//!   --password P) [--name N]` POSTs to the users component's `/internal/admin/create-admin`.
//!
//! Requests are dispatched straight to the component the way a chained call is (Spin's
//! synthetic `/...` match, private routes included): no socket is opened. The result is JSON on
//! stdout; any failure is one line on stderr and a non-zero exit. `bazaar up` runs the same
//! migrate step before serving unless `--no-migrate` (the local "release phase").

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bazaar_manifest::Manifest;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

use crate::app::{App, AppOptions};
use crate::engine::{self, EngineOptions};
use crate::factors::outbound_http::ServiceChaining as _;
use crate::trigger::http::{HttpOptions, HttpTrigger};

/// Environment variable `create-admin` reads the password from when no flag gives it.
pub const PASSWORD_ENV: &str = "BAZAAR_ADMIN_PASSWORD";
/// Component `create-admin` talks to, and its route.
const USERS_COMPONENT: &str = "users";
const CREATE_ADMIN_PATH: &str = "/internal/admin/create-admin";

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Apply every component's pending database migrations.
    Migrate(AppArgs),
    /// Create an admin account (or promote the existing account with that e-mail, given its
    /// password).
    CreateAdmin(CreateAdminArgs),
}

/// How to find and load the app: the same flags, defaults and environment as `bazaar up`.
#[derive(Debug, Clone, Args)]
pub struct AppArgs {
    /// The application manifest file, or a directory containing `spin.toml`.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    pub from: PathBuf,
    /// Runtime configuration (key-value stores, SQLite databases, variable providers).
    #[arg(long = "runtime-config-file", env = "RUNTIME_CONFIG_FILE")]
    pub runtime_config_file: Option<PathBuf>,
    /// Directory for default stores, logs and generated secrets; default `.spin/` beside the
    /// manifest.
    #[arg(long = "state-dir")]
    pub state_dir: Option<PathBuf>,
    /// Set an application variable: `name=value` (repeatable; beats every other source).
    #[arg(long = "variable", value_name = "NAME=VALUE")]
    pub variables: Vec<String>,
    /// Add an environment variable to every component: `KEY=VALUE` (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Do not echo component output to stderr (log files are still written).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CreateAdminArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// The admin's e-mail address.
    #[arg(long)]
    pub email: String,
    /// Read the password from this file (trailing newline removed); e.g. a mounted Secret.
    #[arg(long, conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
    /// The password on the command line (visible to other local users: prefer the file or
    /// BAZAAR_ADMIN_PASSWORD).
    #[arg(long)]
    pub password: Option<String>,
    /// Display name (default "Administrator").
    #[arg(long)]
    pub name: Option<String>,
}

pub async fn main(args: AdminArgs) -> anyhow::Result<()> {
    let output = match args.command {
        AdminCommand::Migrate(app) => {
            let (app, trigger) = load(&app).await?;
            json!({ "migrations": migrate_all(&app, &trigger).await? })
        }
        AdminCommand::CreateAdmin(args) => create_admin(args).await?,
    };
    println!("{output}");
    Ok(())
}

/// Loads the app exactly as `bazaar up` does and wraps it in an HTTP trigger that never listens.
async fn load(args: &AppArgs) -> anyhow::Result<(Arc<App>, Arc<HttpTrigger>)> {
    let cwd = std::env::current_dir()?;
    let options = AppOptions {
        manifest: args.from.clone(),
        runtime_config_file: args.runtime_config_file.clone(),
        state_dir: args.state_dir.clone(),
        variables: bazaar_manifest::variables::parse_cli_variables(&args.variables, &cwd)?,
        env: crate::cli::parse_pairs(&args.env, "--env")?,
        cache_dir: engine::default_cache_dir(),
        engine: EngineOptions::default(),
        echo_component_output: !args.quiet,
    };
    let app = Arc::new(App::load(&options).await?);
    let unbound = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let trigger = HttpTrigger::new(app.clone(), HttpOptions::default(), unbound)?;
    Ok((app, trigger))
}

/// `(component id, path)` of every `[component.<id>.tool.bazaar] migrate = "<path>"`, in
/// manifest (id) order.
pub fn migrate_routes(manifest: &Manifest) -> anyhow::Result<Vec<(String, String)>> {
    let mut routes = Vec::new();
    for (id, component) in &manifest.components {
        let Some(value) = component.tool.get("bazaar").and_then(|t| t.get("migrate")) else {
            continue;
        };
        let Some(path) = value.as_str().filter(|p| p.starts_with('/')) else {
            bail!("[component.{id}.tool.bazaar] migrate must be a path starting with `/`");
        };
        routes.push((id.clone(), path.to_owned()));
    }
    Ok(routes)
}

/// POSTs every component's migrate route; stops at the first failure (later components may
/// depend on earlier ones' schemas). Returns `[{component, result}]`.
pub async fn migrate_all(app: &App, trigger: &HttpTrigger) -> anyhow::Result<Vec<Value>> {
    let mut results = Vec::new();
    for (id, path) in migrate_routes(&app.manifest)? {
        let (status, body) = call(trigger, &id, &path, None).await?;
        if !(200..300).contains(&status) {
            bail!(
                "migrating component `{id}` ({path}) failed with {status}: {}",
                problem_detail(&body)
            );
        }
        results.push(json!({ "component": id, "result": body }));
    }
    Ok(results)
}

async fn create_admin(args: CreateAdminArgs) -> anyhow::Result<Value> {
    let password = match (&args.password_file, &args.password) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading --password-file {}", file.display()))?;
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_owned()
        }
        (None, Some(password)) => password.clone(),
        (None, None) => std::env::var(PASSWORD_ENV).map_err(|_| {
            anyhow::anyhow!(
                "no password: use --password-file FILE, set {PASSWORD_ENV}, or --password"
            )
        })?,
    };
    let (app, trigger) = load(&args.app).await?;
    if !app.components.contains_key(USERS_COMPONENT) {
        bail!("the app has no `{USERS_COMPONENT}` component to create the admin in");
    }
    let mut body = json!({ "email": args.email, "password": password });
    if let Some(name) = &args.name {
        body["name"] = json!(name);
    }
    let (status, answer) = call(
        &trigger,
        USERS_COMPONENT,
        CREATE_ADMIN_PATH,
        Some(body.to_string().into()),
    )
    .await?;
    match status {
        201 => Ok(json!({ "created": true, "user": answer })),
        200 => Ok(json!({ "created": false, "promoted": true, "user": answer })),
        _ => bail!(
            "create-admin failed with {status}: {}",
            problem_detail(&answer)
        ),
    }
}

/// One in-process POST to `component`; returns the status and the body as JSON (a string when
/// it is not JSON).
async fn call(
    trigger: &HttpTrigger,
    component: &str,
    path: &str,
    json_body: Option<Bytes>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{component}.spin.internal{path}"))
        .header("x-bazaar-admin", "1");
    if json_body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(
            Full::new(json_body.unwrap_or_default())
                .map_err(|never: std::convert::Infallible| match never {})
                .boxed_unsync(),
        )
        .context("building the admin request")?;
    let Some(response) = trigger.dispatch(component, request) else {
        bail!("component `{component}` has no HTTP trigger to send {path} to");
    };
    let response = response
        .await
        .map_err(|e| anyhow::anyhow!("component `{component}` {path}: {e:?}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("component `{component}` {path}: reading the answer: {e:?}"))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, body))
}

/// The `detail` of a problem+json answer, else the body itself, on one line.
fn problem_detail(body: &Value) -> String {
    let text = match body.get("detail").and_then(Value::as_str) {
        Some(detail) => {
            let errors: Vec<String> = body
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    Some(format!(
                        "{} {}",
                        e.get("field")?.as_str()?,
                        e.get("message")?.as_str()?
                    ))
                })
                .collect();
            if errors.is_empty() {
                detail.to_owned()
            } else {
                format!("{detail}: {}", errors.join("; "))
            }
        }
        None if body.as_str() == Some("") => "(empty body)".to_owned(),
        None => body.to_string(),
    };
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_become_one_line() {
        let body = json!({"detail": "The request failed validation",
            "errors": [{"field": "password", "message": "must be at least 12 characters"}]});
        assert_eq!(
            problem_detail(&body),
            "The request failed validation: password must be at least 12 characters"
        );
        assert_eq!(problem_detail(&json!("")), "(empty body)");
        assert_eq!(problem_detail(&json!({"x": 1})), "{\"x\":1}");
    }

    #[test]
    fn migrate_routes_come_from_component_tool_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"").unwrap();
        let manifest = "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
            [[trigger.http]]\nroute = { private = true }\ncomponent = \"users\"\n\
            [component.users]\nsource = \"a.wasm\"\n\
            [component.users.tool.bazaar]\nmigrate = \"/internal/admin/migrate\"\n\
            [[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n\
            [component.web]\nsource = \"a.wasm\"\n";
        std::fs::write(dir.path().join("spin.toml"), manifest).unwrap();
        let m = Manifest::load(&dir.path().join("spin.toml")).unwrap();
        assert_eq!(
            migrate_routes(&m).unwrap(),
            vec![("users".to_owned(), "/internal/admin/migrate".to_owned())]
        );
        let bad = manifest.replace("\"/internal/admin/migrate\"", "\"internal\"");
        std::fs::write(dir.path().join("spin.toml"), bad).unwrap();
        let m = Manifest::load(&dir.path().join("spin.toml")).unwrap();
        assert!(migrate_routes(&m).is_err());
    }
}
