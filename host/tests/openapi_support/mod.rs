//! The checker that holds the shop's real answers against `docs/openapi.yaml`, shared by the
//! tests that run the shop (`openapi.rs`, and `payments_shop.rs` with the payment host):
//! [`check`] sends a request and asserts that its status is documented for the operation, that
//! its body conforms to the documented schema for that status and media type, that the headers
//! the document marks `required` are there, and that `x-request-id` is (API.md).
//!
//! The schema check is a small hand-written subset of JSON Schema — `$ref` (local), `type`
//! (including type lists), `required`, `properties`, `items`, `enum`, `allOf`, `oneOf`,
//! `minimum`, `maximum` — which is all the document uses for response bodies.
#![allow(dead_code)]

use std::path::Path;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// `docs/openapi.yaml`, parsed.
pub fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::from_str(&text).expect("docs/openapi.yaml is valid YAML")
}

/// Resolves a local `$ref` (`#/components/...`).
pub fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
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
pub fn validate(doc: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
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
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
            && number < minimum
        {
            errors.push(format!("{path}: {value} is below the minimum {minimum}"));
        }
        if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
            && number > maximum
        {
            errors.push(format!("{path}: {value} is above the maximum {maximum}"));
        }
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
pub async fn conforms(doc: &Value, method: &str, path: &str, response: reqwest::Response) -> Value {
    conforms_with_headers(doc, method, path, response).await.0
}

/// [`conforms`], also checking that every header the document marks `required` for this status
/// is present; returns the body and the headers.
pub async fn conforms_with_headers(
    doc: &Value,
    method: &str,
    path: &str,
    response: reqwest::Response,
) -> (Value, HeaderMap) {
    let status = response.status().as_u16().to_string();
    let headers = response.headers().clone();
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
    // API.md: every response carries `x-request-id`.
    assert!(
        headers.contains_key("x-request-id"),
        "{method} {path} {status}: no x-request-id"
    );
    for (name, header) in documented
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if resolve(doc, header)["required"] == true {
            assert!(
                headers.contains_key(name.as_str()),
                "{method} {path} {status}: required header {name} is missing; body {text}"
            );
        }
    }
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
    (body, headers)
}

/// One answer, already checked against the document.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

/// Sends `request` and checks its answer against the document's `method path`.
pub async fn check(
    doc: &Value,
    method: &str,
    path: &str,
    request: reqwest::RequestBuilder,
) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let (body, headers) = conforms_with_headers(doc, method, path, response).await;
    Answer {
        status,
        body,
        headers,
    }
}
