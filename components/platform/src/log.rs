//! JSON log lines on stdout.
//!
//! Each call writes exactly one line holding one JSON object whose first members are always
//! `ts` (RFC 3339 UTC), `level`, `msg`, `component` and `request_id` (`null` when there is none),
//! followed by the caller's fields in the order given:
//!
//! ```text
//! {"ts":"2026-01-02T03:04:05.678Z","level":"info","msg":"request","component":"gateway","request_id":"4c1…","method":"GET","status":200}
//! ```
//!
//! Spin captures a component's stdout (`.spin/logs/<id>_stdout.txt`, or the pod log in SpinKube),
//! so log shippers can parse it without a logging SDK. Caller fields whose names collide with the
//! standard members, or repeat an earlier field, are dropped so every line stays valid and
//! unambiguous JSON. Write errors are ignored: logging must never fail a request.

use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::time::SystemTime;

use crate::time::rfc3339_utc;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Diagnostics.
    Debug,
    /// Normal operation (one line per request, state changes).
    Info,
    /// Something degraded but handled.
    Warn,
    /// A failure that affected a response.
    Error,
}

impl Level {
    /// The lower-case name used in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

const STANDARD_KEYS: [&str; 5] = ["ts", "level", "msg", "component", "request_id"];

/// Writes one JSON log line to stdout.
pub fn log_json(
    level: Level,
    component: &str,
    request_id: Option<&str>,
    message: &str,
    fields: &[(&str, Value)],
) {
    let mut line = format_line(
        SystemTime::now(),
        level,
        component,
        request_id,
        message,
        fields,
    );
    line.push('\n');
    // One `write_all` on a locked handle keeps the line in one piece.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// Builds a log line (without the trailing newline). Pure, for tests and custom sinks.
pub fn format_line(
    ts: SystemTime,
    level: Level,
    component: &str,
    request_id: Option<&str>,
    message: &str,
    fields: &[(&str, Value)],
) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"ts\":");
    push_json(&mut out, &rfc3339_utc(ts));
    out.push_str(",\"level\":");
    push_json(&mut out, level.as_str());
    out.push_str(",\"msg\":");
    push_json(&mut out, message);
    out.push_str(",\"component\":");
    push_json(&mut out, component);
    out.push_str(",\"request_id\":");
    push_json(&mut out, &request_id);
    let mut seen: Vec<&str> = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        if STANDARD_KEYS.contains(key) || seen.contains(key) {
            continue;
        }
        seen.push(key);
        out.push(',');
        push_json(&mut out, key);
        out.push(':');
        push_json(&mut out, value);
    }
    out.push('}');
    out
}

fn push_json<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    // Strings, options and `Value`s always serialise; "null" is a safe fallback regardless.
    match serde_json::to_string(value) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("null"),
    }
}

/// A logger bound to a component and (optionally) a request id.
#[derive(Debug, Clone)]
pub struct Logger {
    component: String,
    request_id: Option<String>,
}

impl Logger {
    /// A logger for `component` (use the Spin component id).
    pub fn new(component: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            request_id: None,
        }
    }

    /// The same logger, stamping `request_id` on every line.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Writes a line at `level`.
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, Value)]) {
        log_json(
            level,
            &self.component,
            self.request_id.as_deref(),
            message,
            fields,
        );
    }

    /// Writes a `debug` line.
    pub fn debug(&self, message: &str, fields: &[(&str, Value)]) {
        self.log(Level::Debug, message, fields);
    }

    /// Writes an `info` line.
    pub fn info(&self, message: &str, fields: &[(&str, Value)]) {
        self.log(Level::Info, message, fields);
    }

    /// Writes a `warn` line.
    pub fn warn(&self, message: &str, fields: &[(&str, Value)]) {
        self.log(Level::Warn, message, fields);
    }

    /// Writes an `error` line.
    pub fn error(&self, message: &str, fields: &[(&str, Value)]) {
        self.log(Level::Error, message, fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn ts() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
    }

    #[test]
    fn line_has_standard_members_first_then_fields_in_order() {
        let line = format_line(
            ts(),
            Level::Info,
            "gateway",
            Some("req-1"),
            "request",
            &[
                ("method", json!("GET")),
                ("status", json!(200)),
                ("a", json!(null)),
            ],
        );
        assert_eq!(
            line,
            r#"{"ts":"2023-11-14T22:13:20.123Z","level":"info","msg":"request","component":"gateway","request_id":"req-1","method":"GET","status":200,"a":null}"#
        );
    }

    #[test]
    fn missing_request_id_is_null() {
        let line = format_line(ts(), Level::Warn, "c", None, "m", &[]);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], Value::Null);
        assert_eq!(v["level"], "warn");
    }

    #[test]
    fn escapes_and_stays_on_one_line() {
        let line = format_line(
            ts(),
            Level::Error,
            "c",
            Some("r"),
            "bad \"thing\"\nhappened",
            &[("detail", json!("tab\there"))],
        );
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "bad \"thing\"\nhappened");
        assert_eq!(v["detail"], "tab\there");
    }

    #[test]
    fn reserved_and_duplicate_fields_are_dropped() {
        let line = format_line(
            ts(),
            Level::Debug,
            "c",
            Some("r"),
            "m",
            &[
                ("level", json!("fake")),
                ("request_id", json!("forged")),
                ("x", json!(1)),
                ("x", json!(2)),
            ],
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "debug");
        assert_eq!(v["request_id"], "r");
        assert_eq!(v["x"], 1);
        assert_eq!(line.matches("\"x\"").count(), 1);
    }

    #[test]
    fn levels_serialise_lower_case() {
        for (level, name) in [
            (Level::Debug, "debug"),
            (Level::Info, "info"),
            (Level::Warn, "warn"),
            (Level::Error, "error"),
        ] {
            assert_eq!(level.as_str(), name);
            assert_eq!(serde_json::to_value(level).unwrap(), json!(name));
        }
        assert!(Level::Debug < Level::Error);
    }

    #[test]
    fn logger_writes_without_panicking() {
        let logger = Logger::new("platform-test").with_request_id("abc");
        logger.debug("d", &[]);
        logger.info("i", &[("k", json!("v"))]);
        logger.warn("w", &[]);
        logger.error("e", &[]);
        log_json(Level::Info, "platform-test", None, "free function", &[]);
    }
}
