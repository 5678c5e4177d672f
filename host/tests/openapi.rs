//! `docs/openapi.yaml` against the running shop (`shop("")`):
//! * every documented path + method is served (the gateway routes it and the service knows it:
//!   no 405, and no "No route"/"No service is deployed" 404);
//! * the responses of a scripted happy path (register, login, me, create category and product,
//!   list, get, plus a few documented errors) validate against the documented schemas.
//!
//! The schema check is a small hand-written subset of JSON Schema — `$ref` (local), `type`
//! (including type lists), `required`, `properties`, `items`, `enum`, `allOf`, `oneOf` — which is
//! all the document uses for response bodies.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use bazaar_platform::Role;
use bazaar_platform::jwt::{self, Claims, KeyPair};
use common::{Runner, client, shop, workspace_root};
use serde_json::{Value, json};

const SEED: [u8; 32] = [11; 32];

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

fn mint(sub: &str, role: Role) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jwt::sign(
        &KeyPair::from_seed("oa", SEED),
        &Claims {
            sub: sub.into(),
            role,
            iss: "bazaar".into(),
            aud: "bazaar-api".into(),
            iat: now,
            nbf: now,
            exp: now + 900,
            jti: format!("openapi-{sub}"),
        },
    )
}

fn document() -> Value {
    let text = std::fs::read_to_string(workspace_root().join("docs/openapi.yaml")).unwrap();
    serde_norway::from_str(&text).expect("docs/openapi.yaml is valid YAML")
}

fn start() -> Runner {
    shop("")
        .arg("--variable")
        .arg(&format!("jwt_signing_keys=oa={}", b64url(&SEED)))
        .start()
}

/// Resolves a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local refs are supported: {reference}"));
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"));
            resolve(doc, target)
        }
        None => node,
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// Every violation of `schema` by `value`, as `path: message`.
fn validate(doc: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            validate(doc, part, value, path, errors);
        }
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|option| {
                let mut e = Vec::new();
                validate(doc, option, value, path, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!("{path}: matches {matching} of the oneOf options"));
        }
    }
    match schema.get("type") {
        Some(Value::String(name)) if !type_matches(name, value) => {
            errors.push(format!("{path}: expected {name}, got {value}"));
            return;
        }
        Some(Value::Array(names))
            if !names
                .iter()
                .any(|n| type_matches(n.as_str().unwrap(), value)) =>
        {
            errors.push(format!("{path}: expected one of {names:?}, got {value}"));
            return;
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                errors.push(format!("{path}: required member {name} is missing"));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                if let Some(member) = object.get(name) {
                    validate(doc, property, member, &format!("{path}.{name}"), errors);
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{path}[{i}]"), errors);
        }
    }
}

/// Checks a response against the document's entry for `method path` (the templated path).
async fn conforms(doc: &Value, method: &str, path: &str, response: reqwest::Response) -> Value {
    let status = response.status().as_u16().to_string();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let text = response.text().await.unwrap();
    let operation = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let documented = operation["responses"].get(&status).unwrap_or_else(|| {
        panic!("{method} {path}: status {status} is not documented; body {text}")
    });
    let documented = resolve(doc, documented);
    let body: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
    };
    match documented.get("content") {
        None => assert!(
            text.is_empty(),
            "{method} {path} {status}: unexpected body {text}"
        ),
        Some(content) => {
            let media = content.get(&content_type).unwrap_or_else(|| {
                panic!("{method} {path} {status}: content type {content_type:?} not documented")
            });
            let mut errors = Vec::new();
            validate(doc, &media["schema"], &body, "$", &mut errors);
            assert!(
                errors.is_empty(),
                "{method} {path} {status} does not match the document:\n{}\nbody: {body}",
                errors.join("\n")
            );
        }
    }
    body
}

#[test]
fn the_document_is_well_formed() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for required in [
        "/health/live",
        "/health/ready",
        "/auth/register",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/auth/oidc/{provider}/start",
        "/auth/oidc/{provider}/callback",
        "/api/v1/users/me",
        "/api/v1/users/{id}",
        "/api/v1/users/{id}/role",
        "/api/v1/products",
        "/api/v1/products/{id}",
        "/api/v1/products/{id}/images",
        "/api/v1/products/{id}/discount",
        "/api/v1/categories",
        "/images/{key}",
    ] {
        assert!(paths.contains_key(required), "{required} is not documented");
    }
    // Every $ref resolves and every operation documents at least one response.
    fn walk(doc: &Value, node: &Value) {
        match node {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(doc, node);
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
        }
    }
}

#[test]
fn the_checker_catches_mismatches() {
    let doc = document();
    let product = json!({"$ref": "#/components/schemas/Product"});
    let mut errors = Vec::new();
    validate(
        &doc,
        &product,
        &json!({"id": 1, "price": {"amount": 1.5, "currency": "EUR"}}),
        "$",
        &mut errors,
    );
    let text = errors.join("\n");
    for expected in [
        "$.id: expected string",
        "$.price.amount: expected integer",
        "required member sku is missing",
    ] {
        assert!(
            text.contains(expected),
            "{expected} not reported in:\n{text}"
        );
    }
    let mut errors = Vec::new();
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/ValidationProblem"}),
        &json!({"type": "about:blank", "title": "x", "status": 422}),
        "$",
        &mut errors,
    );
    assert_eq!(errors, ["$: required member errors is missing"]);
    let mut errors = Vec::new();
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/User"}),
        &json!({"id": "u", "email": "e", "name": "n", "role": "root", "created_at": "t", "updated_at": "t"}),
        "$",
        &mut errors,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let doc = document();
    let app = start();
    let admin = mint("usr_openapi_admin", Role::Admin);
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{provider}", "nosuchprovider")
            .replace("{id}", "does-not-exist")
            .replace("{key}", "does-not-exist");
        for method in item.as_object().unwrap().keys() {
            if method == "parameters" {
                continue;
            }
            let method_upper = method.to_ascii_uppercase();
            let request = client()
                .request(
                    reqwest::Method::from_bytes(method_upper.as_bytes()).unwrap(),
                    app.url(&concrete),
                )
                .header("authorization", format!("Bearer {admin}"));
            let request = if ["POST", "PUT", "PATCH"].contains(&method_upper.as_str()) {
                request
                    .header("content-type", "application/json")
                    .body("{}")
            } else {
                request
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_ne!(status, 405, "{method_upper} {path}: {text}");
            if status == 404 {
                let problem: Value = serde_json::from_str(&text).unwrap_or_default();
                let detail = problem["detail"].as_str().unwrap_or("");
                assert!(
                    !detail.starts_with("No route for")
                        && !detail.starts_with("No service is deployed"),
                    "{method_upper} {path} is not served: {text}"
                );
            }
        }
    }
}

#[tokio::test]
async fn happy_path_responses_match_the_document() {
    let doc = document();
    let app = start();
    let c = client();

    conforms(
        &doc,
        "GET",
        "/health/live",
        c.get(app.url("/health/live")).send().await.unwrap(),
    )
    .await;
    conforms(
        &doc,
        "GET",
        "/health/ready",
        c.get(app.url("/health/ready")).send().await.unwrap(),
    )
    .await;
    let jwks = conforms(
        &doc,
        "GET",
        "/.well-known/jwks.json",
        c.get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks["keys"][0]["kid"], "oa");

    // Identity.
    let registration = json!({"email": "openapi@example.com", "password": "a long enough passphrase 7", "name": "Open Api"});
    let user = conforms(
        &doc,
        "POST",
        "/auth/register",
        c.post(app.url("/auth/register"))
            .json(&registration)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    conforms(
        &doc,
        "POST",
        "/auth/register",
        c.post(app.url("/auth/register"))
            .json(&json!({"email": "nope"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let tokens = conforms(
        &doc,
        "POST",
        "/auth/login",
        c.post(app.url("/auth/login"))
            .json(
                &json!({"email": "openapi@example.com", "password": "a long enough passphrase 7"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    conforms(
        &doc,
        "POST",
        "/auth/login",
        c.post(app.url("/auth/login"))
            .json(&json!({"email": "openapi@example.com", "password": "wrong password, sorry"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let me = conforms(
        &doc,
        "GET",
        "/api/v1/users/me",
        c.get(app.url("/api/v1/users/me"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["id"], user_id.as_str());
    conforms(
        &doc,
        "GET",
        "/api/v1/users/me",
        c.get(app.url("/api/v1/users/me")).send().await.unwrap(),
    )
    .await;
    let refreshed = conforms(
        &doc,
        "POST",
        "/auth/refresh",
        c.post(app.url("/auth/refresh"))
            .json(&json!({"refresh_token": tokens["refresh_token"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    conforms(
        &doc,
        "POST",
        "/auth/logout",
        c.post(app.url("/auth/logout"))
            .json(&json!({"refresh_token": refreshed["refresh_token"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Catalog: an admin makes a category, the (now) vendor a product in it.
    let admin = mint("usr_openapi_admin", Role::Admin);
    let vendor = mint(&user_id, Role::Vendor);
    let category = conforms(
        &doc,
        "POST",
        "/api/v1/categories",
        c.post(app.url("/api/v1/categories"))
            .bearer_auth(&admin)
            .json(&json!({"name": "Lamps"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    conforms(
        &doc,
        "GET",
        "/api/v1/categories",
        c.get(app.url("/api/v1/categories")).send().await.unwrap(),
    )
    .await;
    let product = conforms(
        &doc,
        "POST",
        "/api/v1/products",
        c.post(app.url("/api/v1/products"))
            .bearer_auth(&vendor)
            .json(&json!({
                "sku": "LAMP-1",
                "name": "Desk lamp",
                "description": "Warm light",
                "category_id": category["id"],
                "price": {"amount": 2999, "currency": "EUR"},
                "attributes": {"color": "black"}
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    assert_eq!(product["vendor_id"], user_id.as_str());
    conforms(
        &doc,
        "POST",
        "/api/v1/products",
        c.post(app.url("/api/v1/products"))
            .bearer_auth(&vendor)
            .json(&json!({"sku": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    conforms(
        &doc,
        "POST",
        "/api/v1/products",
        c.post(app.url("/api/v1/products"))
            .json(&json!({"sku": "X"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let page = conforms(
        &doc,
        "GET",
        "/api/v1/products",
        c.get(app.url("/api/v1/products?limit=5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == product_id.as_str()),
        "{page}"
    );
    let fetched = conforms(
        &doc,
        "GET",
        "/api/v1/products/{id}",
        c.get(app.url(&format!("/api/v1/products/{product_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(fetched["sku"], "LAMP-1");
    conforms(
        &doc,
        "PUT",
        "/api/v1/products/{id}/discount",
        c.put(app.url(&format!("/api/v1/products/{product_id}/discount")))
            .bearer_auth(&vendor)
            .json(&json!({"percent_off": 10}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    conforms(
        &doc,
        "GET",
        "/api/v1/products/{id}",
        c.get(app.url("/api/v1/products/does-not-exist"))
            .send()
            .await
            .unwrap(),
    )
    .await;
}
