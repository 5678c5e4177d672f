//! End to end through the real gateway: the users component (API.md "Identity"), the runner's
//! generated development secrets and the `bazaar admin` processes, on SQLite (the repository's
//! runtime-config.toml) and on PostgreSQL (a fresh database per test).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Runner, client, shop, shop_manifest, workspace_root};
use serde_json::{Value, json};

struct Shop {
    runner: Runner,
    /// Extra `--variable`s the admin CLI must get too (the database URL).
    variables: Vec<String>,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Shop {
    fn start(variables: &[String]) -> Shop {
        let mut builder = shop(PRIVATE_ROUTES);
        for v in variables {
            builder = builder.arg("--variable").arg(v);
        }
        Shop {
            runner: builder.start(),
            variables: variables.to_vec(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = client().request(method.parse().unwrap(), self.runner.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn register(&self, email: &str, password: &str) -> Answer {
        self.call(
            "POST",
            "/auth/register",
            None,
            Some(json!({"email": email, "password": password, "name": "Test User"})),
        )
        .await
    }

    async fn login(&self, email: &str, password: &str) -> Answer {
        self.call(
            "POST",
            "/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    async fn refresh(&self, token: &str) -> Answer {
        self.call(
            "POST",
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": token})),
        )
        .await
    }

    /// `bazaar admin <args>` on this shop's app directory, stores and variables.
    fn admin(&self, args: &[&str], password: Option<&str>) -> (bool, Value, String) {
        let dir = self.runner.dir.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bazaar"));
        cmd.current_dir(dir)
            .arg("admin")
            .args(args)
            .arg("-f")
            .arg(dir.join("spin.toml"))
            .args(["--runtime-config-file", "runtime-config.toml", "-q"]);
        for v in &self.variables {
            cmd.arg("--variable").arg(v);
        }
        cmd.env_remove("RUST_LOG")
            .env_remove("BAZAAR_ADMIN_PASSWORD");
        if let Some(password) = password {
            cmd.env("BAZAAR_ADMIN_PASSWORD", password);
        }
        let output = cmd.output().expect("running bazaar admin");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        (
            output.status.success(),
            json,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

const PASSWORD: &str = "purple-otter-climbs-42";

fn problem(answer: &Answer) -> &Value {
    assert_eq!(
        answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{}",
        answer.body
    );
    &answer.body
}

/// Registration, login, refresh rotation and reuse detection, logout.
async fn password_accounts_and_refresh_families(shop: &Shop) {
    // Register: the user JSON is exactly the contract's.
    let created = shop.register("  Ada@Example.COM ", PASSWORD).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let user = created.body.as_object().unwrap();
    let mut keys: Vec<&str> = user.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["created_at", "email", "id", "name", "role", "updated_at"]
    );
    assert_eq!(user["email"], "Ada@example.com");
    assert_eq!(user["role"], "customer");
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));

    // Duplicates, also differently cased, are 409.
    for email in ["Ada@example.com", "ada@EXAMPLE.com"] {
        let dup = shop.register(email, "another-fine-passphrase").await;
        assert_eq!(dup.status, 409, "{}", dup.body);
        assert_eq!(problem(&dup)["status"], 409);
    }
    // Weak and common passwords, bad e-mail and missing name are 422 with field errors.
    for (password, why) in [("short", "at least 12"), ("Password123456", "too common")] {
        let weak = shop.register("bob@example.com", password).await;
        assert_eq!(weak.status, 422, "{}", weak.body);
        let errors = problem(&weak)["errors"].as_array().unwrap();
        assert_eq!(errors[0]["field"], "password");
        assert!(
            errors[0]["message"].as_str().unwrap().contains(why),
            "{}",
            weak.body
        );
    }
    let invalid = shop
        .call(
            "POST",
            "/auth/register",
            None,
            Some(json!({"email": "nope", "password": PASSWORD})),
        )
        .await;
    assert_eq!(invalid.status, 422);
    let fields: Vec<&str> = problem(&invalid)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "name"]);
    // Malformed JSON is 400, a non-JSON body 415.
    let malformed = client()
        .post(shop.runner.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    let text = client()
        .post(shop.runner.url("/auth/login"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);

    // Login.
    let login = shop.login("ADA@example.com", PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    assert_eq!(login.headers["cache-control"], "no-store");
    let access = login.body["access_token"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 3);
    let first = login.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 43);

    // Wrong password and unknown e-mail get the identical answer.
    let wrong = shop
        .login("ada@example.com", "not-the-right-password")
        .await;
    let unknown = shop
        .login("nobody@example.com", "not-the-right-password")
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(problem(&wrong), problem(&unknown));

    // Refresh rotates: the old token stops working...
    let second = shop.refresh(&first).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let second_token = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, first);
    let third = shop.refresh(&second_token).await;
    assert_eq!(third.status, 200);
    let newest = third.body["refresh_token"].as_str().unwrap().to_owned();
    // ...and presenting a used one revokes the whole family, the newest token included.
    let reuse = shop.refresh(&first).await;
    assert_eq!(reuse.status, 401);
    let after_reuse = shop.refresh(&newest).await;
    assert_eq!(after_reuse.status, 401, "{}", after_reuse.body);
    assert_eq!(problem(&reuse), problem(&after_reuse));
    assert_eq!(shop.refresh("garbage").await.status, 401);

    // Logout revokes the family; it is idempotent.
    let session = shop.login("ada@example.com", PASSWORD).await;
    let token = session.body["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let out = shop
            .call(
                "POST",
                "/auth/logout",
                None,
                Some(json!({"refresh_token": token})),
            )
            .await;
        assert_eq!(out.status, 204);
    }
    assert_eq!(shop.refresh(&token).await.status, 401);
    let out = shop
        .call(
            "POST",
            "/auth/logout",
            None,
            Some(json!({"refresh_token": "unknown"})),
        )
        .await;
    assert_eq!(out.status, 204);

    // The clean-up job deletes the two dead families (reused, logged out) and nothing else:
    // the live session still refreshes, the dead tokens stay dead, and a rerun is a no-op.
    let live = shop.login("ada@example.com", PASSWORD).await;
    let pruned = shop.call("POST", "/internal/jobs/prune", None, None).await;
    assert_eq!(pruned.status, 200, "{}", pruned.body);
    assert_eq!(pruned.body["families_deleted"], 2, "{}", pruned.body);
    assert_eq!(pruned.body["tokens_deleted"], 4, "{}", pruned.body);
    assert_eq!(shop.refresh(&newest).await.status, 401);
    assert_eq!(shop.refresh(&token).await.status, 401);
    let live = shop
        .refresh(live.body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(live.status, 200);
    let again = shop.call("POST", "/internal/jobs/prune", None, None).await;
    assert_eq!(again.body["families_deleted"], 0, "{}", again.body);
}

/// Profiles and roles with gateway-verified access tokens, and `bazaar admin create-admin`.
async fn profiles_roles_and_the_admin_process(shop: &Shop) {
    assert_eq!(
        shop.register("carol@example.com", PASSWORD).await.status,
        201
    );
    let carol = shop.login("carol@example.com", PASSWORD).await;
    let carol_token = carol.body["access_token"].as_str().unwrap().to_owned();

    let me = shop
        .call("GET", "/api/v1/users/me", Some(&carol_token), None)
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["email"], "carol@example.com");
    let carol_id = me.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        shop.call("GET", "/api/v1/users/me", None, None)
            .await
            .status,
        401
    );
    let renamed = shop
        .call(
            "PATCH",
            "/api/v1/users/me",
            Some(&carol_token),
            Some(json!({"name": "  Carol C  "})),
        )
        .await;
    assert_eq!(
        (renamed.status, renamed.body["name"].clone()),
        (200, json!("Carol C"))
    );
    let bad = shop
        .call(
            "PATCH",
            "/api/v1/users/me",
            Some(&carol_token),
            Some(json!({"name": ""})),
        )
        .await;
    assert_eq!(bad.status, 422);
    let own = shop
        .call(
            "GET",
            &format!("/api/v1/users/{carol_id}"),
            Some(&carol_token),
            None,
        )
        .await;
    assert_eq!(own.status, 200);
    let other = shop
        .call("GET", "/api/v1/users/usr_someone", Some(&carol_token), None)
        .await;
    assert_eq!(other.status, 403);

    // A customer may not change roles.
    let denied = shop
        .call(
            "PUT",
            &format!("/api/v1/users/{carol_id}/role"),
            Some(&carol_token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);

    // The admin process: migrations are already applied by `bazaar up`, so nothing is pending.
    let (ok, migrated, stderr) = shop.admin(&["migrate"], None);
    assert!(ok, "{stderr}");
    let users = migrated["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["component"] == "users")
        .unwrap_or_else(|| panic!("{migrated}"));
    assert_eq!(users["result"], json!({"applied": [], "version": 1}));

    // create-admin: a weak password is refused with a one-line error and a non-zero exit.
    let (ok, _, stderr) = shop.admin(
        &["create-admin", "--email", "root@example.com"],
        Some("short"),
    );
    assert!(!ok);
    assert!(stderr.contains("password"), "{stderr}");
    let (ok, _, stderr) = shop.admin(&["create-admin", "--email", "root@example.com"], None);
    assert!(!ok);
    assert!(stderr.contains("BAZAAR_ADMIN_PASSWORD"), "{stderr}");
    let admin_password = "admin-passphrase-for-tests";
    let (ok, created, stderr) = shop.admin(
        &[
            "create-admin",
            "--email",
            "root@example.com",
            "--name",
            "Root",
        ],
        Some(admin_password),
    );
    assert!(ok, "{stderr}");
    assert_eq!(created["created"], true);
    assert_eq!(created["user"]["role"], "admin");
    let admin_id = created["user"]["id"].as_str().unwrap().to_owned();
    // Re-running it with the right password is harmless; with a wrong one it fails.
    let (ok, again, _) = shop.admin(
        &["create-admin", "--email", "root@example.com"],
        Some(admin_password),
    );
    assert!(ok);
    assert_eq!(again["created"], false);
    let (ok, _, stderr) = shop.admin(
        &["create-admin", "--email", "carol@example.com"],
        Some("wrong-password-here"),
    );
    assert!(!ok);
    assert!(stderr.contains("409"), "{stderr}");

    let admin = shop.login("root@example.com", admin_password).await;
    assert_eq!(admin.status, 200);
    let admin_token = admin.body["access_token"].as_str().unwrap().to_owned();
    let promoted = shop
        .call(
            "PUT",
            &format!("/api/v1/users/{carol_id}/role"),
            Some(&admin_token),
            Some(json!({"role": "vendor"})),
        )
        .await;
    assert_eq!(
        (promoted.status, promoted.body["role"].clone()),
        (200, json!("vendor")),
        "{}",
        promoted.body
    );
    let read = shop
        .call(
            "GET",
            &format!("/api/v1/users/{carol_id}"),
            Some(&admin_token),
            None,
        )
        .await;
    assert_eq!(read.body["role"], "vendor");
    let missing = shop
        .call("GET", "/api/v1/users/usr_nobody", Some(&admin_token), None)
        .await;
    assert_eq!(missing.status, 404);
    let bad_role = shop
        .call(
            "PUT",
            &format!("/api/v1/users/{carol_id}/role"),
            Some(&admin_token),
            Some(json!({"role": "root"})),
        )
        .await;
    assert_eq!(bad_role.status, 422);
    // The only admin cannot demote themselves.
    let last = shop
        .call(
            "PUT",
            &format!("/api/v1/users/{admin_id}/role"),
            Some(&admin_token),
            Some(json!({"role": "customer"})),
        )
        .await;
    assert_eq!(last.status, 409, "{}", last.body);
    // A refreshed token carries the new role.
    let refreshed = shop
        .refresh(carol.body["refresh_token"].as_str().unwrap())
        .await;
    let vendor_token = refreshed.body["access_token"].as_str().unwrap();
    let denied = shop
        .call(
            "PUT",
            &format!("/api/v1/users/{admin_id}/role"),
            Some(vendor_token),
            Some(json!({"role": "customer"})),
        )
        .await;
    assert_eq!(denied.status, 403);
}

#[tokio::test]
async fn password_accounts_and_refresh_families_on_sqlite() {
    let shop = Shop::start(&[]);
    password_accounts_and_refresh_families(&shop).await;
}

/// Needs the gateway's JWT verification (`x-bazaar-user-id`/`x-bazaar-role`).
#[tokio::test]
async fn profiles_roles_and_admin_process_on_sqlite() {
    let shop = Shop::start(&[]);
    profiles_roles_and_the_admin_process(&shop).await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_and_per_client() {
    let shop = Shop::start(&[]);
    assert_eq!(
        shop.register("dave@example.com", PASSWORD).await.status,
        201
    );
    for _ in 0..5 {
        assert_eq!(
            shop.login("dave@example.com", "wrong-password-guess")
                .await
                .status,
            401
        );
    }
    // The account is locked, even for the right password.
    for password in ["wrong-password-guess", PASSWORD] {
        let locked = shop.login("dave@example.com", password).await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        let retry: u64 = locked.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=900).contains(&retry), "{retry}");
        assert_eq!(problem(&locked)["status"], 429);
    }

    // The client (the gateway's x-bazaar-client-addr) has 5 failures; 14 more on other
    // accounts, a successful login (which must not reset the client's counter), one more
    // failure: 20 in the window, so the next attempt is refused whatever the account.
    assert_eq!(
        shop.register("erin@example.com", PASSWORD).await.status,
        201
    );
    for i in 0..14 {
        let email = format!("nobody{i}@example.com");
        assert_eq!(
            shop.login(&email, "wrong-password-guess").await.status,
            401,
            "{i}"
        );
    }
    assert_eq!(shop.login("erin@example.com", PASSWORD).await.status, 200);
    assert_eq!(
        shop.login("erin@example.com", "wrong-password-guess")
            .await
            .status,
        401
    );
    let blocked = shop.login("erin@example.com", PASSWORD).await;
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert!(blocked.headers.contains_key("retry-after"));
}

/// `jwt_signing_keys` is generated into `<state-dir>/secrets.toml` (0600) on the first run and
/// reused on the next, so a token issued before a restart still verifies after it.
#[tokio::test]
async fn generated_signing_key_survives_a_restart() {
    let keep = tempfile::tempdir().unwrap();
    let state = keep.path().join("state");
    let db = keep.path().join("users.db");
    let runtime_config = std::fs::read_to_string(workspace_root().join("runtime-config.toml"))
        .unwrap()
        .replace(
            "\".spin/users.db\"",
            &format!("{:?}", db.display().to_string()),
        );
    let start = || {
        common::runner(&shop_manifest(""))
            .file("runtime-config.toml", &runtime_config)
            .arg("--runtime-config-file")
            .arg("runtime-config.toml")
            .arg("--state-dir")
            .arg(state.to_str().unwrap())
            .start()
    };

    let first = Shop {
        runner: start(),
        variables: Vec::new(),
    };
    assert!(
        first
            .runner
            .wait_for_stdout("Generated secret `jwt_signing_keys` (stored in")
    );
    assert!(!stdout_mentions_secret(&first.runner, &state));
    let secrets = state.join("secrets.toml");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let stored = std::fs::read_to_string(&secrets).unwrap();
    assert_eq!(
        first.register("frank@example.com", PASSWORD).await.status,
        201
    );
    let login = first.login("frank@example.com", PASSWORD).await;
    let access = login.body["access_token"].as_str().unwrap().to_owned();
    let refresh = login.body["refresh_token"].as_str().unwrap().to_owned();
    drop(first);

    let second = Shop {
        runner: start(),
        variables: Vec::new(),
    };
    assert!(
        second
            .runner
            .wait_for_stdout("Generated secret `jwt_signing_keys` reused from")
    );
    assert_eq!(std::fs::read_to_string(&secrets).unwrap(), stored);
    let me = second
        .call("GET", "/api/v1/users/me", Some(&access), None)
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["email"], "frank@example.com");
    assert_eq!(second.refresh(&refresh).await.status, 200);
}

fn stdout_mentions_secret(runner: &Runner, state: &Path) -> bool {
    let text = std::fs::read_to_string(state.join("secrets.toml")).unwrap();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("jwt_signing_keys = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let seed = value.split_once('=').unwrap().1.to_owned();
    runner
        .stdout
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(&seed))
        || runner.stderr_text().contains(&seed)
}

async fn fresh_postgres_database() -> (tokio_postgres::Client, String) {
    let admin_url = std::env::var("BAZAAR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin_url}: {e}"));
    tokio::spawn(connection);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let db = format!("users_it_{}_{nanos}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    (client, db)
}

#[tokio::test]
async fn the_same_identity_flows_run_on_postgresql() {
    let (admin, db) = fresh_postgres_database().await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let shop = Shop::start(&[format!("users_database={url}")]);
    password_accounts_and_refresh_families(&shop).await;
    profiles_roles_and_the_admin_process(&shop).await;
    // Throttling counters use an upsert whose SQL must work on PostgreSQL too.
    for _ in 0..5 {
        assert_eq!(
            shop.login("ada@example.com", "wrong-password-guess")
                .await
                .status,
            401
        );
    }
    let locked = shop.login("ada@example.com", PASSWORD).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    // The rows really are in PostgreSQL, and only digests of refresh tokens are stored.
    let (pg, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let users: i64 = pg
        .query_one("SELECT COUNT(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 3);
    let digests: Vec<String> = pg
        .query("SELECT token_hash FROM refresh_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!digests.is_empty());
    assert!(
        digests
            .iter()
            .all(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    drop(pg);
    drop(shop);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await;
}

/// The users component's private routes, published on exact public routes for this test only
/// (more specific than the gateway's `/...`).
const PRIVATE_ROUTES: &str = r#"
[[trigger.http]]
route = "/internal/oidc/login"
component = "users"

[[trigger.http]]
route = "/health/ready"
component = "users"

[[trigger.http]]
route = "/internal/jobs/prune"
component = "users"
"#;

/// Social login as the `oidc` component calls it: first login creates a password-less customer,
/// later logins find it by (provider, subject); an existing account is linked by e-mail only when
/// the provider verified the e-mail.
#[tokio::test]
async fn social_login_creates_finds_and_links_accounts() {
    let shop = Shop {
        runner: shop(PRIVATE_ROUTES).start(),
        variables: Vec::new(),
    };
    let oidc = |body: Value| shop.call("POST", "/internal/oidc/login", None, Some(body));

    let first = oidc(
        json!({"provider": "google", "subject": "g-123", "email": "Gina@Example.com",
        "email_verified": true, "name": "Gina"}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["token_type"], "Bearer");
    let me = shop
        .call(
            "GET",
            "/api/v1/users/me",
            first.body["access_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(
        (
            me.body["email"].clone(),
            me.body["name"].clone(),
            me.body["role"].clone()
        ),
        (json!("Gina@example.com"), json!("Gina"), json!("customer"))
    );
    let gina = me.body["id"].clone();

    // Same subject again (even with another e-mail at the provider): the same account.
    let again = oidc(
        json!({"provider": "google", "subject": "g-123", "email": "new@example.com",
        "email_verified": true}),
    )
    .await;
    let me = shop
        .call(
            "GET",
            "/api/v1/users/me",
            again.body["access_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(me.body["id"], gina);

    // The social-only account has no password: password login fails like a wrong password.
    let no_password = shop.login("gina@example.com", PASSWORD).await;
    let unknown = shop.login("nobody@example.com", PASSWORD).await;
    assert_eq!(no_password.status, 401);
    assert_eq!(problem(&no_password), problem(&unknown));

    // An existing password account is linked only on a verified e-mail.
    assert_eq!(
        shop.register("hank@example.com", PASSWORD).await.status,
        201
    );
    let unverified = oidc(
        json!({"provider": "github", "subject": "42", "email": "hank@example.com",
        "email_verified": false}),
    )
    .await;
    assert_eq!(unverified.status, 409, "{}", unverified.body);
    let verified = oidc(
        json!({"provider": "github", "subject": "42", "email": "HANK@example.com",
        "email_verified": true}),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    let linked = shop
        .call(
            "GET",
            "/api/v1/users/me",
            verified.body["access_token"].as_str(),
            None,
        )
        .await;
    let by_password = shop.login("hank@example.com", PASSWORD).await;
    let by_password = shop
        .call(
            "GET",
            "/api/v1/users/me",
            by_password.body["access_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(linked.body["id"], by_password.body["id"]);
    // The social session is a refresh family like any other.
    let rotated = shop
        .refresh(verified.body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(rotated.status, 200);

    // Validation and method rules.
    let invalid = oidc(json!({"provider": "Google!", "subject": "", "email": "x"})).await;
    assert_eq!(invalid.status, 422);
    assert_eq!(problem(&invalid)["errors"].as_array().unwrap().len(), 3);
    let wrong_method = shop.call("GET", "/internal/oidc/login", None, None).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "POST");
}

/// `bazaar up --no-migrate` leaves the schema behind: the users service is not ready until
/// `bazaar admin migrate` has run.
#[tokio::test]
async fn readiness_waits_for_the_admin_migration() {
    let shop = Shop {
        runner: shop(PRIVATE_ROUTES).arg("--no-migrate").start(),
        variables: Vec::new(),
    };
    assert!(
        !shop
            .runner
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("Migrated")),
        "--no-migrate must skip the release phase"
    );
    let behind = shop.call("GET", "/health/ready", None, None).await;
    assert_eq!(behind.status, 503, "{}", behind.body);
    assert!(
        problem(&behind)["detail"]
            .as_str()
            .unwrap()
            .contains("bazaar admin migrate")
    );

    let (ok, migrated, stderr) = shop.admin(&["migrate"], None);
    assert!(ok, "{stderr}");
    let users = migrated["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["component"] == "users")
        .unwrap_or_else(|| panic!("{migrated}"));
    assert_eq!(users["result"], json!({"applied": [1], "version": 1}));
    let ready = shop.call("GET", "/health/ready", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["schema_version"], 1);
}
