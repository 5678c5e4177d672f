//! Request body size limits.
//!
//! Every route accepts at most `max_body_bytes`, except image uploads
//! (`POST /api/v1/products/{id}/images`), which accept `max_image_bytes`. A declared
//! `Content-Length` over the limit is refused before a byte of the body is read; a body without
//! one (chunked) is read only until it passes the limit. Either way the answer is 413.

use http::Method;
use http::header::{self, HeaderMap};

use bazaar_platform::Problem;

use crate::config::Config;

/// The body limit that applies to a request, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    pub bytes: usize,
}

/// The body limit for `method path`.
pub fn body_limit(method: &Method, path: &str, config: &Config) -> BodyLimit {
    let bytes = if is_image_upload(method, path) {
        config.max_image_bytes
    } else {
        config.max_body_bytes
    };
    BodyLimit { bytes }
}

/// `POST /api/v1/products/{id}/images` with a single, non-empty `{id}` segment.
pub fn is_image_upload(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    path.strip_prefix("/api/v1/products/")
        .and_then(|rest| rest.strip_suffix("/images"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Checks the declared `Content-Length` against `limit`: `Ok` when absent or within it, 413 when
/// over it, 400 when malformed or repeated with different values.
// `Problem` is the error type across the platform; it is built at most once per request.
#[allow(clippy::result_large_err)]
pub fn check_declared_length(headers: &HeaderMap, limit: BodyLimit) -> Result<(), Problem> {
    let mut declared: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().unwrap_or("");
        // RFC 9110 §8.6: 1*DIGIT (a list of identical values may be folded into one header).
        for item in text.split(',').map(str::trim) {
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Problem::bad_request("The Content-Length header is invalid"));
            }
            // More digits than fit in a u64 are certainly over any limit.
            let length = item.parse::<u64>().unwrap_or(u64::MAX);
            match declared {
                Some(previous) if previous != length => {
                    return Err(Problem::bad_request(
                        "The request has conflicting Content-Length values",
                    ));
                }
                _ => declared = Some(length),
            }
        }
    }
    match declared {
        Some(length) if length > limit.bytes as u64 => Err(Problem::payload_too_large(limit.bytes)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn config() -> Config {
        Config {
            max_body_bytes: 10,
            max_image_bytes: 100,
            ..Config::default()
        }
    }

    fn lengths(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn image_uploads_get_the_image_limit() {
        let c = config();
        assert_eq!(
            body_limit(&Method::POST, "/api/v1/products/p1/images", &c).bytes,
            100
        );
        for (method, path) in [
            (Method::PUT, "/api/v1/products/p1/images"),
            (Method::POST, "/api/v1/products//images"),
            (Method::POST, "/api/v1/products/a/b/images"),
            (Method::POST, "/api/v1/products/p1/images/x"),
            (Method::POST, "/api/v1/products/images"),
            (Method::POST, "/api/v1/products"),
            (Method::POST, "/api/v1/cart/items"),
        ] {
            assert_eq!(body_limit(&method, path, &c).bytes, 10, "{method} {path}");
        }
    }

    #[test]
    fn declared_length_checks() {
        let limit = BodyLimit { bytes: 10 };
        assert!(check_declared_length(&HeaderMap::new(), limit).is_ok());
        assert!(check_declared_length(&lengths(&["10"]), limit).is_ok());
        assert!(check_declared_length(&lengths(&["0"]), limit).is_ok());
        assert!(check_declared_length(&lengths(&["7, 7"]), limit).is_ok());
        assert_eq!(
            check_declared_length(&lengths(&["11"]), limit)
                .unwrap_err()
                .status,
            413
        );
        assert_eq!(
            check_declared_length(&lengths(&["99999999999999999999999"]), limit)
                .unwrap_err()
                .status,
            413
        );
        for bad in [
            &["-1"][..],
            &["1e3"],
            &[""],
            &["+5"],
            &["5", "6"],
            &["5, 6"],
        ] {
            assert_eq!(
                check_declared_length(&lengths(bad), limit)
                    .unwrap_err()
                    .status,
                400,
                "{bad:?}"
            );
        }
    }
}
