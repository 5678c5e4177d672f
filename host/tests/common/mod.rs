//! Test harness: builds the fixture/real components for wasm32-wasip2 and runs the real
//! `bazaar` binary on a generated manifest, over real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds `package` for wasm32-wasip2 (release) into a target dir of its own, so the nested
/// cargo never waits on the lock held by the `cargo test` that runs us.
pub fn build_wasm(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    if let Some(path) = built.get(package) {
        return path.clone();
    }
    let target_root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target_dir = target_root.join("test-wasm");
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
            "--target-dir",
        ])
        .arg(&target_dir)
        .status()
        .expect("running cargo");
    assert!(
        status.success(),
        "building {package} for wasm32-wasip2 failed"
    );
    let path = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.exists(), "{} missing after build", path.display());
    built.insert(package.to_string(), path.clone());
    path
}

pub fn probe_wasm() -> PathBuf {
    build_wasm("spin-probe")
}

/// The Redis-triggered fixture (`host/tests/fixtures/redis-probe`); `{redis_probe}` in a test
/// manifest.
pub fn redis_probe_wasm() -> PathBuf {
    build_wasm("redis-probe")
}

/// A running `bazaar up`, killed when dropped.
pub struct Runner {
    pub child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub stderr: std::sync::Arc<Mutex<Vec<String>>>,
    pub stdout: std::sync::Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
pub struct RunnerBuilder {
    manifest: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    files: Vec<(String, String)>,
}

pub fn runner(manifest: &str) -> RunnerBuilder {
    RunnerBuilder {
        manifest: manifest.to_string(),
        args: Vec::new(),
        envs: Vec::new(),
        files: Vec::new(),
    }
}

impl RunnerBuilder {
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }
    /// An extra file written into the app directory (e.g. runtime-config.toml).
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.into(), contents.into()));
        self
    }

    fn command(&self, dir: &Path) -> Command {
        let mut manifest = self
            .manifest
            .replace("{probe}", &probe_wasm().display().to_string());
        if manifest.contains("{redis_probe}") {
            manifest = manifest.replace("{redis_probe}", &redis_probe_wasm().display().to_string());
        }
        std::fs::write(dir.join("spin.toml"), manifest).unwrap();
        for (name, contents) in &self.files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bazaar"));
        cmd.current_dir(dir)
            .arg("up")
            .arg("-f")
            .arg(dir.join("spin.toml"))
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.args);
        cmd.env_remove("RUST_LOG");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `bazaar up` expecting it to fail at startup; returns (exit code, stderr).
    pub fn expect_startup_failure(self) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let output = self
            .command(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "expected startup failure, stdout: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub fn start(self) -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let (child, base, stderr, stdout) = self.spawn(dir.path());
        Runner {
            child,
            base,
            dir,
            stderr,
            stdout,
        }
    }

    /// Spawns `bazaar up` in `dir` and waits for its `Serving` line.
    #[allow(clippy::type_complexity)]
    fn spawn(
        &self,
        dir: &Path,
    ) -> (
        Child,
        String,
        std::sync::Arc<Mutex<Vec<String>>>,
        std::sync::Arc<Mutex<Vec<String>>>,
    ) {
        let mut child = self
            .command(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning bazaar");
        let stderr_lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stdout_lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let out_lines = stdout_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("Serving ") {
                    let _ = tx.send(addr.trim().to_string());
                }
                out_lines.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let err_lines = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                err_lines.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "bazaar up did not start; stderr:\n{}",
                    stderr_lines.lock().unwrap().join("\n")
                );
            }
        };
        (child, base, stderr_lines, stdout_lines)
    }
}

impl Runner {
    /// SIGKILLs the running `bazaar up` (no drain, no shutdown hooks: a crash) and starts
    /// `builder` again in the same app directory, so every state file (SQLite databases,
    /// generated secrets, the payment host's store) survives. The HTTP port is a new one
    /// (`--listen 127.0.0.1:0`); ports fixed in `builder`'s files stay the same. Output
    /// collected before the crash is kept, followed by the new process's.
    pub fn kill_and_restart(&mut self, builder: &RunnerBuilder) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, base, stderr, stdout) = builder.spawn(self.dir.path());
        let before_err = std::mem::take(&mut *self.stderr.lock().unwrap());
        let before_out = std::mem::take(&mut *self.stdout.lock().unwrap());
        stderr.lock().unwrap().splice(0..0, before_err);
        stdout.lock().unwrap().splice(0..0, before_out);
        self.child = child;
        self.base = base;
        self.stderr = stderr;
        self.stdout = stdout;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until `predicate` holds for the collected stderr.
    pub fn wait_for_stderr(&self, predicate: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if predicate(&self.stderr_text()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits (bounded) until some stdout line contains `needle`: the startup banner continues
    /// after the `Serving` line the harness waits for.
    pub fn wait_for_stdout(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".spin")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A client's API call: `method url` with an optional bearer token, `Idempotency-Key` and JSON
/// body; the answer's status, headers and body (JSON, or the text as a JSON string). Transport
/// errors are returned, for tests that call while a runner is being killed.
pub async fn api_request(
    method: &str,
    url: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<(u16, reqwest::header::HeaderMap, serde_json::Value), reqwest::Error> {
    let mut request = client().request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, headers, value))
}

/// GET `url` and parse the probe's JSON answer.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let response = client().get(url).send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

/// The repository's own `spin.toml`, every `target/wasm32-wasip2/release/<crate>.wasm` source
/// pointed at a fresh test build of that crate, with `extra` TOML appended.
pub fn shop_manifest(extra: &str) -> String {
    let mut manifest = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
    const PREFIX: &str = "target/wasm32-wasip2/release/";
    let crates: Vec<String> = manifest
        .match_indices(PREFIX)
        .filter_map(|(at, _)| {
            let rest = &manifest[at + PREFIX.len()..];
            rest.find(".wasm").map(|end| rest[..end].to_string())
        })
        .collect();
    for krate in crates {
        let built = build_wasm(&krate.replace('_', "-"));
        manifest = manifest.replace(
            &format!("{PREFIX}{krate}.wasm"),
            &built.display().to_string(),
        );
    }
    format!("{manifest}\n{extra}")
}

/// `bazaar up` on the whole shop as a user gets it from the repository: the real `spin.toml`
/// (see [`shop_manifest`]) and the real `runtime-config.toml` (embedded SQLite stores), in a
/// fresh app directory. Add `.arg("--variable").arg("k=v")` to override settings.
pub fn shop(extra: &str) -> RunnerBuilder {
    let runtime_config =
        std::fs::read_to_string(workspace_root().join("runtime-config.toml")).unwrap();
    runner(&shop_manifest(extra))
        .file("runtime-config.toml", &runtime_config)
        .arg("--runtime-config-file")
        .arg("runtime-config.toml")
}

/// [`shop`] narrowed to some components of the real `spin.toml` (their triggers, sections and
/// every application-level setting kept), for tests of one service that should not wait for
/// the whole shop to build. `extra` TOML is appended as in [`shop`].
pub fn shop_only(components: &[&str], extra: &str) -> RunnerBuilder {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
    let mut manifest: toml::Table = toml::from_str(&text).unwrap();
    if let Some(toml::Value::Table(all)) = manifest.get_mut("component") {
        all.retain(|id, _| components.contains(&id));
    }
    if let Some(toml::Value::Table(triggers)) = manifest.get_mut("trigger")
        && let Some(toml::Value::Array(http)) = triggers.get_mut("http")
    {
        http.retain(|t| {
            t.get("component")
                .and_then(|c| c.as_str())
                .is_some_and(|c| components.contains(&c))
        });
    }
    let mut narrowed = toml::to_string(&manifest).unwrap();
    const PREFIX: &str = "target/wasm32-wasip2/release/";
    for component in components {
        let krate = component.replace('-', "_");
        let built = build_wasm(component);
        narrowed = narrowed.replace(
            &format!("{PREFIX}{krate}.wasm"),
            &built.display().to_string(),
        );
    }
    let runtime_config =
        std::fs::read_to_string(workspace_root().join("runtime-config.toml")).unwrap();
    runner(&format!("{narrowed}\n{extra}"))
        .file("runtime-config.toml", &runtime_config)
        .arg("--runtime-config-file")
        .arg("runtime-config.toml")
}

/// The Ed25519 seed end-to-end tests sign access tokens with; start the shop with
/// [`signing_keys_variable`] so the gateway trusts them.
pub const TEST_SIGNING_SEED: [u8; 32] = [7; 32];

/// `jwt_signing_keys=test=<seed>` for `--variable`.
pub fn signing_keys_variable() -> String {
    use base64::Engine;
    format!(
        "jwt_signing_keys=test={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(TEST_SIGNING_SEED)
    )
}

/// A valid access token for `sub` with `role`, an hour long, as the users service would issue.
pub fn token(sub: &str, role: bazaar_platform::auth::Role) -> String {
    use bazaar_platform::jwt::{Claims, KeyPair, sign};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    sign(
        &KeyPair::from_seed("test", TEST_SIGNING_SEED),
        &Claims {
            sub: sub.to_owned(),
            role,
            iss: "bazaar".into(),
            aud: "bazaar-api".into(),
            iat: now,
            nbf: now - 5,
            exp: now + 3600,
            jti: format!("jti-{sub}-{now}-{}", bazaar_platform::ids::new_id()),
        },
    )
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
