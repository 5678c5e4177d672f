//! Request bodies: size limit, media type and JSON, each failure its own status
//! (413, 415, 400 malformed, 422 well-formed but invalid).

use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

/// The default JSON body limit of Bazaar's services (the gateway enforces its own limits first).
pub const DEFAULT_JSON_LIMIT: usize = 64 * 1024;

/// Whether `content_type` is JSON (`application/json` or any `+json` type), parameters ignored.
pub fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON request body into `T`.
///
/// Malformed JSON is 400; JSON that does not fit `T` (missing field, wrong type, unknown field
/// when `T` denies them) is 422 with the serde message as the field error.
pub fn parse_json<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
    limit: usize,
) -> Result<T, Problem> {
    if body.len() > limit {
        return Err(Problem::payload_too_large(limit));
    }
    if !is_json(content_type) {
        return Err(Problem::unsupported_media_type(
            "The request body must be application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::unprocessable(vec![FieldError::new(
            field_of(&e.to_string()),
            e.to_string(),
        )]),
        _ => Problem::bad_request(format!("The request body is not valid JSON: {e}")),
    })
}

/// serde names the offending field in backticks in "missing field `x`", "unknown field `x`" and
/// "duplicate field `x`"; other messages quote values the same way ("invalid type: floating
/// point `1.5`"), so only those three forms name a field. Anything else is reported on "body".
fn field_of(message: &str) -> String {
    ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| {
            let rest = &message[message.find(prefix)? + prefix.len()..];
            rest.split('`')
                .next()
                .filter(|f| !f.is_empty() && f.len() < 64)
        })
        .unwrap_or("body")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        password: String,
    }

    fn status(r: Result<Login, Problem>) -> u16 {
        r.unwrap_err().status_code().as_u16()
    }

    #[test]
    fn each_failure_has_its_status() {
        let json = Some("application/json; charset=utf-8");
        assert!(parse_json::<Login>(json, br#"{"email":"a","password":"b"}"#, 100).is_ok());
        assert_eq!(status(parse_json(json, br#"{"email":"#, 100)), 400);
        assert_eq!(status(parse_json(json, b"", 100)), 400);
        assert_eq!(status(parse_json(json, br#"{"email":"a"}"#, 100)), 422);
        assert_eq!(
            status(parse_json(json, br#"{"email":1,"password":"b"}"#, 100)),
            422
        );
        assert_eq!(status(parse_json(json, &[b' '; 101], 100)), 413);
        assert_eq!(status(parse_json(Some("text/plain"), b"{}", 100)), 415);
        assert_eq!(status(parse_json(None, b"{}", 100)), 415);
        let field = |body: &[u8]| {
            parse_json::<Login>(json, body, 100).unwrap_err().errors[0]
                .field
                .clone()
        };
        assert_eq!(field(br#"{"email":"a"}"#), "password");
        assert_eq!(field(br#"{"email":"a","password":"b","x":1}"#), "x");
        // A quoted value is not a field name.
        assert_eq!(field(br#"{"email":1.5,"password":"b"}"#), "body");
    }

    #[test]
    fn json_media_types() {
        assert!(is_json(Some("application/merge-patch+json")));
        assert!(is_json(Some("Application/JSON")));
        assert!(!is_json(Some("application/jsonx")));
    }
}
