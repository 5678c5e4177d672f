//! `GET /api/v1/products` query parameters: search, filters, sort and keyset cursors.
//!
//! Cursors carry the sort they belong to, the sort key and id of the last item, and the instant
//! the first page was priced at (`t`). Later pages filter and order by the price *at `t`*, so a
//! discount starting while a client pages cannot move items across the page boundary (no
//! duplicates, no skips); each item still shows the price of the moment it is served.

use bazaar_platform::page::{decode_cursor, encode_cursor, parse_limit};
use bazaar_platform::{FieldError, Problem};
use serde::{Deserialize, Serialize};

use super::money::MAX_AMOUNT;
use super::product::{ProductRecord, parse_id};

pub const MAX_QUERY_CHARS: usize = 100;

/// The orders a list can be sorted in; every one ends with `id` as tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// `price`: current price ascending, then id ascending.
    PriceAsc,
    /// `-price`: current price descending, then id descending.
    PriceDesc,
    /// `name`: lower-cased name ascending (byte order), then id ascending.
    NameAsc,
    /// `-created_at` (default): newest first, then id descending.
    CreatedDesc,
}

impl Sort {
    pub fn parse(text: &str) -> Option<Sort> {
        match text {
            "price" => Some(Sort::PriceAsc),
            "-price" => Some(Sort::PriceDesc),
            "name" => Some(Sort::NameAsc),
            "-created_at" => Some(Sort::CreatedDesc),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::PriceAsc => "price",
            Sort::PriceDesc => "-price",
            Sort::NameAsc => "name",
            Sort::CreatedDesc => "-created_at",
        }
    }

    pub fn descending(self) -> bool {
        matches!(self, Sort::PriceDesc | Sort::CreatedDesc)
    }
}

/// The sort key of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortKey {
    Int(i64),
    Text(String),
}

/// The position after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The sort this cursor belongs to.
    pub s: String,
    pub k: SortKey,
    pub id: String,
    /// Pricing instant of the first page (Unix ms).
    pub t: i64,
}

/// Case-insensitive substring search, as a `LIKE` pattern with `\` as escape character, so
/// `%` and `_` in the query match themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPattern(String);

impl SearchPattern {
    pub fn parse(text: &str) -> Result<Option<SearchPattern>, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed.chars().count() > MAX_QUERY_CHARS {
            return Err(format!("must be at most {MAX_QUERY_CHARS} characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        let mut pattern = String::with_capacity(trimmed.len() + 2);
        pattern.push('%');
        for c in trimmed.to_lowercase().chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        Ok(Some(SearchPattern(pattern)))
    }

    pub fn like_pattern(&self) -> &str {
        &self.0
    }
}

/// A validated list request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub q: Option<SearchPattern>,
    pub category: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub sort: Sort,
    pub limit: u32,
    pub after: Option<(SortKey, String)>,
    /// The instant prices are evaluated at for filtering and ordering.
    pub priced_at: i64,
}

impl ListQuery {
    /// Parses the query parameters (`param` looks one up) at `now`; every problem is a 422
    /// naming its parameter.
    pub fn parse<'a>(
        param: impl Fn(&str) -> Option<&'a str>,
        now: i64,
    ) -> Result<ListQuery, Problem> {
        let mut errors = Vec::new();
        let q = match param("q").map(SearchPattern::parse) {
            None => None,
            Some(Ok(p)) => p,
            Some(Err(m)) => {
                errors.push(FieldError::new("q", m));
                None
            }
        };
        let category = match param("category") {
            None | Some("") => None,
            Some(c) => match parse_id(c) {
                Ok(id) => Some(id),
                Err(m) => {
                    errors.push(FieldError::new("category", m));
                    None
                }
            },
        };
        let mut price = |name: &str| match param(name) {
            None | Some("") => None,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (0..=MAX_AMOUNT).contains(&n) => Some(n),
                _ => {
                    errors.push(FieldError::new(
                        name,
                        format!("must be an integer from 0 to {MAX_AMOUNT} (minor units)"),
                    ));
                    None
                }
            },
        };
        let min_price = price("min_price");
        let max_price = price("max_price");
        if let (Some(lo), Some(hi)) = (min_price, max_price)
            && lo > hi
        {
            errors.push(FieldError::new(
                "max_price",
                "must not be less than min_price",
            ));
        }
        let sort = match param("sort") {
            None | Some("") => Sort::CreatedDesc,
            Some(s) => Sort::parse(s).unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "sort",
                    "must be one of price, -price, name, -created_at",
                ));
                Sort::CreatedDesc
            }),
        };
        let limit = match parse_limit(param("limit")) {
            Ok(l) => l,
            Err(p) => {
                errors.extend(p.errors);
                bazaar_platform::page::DEFAULT_LIMIT
            }
        };
        let mut priced_at = now;
        let mut after = None;
        if let Some(raw) = param("cursor").filter(|c| !c.is_empty()) {
            match decode_cursor::<Cursor>(raw) {
                Ok(c) => {
                    let key_fits = match (sort, &c.k) {
                        (Sort::NameAsc, SortKey::Text(_)) => true,
                        (Sort::NameAsc, SortKey::Int(_)) => false,
                        (_, SortKey::Int(_)) => true,
                        (_, SortKey::Text(_)) => false,
                    };
                    if c.s != sort.as_str() || !key_fits || c.t < 0 {
                        errors.push(FieldError::new(
                            "cursor",
                            "belongs to another sort order; start again without a cursor",
                        ));
                    } else {
                        priced_at = c.t;
                        after = Some((c.k, c.id));
                    }
                }
                Err(p) => errors.extend(p.errors),
            }
        }
        if !errors.is_empty() {
            return Err(Problem::unprocessable(errors));
        }
        Ok(ListQuery {
            q,
            category,
            min_price,
            max_price,
            sort,
            limit,
            after,
            priced_at,
        })
    }

    /// The cursor pointing after `record` in this list.
    pub fn cursor_after(&self, record: &ProductRecord) -> String {
        let k = match self.sort {
            Sort::PriceAsc | Sort::PriceDesc => SortKey::Int(
                super::discount::current_price(
                    &record.list_price,
                    record.discount.as_ref(),
                    self.priced_at,
                )
                .amount(),
            ),
            Sort::NameAsc => SortKey::Text(record.name_sort_key()),
            Sort::CreatedDesc => SortKey::Int(record.created_at),
        };
        encode_cursor(&Cursor {
            s: self.sort.as_str().to_owned(),
            k,
            id: record.id.clone(),
            t: self.priced_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NOW: i64 = 1_800_000_000_000;

    fn parse(pairs: &[(&str, &str)]) -> Result<ListQuery, Problem> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ListQuery::parse(|k| map.get(k).map(String::as_str), NOW)
    }

    fn error_fields(pairs: &[(&str, &str)]) -> Vec<String> {
        let p = parse(pairs).unwrap_err();
        assert_eq!(p.status, 422);
        p.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn defaults() {
        let q = parse(&[]).unwrap();
        assert_eq!(q.sort, Sort::CreatedDesc);
        assert_eq!(q.limit, 20);
        assert_eq!(
            (q.q, q.category, q.min_price, q.max_price, q.after),
            (None, None, None, None, None)
        );
        assert_eq!(q.priced_at, NOW);
    }

    #[test]
    fn search_escapes_like_wildcards_and_lowercases() {
        assert_eq!(
            SearchPattern::parse(" 50%_Off\\ ")
                .unwrap()
                .unwrap()
                .like_pattern(),
            "%50\\%\\_off\\\\%"
        );
        assert_eq!(SearchPattern::parse("   ").unwrap(), None);
        assert!(SearchPattern::parse(&"x".repeat(101)).is_err());
        assert!(SearchPattern::parse("a\u{0}").is_err());
    }

    #[test]
    fn invalid_parameters_are_422_by_name() {
        assert_eq!(error_fields(&[("sort", "cheapest")]), ["sort"]);
        assert_eq!(error_fields(&[("min_price", "-1")]), ["min_price"]);
        assert_eq!(error_fields(&[("max_price", "1.5")]), ["max_price"]);
        assert_eq!(
            error_fields(&[("min_price", "10"), ("max_price", "5")]),
            ["max_price"]
        );
        assert_eq!(error_fields(&[("limit", "0")]), ["limit"]);
        assert_eq!(error_fields(&[("limit", "101")]), ["limit"]);
        assert_eq!(error_fields(&[("cursor", "garbage!")]), ["cursor"]);
        assert_eq!(error_fields(&[("category", "a b")]), ["category"]);
        assert_eq!(
            error_fields(&[("sort", "x"), ("limit", "x"), ("min_price", "x")]),
            ["min_price", "sort", "limit"]
        );
    }

    #[test]
    fn cursors_are_bound_to_their_sort() {
        let by_price = encode_cursor(&Cursor {
            s: "price".into(),
            k: SortKey::Int(500),
            id: "prd_a".into(),
            t: NOW - 10,
        });
        let q = parse(&[("sort", "price"), ("cursor", &by_price)]).unwrap();
        assert_eq!(q.after, Some((SortKey::Int(500), "prd_a".to_owned())));
        assert_eq!(
            q.priced_at,
            NOW - 10,
            "later pages price at the first page's instant"
        );
        assert_eq!(
            error_fields(&[("sort", "-price"), ("cursor", &by_price)]),
            ["cursor"]
        );
        assert_eq!(
            error_fields(&[("sort", "name"), ("cursor", &by_price)]),
            ["cursor"]
        );
        assert_eq!(error_fields(&[("cursor", &by_price)]), ["cursor"]);
        let mistyped = encode_cursor(&Cursor {
            s: "name".into(),
            k: SortKey::Int(1),
            id: "x".into(),
            t: NOW,
        });
        assert_eq!(
            error_fields(&[("sort", "name"), ("cursor", &mistyped)]),
            ["cursor"]
        );
    }
}
