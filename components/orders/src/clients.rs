//! Calls to the other services over Spin service chaining (`http://<id>.spin.internal`).
//! Every call carries the request id; calls that move money or stock carry an idempotency key
//! derived from the order, so a retried saga step never acts twice.

use bazaar_platform::REQUEST_ID_HEADER;
use serde_json::Value;
use spin_sdk::http::{Method, Request, Response};

/// A response: status and JSON body (`Null` when empty or not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// The call could not complete: the outcome is unknown, so only an idempotent retry is safe.
#[derive(Debug)]
pub struct Unreachable(pub String);

pub async fn call(
    method: Method,
    url: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Answer, Unreachable> {
    let mut request = Request::builder();
    request.method(method).uri(url);
    for (name, value) in headers {
        request.header(*name, *value);
    }
    if let Some(body) = body {
        request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response: Response = spin_sdk::http::send(request.build())
        .await
        .map_err(|e| Unreachable(format!("{url}: {e:?}")))?;
    Ok(Answer {
        status: *response.status(),
        body: serde_json::from_slice(response.body()).unwrap_or(Value::Null),
    })
}

/// Headers for a call made on behalf of `user` with `role`.
pub fn as_user<'a>(request_id: &'a str, user: &'a str, role: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (REQUEST_ID_HEADER, request_id),
        (bazaar_platform::auth::USER_ID_HEADER, user),
        (bazaar_platform::auth::ROLE_HEADER, role),
    ]
}

pub const CATALOG: &str = "http://catalog.spin.internal";
pub const CARTS: &str = "http://carts.spin.internal";
pub const INVENTORY: &str = "http://inventory.spin.internal";
pub const PAYMENTS: &str = "http://payments.spin.internal";
