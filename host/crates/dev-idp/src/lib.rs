//! A local OpenID Provider for developing and testing Bazaar's social login.
//!
//! **A development stand-in, never deployed.** It signs in whoever asks, without a password:
//! `/authorize` approves at once, as the configured user or as the e-mail given in
//! `login_hint`. Everything else follows the specifications, so the `oidc` component talks to it
//! exactly as to Google or any other OpenID Provider:
//!
//! * `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0);
//! * `GET /jwks`: one RS256 key, generated at start (restart = key rotation);
//! * `GET /authorize`: authorization code flow only; checks `client_id` and the exact
//!   `redirect_uri` (errors about those are shown, never redirected — RFC 6749 §4.1.2.1);
//!   requires `scope` with `openid` and PKCE with `S256`; records `nonce` and the challenge;
//!   redirects with `code`, `state` and `iss` (RFC 9207);
//! * `POST /token`: `client_secret_basic` or `client_secret_post`; the code is single-use and
//!   short-lived, bound to its client, redirect URI and PKCE challenge; answers an access token
//!   and an ID token (`iss`, `sub`, `aud`, `exp`, `iat`, `auth_time`, `nonce`, `email`,
//!   `email_verified`, `name`);
//! * `GET`/`POST /userinfo` with the access token as Bearer.
//!
//! The subject is derived from the e-mail address, so the same address is the same account
//! across restarts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, rand_core::OsRng};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long an authorization code can be redeemed.
const CODE_TTL: Duration = Duration::from_secs(60);
/// Lifetime of access and ID tokens.
const TOKEN_TTL_SECS: u64 = 300;
/// Largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A registered client (relying party).
#[derive(Clone)]
pub struct Client {
    pub client_id: String,
    pub client_secret: String,
    /// Exact redirect URIs allowed (no prefix or wildcard matching, RFC 9700 §4.1.1).
    pub redirect_uris: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("redirect_uris", &self.redirect_uris)
            .finish_non_exhaustive()
    }
}

/// The user `/authorize` signs in when the request has no `login_hint`.
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub clients: Vec<Client>,
    pub default_user: User,
}

/// A running provider; stops when dropped or on [`DevIdp::shutdown`].
pub struct DevIdp {
    issuer: String,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DevIdp {
    /// Starts serving on `listener` (its address becomes the issuer, `http://<addr>`).
    pub async fn start(listener: TcpListener, config: Config) -> anyhow::Result<DevIdp> {
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let provider = Arc::new(Provider::new(issuer.clone(), config)?);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, provider, rx));
        Ok(DevIdp {
            issuer,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://<address>`: the issuer identifier and base of every endpoint.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serves until `stop` resolves (the `bazaar dev-idp` command).
    pub async fn run_until(
        listener: TcpListener,
        config: Config,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let idp = DevIdp::start(listener, config).await?;
        stop.await;
        idp.shutdown().await;
        Ok(())
    }
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn serve(listener: TcpListener, provider: Arc<Provider>, mut stop: oneshot::Receiver<()>) {
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Transient accept errors (e.g. too many open files): back off briefly.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let provider = provider.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let provider = provider.clone();
                async move { Ok::<_, std::convert::Infallible>(provider.handle(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An issued, not yet redeemed authorization code.
struct Grant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    user: User,
    expires: SystemTime,
}

struct Provider {
    issuer: String,
    key: SigningKey<Sha256>,
    kid: String,
    jwk: Value,
    config: Config,
    codes: Mutex<HashMap<String, Grant>>,
    access_tokens: Mutex<HashMap<String, (User, SystemTime)>>,
}

type Answer = Response<Full<Bytes>>;

impl Provider {
    fn new(issuer: String, config: Config) -> anyhow::Result<Provider> {
        let private = RsaPrivateKey::new(&mut OsRng, 2048)?;
        let public = private.to_public_key();
        let n = public.n().to_bytes_be();
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&n)[..12]);
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&n),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        });
        Ok(Provider {
            issuer,
            key: SigningKey::<Sha256>::new(private),
            kid,
            jwk,
            config,
            codes: Mutex::new(HashMap::new()),
            access_tokens: Mutex::new(HashMap::new()),
        })
    }

    async fn handle(&self, request: hyper::Request<Incoming>) -> Answer {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let headers = request.headers().clone();
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let answer = match (method.clone(), path.as_str()) {
            (Method::GET, "/.well-known/openid-configuration") => self.discovery(),
            (Method::GET, "/jwks") => json_answer(StatusCode::OK, &json!({"keys": [self.jwk]})),
            (Method::GET, "/authorize") => self.authorize(&query),
            (Method::POST, "/token") => self.token(&headers, &body),
            (Method::GET | Method::POST, "/userinfo") => self.userinfo(&headers),
            (
                _,
                "/.well-known/openid-configuration"
                | "/jwks"
                | "/authorize"
                | "/token"
                | "/userinfo",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => text(StatusCode::NOT_FOUND, "not found"),
        };
        // The query can hold codes and states: log the path only.
        tracing::info!(target: "dev_idp", %method, %path, status = answer.status().as_u16(), "dev-idp request");
        answer
    }

    fn discovery(&self) -> Answer {
        let issuer = &self.issuer;
        json_answer(
            StatusCode::OK,
            &json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "userinfo_endpoint": format!("{issuer}/userinfo"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "profile"],
                "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce",
                                     "email", "email_verified", "name"],
                "authorization_response_iss_parameter_supported": true,
            }),
        )
    }

    fn authorize(&self, query: &str) -> Answer {
        let params = first_values(query.as_bytes());
        let param = |name: &str| params.get(name).map(String::as_str);
        let Some(client) = param("client_id").and_then(|id| self.client(id)) else {
            return text(StatusCode::BAD_REQUEST, "unknown client_id");
        };
        let Some(redirect_uri) = param("redirect_uri")
            .filter(|uri| client.redirect_uris.iter().any(|allowed| allowed == uri))
        else {
            return text(
                StatusCode::BAD_REQUEST,
                "redirect_uri is missing or not registered for this client",
            );
        };
        let state = param("state");
        let fail = |error: &str, description: &str| {
            self.redirect(
                redirect_uri,
                &[("error", error), ("error_description", description)],
                state,
            )
        };
        if param("response_type") != Some("code") {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
        if !param("scope").is_some_and(|s| s.split(' ').any(|s| s == "openid")) {
            return fail("invalid_scope", "the openid scope is required");
        }
        let Some(challenge) = param("code_challenge").filter(|c| c.len() == 43) else {
            return fail("invalid_request", "PKCE is required: code_challenge (S256)");
        };
        if param("code_challenge_method") != Some("S256") {
            return fail("invalid_request", "code_challenge_method must be S256");
        }
        let user = match param("login_hint").map(str::trim) {
            Some(hint) if looks_like_email(hint) => {
                if hint.eq_ignore_ascii_case(&self.config.default_user.email) {
                    self.config.default_user.clone()
                } else {
                    User {
                        email: hint.to_owned(),
                        name: hint.split('@').next().unwrap_or(hint).to_owned(),
                    }
                }
            }
            _ => self.config.default_user.clone(),
        };
        let code = random_token();
        self.codes.lock().unwrap_or_else(|p| p.into_inner()).insert(
            code.clone(),
            Grant {
                client_id: client.client_id.clone(),
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: challenge.to_owned(),
                nonce: param("nonce").map(str::to_owned),
                user,
                expires: SystemTime::now() + CODE_TTL,
            },
        );
        self.redirect(redirect_uri, &[("code", &code)], state)
    }

    /// 302 to `redirect_uri` with `params`, `state` (if any) and `iss`.
    fn redirect(&self, redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>) -> Answer {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(params);
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", &self.issuer);
        let separator = if redirect_uri.contains('?') { '&' } else { '?' };
        Response::builder()
            .status(StatusCode::FOUND)
            .header(
                header::LOCATION,
                format!("{redirect_uri}{separator}{}", query.finish()),
            )
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect"))
    }

    fn token(&self, headers: &http::HeaderMap, body: &[u8]) -> Answer {
        let form = first_values(body);
        let field = |name: &str| form.get(name).map(String::as_str);
        // Client authentication: HTTP Basic (RFC 6749 §2.3.1, parts form-urlencoded) or the
        // credentials in the body; never both.
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| {
                let (id, secret) = pair.split_once(':')?;
                let decode = |s: &str| {
                    form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                };
                Some((decode(id)?, decode(secret)?))
            });
        let credentials = match (basic, field("client_secret")) {
            (Some(_), Some(_)) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method",
                );
            }
            (Some(pair), None) => Some(pair),
            (None, Some(secret)) => field("client_id").map(|id| (id.to_owned(), secret.to_owned())),
            (None, None) => None,
        };
        let client = credentials.and_then(|(id, secret)| {
            self.client(&id).filter(|c| {
                // Constant-time enough for a development provider, and simple.
                Sha256::digest(c.client_secret.as_bytes()) == Sha256::digest(secret.as_bytes())
            })
        });
        let Some(client) = client else {
            let mut answer = oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
            answer.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"dev-idp\""),
            );
            return answer;
        };
        if field("grant_type") != Some("authorization_code") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only authorization_code",
            );
        }
        // Removed before any check: a code is spent by its first presentation (RFC 6749 §4.1.2).
        let grant = field("code").and_then(|code| {
            self.codes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(code)
        });
        let invalid_grant = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
        let Some(grant) = grant else {
            return invalid_grant("unknown or already used code");
        };
        if grant.expires < SystemTime::now() {
            return invalid_grant("the code has expired");
        }
        if grant.client_id != client.client_id {
            return invalid_grant("the code was issued to another client");
        }
        if field("redirect_uri") != Some(grant.redirect_uri.as_str()) {
            return invalid_grant("redirect_uri does not match the authorization request");
        }
        let verifier_ok = field("code_verifier").is_some_and(|v| {
            (43..=128).contains(&v.len())
                && URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == grant.code_challenge
        });
        if !verifier_ok {
            return invalid_grant("the PKCE code_verifier does not match the code_challenge");
        }

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut claims = json!({
            "iss": self.issuer,
            "sub": subject_of(&grant.user.email),
            "aud": client.client_id,
            "exp": now + TOKEN_TTL_SECS,
            "iat": now,
            "auth_time": now,
            "email": grant.user.email,
            "email_verified": true,
            "name": grant.user.name,
        });
        if let Some(nonce) = &grant.nonce {
            claims["nonce"] = nonce.clone().into();
        }
        let access_token = random_token();
        self.access_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                access_token.clone(),
                (
                    grant.user,
                    SystemTime::now() + Duration::from_secs(TOKEN_TTL_SECS),
                ),
            );
        let mut answer = json_answer(
            StatusCode::OK,
            &json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL_SECS,
                "scope": "openid email profile",
                "id_token": self.sign(&claims),
            }),
        );
        answer.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        answer
    }

    fn userinfo(&self, headers: &http::HeaderMap) -> Answer {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let user = token.and_then(|t| {
            let tokens = self.access_tokens.lock().unwrap_or_else(|p| p.into_inner());
            tokens
                .get(t.trim())
                .filter(|(_, expires)| *expires > SystemTime::now())
                .map(|(user, _)| user.clone())
        });
        match user {
            Some(user) => json_answer(
                StatusCode::OK,
                &json!({"sub": subject_of(&user.email), "email": user.email,
                        "email_verified": true, "name": user.name}),
            ),
            None => {
                let mut answer = text(StatusCode::UNAUTHORIZED, "invalid access token");
                answer.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
                answer
            }
        }
    }

    fn client(&self, client_id: &str) -> Option<&Client> {
        self.config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
    }

    /// A compact JWS, RS256, with this provider's key id.
    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(input.as_bytes()).to_vec();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// The stable subject of `email`: the same address is the same account across restarts.
pub fn subject_of(email: &str) -> String {
    let digest = Sha256::digest(email.to_ascii_lowercase().as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("dev-{hex}")
}

fn looks_like_email(s: &str) -> bool {
    s.len() <= 254
        && s.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// First value of each parameter of a form-urlencoded string.
fn first_values(input: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (k, v) in form_urlencoded::parse(input) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    map
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the OS provides randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Answer {
    json_answer(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn text(status: StatusCode, message: &str) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{message}\n"))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_stable_and_case_insensitive() {
        assert_eq!(subject_of("Ada@Example.com"), subject_of("ada@example.com"));
        assert_ne!(subject_of("ada@example.com"), subject_of("bob@example.com"));
        assert!(subject_of("a@b.c").starts_with("dev-"));
    }

    #[test]
    fn email_hints_are_checked() {
        assert!(looks_like_email("ada@example.com"));
        assert!(!looks_like_email("ada"));
        assert!(!looks_like_email("@example.com"));
        assert!(!looks_like_email("a da@example.com"));
    }
}
