//! The local provider over HTTP: it must refuse what a real OpenID Provider refuses, or the
//! oidc component's tests against it would prove nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bazaar_dev_idp::{Client, Config, DevIdp, User};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const REDIRECT: &str = "http://127.0.0.1:3000/auth/oidc/local/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// A well-formed verifier that does not hash to [`VERIFIER`]'s challenge.
const WRONG_VERIFIER: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

async fn idp() -> DevIdp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    DevIdp::start(
        listener,
        Config {
            clients: vec![Client {
                client_id: "rp".into(),
                client_secret: "s3cret".into(),
                redirect_uris: vec![REDIRECT.into()],
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

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn challenge() -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()))
}

/// `/authorize` with `params` on top of a valid request; returns (status, Location params).
async fn authorize(idp: &DevIdp, overrides: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
    let challenge = challenge();
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", "rp"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email"),
        ("state", "st"),
        ("nonce", "nn"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in overrides {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    let response = http()
        .get(format!("{}/authorize", idp.issuer()))
        .query(&params)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| url::Url::parse(l.to_str().unwrap()).unwrap());
    let pairs = location
        .map(|l| l.query_pairs().into_owned().collect())
        .unwrap_or_default();
    (status, pairs)
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn token(idp: &DevIdp, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut request = http().post(format!("{}/token", idp.issuer())).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn claims(id_token: &str) -> Value {
    let payload = id_token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn discovery_and_jwks_describe_this_issuer() {
    let idp = idp().await;
    let doc: Value = http()
        .get(format!("{}/.well-known/openid-configuration", idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], idp.issuer());
    assert_eq!(doc["token_endpoint"], format!("{}/token", idp.issuer()));
    assert_eq!(doc["code_challenge_methods_supported"][0], "S256");
    let jwks: Value = http()
        .get(doc["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    assert!(jwks["keys"][0].get("d").is_none(), "never the private key");
}

#[tokio::test]
async fn authorize_refuses_unknown_clients_redirects_and_missing_pkce() {
    let idp = idp().await;
    // Client and redirect URI errors are shown, never redirected (RFC 6749 §4.1.2.1).
    assert_eq!(authorize(&idp, &[("client_id", "other")]).await.0, 400);
    assert_eq!(
        authorize(&idp, &[("redirect_uri", "http://127.0.0.1:3000/evil")])
            .await
            .0,
        400
    );
    // Other errors go back to the client with the state.
    let (status, pairs) = authorize(&idp, &[("code_challenge", "")]).await;
    assert_eq!(status, 302);
    assert_eq!(get(&pairs, "error"), Some("invalid_request"));
    assert_eq!(get(&pairs, "state"), Some("st"));
    let (_, pairs) = authorize(&idp, &[("code_challenge_method", "plain")]).await;
    assert_eq!(get(&pairs, "error"), Some("invalid_request"));
    let (_, pairs) = authorize(&idp, &[("scope", "email")]).await;
    assert_eq!(get(&pairs, "error"), Some("invalid_scope"));
    let (_, pairs) = authorize(&idp, &[("response_type", "token")]).await;
    assert_eq!(get(&pairs, "error"), Some("unsupported_response_type"));
}

#[tokio::test]
async fn token_checks_client_code_redirect_and_pkce_and_codes_are_single_use() {
    let idp = idp().await;
    let (status, pairs) = authorize(&idp, &[("login_hint", "ada@example.com")]).await;
    assert_eq!(status, 302);
    assert_eq!(get(&pairs, "iss"), Some(idp.issuer()));
    let code = get(&pairs, "code").unwrap().to_owned();
    let form = |verifier: &'static str, redirect: &'static str| {
        vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ]
    };

    let (status, body) = token(&idp, &form(VERIFIER, REDIRECT), Some(("rp", "wrong"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // A wrong verifier spends the code: the right one afterwards is refused too.
    let (status, body) = token(
        &idp,
        &form(WRONG_VERIFIER, REDIRECT),
        Some(("rp", "s3cret")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = token(&idp, &form(VERIFIER, REDIRECT), Some(("rp", "s3cret"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Redirect URI must match the authorization request's.
    let (_, pairs) = authorize(&idp, &[]).await;
    let code = get(&pairs, "code").unwrap().to_owned();
    let (status, body) = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:3000/other"),
            ("code_verifier", VERIFIER),
        ],
        Some(("rp", "s3cret")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The happy path, with client_secret_post.
    let (_, pairs) = authorize(&idp, &[("login_hint", "ada@example.com")]).await;
    let code = get(&pairs, "code").unwrap().to_owned();
    let (status, body) = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", "rp"),
            ("client_secret", "s3cret"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["iss"], idp.issuer());
    assert_eq!(id["aud"], "rp");
    assert_eq!(id["nonce"], "nn");
    assert_eq!(id["email"], "ada@example.com");
    assert_eq!(id["sub"], bazaar_dev_idp::subject_of("ada@example.com"));
    assert!(id["exp"].as_u64().unwrap() > id["iat"].as_u64().unwrap());

    let info: Value = http()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], id["sub"]);
    let refused = http()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}
