//! Hand-rolled TOML walking. We do not use `serde(deny_unknown_fields)` because its errors are
//! multi-line, point at byte spans instead of tables, and cannot say *which* `[[trigger.http]]`
//! entry was wrong. Walking `toml::Table` by hand lets every error be one line that names the
//! key and the table it sits in (e.g. "unknown key `rout` in [[trigger.http]] #2").

use std::collections::BTreeMap;
use std::path::{Component as PathComponent, Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use toml::{Table, Value};

/// Parses TOML text into a table, turning `toml`'s multi-line, snippet-bearing error into
/// "line L, column C: message" so callers can keep their one-line error promise.
pub(crate) fn parse_toml(text: &str) -> Result<Table> {
    text.parse::<Table>().map_err(|e| {
        let msg = one_line(e.message());
        match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                anyhow!("invalid TOML at line {line}, column {col}: {msg}")
            }
            None => anyhow!("invalid TOML: {msg}"),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Collapses any line breaks (e.g. from a multi-line TOML string echoed back in a message) so an
/// error always fits on one log line.
pub(crate) fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Joins `rel` onto `base` and removes `.`/`..` lexically, so paths stored in the manifest are
/// tidy absolute paths (`/app/target/x.wasm`, not `/app/./target/../target/x.wasm`) without
/// touching the filesystem (the file may not be built yet).
pub(crate) fn join_normalized(base: &Path, rel: &str) -> PathBuf {
    let joined = base.join(rel);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            PathComponent::CurDir => {}
            PathComponent::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A table plus a human-readable description of where it is, used in every error message.
#[derive(Clone, Copy)]
pub(crate) struct Tbl<'a> {
    pub t: &'a Table,
    pub loc: &'a str,
}

impl<'a> Tbl<'a> {
    pub fn new(t: &'a Table, loc: &'a str) -> Self {
        Self { t, loc }
    }

    /// Spin's `deny_unknown_fields`: the first key not in `allowed` is an error.
    pub fn check_keys(&self, allowed: &[&str]) -> Result<()> {
        if let Some(k) = self.t.keys().find(|k| !allowed.contains(&k.as_str())) {
            bail!(
                "unknown key `{k}` in {} (allowed: {})",
                self.loc,
                allowed.join(", ")
            );
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.t.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.t.contains_key(key)
    }

    pub fn type_err(&self, key: &str, expected: &str, found: &Value) -> anyhow::Error {
        anyhow!(
            "`{key}` in {} must be {expected}, found {}",
            self.loc,
            found.type_str()
        )
    }

    pub fn missing(&self, key: &str) -> anyhow::Error {
        anyhow!("missing required key `{key}` in {}", self.loc)
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.type_err(key, "a string", v)),
        }
    }

    pub fn req_str(&self, key: &str) -> Result<&'a str> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_err(key, "a boolean", v)),
        }
    }

    /// A non-negative integer.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(Value::Integer(i)) => {
                bail!("`{key}` in {} must not be negative, found {i}", self.loc)
            }
            Some(v) => Err(self.type_err(key, "an integer", v)),
        }
    }

    pub fn table(&self, key: &str) -> Result<Option<&'a Table>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(v) => Err(self.type_err(key, "a table", v)),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.type_err(key, "an array", v)),
        }
    }

    /// An array of strings; absent means empty (every such Spin field defaults to `[]`).
    pub fn str_array(&self, key: &str) -> Result<Vec<String>> {
        let Some(items) = self.array(key)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => bail!(
                    "`{key}` in {} must contain only strings, entry #{} is {}",
                    self.loc,
                    i + 1,
                    other.type_str()
                ),
            })
            .collect()
    }

    /// A table of string values; absent means empty.
    pub fn str_map(&self, key: &str) -> Result<BTreeMap<String, String>> {
        let Some(t) = self.table(key)? else {
            return Ok(BTreeMap::new());
        };
        t.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => bail!(
                    "`{key}.{k}` in {} must be a string, found {}",
                    self.loc,
                    other.type_str()
                ),
            })
            .collect()
    }
}
