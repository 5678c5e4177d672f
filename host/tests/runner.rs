//! Integration tests: the real `bazaar` binary runs the spin-probe fixture component (built for
//! wasm32-wasip2) from generated manifests and is exercised over real HTTP.

mod common;

use std::time::Duration;

use common::{client, get_json, runner};
use serde_json::Value;

fn header<'a>(dump: &'a Value, name: &str) -> Option<&'a str> {
    dump["headers"][name].as_str()
}

const PRECEDENCE_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "precedence"

[[trigger.http]]
route = "/api/cart/..."
component = "cart-wild"
[[trigger.http]]
route = "/api/cart/:id"
component = "cart-param"
[[trigger.http]]
route = "/api/cart/admin"
component = "cart-admin"
[[trigger.http]]
route = "/api/..."
component = "api-wild"
[[trigger.http]]
route = "/api/:x"
component = "api-param"
[[trigger.http]]
route = "/:a/b"
component = "param-b"
[[trigger.http]]
route = "/x/..."
component = "x-wild"

[component.cart-wild]
source = "{probe}"
[component.cart-param]
source = "{probe}"
[component.cart-admin]
source = "{probe}"
[component.api-wild]
source = "{probe}"
[component.api-param]
source = "{probe}"
[component.param-b]
source = "{probe}"
[component.x-wild]
source = "{probe}"
"#;

#[tokio::test]
async fn route_precedence_matches_spin() {
    let app = runner(PRECEDENCE_APP).start();
    // (path, expected spin-raw-component-route), from spin-reference §2.2.
    let cases = [
        ("/api/cart/42", "/api/cart/:id"),
        ("/api/cart/admin", "/api/cart/admin"),
        ("/api/cart/42/x", "/api/cart/..."),
        ("/api/foo/bar", "/api/..."),
        ("/api", "/api/..."),
        ("/x/b", "/x/..."),
        ("/api/cart/admin/", "/api/cart/admin"),
        ("/zz/b", "/:a/b"),
    ];
    for (path, expected) in cases {
        let (status, dump) = get_json(&app.url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&dump, "spin-raw-component-route"),
            Some(expected),
            "{path}: {dump}"
        );
    }
    let response = client().get(app.url("/nothing-here")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "404 must have an empty body"
    );
}

#[tokio::test]
async fn catch_all_beats_exact_root_for_other_paths() {
    let app = runner(
        r#"
spin_manifest_version = 2
[application]
name = "root"
[[trigger.http]]
route = "/..."
component = "everything"
[[trigger.http]]
route = "/"
component = "root"
[component.everything]
source = "{probe}"
[component.root]
source = "{probe}"
"#,
    )
    .start();
    let (_, dump) = get_json(&app.url("/x")).await;
    assert_eq!(header(&dump, "spin-raw-component-route"), Some("/..."));
    assert_eq!(header(&dump, "spin-component-route"), Some(""));
    let (_, dump) = get_json(&app.url("/")).await;
    assert_eq!(header(&dump, "spin-raw-component-route"), Some("/"));
    assert_eq!(header(&dump, "spin-matched-route"), Some(""));
}

#[tokio::test]
async fn request_carries_spin_headers_exactly() {
    let app = runner(
        r#"
spin_manifest_version = 2
[application]
name = "headers"
[[trigger.http]]
route = "/api/products/:sku/reviews/..."
component = "reviews"
[[trigger.http]]
route = "/users/:user_id"
component = "users"
[component.reviews]
source = "{probe}"
[component.users]
source = "{probe}"
"#,
    )
    .start();
    let response = client()
        .get(app.url("/api/products/ABC/reviews/9?q=1&z=%20"))
        .header("host", "shop.example:8443")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let dump: Value = response.json().await.unwrap();
    assert_eq!(
        header(&dump, "spin-full-url"),
        Some("http://shop.example:8443/api/products/ABC/reviews/9?q=1&z=%20")
    );
    assert_eq!(header(&dump, "spin-path-info"), Some("/9"));
    assert_eq!(
        header(&dump, "spin-matched-route"),
        Some("/api/products/:sku/reviews/...")
    );
    assert_eq!(
        header(&dump, "spin-raw-component-route"),
        Some("/api/products/:sku/reviews/...")
    );
    assert_eq!(
        header(&dump, "spin-component-route"),
        Some("/api/products/:sku/reviews")
    );
    assert_eq!(header(&dump, "spin-base-path"), Some("/"));
    assert_eq!(header(&dump, "spin-path-match-sku"), Some("ABC"));
    assert_eq!(header(&dump, "x-custom"), Some("kept"));
    let client_addr = header(&dump, "spin-client-addr").unwrap();
    assert!(client_addr.starts_with("127.0.0.1:"), "{client_addr}");
    assert_eq!(dump["authority"], "shop.example:8443");
    assert_eq!(
        dump["path_with_query"],
        "/api/products/ABC/reviews/9?q=1&z=%20"
    );
    let spin_headers: Vec<&String> = dump["headers"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("spin-"))
        .collect();
    assert_eq!(
        spin_headers.len(),
        8,
        "exactly the seven fixed spin-* headers plus one path match: {spin_headers:?}"
    );

    let (_, dump) = get_json(&app.url("/users/a%20b")).await;
    assert_eq!(header(&dump, "spin-path-match-user-id"), Some("a%20b"));
    assert_eq!(header(&dump, "spin-path-info"), Some(""));
}

#[tokio::test]
async fn well_known_endpoints_answer_before_routing() {
    let app = runner(
        r#"
spin_manifest_version = 2
[application]
name = "wellknown"
version = "1.2.3"
[[trigger.http]]
route = "/..."
component = "all"
[component.all]
source = "{probe}"
"#,
    )
    .start();
    let response = client()
        .get(app.url("/.well-known/spin/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "OK");
    let (status, info) = get_json(&app.url("/.well-known/spin/info")).await;
    assert_eq!(status, 200);
    assert_eq!(info["name"], "wellknown");
    assert_eq!(info["version"], "1.2.3");
    let response = client()
        .get(app.url("/.well-known/spin/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

const CHAIN_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "chain"
[[trigger.http]]
route = "/front/..."
component = "front"
[[trigger.http]]
route = "/closed/..."
component = "closed"
[[trigger.http]]
route = { private = true }
component = "back"

[component.front]
source = "{probe}"
allowed_outbound_hosts = ["http://*.spin.internal"]
[component.closed]
source = "{probe}"
[component.back]
source = "{probe}"
"#;

#[tokio::test]
async fn service_chaining_dispatches_in_process_with_synthetic_match() {
    let app = runner(CHAIN_APP).start();
    let url = app.url("/front?probe=outbound&url=http%3A%2F%2Fback.spin.internal%2Fhello%3Fx%3D1");
    let (status, answer) = get_json(&url).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    let callee: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(header(&callee, "spin-matched-route"), Some("/..."));
    assert_eq!(header(&callee, "spin-raw-component-route"), Some("/..."));
    assert_eq!(header(&callee, "spin-component-route"), Some(""));
    assert_eq!(header(&callee, "spin-path-info"), Some("/hello"));
    assert_eq!(header(&callee, "spin-client-addr"), Some("0.0.0.0:0"));
    assert_eq!(
        header(&callee, "spin-full-url"),
        Some("http://localhost/hello?x=1")
    );
    assert_eq!(
        header(&callee, "host"),
        None,
        "chained requests carry no Host header"
    );
    assert_eq!(callee["authority"], "back.spin.internal");
    assert_eq!(callee["path_with_query"], "/hello?x=1");
}

#[tokio::test]
async fn private_routes_are_not_public_and_chaining_needs_permission() {
    let app = runner(CHAIN_APP).start();
    // The private component has no public route.
    assert_eq!(
        client()
            .get(app.url("/hello"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // `closed` did not list back.spin.internal in allowed_outbound_hosts.
    let (_, answer) =
        get_json(&app.url("/closed?probe=outbound&url=http%3A%2F%2Fback.spin.internal%2F")).await;
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("HttpRequestDenied"), "{answer}");
    // Outsiders cannot pretend to be a chained call with a Host header.
    let response = client()
        .get(app.url("/front"))
        .header("host", "back.spin.internal")
        .send()
        .await
        .unwrap();
    let dump: Value = response.json().await.unwrap();
    assert_eq!(
        header(&dump, "spin-raw-component-route"),
        Some("/front/...")
    );
}

/// A tiny HTTP server on loopback standing in for an external API.
async fn external_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = "external says hi";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn outbound_http_is_checked_against_allowed_hosts() {
    let external = external_server().await;
    let manifest = format!(
        r#"
spin_manifest_version = 2
[application]
name = "outbound"
[variables]
api_port = {{ default = "{port}" }}
[[trigger.http]]
route = "/allowed/..."
component = "allowed"
[[trigger.http]]
route = "/other-port/..."
component = "other-port"
[[trigger.http]]
route = "/none/..."
component = "none"
[component.allowed]
source = "{{probe}}"
allowed_outbound_hosts = ["http://127.0.0.1:{{{{ api_port }}}}"]
[component.other-port]
source = "{{probe}}"
allowed_outbound_hosts = ["http://127.0.0.1:1..{port}"]
[component.none]
source = "{{probe}}"
"#,
        port = external.port()
    );
    let app = runner(&manifest).start();
    let target = format!("http%3A%2F%2F127.0.0.1%3A{}%2F", external.port());
    let (_, answer) = get_json(&app.url(&format!("/allowed?probe=outbound&url={target}"))).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "external says hi");
    for denied in ["/other-port", "/none"] {
        let (_, answer) =
            get_json(&app.url(&format!("{denied}?probe=outbound&url={target}"))).await;
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains("HttpRequestDenied"),
            "{denied}: {answer}"
        );
    }
}

const STORES_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "stores"
[[trigger.http]]
route = "/kv/..."
component = "kv"
[[trigger.http]]
route = "/nokv/..."
component = "nokv"
[component.kv]
source = "{probe}"
key_value_stores = ["default", "cache"]
sqlite_databases = ["default"]
[component.nokv]
source = "{probe}"
"#;

const STORES_RUNTIME_CONFIG: &str = r#"
[key_value_store.cache]
type = "spin"
path = "cache.db"
"#;

#[tokio::test]
async fn key_value_stores_respect_labels() {
    let app = runner(STORES_APP)
        .file("rc.toml", STORES_RUNTIME_CONFIG)
        .arg("--runtime-config-file")
        .arg("rc.toml")
        .start();
    let (_, set) = get_json(&app.url("/kv?probe=kv&store=default&op=set&key=k1&value=v1")).await;
    assert!(set.get("ok").is_some(), "{set}");
    let (_, got) = get_json(&app.url("/kv?probe=kv&store=default&op=get&key=k1")).await;
    assert_eq!(got["ok"], "v1", "{got}");
    // Stores are separate namespaces.
    let (_, got) = get_json(&app.url("/kv?probe=kv&store=cache&op=get&key=k1")).await;
    assert_eq!(got["ok"], Value::Null, "{got}");
    // A component that did not declare the label is denied, even for `default`.
    let (_, denied) = get_json(&app.url("/nokv?probe=kv&store=default&op=get&key=k1")).await;
    assert_eq!(denied["error"], "access-denied", "{denied}");
    let (_, denied) = get_json(&app.url("/kv?probe=kv&store=elsewhere&op=get&key=k1")).await;
    assert_eq!(denied["error"], "access-denied", "{denied}");
    // The default store is a file in the state dir, the labelled one where the config says.
    assert!(app.state_dir().join("sqlite_key_value.db").exists());
    assert!(app.dir.path().join("cache.db").exists());
}

#[tokio::test]
async fn unknown_store_label_is_a_startup_error() {
    let (code, stderr) = runner(STORES_APP).expect_startup_failure();
    assert_eq!(code, 1);
    assert!(stderr.contains("cache"), "{stderr}");
    assert_eq!(
        stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("Error:"))
            .count(),
        1,
        "{stderr}"
    );
}

#[tokio::test]
async fn sqlite_databases_work_and_respect_labels() {
    let app = runner(STORES_APP)
        .file("rc.toml", STORES_RUNTIME_CONFIG)
        .arg("--runtime-config-file")
        .arg("rc.toml")
        .start();
    let sql = |s: &str| {
        s.replace(' ', "%20")
            .replace('\'', "%27")
            .replace('(', "%28")
            .replace(')', "%29")
            .replace(',', "%2C")
    };
    let (_, created) = get_json(&app.url(&format!(
        "/kv?probe=sqlite&db=default&sql={}",
        sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    )))
    .await;
    assert!(created.get("error").is_none(), "{created}");
    let (_, inserted) = get_json(&app.url(&format!(
        "/kv?probe=sqlite&api=3&db=default&sql={}",
        sql("INSERT INTO t (name) VALUES ('ada')")
    )))
    .await;
    assert_eq!(inserted["changes"], 1, "{inserted}");
    assert_eq!(inserted["last_insert_rowid"], 1, "{inserted}");
    let (_, rows) = get_json(&app.url(&format!(
        "/kv?probe=sqlite&db=default&sql={}",
        sql("SELECT id, name FROM t")
    )))
    .await;
    assert_eq!(rows["columns"], serde_json::json!(["id", "name"]), "{rows}");
    assert_eq!(rows["rows"], serde_json::json!([[1, "ada"]]), "{rows}");
    let (_, denied) = get_json(&app.url(&format!(
        "/nokv?probe=sqlite&db=default&sql={}",
        sql("SELECT 1")
    )))
    .await;
    assert_eq!(denied["error"], "access-denied", "{denied}");
    assert!(app.state_dir().join("sqlite_db.db").exists());
}

const VARS_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "vars"
[variables]
greeting = { default = "hello" }
api_key = { required = true, secret = true }
region = { default = "eu" }
[[trigger.http]]
route = "/..."
component = "vars"
[component.vars]
source = "{probe}"
[component.vars.variables]
message = "{{ greeting }}, world"
key = "{{ api_key }}"
"#;

#[tokio::test]
async fn variables_resolve_with_spin_precedence() {
    let app = runner(VARS_APP)
        .env("SPIN_VARIABLE_API_KEY", "from-env")
        .env("SPIN_VARIABLE_GREETING", "hi")
        .arg("--variable")
        .arg("greeting=howdy")
        .start();
    let (_, v) = get_json(&app.url("/?probe=var&name=message")).await;
    assert_eq!(
        v["value"], "howdy, world",
        "--variable beats the environment"
    );
    let (_, v) = get_json(&app.url("/?probe=var&name=key")).await;
    assert_eq!(v["value"], "from-env");
    // `region` is an application variable the component did not declare.
    let (_, v) = get_json(&app.url("/?probe=var&name=region")).await;
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("undefined"),
        "{v}"
    );
    assert!(
        !app.stderr_text().contains("from-env"),
        "secret values must never be logged"
    );
}

#[tokio::test]
async fn missing_required_variable_is_a_startup_error() {
    let (_, stderr) = runner(VARS_APP).expect_startup_failure();
    assert!(stderr.contains("api_key"), "{stderr}");
}

#[tokio::test]
async fn a_trapping_component_gets_500_and_is_logged() {
    let app = runner(
        r#"
spin_manifest_version = 2
[application]
name = "trap"
[[trigger.http]]
route = "/..."
component = "crashy"
[component.crashy]
source = "{probe}"
"#,
    )
    .start();
    let response = client().get(app.url("/?probe=trap")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.bytes().await.unwrap().is_empty());
    assert!(
        app.wait_for_stderr(|s| s.contains("\"component_id\":\"crashy\"") && s.contains("ERROR")),
        "{}",
        app.stderr_text()
    );
    // The runner keeps serving.
    assert_eq!(
        client().get(app.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn component_output_goes_to_log_files_and_prefixed_stderr() {
    let app = runner(
        r#"
spin_manifest_version = 2
[application]
name = "logs"
[[trigger.http]]
route = "/..."
component = "talker"
[component.talker]
source = "{probe}"
environment = { GREETING = "from-manifest" }
"#,
    )
    .arg("--env")
    .arg("EXTRA=from-cli")
    .start();
    assert_eq!(
        client()
            .get(app.url("/?probe=print&msg=marker-123"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let stdout_log = app.state_dir().join("logs/talker_stdout.txt");
    let stderr_log = app.state_dir().join("logs/talker_stderr.txt");
    assert!(
        std::fs::read_to_string(&stdout_log)
            .unwrap_or_default()
            .contains("marker-123")
    );
    assert!(
        std::fs::read_to_string(&stderr_log)
            .unwrap_or_default()
            .contains("marker-123")
    );
    assert!(
        app.wait_for_stderr(|s| s.contains("[talker] marker-123")),
        "{}",
        app.stderr_text()
    );
    let (_, v) = get_json(&app.url("/?probe=env&name=GREETING")).await;
    assert_eq!(v["value"], "from-manifest");
    let (_, v) = get_json(&app.url("/?probe=env&name=EXTRA")).await;
    assert_eq!(v["value"], "from-cli");
}

const SLEEPY_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "sleepy"
[[trigger.http]]
route = "/..."
component = "sleepy"
[component.sleepy]
source = "{probe}"
"#;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut app = runner(SLEEPY_APP).start();
    let slow = tokio::spawn(client().get(app.url("/?probe=sleep&ms=1500")).send());
    tokio::time::sleep(Duration::from_millis(400)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let response = slow.await.unwrap().expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["slept_ms"], 1500);
    let status = tokio::task::spawn_blocking(move || {
        let status = app.child.wait().unwrap();
        (status, app)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0));
}

#[tokio::test]
async fn over_the_concurrency_cap_requests_get_503_with_retry_after() {
    let app = runner(SLEEPY_APP)
        .arg("--max-concurrent-instances")
        .arg("1")
        .arg("--queue-timeout-secs")
        .arg("0.2")
        .start();
    let slow = tokio::spawn(client().get(app.url("/?probe=sleep&ms=1500")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rejected = client().get(app.url("/")).send().await.unwrap();
    assert_eq!(rejected.status(), 503);
    assert_eq!(
        rejected
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // Once the slot is free, requests are served again.
    assert_eq!(
        client().get(app.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn bad_manifests_fail_with_one_line() {
    for (manifest, needle) in [
        (
            "spin_manifest_version = 2\n[application]\nname = \"x\"\nbogus = 1\n",
            "bogus",
        ),
        (
            "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"cart-2\"\n[component.cart-2]\nsource = \"{probe}\"\n",
            "cart-2",
        ),
        ("this is not toml", "spin.toml"),
    ] {
        let (code, stderr) = runner(manifest).expect_startup_failure();
        assert_eq!(code, 1, "{stderr}");
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
        assert_eq!(error_lines.len(), 1, "{stderr}");
        assert!(error_lines[0].contains(needle), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn compiled_components_are_cached_across_restarts() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let first = runner(SLEEPY_APP)
        .env("BAZAAR_CACHE_DIR", cache_dir)
        .start();
    assert!(
        first.wait_for_stderr(|s| s.contains("\"compiled component\"")),
        "{}",
        first.stderr_text()
    );
    drop(first);
    let second = runner(SLEEPY_APP)
        .env("BAZAAR_CACHE_DIR", cache_dir)
        .start();
    assert!(
        second.wait_for_stderr(|s| s.contains("loaded compiled component from cache")),
        "{}",
        second.stderr_text()
    );
    assert!(!second.stderr_text().contains("\"compiled component\""));
    assert_eq!(
        client().get(second.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn block_networks_denies_allowed_hosts_in_blocked_ranges() {
    let external = external_server().await;
    let manifest = format!(
        r#"
spin_manifest_version = 2
[application]
name = "blocked"
[[trigger.http]]
route = "/..."
component = "caller"
[component.caller]
source = "{{probe}}"
allowed_outbound_hosts = ["http://127.0.0.1:{port}"]
"#,
        port = external.port()
    );
    let app = runner(&manifest)
        .file(
            "rc.toml",
            "[outbound_networking]\nblock_networks = [\"private\"]\n",
        )
        .arg("--runtime-config-file")
        .arg("rc.toml")
        .start();
    let (_, answer) = get_json(&app.url(&format!(
        "/?probe=outbound&url=http%3A%2F%2F127.0.0.1%3A{}%2F",
        external.port()
    )))
    .await;
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("DestinationIpProhibited"),
        "{answer}"
    );
}

#[tokio::test]
async fn scheduled_jobs_run_periodically_and_never_overlap() {
    let app = runner(
        r#"
spin_manifest_version = 2
[application]
name = "jobs"
[[application.tool.bazaar.jobs]]
name = "slow-sweep"
route = "/jobs/sweep?probe=sleep&ms=300"
every = "100ms"

[[trigger.http]]
route = "/jobs/..."
component = "worker"
[[trigger.http]]
route = { private = true }
component = "hidden"
[component.worker]
source = "{probe}"
[component.hidden]
source = "{probe}"
[[component.hidden.tool.bazaar.jobs]]
name = "private-job"
route = "/recover?probe=status&code=202"
every = "200ms"
"#,
    )
    // Successful runs are logged at debug level.
    .env("RUST_LOG", "info,bazaar_host::trigger::scheduler=debug")
    .start();
    assert!(
        app.wait_for_stdout("slow-sweep"),
        "the banner lists the jobs"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let runs: Vec<Value> = app
        .stderr_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "job run")
        .collect();
    let sweep_ends: Vec<chrono_like::Millis> = runs
        .iter()
        .filter(|v| v["fields"]["job"] == "slow-sweep")
        .map(|v| chrono_like::parse(v["timestamp"].as_str().unwrap()))
        .collect();
    assert!(
        sweep_ends.len() >= 3,
        "the job ran repeatedly: {}",
        app.stderr_text()
    );
    for pair in sweep_ends.windows(2) {
        // Each run sleeps 300 ms; with a 100 ms period, overlapping runs would end ~100 ms apart.
        assert!(pair[1] - pair[0] >= 290, "runs overlapped: ends {pair:?}");
    }
    let private_runs = runs
        .iter()
        .filter(|v| v["fields"]["job"] == "private-job" && v["fields"]["status"] == 202)
        .count();
    assert!(
        private_runs >= 2,
        "a component job reaches a private component: {}",
        app.stderr_text()
    );
}

/// Just enough RFC 3339 parsing for log timestamps of one run (same day).
mod chrono_like {
    pub type Millis = i64;
    pub fn parse(ts: &str) -> Millis {
        // 2026-11-29T02:31:48.123456Z
        let time = ts.split('T').nth(1).unwrap().trim_end_matches('Z');
        let mut parts = time.split(':');
        let h: i64 = parts.next().unwrap().parse().unwrap();
        let m: i64 = parts.next().unwrap().parse().unwrap();
        let s: f64 = parts.next().unwrap().parse().unwrap();
        (h * 3600 + m * 60) * 1000 + (s * 1000.0) as i64
    }
}

#[tokio::test]
async fn a_client_that_gives_up_frees_its_instance_slot() {
    let app = runner(SLEEPY_APP)
        .arg("--max-concurrent-instances")
        .arg("1")
        .arg("--queue-timeout-secs")
        .arg("3")
        .start();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(
        impatient
            .get(app.url("/?probe=sleep&ms=20000"))
            .send()
            .await
            .is_err(),
        "the client times out"
    );
    // Had the abandoned instance kept its slot, this would wait 3 s and get 503.
    let response = client().get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn absolute_form_request_lines_cannot_override_the_host_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = runner(CHAIN_APP).start();
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET http://back.spin.internal/front HTTP/1.0\r\nHost: good.example\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    let dump: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{raw}"));
    assert_eq!(dump["authority"], "good.example", "{dump}");
    assert_eq!(
        header(&dump, "spin-raw-component-route"),
        Some("/front/...")
    );
}

#[tokio::test]
async fn the_request_timeout_stops_runaway_and_stuck_instances() {
    let app = runner(SLEEPY_APP)
        .arg("--request-timeout-secs")
        .arg("0.5")
        .arg("--max-concurrent-instances")
        .arg("1")
        .start();
    for probe in ["busy", "sleep"] {
        // Left alone the guest would answer 200 after 10 s; stopped, it gets 500.
        let response = client()
            .get(app.url(&format!("/?probe={probe}&ms=10000")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500, "{probe}");
    }
    assert!(
        app.wait_for_stderr(|s| s.contains("exceeded the request timeout")),
        "{}",
        app.stderr_text()
    );
    // The single slot is free again.
    assert_eq!(
        client()
            .get(app.url("/?probe=busy&ms=10"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
