//! Social login (issue #4, OIDC part): the `oidc` component against the local OpenID provider
//! (`host/crates/dev-idp`), over real HTTP, with a client that does not follow redirects and
//! carries the binding cookie by hand, as a browser would.
//!
//! * `isolated_*`: the oidc component alone on a public route, with the `users-double` fixture
//!   standing in for the users service (asserts exactly what the component sends it);
//! * `shop_*`: the whole shop (`spin.toml`): gateway → oidc → users, then `/api/v1/users/me`
//!   with the issued token.

mod common;

use bazaar_dev_idp::{Client, Config, DevIdp, User};
use common::{build_wasm, runner, shop};
use serde_json::Value;

const CLIENT_ID: &str = "bazaar-test";
const CLIENT_SECRET: &str = "test-secret-7f3a";
/// The shop's public base URL as configured; the test sends the provider's redirect to the
/// runner's real address instead (a browser would follow it to the public host).
const PUBLIC_BASE: &str = "http://shop.localhost:3000";
const CALLBACK_PATH: &str = "/auth/oidc/local/callback";

async fn start_idp() -> DevIdp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    DevIdp::start(
        listener,
        Config {
            clients: vec![Client {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                redirect_uris: vec![format!("{PUBLIC_BASE}{CALLBACK_PATH}")],
            }],
            default_user: User {
                email: "dev@bazaar.test".into(),
                name: "Dev User".into(),
            },
        },
    )
    .await
    .unwrap()
}

fn providers(issuer: &str) -> String {
    serde_json::json!({"local": {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}})
        .to_string()
}

/// A client that shows redirects instead of following them and keeps no cookies.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

const ISOLATED_MANIFEST: &str = r#"
spin_manifest_version = 2
[application]
name = "oidc-isolated"

[variables]
oidc_providers = { default = "{}" }
public_base_url = { default = "http://shop.localhost:3000" }
oidc_extra_origin = { required = true }

[[trigger.http]]
route = "/..."
component = "oidc"

[component.oidc]
source = "{oidc}"
key_value_stores = ["oidc"]
allowed_outbound_hosts = ["http://users.spin.internal", "{{ oidc_extra_origin }}"]
[component.oidc.variables]
providers = "{{ oidc_providers }}"
public_base_url = "{{ public_base_url }}"

[[trigger.http]]
route = { private = true }
component = "users"

[component.users]
source = "{users_double}"
"#;

fn isolated(idp: &DevIdp) -> common::Runner {
    let manifest = ISOLATED_MANIFEST
        .replace("{oidc}", &build_wasm("oidc").display().to_string())
        .replace(
            "{users_double}",
            &build_wasm("users-double").display().to_string(),
        );
    runner(&manifest)
        .file(
            "runtime-config.toml",
            "[key_value_store.oidc]\ntype = \"spin\"\npath = \".spin/oidc.db\"\n",
        )
        .arg("--runtime-config-file")
        .arg("runtime-config.toml")
        .arg("--variable")
        .arg(&format!("oidc_providers={}", providers(idp.issuer())))
        .arg("--variable")
        .arg(&format!("oidc_extra_origin={}", idp.issuer()))
        .start()
}

/// `start`: the authorization URL and the binding cookie (`name=value`).
async fn start(base: &str) -> (url::Url, String) {
    let response = browser()
        .get(format!("{base}/auth/oidc/local/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    (url::Url::parse(&location).unwrap(), cookie)
}

/// Follows the authorization URL at the provider (signing in as `email`) and returns the
/// callback's path and query from the provider's redirect.
async fn authorize(authorization: &url::Url, email: &str) -> String {
    let mut url = authorization.clone();
    url.query_pairs_mut().append_pair("login_hint", email);
    let response = browser().get(url).send().await.unwrap();
    assert_eq!(response.status(), 302, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap();
    let back = url::Url::parse(location).unwrap();
    assert_eq!(
        format!("{}://{}", back.scheme(), back.host_str().unwrap()),
        "http://shop.localhost"
    );
    format!("{}?{}", back.path(), back.query().unwrap_or(""))
}

async fn callback(
    base: &str,
    path_and_query: &str,
    cookie: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = browser().get(format!("{base}{path_and_query}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, headers)
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn isolated_start_redirects_with_pkce_state_and_nonce() {
    let idp = start_idp().await;
    let app = isolated(&idp);

    let (authorization, cookie) = start(&app.base).await;
    assert_eq!(
        authorization.as_str().split('?').next().unwrap(),
        format!("{}/authorize", idp.issuer())
    );
    assert_eq!(
        param(&authorization, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        param(&authorization, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(
        param(&authorization, "redirect_uri"),
        Some(format!("{PUBLIC_BASE}{CALLBACK_PATH}"))
    );
    assert_eq!(
        param(&authorization, "scope").as_deref(),
        Some("openid email profile")
    );
    assert_eq!(
        param(&authorization, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(param(&authorization, "code_challenge").unwrap().len(), 43);
    assert!(param(&authorization, "state").unwrap().len() >= 43);
    assert!(param(&authorization, "nonce").unwrap().len() >= 43);
    assert!(cookie.starts_with("bazaar_oidc="), "{cookie}");

    // Two starts never share state, nonce or cookie.
    let (second, second_cookie) = start(&app.base).await;
    assert_ne!(param(&second, "state"), param(&authorization, "state"));
    assert_ne!(param(&second, "nonce"), param(&authorization, "nonce"));
    assert_ne!(second_cookie, cookie);

    let response = browser()
        .get(app.url("/auth/oidc/local/start"))
        .send()
        .await
        .unwrap();
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");

    let (status, body, headers) = callback(&app.base, "/auth/oidc/nope/start", None).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(
        body["type"],
        "https://bazaar.dev/problems/oidc-unknown-provider"
    );

    // Liveness (the gateway's readiness probe) and the expired-login sweep job: the two
    // logins above are still pending, so nothing is removed.
    let (status, body, _) = callback(&app.base, "/health/live", None).await;
    assert_eq!(status, 200, "{body}");
    let response = browser()
        .post(app.url("/internal/jobs/expire-logins"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["removed"], 0);

    let response = browser()
        .post(app.url("/auth/oidc/local/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
}

#[tokio::test(flavor = "multi_thread")]
async fn isolated_full_flow_sends_the_verified_identity_and_state_is_single_use() {
    let idp = start_idp().await;
    let app = isolated(&idp);

    let (authorization, cookie) = start(&app.base).await;
    let back = authorize(&authorization, "ada@example.com").await;
    let (status, body, headers) = callback(&app.base, &back, Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], "test-access");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["identity"],
        serde_json::json!({
            "provider": "local",
            "subject": bazaar_dev_idp::subject_of("ada@example.com"),
            "email": "ada@example.com",
            "email_verified": true,
            "name": "ada",
        })
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    // Replaying the same callback (same state, same code): the state is spent.
    let (status, body, _) = callback(&app.base, &back, Some(&cookie)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["type"],
        "https://bazaar.dev/problems/oidc-invalid-state"
    );

    // A second login of the same e-mail is the same subject.
    let (authorization, cookie) = start(&app.base).await;
    let back = authorize(&authorization, "ada@example.com").await;
    let (status, again, _) = callback(&app.base, &back, Some(&cookie)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["identity"]["subject"],
        bazaar_dev_idp::subject_of("ada@example.com")
    );

    // The users service's refusal reaches the client as its problem.
    let (authorization, cookie) = start(&app.base).await;
    let back = authorize(&authorization, "refused@example.com").await;
    let (status, body, _) = callback(&app.base, &back, Some(&cookie)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["detail"], "This account is disabled");

    // Nothing secret in the component's logs.
    let logs = app.stderr_text();
    assert!(logs.contains("social login completed"), "{logs}");
    assert!(!logs.contains(CLIENT_SECRET));
    assert!(!logs.contains(cookie.split('=').nth(1).unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn isolated_callback_rejects_tampering_missing_cookie_provider_errors_and_wrong_pkce() {
    let idp = start_idp().await;
    let app = isolated(&idp);

    // Tampered state: unknown to the component.
    let (authorization, cookie) = start(&app.base).await;
    let back = authorize(&authorization, "eve@example.com").await;
    let mut url = url::Url::parse(&format!("http://x{back}")).unwrap();
    let state = param(&url, "state").unwrap();
    let mut tampered = state.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                String::from_utf8(tampered.clone()).unwrap()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let (status, body, _) = callback(
        &app.base,
        &format!("{}?{}", url.path(), url.query().unwrap()),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["type"],
        "https://bazaar.dev/problems/oidc-invalid-state"
    );

    // Missing cookie (another browser): refused, and the state is spent.
    let (status, body, _) = callback(&app.base, &back, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["type"],
        "https://bazaar.dev/problems/oidc-browser-mismatch"
    );
    let (status, _, _) = callback(&app.base, &back, Some(&cookie)).await;
    assert_eq!(status, 401, "a refused state must not be usable afterwards");

    // Another login's cookie: refused (login CSRF).
    let (authorization, _cookie) = start(&app.base).await;
    let (_, other_cookie) = start(&app.base).await;
    let back = authorize(&authorization, "eve@example.com").await;
    let (status, body, _) = callback(&app.base, &back, Some(&other_cookie)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["type"],
        "https://bazaar.dev/problems/oidc-browser-mismatch"
    );

    // Missing state: a malformed callback.
    let (status, body, _) = callback(
        &app.base,
        "/auth/oidc/local/callback?code=abc",
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // The provider reports an error (the user cancelled): a clear problem naming it.
    let (authorization, cookie) = start(&app.base).await;
    let state = param(&authorization, "state").unwrap();
    let error_redirect = format!(
        "{CALLBACK_PATH}?error=access_denied&error_description=User+cancelled&state={state}"
    );
    let (status, body, headers) = callback(&app.base, &error_redirect, Some(&cookie)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(
        body["type"],
        "https://bazaar.dev/problems/oidc-provider-error"
    );
    assert_eq!(body["provider_error"], "access_denied");

    // The provider records a challenge that is not ours: the code exchange with our verifier
    // fails its PKCE check and the login is refused.
    let (authorization, cookie) = start(&app.base).await;
    let forged: Vec<(String, String)> = authorization
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code_challenge" {
                "A".repeat(43)
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    let mut forged_url = authorization.clone();
    forged_url.query_pairs_mut().clear().extend_pairs(forged);
    let back = authorize(&forged_url, "eve@example.com").await;
    let (status, body, _) = callback(&app.base, &back, Some(&cookie)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["type"],
        "https://bazaar.dev/problems/oidc-code-rejected"
    );

    // A callback naming another issuer (RFC 9207 mix-up defence).
    let (authorization, cookie) = start(&app.base).await;
    let back = authorize(&authorization, "eve@example.com").await;
    let back = back.replace(
        &url::form_urlencoded::byte_serialize(idp.issuer().as_bytes()).collect::<String>(),
        "https%3A%2F%2Fevil.example",
    );
    let (status, body, _) = callback(&app.base, &back, Some(&cookie)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["type"],
        "https://bazaar.dev/problems/oidc-issuer-mismatch"
    );
}

/// The whole shop, as `bazaar up` runs it from the repository: the gateway forwards
/// `/auth/oidc/...` to the oidc component, which gets the token pair from the users service;
/// the gateway accepts that access token on `/api/v1/users/me`.
#[tokio::test(flavor = "multi_thread")]
async fn shop_social_login_end_to_end() {
    let idp = start_idp().await;
    let app = shop("")
        .arg("--variable")
        .arg(&format!("oidc_providers={}", providers(idp.issuer())))
        .arg("--variable")
        .arg(&format!("oidc_extra_origin={}", idp.issuer()))
        .arg("--variable")
        .arg(&format!("public_base_url={PUBLIC_BASE}"))
        .start();

    let login = async |email: &str| {
        let (authorization, cookie) = start(&app.base).await;
        let back = authorize(&authorization, email).await;
        let (status, body, _) = callback(&app.base, &back, Some(&cookie)).await;
        assert_eq!(status, 200, "{body}\n{}", app.stderr_text());
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["refresh_token"].is_string());
        assert!(body["expires_in"].as_u64().unwrap() > 0);
        (
            body["access_token"].as_str().unwrap().to_owned(),
            back,
            cookie,
        )
    };
    let me = async |token: &str| {
        let response = browser()
            .get(app.url("/api/v1/users/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };

    let (token, back, cookie) = login("grace@example.com").await;
    let first = me(&token).await;
    assert_eq!(first["email"], "grace@example.com");

    let (token, _, _) = login("grace@example.com").await;
    let second = me(&token).await;
    assert_eq!(
        second["id"], first["id"],
        "the same provider account is the same user"
    );

    let (status, body, _) = callback(&app.base, &back, Some(&cookie)).await;
    assert_eq!(status, 401, "replayed state: {body}");
}
