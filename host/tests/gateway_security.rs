//! The gateway's security and limits in the real shop (`shop("")`: the repository's spin.toml and
//! runtime-config.toml, every component built): access-token verification against the users
//! service's JWKS, identity headers, rate limiting, CORS and body limits.
//!
//! Tokens are minted here with `bazaar_platform::jwt` and the same fixed key the shop is started
//! with (`--variable jwt_signing_keys=test=<seed>`), so the users service publishes its public
//! half. Where the test must see what reached a service, a probe stand-in plays `recommendations`
//! (a component id the gateway routes `/api/v1/recommendations*` to, due in a later wave); it
//! echoes the request it received as JSON, so a 200 from it proves the gateway forwarded.

mod common;

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use bazaar_platform::Role;
use bazaar_platform::jwt::{self, Claims, KeyPair};
use common::{Runner, client, shop};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SEED: [u8; 32] = [42; 32];
const KID: &str = "test";
const CHALLENGE: &str = "Bearer error=\"invalid_token\"";

const STAND_IN: &str = r#"
[[trigger.http]]
route = { private = true }
component = "recommendations"
[component.recommendations]
source = "{probe}"
"#;

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn signing_key() -> KeyPair {
    KeyPair::from_seed(KID, SEED)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(sub: &str, role: Role) -> Claims {
    let now = now();
    Claims {
        sub: sub.into(),
        role,
        iss: "bazaar".into(),
        aud: "bazaar-api".into(),
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: format!("jti-{sub}"),
    }
}

fn token(sub: &str, role: Role) -> String {
    jwt::sign(&signing_key(), &claims(sub, role))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// The shop with the fixed signing key, the stand-in among the upstreams and `vars`.
fn start(vars: &[&str]) -> Runner {
    let mut builder = shop(STAND_IN)
        .arg("--variable")
        .arg(&format!("jwt_signing_keys={KID}={}", b64url(&SEED)))
        .arg("--variable")
        .arg("gateway_upstreams=users,catalog,oidc,carts,inventory,recommendations");
    for var in vars {
        builder = builder.arg("--variable").arg(var);
    }
    builder.start()
}

async fn get_with(app: &Runner, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn access_tokens_are_verified_at_the_gateway() {
    let app = start(&[]);

    // A real login: the users service issues the token, the gateway verifies it.
    let email = "gateway-security@example.com";
    let password = "correct horse battery staple 42";
    let response = client()
        .post(app.url("/auth/register"))
        .json(&json!({"email": email, "password": password, "name": "Gate Way"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let user: Value = response.json().await.unwrap();
    let user_id = user["id"].as_str().unwrap().to_owned();
    let login: Value = client()
        .post(app.url("/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let issued = login["access_token"].as_str().expect("access_token");
    let response = get_with(
        &app,
        "/api/v1/users/me",
        &[("authorization", &format!("Bearer {issued}"))],
    )
    .await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["id"], user_id.as_str(), "{me}");
    assert_eq!(me["email"], email, "{me}");

    // A token minted here with the configured key is just as good.
    let minted = token(&user_id, Role::Customer);
    let response = get_with(
        &app,
        "/api/v1/users/me",
        &[("authorization", &format!("Bearer {minted}"))],
    )
    .await;
    assert_eq!(response.status(), 200);

    // Without a token the request is anonymous: users answers 401 itself.
    let response = get_with(&app, "/api/v1/users/me", &[]).await;
    assert_eq!(response.status(), 401);

    // The verified identity reaches the service; the client's own x-bazaar-* headers never do.
    let response = get_with(
        &app,
        "/api/v1/recommendations",
        &[
            (
                "authorization",
                &format!("Bearer {}", token("usr_v", Role::Vendor)),
            ),
            ("x-bazaar-user-id", "forged"),
            ("x-bazaar-role", "admin"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["headers"]["x-bazaar-user-id"], "usr_v", "{seen}");
    assert_eq!(seen["headers"]["x-bazaar-role"], "vendor", "{seen}");
    assert_eq!(
        seen["headers"]["x-bazaar-client-addr"], "127.0.0.1",
        "{seen}"
    );

    let response = get_with(
        &app,
        "/api/v1/recommendations",
        &[
            ("x-bazaar-user-id", "forged"),
            ("x-bazaar-role", "admin"),
            ("x-bazaar-client-addr", "203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert!(seen["headers"].get("x-bazaar-user-id").is_none(), "{seen}");
    assert!(seen["headers"].get("x-bazaar-role").is_none(), "{seen}");
    assert_eq!(
        seen["headers"]["x-bazaar-client-addr"], "127.0.0.1",
        "{seen}"
    );
}

#[tokio::test]
async fn invalid_tokens_are_refused_with_401_and_never_forwarded() {
    let app = start(&[]);
    let good = token("usr_1", Role::Customer);
    let parts: Vec<&str> = good.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let sign_with = |key: &KeyPair, edit: &dyn Fn(&mut Claims)| {
        let mut c = claims("usr_1", Role::Customer);
        edit(&mut c);
        jwt::sign(key, &c)
    };
    let key = signing_key();

    let mut admin = claims("usr_1", Role::Admin);
    admin.sub = "usr_admin".into();
    let tampered = format!(
        "{header}.{}.{signature}",
        b64url(&serde_json::to_vec(&admin).unwrap())
    );
    let none = format!(
        "{}.{payload}.",
        b64url(br#"{"alg":"none","typ":"JWT","kid":"test"}"#)
    );
    let hs256 = {
        let head = b64url(br#"{"alg":"HS256","typ":"JWT","kid":"test"}"#);
        let input = format!("{head}.{payload}");
        let mac = hmac_sha256(&key.public_key(), input.as_bytes());
        format!("{input}.{}", b64url(&mac))
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign_with(&key, &|c| {
                c.iat -= 7200;
                c.nbf -= 7200;
                c.exp = now() - 3600;
            }),
        ),
        ("tampered payload", tampered),
        ("alg none", none),
        ("HS256 keyed with the public key", hs256),
        (
            "unknown kid",
            sign_with(&KeyPair::from_seed("other", SEED), &|_| {}),
        ),
        (
            "same kid, wrong key",
            sign_with(&KeyPair::from_seed(KID, [7; 32]), &|_| {}),
        ),
        ("wrong iss", sign_with(&key, &|c| c.iss = "evil".into())),
        (
            "wrong aud",
            sign_with(&key, &|c| c.aud = "other-api".into()),
        ),
        (
            "nbf in the future",
            sign_with(&key, &|c| c.nbf = now() + 3600),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    let mut authorizations: Vec<(&str, String)> = cases
        .into_iter()
        .map(|(name, token)| (name, format!("Bearer {token}")))
        .collect();
    authorizations.push(("Basic scheme", "Basic dXNlcjpwYXNzd29yZA==".to_owned()));
    authorizations.push(("empty Bearer", "Bearer".to_owned()));

    for (name, authorization) in &authorizations {
        let response = get_with(
            &app,
            "/api/v1/recommendations",
            &[("authorization", authorization)],
        )
        .await;
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(response.headers()["www-authenticate"], CHALLENGE, "{name}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 401, "{name}: {problem}");
    }
    // The good token still passes (so the 401s above were about the tokens).
    let response = get_with(
        &app,
        "/api/v1/recommendations",
        &[("authorization", &format!("Bearer {good}"))],
    )
    .await;
    assert_eq!(response.status(), 200);

    // Reasons are logged (component output lands on the runner's stderr); tokens never are.
    assert!(
        app.wait_for_stderr(|logs| logs.contains("\"auth_error\":\"token expired\"")),
        "no auth_error logged"
    );
    let logs = app.stderr_text();
    assert!(!logs.contains(signature), "a token signature was logged");
}

#[tokio::test]
async fn keys_are_public_but_internal_routes_are_not() {
    let app = start(&[]);
    let response = get_with(&app, "/.well-known/jwks.json", &[]).await;
    assert_eq!(response.status(), 200);
    let jwks: Value = response.json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kid"], KID, "{jwks}");
    assert_eq!(
        jwks["keys"][0]["x"],
        b64url(&signing_key().public_key()),
        "{jwks}"
    );
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "private key leaked: {jwks}"
    );

    for path in [
        "/internal/jwks",
        "/internal/admin/migrate",
        "/auth/..%2Finternal/jwks",
    ] {
        let response = get_with(&app, path, &[]).await;
        assert!(
            response.status() == 404 || response.status() == 400,
            "{path}: {}",
            response.status()
        );
    }
    let response = client()
        .post(app.url("/internal/admin/migrate"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn clients_over_the_rate_limit_get_429_with_retry_after() {
    let app = start(&["rate_limit_per_minute=3"]);
    for expected_remaining in ["2", "1", "0"] {
        let response = get_with(&app, "/api/v1/recommendations", &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["ratelimit-remaining"],
            expected_remaining
        );
    }
    let response = get_with(&app, "/api/v1/recommendations", &[]).await;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    // Other routes share the client's budget; health endpoints are exempt.
    assert_eq!(get_with(&app, "/api/v1/products", &[]).await.status(), 429);
    for _ in 0..5 {
        assert_eq!(get_with(&app, "/health/live", &[]).await.status(), 200);
    }
    assert_eq!(get_with(&app, "/health/ready", &[]).await.status(), 200);

    // An authenticated user is charged separately from the address.
    let bearer = format!("Bearer {}", token("usr_rl", Role::Customer));
    let response = get_with(
        &app,
        "/api/v1/recommendations",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ratelimit-remaining"], "2");
}

#[tokio::test]
async fn cors_answers_preflights_for_allowed_origins_only() {
    let app = start(&["cors_allowed_origins=https://shop.example,http://localhost:5173"]);
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/recommendations"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let response = preflight("https://shop.example").await.unwrap();
    assert_eq!(response.status(), 204);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    for needed in [
        "authorization",
        "content-type",
        "idempotency-key",
        "x-request-id",
        "x-cart-id",
    ] {
        assert!(allowed.contains(needed), "{needed} not in {allowed}");
    }
    assert!(h.contains_key("access-control-max-age"));
    assert!(
        h["vary"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("origin")
    );

    let response = preflight("https://evil.example").await.unwrap();
    assert_ne!(response.status(), 204);
    assert!(
        response
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        response.headers()
    );

    let response = get_with(
        &app,
        "/api/v1/recommendations",
        &[("origin", "http://localhost:5173")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for needed in [
        "x-request-id",
        "x-cart-id",
        "retry-after",
        "etag",
        "location",
    ] {
        assert!(exposed.contains(needed), "{needed} not in {exposed}");
    }
    let response = get_with(
        &app,
        "/api/v1/recommendations",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let app = start(&[]);
    let response = get_with(
        &app,
        "/api/v1/recommendations",
        &[("origin", "https://shop.example")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-") && k != "vary"),
        "{:?}",
        response.headers()
    );
}

/// Sends `chunks` as a chunked request body over a raw connection; returns (status, body).
fn post_chunked(app: &Runner, path: &str, chunks: &[Vec<u8>]) -> (u16, String) {
    let authority = app.base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&authority).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut request = head.into_bytes();
    for chunk in chunks {
        request.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    // The gateway may answer (and close) before it has read everything; that is the point.
    let _ = stream.write_all(&request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = start(&["max_body_bytes=1024", "max_image_bytes=4096"]);
    let post = |path: &str, len: usize| {
        client()
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(vec![b'x'; len])
            .send()
    };
    // Declared Content-Length over the limit.
    let response = post("/api/v1/recommendations", 1025).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 413, "{problem}");
    let response = post("/api/v1/recommendations", 1024).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["body_len"], 1024, "{seen}");

    // Chunked, no Content-Length: counted while reading.
    let (status, body) = post_chunked(&app, "/api/v1/recommendations", &vec![vec![b'x'; 400]; 5]);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("413"), "{body}");
    let (status, body) = post_chunked(&app, "/api/v1/recommendations", &vec![vec![b'x'; 300]; 3]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"body_len\":900"), "{body}");

    // Image uploads have their own, larger limit.
    let response = post("/api/v1/products/p1/images", 2000).await.unwrap();
    assert_ne!(
        response.status(),
        413,
        "an image under max_image_bytes is not too large"
    );
    let response = post("/api/v1/products/p1/images", 4097).await.unwrap();
    assert_eq!(response.status(), 413);
    let response = post("/api/v1/products", 2000).await.unwrap();
    assert_eq!(response.status(), 413);
}
