//! List pagination: `limit` (1..=100, default 20) and an opaque `cursor`, answered as
//! `{ "items": [...], "next_cursor": "<opaque>" | null }`.
//!
//! Cursors are keyset positions (the sort key of the last item plus its id as tie-breaker), so
//! a page never repeats or skips rows when others are inserted between requests. They are
//! base64url-encoded JSON: opaque to clients, and parsed as strictly as any other input.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
/// A cursor longer than this is not one we issued.
const MAX_CURSOR_LEN: usize = 1024;

/// Parses the `limit` query parameter.
pub fn parse_limit(raw: Option<&str>) -> Result<u32, Problem> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Problem::unprocessable(vec![crate::FieldError::new(
                "limit",
                format!("must be an integer from 1 to {MAX_LIMIT}"),
            )])),
        },
    }
}

/// Encodes a keyset position as an opaque cursor.
pub fn encode_cursor<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// Decodes a cursor issued by [`encode_cursor`]; anything else is a 422 on `cursor`.
pub fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> Result<T, Problem> {
    let invalid = || {
        Problem::unprocessable(vec![crate::FieldError::new(
            "cursor",
            "is not a cursor this list returned",
        )])
    };
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows: the extra row only proves there is a
    /// next page, and the cursor points after the last row returned.
    pub fn from_overfetch<P: Serialize>(
        mut rows: Vec<T>,
        limit: u32,
        position_of: impl Fn(&T) -> P,
    ) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if has_more {
            rows.last().map(|last| encode_cursor(&position_of(last)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "x", ""] {
            assert_eq!(
                parse_limit(Some(bad)).unwrap_err().status_code().as_u16(),
                422
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(&(1500i64, "p_9"));
        let back: (i64, String) = decode_cursor(&c).unwrap();
        assert_eq!(back, (1500, "p_9".to_owned()));
        assert!(decode_cursor::<(i64, String)>("!!!").is_err());
        assert!(decode_cursor::<(i64, String)>(&encode_cursor(&"str")).is_err());
        assert!(decode_cursor::<(i64, String)>(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn overfetch_decides_the_next_cursor() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(
            decode_cursor::<i32>(page.next_cursor.as_deref().unwrap()).unwrap(),
            2
        );
        let last = Page::from_overfetch(vec![1, 2], 2, |n| *n);
        assert!(last.next_cursor.is_none());
    }
}
