//! The login flow: `start` (redirect to the provider) and `callback` (code → tokens → identity →
//! Bazaar token pair), written against the [`ports`](crate::ports) so it runs natively in tests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bazaar_platform::{Logger, Problem};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Config, Provider, ProviderKind, TokenAuth};
use crate::cookie;
use crate::discovery::{self, Endpoints};
use crate::idtoken::{self, Expectations, Jwks, TokenError};
use crate::pending::{PendingLogin, Refusal};
use crate::pkce::CodeVerifier;
use crate::ports::{Clock, Outbound, Store};

/// Discovery documents and JWKS are re-fetched after this long (providers rotate keys slowly
/// and publish the next key in advance).
pub const METADATA_TTL_MS: i64 = 60 * 60 * 1000;
/// A JWKS is re-fetched early for an unknown `kid` (rotation), at most this often.
const JWKS_MIN_REFRESH_MS: i64 = 60 * 1000;
/// Where a successful login is turned into Bazaar tokens.
pub const USERS_LOGIN_URL: &str = "http://users.spin.internal/internal/oidc/login";
const USER_AGENT: &str = "bazaar-oidc";

fn problem_type(slug: &str) -> String {
    format!("https://bazaar.dev/problems/oidc-{slug}")
}

/// The flow's dependencies.
pub struct Flow<'a, S, O, C> {
    pub config: &'a Config,
    pub store: &'a S,
    pub outbound: &'a O,
    pub clock: &'a C,
    pub log: &'a Logger,
    pub request_id: &'a str,
}

/// `start`'s answer: a 302 to `location` setting `set_cookie`.
#[derive(Debug)]
pub struct Redirect {
    pub location: String,
    pub set_cookie: String,
}

/// The identity a provider vouched for, as sent to the users service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalIdentity {
    pub provider: String,
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

/// The users service's answer, relayed to the client as is.
#[derive(Debug)]
pub struct Relayed {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct CachedEndpoints {
    fetched_at_ms: i64,
    /// The issuer the document was fetched for: a configuration change invalidates it.
    issuer: String,
    endpoints: Endpoints,
}

#[derive(Serialize, Deserialize)]
struct CachedJwks {
    fetched_at_ms: i64,
    jwks_uri: String,
    body: String,
}

/// The callback's query parameters.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// RFC 9207 authorization server issuer identifier.
    pub iss: Option<String>,
}

impl CallbackParams {
    pub fn from_query(query: &str) -> CallbackParams {
        let mut params = CallbackParams::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "state" => &mut params.state,
                "code" => &mut params.code,
                "error" => &mut params.error,
                "error_description" => &mut params.error_description,
                "iss" => &mut params.iss,
                _ => continue,
            };
            // First value wins; a repeated parameter is never merged.
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        params
    }
}

impl<S: Store, O: Outbound, C: Clock> Flow<'_, S, O, C> {
    fn provider(&self, name: &str) -> Result<&Provider, Problem> {
        self.config.provider(name).ok_or_else(|| {
            Problem::not_found(format!(
                "No social login provider named '{}' is configured",
                name.escape_default()
            ))
            .with_type(problem_type("unknown-provider"))
        })
    }

    /// Begins a login: stores the pending login and redirects to the provider.
    pub async fn start(&self, provider_name: &str) -> Result<Redirect, Problem> {
        let provider = self.provider(provider_name)?;
        let endpoints = self.endpoints(provider).await?;
        let now = self.clock.now_millis();
        let redirect_uri = self.config.redirect_uri(&provider.name);
        let login = PendingLogin::begin(provider.name.clone(), redirect_uri.clone(), now);
        let key = PendingLogin::key(&login.state)
            .ok_or_else(|| Problem::internal("A login state could not be created"))?;
        let record = serde_json::to_vec(&login.record)
            .map_err(|_| Problem::internal("A login state could not be stored"))?;
        self.store
            .set(&key, &record)
            .map_err(|e| self.store_failed(&e))?;

        let scope = provider.scopes.join(" ");
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", provider.client_id.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("scope", scope.as_str()),
            ("state", login.state.as_str()),
        ];
        let challenge = login.verifier.s256_challenge();
        if matches!(provider.kind, ProviderKind::Oidc { .. }) {
            params.push(("nonce", login.record.nonce.as_str()));
        }
        params.push(("code_challenge", challenge.as_str()));
        params.push(("code_challenge_method", "S256"));
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let separator = if endpoints.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        self.log.info(
            "social login started",
            &[("provider", provider.name.as_str().into())],
        );
        Ok(Redirect {
            location: format!("{}{separator}{query}", endpoints.authorization_endpoint),
            set_cookie: cookie::set(&self.config.public_base_url, &login.binding),
        })
    }

    /// Completes a login. `cookie_headers` are the request's `Cookie` header values.
    pub async fn callback(
        &self,
        provider_name: &str,
        params: &CallbackParams,
        cookie_headers: &[&str],
    ) -> Result<Relayed, Problem> {
        let provider = self.provider(provider_name)?;
        let state = params.state.as_deref().ok_or_else(|| {
            Problem::bad_request("The callback has no state parameter")
                .with_type(problem_type("invalid-state"))
        })?;
        let (verifier, record) = self.take_pending(provider, state, cookie_headers)?;

        if let Some(error) = &params.error {
            return Err(self.provider_error(provider, error, params.error_description.as_deref()));
        }
        let endpoints = self.endpoints(provider).await?;
        // RFC 9207: a provider that says who it is must be the one we sent the user to.
        if let (Some(iss), Some(expected)) = (&params.iss, &endpoints.issuer)
            && iss.trim_end_matches('/') != expected
        {
            return Err(Problem::unauthorized(
                "The authorization response comes from another issuer than this login's provider",
            )
            .with_type(problem_type("issuer-mismatch")));
        }
        let code = params
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| {
                Problem::bad_request("The callback has no valid code parameter")
                    .with_type(problem_type("invalid-callback"))
            })?;
        let tokens = self
            .exchange_code(provider, &endpoints, code, &record.redirect_uri, &verifier)
            .await?;
        let identity = match &provider.kind {
            ProviderKind::Oidc { .. } => {
                self.oidc_identity(provider, &endpoints, &tokens, &record.nonce)
                    .await?
            }
            ProviderKind::Github => self.github_identity(provider, &tokens).await?,
        };
        let relayed = self.users_login(&identity).await?;
        self.log.info(
            "social login completed",
            &[
                ("provider", provider.name.as_str().into()),
                ("status", relayed.status.into()),
            ],
        );
        Ok(relayed)
    }

    /// Looks up, deletes and checks the pending login of `state`.
    fn take_pending(
        &self,
        provider: &Provider,
        state: &str,
        cookie_headers: &[&str],
    ) -> Result<(CodeVerifier, PendingLogin), Problem> {
        let invalid = || {
            Problem::unauthorized(
                "This login is unknown, expired or already used; start the login again",
            )
            .with_type(problem_type("invalid-state"))
        };
        let key = PendingLogin::key(state).ok_or_else(invalid)?;
        let stored = self.store.get(&key).map_err(|e| self.store_failed(&e))?;
        let Some(stored) = stored else {
            self.log.warn(
                "social login callback with unknown state",
                &[("provider", provider.name.as_str().into())],
            );
            return Err(invalid());
        };
        // Delete before checking anything: a state is spent by its first use, whatever the
        // outcome, so a replay (or a second guess at the cookie) meets nothing.
        self.store.delete(&key).map_err(|e| self.store_failed(&e))?;
        let record: PendingLogin = serde_json::from_slice(&stored).map_err(|_| invalid())?;
        let cookie_value = cookie::find(
            cookie_headers.iter().copied(),
            cookie::name(&self.config.public_base_url),
        );
        match record.accept(&provider.name, cookie_value, self.clock.now_millis()) {
            Ok(verifier) => Ok((verifier, record)),
            Err(refusal) => {
                self.log.warn(
                    "social login callback refused",
                    &[
                        ("provider", provider.name.as_str().into()),
                        ("reason", format!("{refusal:?}").into()),
                    ],
                );
                Err(match refusal {
                    Refusal::UnknownOrExpired => invalid(),
                    Refusal::WrongProvider => {
                        Problem::unauthorized("This login was started with another provider")
                            .with_type(problem_type("invalid-state"))
                    }
                    Refusal::MissingCookie | Refusal::CookieMismatch => Problem::unauthorized(
                        "This login was started in another browser (or its cookie was lost); \
                         start the login again",
                    )
                    .with_type(problem_type("browser-mismatch")),
                })
            }
        }
    }

    fn provider_error(
        &self,
        provider: &Provider,
        error: &str,
        description: Option<&str>,
    ) -> Problem {
        // Echo only a sanitised error code; the description is free text from a redirect
        // anyone can forge, so it goes to the log (truncated), not into our answer's fields.
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        self.log.warn(
            "provider returned an error",
            &[
                ("provider", provider.name.as_str().into()),
                ("error", code.clone().into()),
                (
                    "error_description",
                    description
                        .map(|d| d.chars().take(200).collect::<String>())
                        .unwrap_or_default()
                        .into(),
                ),
            ],
        );
        let problem = match code.as_str() {
            "access_denied"
            | "login_required"
            | "consent_required"
            | "interaction_required"
            | "account_selection_required" => {
                Problem::unauthorized("The login was cancelled or refused at the provider")
            }
            "temporarily_unavailable" | "server_error" => Problem::service_unavailable(
                "The provider could not complete the login; try again later",
            ),
            _ => Problem::bad_gateway("The provider rejected the login request"),
        };
        problem
            .with_type(problem_type("provider-error"))
            .with_extension("provider", provider.name.as_str())
            .with_extension("provider_error", code)
    }

    /// The provider's endpoints, from the cache or discovery.
    async fn endpoints(&self, provider: &Provider) -> Result<Endpoints, Problem> {
        let issuer = match &provider.kind {
            ProviderKind::Github => return Ok(discovery::github()),
            ProviderKind::Oidc { issuer } => issuer,
        };
        let key = format!("discovery:{}", provider.name);
        let now = self.clock.now_millis();
        if let Ok(Some(bytes)) = self.store.get(&key)
            && let Ok(cached) = serde_json::from_slice::<CachedEndpoints>(&bytes)
            && cached.issuer == issuer.as_str()
            && now - cached.fetched_at_ms < METADATA_TTL_MS
            && now >= cached.fetched_at_ms
        {
            return Ok(cached.endpoints);
        }
        let url = discovery::discovery_url(issuer);
        let response = self.get(&url, &[]).await.map_err(|e| {
            self.upstream_failed(
                provider,
                "discovery",
                &e,
                "The provider's discovery document could not be fetched",
            )
        })?;
        if response.status() != 200 {
            return Err(self.upstream_failed(
                provider,
                "discovery",
                &format!("status {}", response.status()),
                "The provider's discovery document could not be fetched",
            ));
        }
        let endpoints = discovery::parse(issuer, response.body()).map_err(|e| {
            self.upstream_failed(
                provider,
                "discovery",
                &e,
                "The provider's discovery document is not usable",
            )
        })?;
        let cached = CachedEndpoints {
            fetched_at_ms: now,
            issuer: issuer.as_str().to_owned(),
            endpoints: endpoints.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&cached)
            && let Err(e) = self.store.set(&key, &bytes)
        {
            // A cache write failure only costs a later re-fetch.
            self.log
                .warn("caching discovery failed", &[("error", e.into())]);
        }
        Ok(endpoints)
    }

    /// The provider's keys; re-fetched when stale, or (rate-limited) when `kid` is unknown.
    async fn jwks(
        &self,
        provider: &Provider,
        jwks_uri: &str,
        kid: Option<&str>,
    ) -> Result<Jwks, Problem> {
        let key = format!("jwks:{}", provider.name);
        let now = self.clock.now_millis();
        if let Ok(Some(bytes)) = self.store.get(&key)
            && let Ok(cached) = serde_json::from_slice::<CachedJwks>(&bytes)
            && cached.jwks_uri == jwks_uri
            && now >= cached.fetched_at_ms
            && now - cached.fetched_at_ms < METADATA_TTL_MS
            && let Ok(jwks) = Jwks::parse(cached.body.as_bytes())
        {
            let rotated = kid.is_some_and(|kid| !jwks.has_kid(kid));
            if !rotated || now - cached.fetched_at_ms < JWKS_MIN_REFRESH_MS {
                return Ok(jwks);
            }
        }
        let failed = |detail: &str| {
            self.upstream_failed(
                provider,
                "jwks",
                detail,
                "The provider's signing keys could not be fetched",
            )
        };
        let response = self.get(jwks_uri, &[]).await.map_err(|e| failed(&e))?;
        if response.status() != 200 {
            return Err(failed(&format!("status {}", response.status())));
        }
        let jwks = Jwks::parse(response.body()).map_err(|e| failed(&e))?;
        let cached = CachedJwks {
            fetched_at_ms: now,
            jwks_uri: jwks_uri.to_owned(),
            body: String::from_utf8_lossy(response.body()).into_owned(),
        };
        if let Ok(bytes) = serde_json::to_vec(&cached)
            && let Err(e) = self.store.set(&key, &bytes)
        {
            self.log.warn("caching JWKS failed", &[("error", e.into())]);
        }
        Ok(jwks)
    }

    /// Redeems the authorization code at the token endpoint.
    async fn exchange_code(
        &self,
        provider: &Provider,
        endpoints: &Endpoints,
        code: &str,
        redirect_uri: &str,
        verifier: &CodeVerifier,
    ) -> Result<Value, Problem> {
        let auth = provider.token_auth.unwrap_or(endpoints.token_auth);
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier.as_str());
        let mut request = http::Request::post(&endpoints.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("user-agent", USER_AGENT);
        match auth {
            TokenAuth::ClientSecretPost => {
                form.append_pair("client_id", &provider.client_id)
                    .append_pair("client_secret", &provider.client_secret);
            }
            TokenAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
                let encode =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let credentials = format!(
                    "{}:{}",
                    encode(&provider.client_id),
                    encode(&provider.client_secret)
                );
                request = request.header(
                    "authorization",
                    format!("Basic {}", STANDARD.encode(credentials)),
                );
                form.append_pair("client_id", &provider.client_id);
            }
        }
        let request = request
            .body(form.finish().into_bytes())
            .map_err(|_| Problem::internal("The token request could not be built"))?;
        let response = self.outbound.send(request).await.map_err(|e| {
            self.upstream_failed(
                provider,
                "token",
                &e,
                "The provider's token endpoint could not be reached",
            )
        })?;
        let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        // GitHub reports errors with status 200 and an `error` member; OIDC providers with 400/401.
        let error = body.get("error").and_then(Value::as_str);
        if response.status() == 200
            && error.is_none()
            && body.get("access_token").is_some_and(Value::is_string)
        {
            return Ok(body);
        }
        let error = error
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect::<String>();
        self.log.warn(
            "token exchange refused",
            &[
                ("provider", provider.name.as_str().into()),
                ("status", response.status().as_u16().into()),
                ("error", error.clone().into()),
            ],
        );
        Err(match error.as_str() {
            "invalid_grant" | "bad_verification_code" => Problem::unauthorized(
                "The provider refused the authorization code (expired, already used, or the \
                 PKCE verifier does not match)",
            )
            .with_type(problem_type("code-rejected")),
            _ => Problem::bad_gateway("The provider's token endpoint refused the request")
                .with_type(problem_type("provider-error"))
                .with_extension("provider_error", error),
        })
    }

    async fn oidc_identity(
        &self,
        provider: &Provider,
        endpoints: &Endpoints,
        tokens: &Value,
        nonce: &str,
    ) -> Result<ExternalIdentity, Problem> {
        let (Some(issuer), Some(jwks_uri)) = (&endpoints.issuer, &endpoints.jwks_uri) else {
            return Err(Problem::internal("The provider has no issuer or keys"));
        };
        let id_token = tokens
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                self.upstream_failed(
                    provider,
                    "token",
                    "no id_token",
                    "The provider returned no ID token",
                )
            })?;
        let kid = idtoken::header_kid(id_token);
        let jwks = self.jwks(provider, jwks_uri, kid.as_deref()).await?;
        let expect = Expectations {
            issuer,
            client_id: &provider.client_id,
            nonce,
            now_secs: self.clock.now_millis() / 1000,
        };
        let claims = idtoken::validate(id_token, &jwks, &expect)
            .map_err(|e| self.invalid_token(provider, &e))?;

        let (mut email, mut verified, mut name) =
            (claims.email, claims.email_verified, claims.name);
        // Some providers keep e-mail and profile out of the ID token; ask userinfo (its `sub`
        // must be the ID token's, Core §5.3.2).
        if (email.is_none() || name.is_none())
            && let (Some(url), Some(access_token)) = (
                &endpoints.userinfo_endpoint,
                tokens.get("access_token").and_then(Value::as_str),
            )
        {
            let auth = format!("Bearer {access_token}");
            let response = self
                .get(url, &[("authorization", auth.as_str())])
                .await
                .map_err(|e| {
                    self.upstream_failed(
                        provider,
                        "userinfo",
                        &e,
                        "The provider's userinfo endpoint could not be reached",
                    )
                })?;
            let info: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
            if response.status() == 200
                && info.get("sub").and_then(Value::as_str) == Some(claims.subject.as_str())
            {
                if email.is_none() {
                    email = info.get("email").and_then(Value::as_str).map(str::to_owned);
                    verified = info.get("email_verified").is_some_and(idtoken::is_true);
                }
                if name.is_none() {
                    name = info.get("name").and_then(Value::as_str).map(str::to_owned);
                }
            } else {
                self.log.warn(
                    "userinfo unusable",
                    &[
                        ("provider", provider.name.as_str().into()),
                        ("status", response.status().as_u16().into()),
                    ],
                );
            }
        }
        identity(
            provider,
            claims.subject,
            email,
            verified,
            name.or(claims.preferred_username),
        )
    }

    /// GitHub: the user's numeric id as subject, and its primary e-mail from `/user/emails`.
    async fn github_identity(
        &self,
        provider: &Provider,
        tokens: &Value,
    ) -> Result<ExternalIdentity, Problem> {
        let access_token = tokens
            .get("access_token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let auth = format!("Bearer {access_token}");
        let headers = [
            ("authorization", auth.as_str()),
            ("accept", "application/vnd.github+json"),
        ];
        let fetch = |what: &'static str, url: &'static str| async move {
            let response = self.get(url, &headers).await.map_err(|e| {
                self.upstream_failed(provider, what, &e, "GitHub's API could not be reached")
            })?;
            if response.status() != 200 {
                return Err(self.upstream_failed(
                    provider,
                    what,
                    &format!("status {}", response.status()),
                    "GitHub's API refused the request",
                ));
            }
            serde_json::from_slice::<Value>(response.body()).map_err(|_| {
                self.upstream_failed(provider, what, "not JSON", "GitHub's API answered garbage")
            })
        };
        let user = fetch("github-user", "https://api.github.com/user").await?;
        let subject = match user.get("id") {
            Some(Value::Number(id)) => id.to_string(),
            _ => {
                return Err(self.upstream_failed(
                    provider,
                    "github-user",
                    "no id",
                    "GitHub's API answered garbage",
                ));
            }
        };
        let emails = fetch("github-emails", discovery::GITHUB_EMAILS).await?;
        let primary = emails
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true));
        let email = primary
            .and_then(|e| e.get("email"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let verified = primary
            .and_then(|e| e.get("verified"))
            .and_then(Value::as_bool)
            == Some(true);
        let name = user
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| user.get("login").and_then(Value::as_str))
            .map(str::to_owned);
        identity(provider, subject, email, verified, name)
    }

    async fn users_login(&self, identity: &ExternalIdentity) -> Result<Relayed, Problem> {
        let request = http::Request::post(USERS_LOGIN_URL)
            .header("content-type", "application/json")
            .header(bazaar_platform::REQUEST_ID_HEADER, self.request_id)
            .body(serde_json::to_vec(identity).unwrap_or_default())
            .map_err(|_| Problem::internal("The users request could not be built"))?;
        let response = self.outbound.send(request).await.map_err(|e| {
            self.log
                .error("users service unreachable", &[("error", e.into())]);
            Problem::bad_gateway("The users service could not be reached")
        })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        match status {
            200 => {
                let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
                if body.get("access_token").is_some_and(Value::is_string) {
                    Ok(Relayed {
                        status,
                        content_type: "application/json".into(),
                        body: response.into_body(),
                    })
                } else {
                    self.log.error("users service answered without tokens", &[]);
                    Err(Problem::bad_gateway(
                        "The users service answered without tokens",
                    ))
                }
            }
            // The users service's own refusals (e.g. a disabled account) reach the client as is.
            400..=499 if content_type.starts_with("application/problem+json") => Ok(Relayed {
                status,
                content_type,
                body: response.into_body(),
            }),
            _ => {
                self.log
                    .error("users service failed", &[("status", status.into())]);
                Err(Problem::bad_gateway(
                    "The users service could not complete the login",
                ))
            }
        }
    }

    async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<http::Response<Vec<u8>>, String> {
        let mut request = http::Request::get(url).header("user-agent", USER_AGENT);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
        {
            request = request.header("accept", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Vec::new())
            .map_err(|e| format!("bad request: {e}"))?;
        self.outbound.send(request).await
    }

    fn invalid_token(&self, provider: &Provider, error: &TokenError) -> Problem {
        self.log.warn(
            "ID token refused",
            &[
                ("provider", provider.name.as_str().into()),
                ("reason", error.to_string().into()),
            ],
        );
        Problem::unauthorized(format!("The provider's ID token was refused: {error}"))
            .with_type(problem_type("invalid-id-token"))
    }

    fn upstream_failed(
        &self,
        provider: &Provider,
        step: &str,
        detail: &str,
        public: &str,
    ) -> Problem {
        self.log.error(
            "provider call failed",
            &[
                ("provider", provider.name.as_str().into()),
                ("step", step.into()),
                ("error", detail.chars().take(300).collect::<String>().into()),
            ],
        );
        Problem::bad_gateway(public).with_type(problem_type("provider-unavailable"))
    }

    fn store_failed(&self, error: &str) -> Problem {
        self.log
            .error("key-value store failed", &[("error", error.into())]);
        Problem::service_unavailable("Login state storage is unavailable; try again")
    }

    /// Deletes expired pending logins (the store has no TTL; expiry is also checked at read).
    pub fn sweep_expired(&self) -> Result<usize, Problem> {
        let now = self.clock.now_millis();
        let mut removed = 0;
        for key in self.store.keys().map_err(|e| self.store_failed(&e))? {
            if !key.starts_with("state:") {
                continue;
            }
            let expired = match self.store.get(&key).map_err(|e| self.store_failed(&e))? {
                Some(bytes) => serde_json::from_slice::<PendingLogin>(&bytes)
                    .map(|r| r.expires_at_ms <= now)
                    .unwrap_or(true),
                None => false,
            };
            if expired {
                self.store.delete(&key).map_err(|e| self.store_failed(&e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The identity for the users service; an account needs an e-mail address.
fn identity(
    provider: &Provider,
    subject: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
) -> Result<ExternalIdentity, Problem> {
    let email = email
        .map(|e| e.trim().to_owned())
        .filter(|e| {
            e.len() <= 254
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        })
        .ok_or_else(|| {
            Problem::forbidden(
                "The provider did not share an e-mail address; allow e-mail access and try again",
            )
            .with_type(problem_type("no-email"))
        })?;
    let name = name
        .map(|n| n.trim().chars().take(100).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
    Ok(ExternalIdentity {
        provider: provider.name.as_str().to_owned(),
        subject,
        email,
        email_verified,
        name,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use serde_json::json;

    use super::*;
    use crate::pending::LOGIN_TTL_MS;

    #[derive(Default)]
    struct MemoryStore(RefCell<HashMap<String, Vec<u8>>>);

    impl Store for MemoryStore {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.0.borrow_mut().insert(key.into(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
        fn keys(&self) -> Result<Vec<String>, String> {
            Ok(self.0.borrow().keys().cloned().collect())
        }
    }

    /// Answers each request from a table of `(method, url without query)` → (status, JSON),
    /// recording every request.
    struct ScriptedHttp {
        answers: HashMap<(String, String), (u16, Value)>,
        seen: RefCell<Vec<http::Request<Vec<u8>>>>,
    }

    impl ScriptedHttp {
        fn new(answers: &[(&str, &str, u16, Value)]) -> ScriptedHttp {
            ScriptedHttp {
                answers: answers
                    .iter()
                    .map(|(m, u, s, v)| ((m.to_string(), u.to_string()), (*s, v.clone())))
                    .collect(),
                seen: RefCell::default(),
            }
        }
        fn count(&self, url: &str) -> usize {
            self.seen.borrow().iter().filter(|r| r.uri() == url).count()
        }
        fn body_of(&self, url: &str) -> Vec<u8> {
            let seen = self.seen.borrow();
            seen.iter()
                .rev()
                .find(|r| r.uri() == url)
                .unwrap()
                .body()
                .clone()
        }
    }

    impl Outbound for ScriptedHttp {
        async fn send(
            &self,
            request: http::Request<Vec<u8>>,
        ) -> Result<http::Response<Vec<u8>>, String> {
            let key = (request.method().to_string(), request.uri().to_string());
            self.seen.borrow_mut().push(request);
            let (status, body) = self
                .answers
                .get(&key)
                .cloned()
                .ok_or_else(|| format!("no answer scripted for {key:?}"))?;
            let mut response = http::Response::new(body.to_string().into_bytes());
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok(response)
        }
    }

    struct TestClock(Cell<i64>);

    impl Clock for TestClock {
        fn now_millis(&self) -> i64 {
            self.0.get()
        }
    }

    const NOW_MS: i64 = 1_800_000_000_000;
    const ISSUER: &str = "https://idp.example";

    fn config() -> Config {
        Config::parse(
            &json!({
                "gh": {"kind": "github", "client_id": "gh-id", "client_secret": "gh-secret"},
                "idp": {"issuer": ISSUER, "client_id": "rp", "client_secret": "rp-secret"},
            })
            .to_string(),
            "https://shop.example",
        )
        .unwrap()
    }

    fn tokens() -> Value {
        json!({"access_token": "bazaar-a", "refresh_token": "bazaar-r", "token_type": "Bearer", "expires_in": 900})
    }

    struct Harness {
        config: Config,
        store: MemoryStore,
        http: ScriptedHttp,
        clock: TestClock,
        log: Logger,
    }

    impl Harness {
        fn new(answers: &[(&str, &str, u16, Value)]) -> Harness {
            Harness {
                config: config(),
                store: MemoryStore::default(),
                http: ScriptedHttp::new(answers),
                clock: TestClock(Cell::new(NOW_MS)),
                log: Logger::new("oidc-test"),
            }
        }
        fn flow(&self) -> Flow<'_, MemoryStore, ScriptedHttp, TestClock> {
            Flow {
                config: &self.config,
                store: &self.store,
                outbound: &self.http,
                clock: &self.clock,
                log: &self.log,
                request_id: "req-1",
            }
        }
        /// `start`, returning (state, nonce, cookie value, code_challenge).
        fn start(&self, provider: &str) -> (String, Option<String>, String, String) {
            let redirect = futures::executor::block_on(self.flow().start(provider)).unwrap();
            let query = redirect.location.split_once('?').unwrap().1.to_owned();
            let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let cookie = redirect.set_cookie.split(';').next().unwrap();
            let cookie = cookie.split_once('=').unwrap().1.to_owned();
            (
                params["state"].clone(),
                params.get("nonce").cloned(),
                cookie,
                params["code_challenge"].clone(),
            )
        }
        fn callback(&self, provider: &str, state: &str, cookie: &str) -> Result<Relayed, Problem> {
            let params = CallbackParams {
                state: Some(state.into()),
                code: Some("the-code".into()),
                ..Default::default()
            };
            let header = format!("__Host-bazaar_oidc={cookie}");
            futures::executor::block_on(self.flow().callback(provider, &params, &[&header]))
        }
    }

    fn sent_identity(h: &Harness) -> Value {
        serde_json::from_slice(&h.http.body_of(USERS_LOGIN_URL)).unwrap()
    }

    #[test]
    fn github_login_uses_the_numeric_id_and_the_primary_email() {
        let h = Harness::new(&[
            (
                "POST",
                "https://github.com/login/oauth/access_token",
                200,
                json!({"access_token": "gho_x", "token_type": "bearer", "scope": "read:user,user:email"}),
            ),
            (
                "GET",
                "https://api.github.com/user",
                200,
                json!({"id": 583231, "login": "octocat", "name": null}),
            ),
            (
                "GET",
                "https://api.github.com/user/emails",
                200,
                json!([
                {"email": "old@example.com", "primary": false, "verified": true},
                {"email": "octo@example.com", "primary": true, "verified": true}]),
            ),
            ("POST", USERS_LOGIN_URL, 200, tokens()),
        ]);
        let (state, nonce, cookie, challenge) = h.start("gh");
        assert_eq!(nonce, None, "GitHub has no ID token, so no nonce");
        let relayed = h.callback("gh", &state, &cookie).unwrap();
        assert_eq!(relayed.status, 200);
        assert_eq!(
            sent_identity(&h),
            json!({"provider": "gh", "subject": "583231", "email": "octo@example.com",
                   "email_verified": true, "name": "octocat"})
        );
        // client_secret_post, with the PKCE verifier that hashes to the challenge.
        let form: HashMap<String, String> = form_urlencoded::parse(
            &h.http
                .body_of("https://github.com/login/oauth/access_token"),
        )
        .into_owned()
        .collect();
        assert_eq!(form["client_secret"], "gh-secret");
        assert_eq!(
            form["redirect_uri"],
            "https://shop.example/auth/oidc/gh/callback"
        );
        assert_eq!(crate::pkce::sha256_b64(&form["code_verifier"]), challenge);
        // GitHub's 200-with-error answer is a refusal, not a success.
        let h = Harness::new(&[(
            "POST",
            "https://github.com/login/oauth/access_token",
            200,
            json!({"error": "bad_verification_code"}),
        )]);
        let (state, _, cookie, _) = h.start("gh");
        let problem = h.callback("gh", &state, &cookie).unwrap_err();
        assert_eq!(problem.status, 401);
        assert_eq!(h.http.count(USERS_LOGIN_URL), 0);
    }

    fn discovery_answers(
        jwks: Value,
        token_response: Value,
    ) -> Vec<(&'static str, &'static str, u16, Value)> {
        vec![
            (
                "GET",
                "https://idp.example/.well-known/openid-configuration",
                200,
                json!({
                "issuer": ISSUER,
                "authorization_endpoint": "https://idp.example/auth",
                "token_endpoint": "https://idp.example/token",
                "userinfo_endpoint": "https://idp.example/userinfo",
                "jwks_uri": "https://idp.example/jwks"}),
            ),
            ("GET", "https://idp.example/jwks", 200, jwks),
            ("POST", "https://idp.example/token", 200, token_response),
            (
                "GET",
                "https://idp.example/userinfo",
                200,
                json!({"sub": "s-1", "email": "lin@example.com", "email_verified": "true", "name": "Lin"}),
            ),
            ("POST", USERS_LOGIN_URL, 200, tokens()),
        ]
    }

    fn es256(key: &SigningKey, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "ec"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn ec_jwks(key: &SigningKey) -> Value {
        let point = key.verifying_key().to_encoded_point(false);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())}]})
    }

    /// Runs one OIDC login whose ID token has `claims` (with the login's nonce filled in).
    fn oidc_login(mut claims: Value) -> (Harness, Result<Relayed, Problem>) {
        let key = SigningKey::random(&mut rand_core::OsRng);
        // The token endpoint's answer depends on the nonce, known only after `start`; script
        // it with a placeholder and patch the table below.
        let mut h = Harness::new(&discovery_answers(ec_jwks(&key), Value::Null));
        let (state, nonce, cookie, _) = h.start("idp");
        if claims.get("nonce").is_none() {
            claims["nonce"] = nonce.unwrap().into();
        }
        h.http.answers.insert(
            ("POST".into(), "https://idp.example/token".into()),
            (200, json!({"access_token": "at", "token_type": "Bearer", "id_token": es256(&key, &claims)})),
        );
        let result = h.callback("idp", &state, &cookie);
        (h, result)
    }

    fn claims() -> Value {
        json!({"iss": ISSUER, "aud": "rp", "sub": "s-1", "iat": NOW_MS / 1000, "exp": NOW_MS / 1000 + 300})
    }

    #[test]
    fn oidc_login_takes_email_from_userinfo_when_the_id_token_has_none() {
        let (h, result) = oidc_login(claims());
        assert_eq!(result.unwrap().status, 200);
        assert_eq!(
            sent_identity(&h),
            json!({"provider": "idp", "subject": "s-1", "email": "lin@example.com",
                   "email_verified": true, "name": "Lin"})
        );
        // client_secret_basic by default (the document lists no methods).
        let seen = h.http.seen.borrow();
        let token_request = seen
            .iter()
            .find(|r| r.uri() == "https://idp.example/token")
            .unwrap();
        assert!(
            token_request.headers()["authorization"]
                .to_str()
                .unwrap()
                .starts_with("Basic ")
        );
        drop(seen);
        // Discovery is cached: a second start does not fetch it again.
        h.start("idp");
        assert_eq!(
            h.http
                .count("https://idp.example/.well-known/openid-configuration"),
            1
        );
    }

    #[test]
    fn oidc_login_refuses_a_foreign_nonce_or_audience() {
        let mut c = claims();
        c["nonce"] = "someone-elses".into();
        let (h, result) = oidc_login(c);
        let problem = result.unwrap_err();
        assert_eq!(problem.status, 401);
        assert_eq!(
            problem.type_uri,
            "https://bazaar.dev/problems/oidc-invalid-id-token"
        );
        assert_eq!(h.http.count(USERS_LOGIN_URL), 0);

        let mut c = claims();
        c["aud"] = "another-rp".into();
        let (_, result) = oidc_login(c);
        assert_eq!(result.unwrap_err().status, 401);
    }

    #[test]
    fn expired_pending_login_is_refused_and_swept() {
        let h = Harness::new(&discovery_answers(json!({"keys": []}), Value::Null));
        let (state, _, cookie, _) = h.start("idp");
        let (_, _, _, _) = h.start("idp");
        h.clock.0.set(NOW_MS + LOGIN_TTL_MS);
        let problem = h.callback("idp", &state, &cookie).unwrap_err();
        assert_eq!(problem.status, 401);
        assert_eq!(
            problem.type_uri,
            "https://bazaar.dev/problems/oidc-invalid-state"
        );
        assert_eq!(h.http.count("https://idp.example/token"), 0);
        // The first was deleted by its callback; the sweep removes the other, keeps caches.
        assert_eq!(h.flow().sweep_expired().unwrap(), 1);
        assert!(
            h.store
                .keys()
                .unwrap()
                .iter()
                .all(|k| !k.starts_with("state:"))
        );
        assert!(
            h.store
                .keys()
                .unwrap()
                .iter()
                .any(|k| k.starts_with("discovery:"))
        );
    }

    #[test]
    fn callback_params_keep_the_first_value_and_ignore_others() {
        let p = CallbackParams::from_query("state=a&state=b&code=c%2Bd&iss=x&extra=1&error=");
        assert_eq!(p.state.as_deref(), Some("a"));
        assert_eq!(p.code.as_deref(), Some("c+d"));
        assert_eq!(p.iss.as_deref(), Some("x"));
        assert_eq!(p.error.as_deref(), Some(""));
        assert!(CallbackParams::from_query("").state.is_none());
    }

    #[test]
    fn provider_errors_map_to_clear_statuses_with_a_sanitised_code() {
        let h = Harness::new(&[]);
        let provider = h.config.provider("gh").unwrap();
        let cases = [
            ("access_denied", 401, "access_denied"),
            ("temporarily_unavailable", 503, "temporarily_unavailable"),
            ("invalid_scope", 502, "invalid_scope"),
            ("<script>x</script>", 502, "scriptxscript"),
        ];
        for (error, status, code) in cases {
            let problem = h.flow().provider_error(provider, error, Some("free text"));
            assert_eq!(problem.status, status, "{error}");
            assert_eq!(problem.extensions["provider_error"], code);
            assert!(!problem.detail.contains("free text"));
        }
    }

    #[test]
    fn unknown_provider_is_404() {
        let h = Harness::new(&[]);
        let problem = futures::executor::block_on(h.flow().start("nope")).unwrap_err();
        assert_eq!(problem.status, 404);
    }
}
