//! Spin's HTTP router: which component handles a request path, and which `spin-*` headers
//! the component sees.
//!
//! Spin delegates matching to the `routefinder` crate (pinned to the exact version Spin uses),
//! and so do we: the precedence rules are subtle (segment-by-segment specificity, not "longest
//! prefix") and reproducing them by hand would drift. What we add on top is what Spin adds:
//!
//! * the `/...` spelling of a trailing wildcard (rewritten to routefinder's `/*`),
//! * de-duplication of identical routes (last one wins),
//! * the `spin-path-info` leading-slash convention, which routefinder knows nothing about,
//! * the header set of [`spin_headers`].
//!
//! Unlike Spin we reject, at build time, patterns that routefinder would accept but then panic
//! on while matching (a wildcard that is not the last segment), because a panic per request is
//! worse than a clear start-up error.

use std::fmt;

use anyhow::{Result, anyhow, bail};
use http::{HeaderName, HeaderValue};
use routefinder::{RouteSpec, Segment};

/// Paths under this prefix are answered by the runner itself (`health`, `info`) before routing,
/// so application routes there can never be reached.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// The `spin-client-addr` value Spin uses for service-chained requests, which have no peer.
pub const CHAINED_CLIENT_ADDR: &str = "0.0.0.0:0";

/// The route a service-chained request pretends to have matched (see [`RouteMatch::synthetic`]).
const SYNTHETIC_ROUTE: &str = "/...";

/// True if `path` is under `/.well-known/spin/`, i.e. handled by the runner rather than by a
/// component. Callers answer these before consulting the [`Router`].
pub fn is_reserved(path: &str) -> bool {
    path.starts_with(WELL_KNOWN_PREFIX)
}

/// One configured route after de-duplication.
struct Entry<T> {
    target: T,
    /// Exactly as written in the manifest; reported as `spin-raw-component-route`.
    raw_route: String,
    /// `raw_route` made absolute and stripped of one trailing `/` (Spin's `sanitize`); reported
    /// as `spin-matched-route`. The route `/` becomes the empty string.
    based_route: String,
    /// Whether the route ends in a trailing wildcard (`/...` or `/*`), which is what makes
    /// `spin-path-info` non-empty.
    trailing_wildcard: bool,
}

/// Spin's HTTP router, generic over what a route leads to (a component id, a static response…).
pub struct Router<T> {
    entries: Vec<Entry<T>>,
    /// routefinder keeps the routes sorted by precedence; the handler is an index into `entries`.
    finder: routefinder::Router<usize>,
}

impl<T> Router<T> {
    /// Builds the router from `(route as written in the manifest, target)` pairs, in manifest
    /// order. Private endpoints (`route = { private = true }`) must be left out by the caller:
    /// they are only reachable through service chaining.
    ///
    /// Returns warnings alongside the router, for the caller to log: duplicates (the last
    /// definition of an identical route wins, as in Spin), routes that are spelled differently
    /// but match exactly the same paths as a route that takes precedence (e.g. `/a` and `/a/`),
    /// and routes under `/.well-known/spin/`. Warnings name targets by their position in the
    /// input (`entry #3`); use [`Router::build_with`] to name them properly.
    pub fn build(routes: impl IntoIterator<Item = (String, T)>) -> Result<(Self, Vec<String>)> {
        Self::build_impl(routes, None)
    }

    /// Like [`Router::build`], but `describe` names a target in warnings (e.g. the component id).
    pub fn build_with(
        routes: impl IntoIterator<Item = (String, T)>,
        describe: impl Fn(&T) -> String,
    ) -> Result<(Self, Vec<String>)> {
        Self::build_impl(routes, Some(&describe))
    }

    fn build_impl(
        routes: impl IntoIterator<Item = (String, T)>,
        describe: Option<&dyn Fn(&T) -> String>,
    ) -> Result<(Self, Vec<String>)> {
        let name = |target: &T, position: usize| match describe {
            Some(describe) => describe(target),
            None => format!("entry #{}", position + 1),
        };
        let mut warnings = Vec::new();

        // De-duplicate identical raw routes. Like Spin (an IndexMap keyed by the raw route) the
        // surviving entry keeps the position of the *first* occurrence but the target of the
        // *last* one; the position matters because routefinder breaks ties by insertion order.
        let mut deduped: Vec<(String, T, usize)> = Vec::new();
        for (position, (raw_route, target)) in routes.into_iter().enumerate() {
            match deduped.iter_mut().find(|(raw, _, _)| *raw == raw_route) {
                Some(slot) => {
                    warnings.push(format!(
                        "duplicate route \"{raw_route}\": {} is shadowed by {}, which is \
                         defined later (the last definition wins)",
                        name(&slot.1, slot.2),
                        name(&target, position),
                    ));
                    slot.1 = target;
                    slot.2 = position;
                }
                None => deduped.push((raw_route, target, position)),
            }
        }

        let mut entries = Vec::with_capacity(deduped.len());
        let mut positions = Vec::with_capacity(deduped.len());
        let mut finder = routefinder::Router::new();
        for (index, (raw_route, target, position)) in deduped.into_iter().enumerate() {
            let based_route = based_route(&raw_route);
            let (spec, trailing_wildcard) = parse_pattern(&based_route)
                .map_err(|why| anyhow!("invalid route \"{raw_route}\": {why}"))?;
            if is_reserved(&based_route) {
                warnings.push(format!(
                    "route \"{raw_route}\" ({}) is under the reserved prefix {WELL_KNOWN_PREFIX} \
                     and will never be reached",
                    name(&target, position),
                ));
            }
            // Adding an already-parsed spec cannot fail (the error type is `Infallible`).
            let Ok(()) = finder.add(spec, index);
            entries.push(Entry {
                target,
                raw_route,
                based_route,
                trailing_wildcard,
            });
            positions.push(position);
        }

        // Routes whose patterns are equivalent (same segments up to parameter names) match the
        // same paths; whichever routefinder orders first always wins and the others are dead.
        let mut seen: Vec<(Vec<Shape>, usize)> = Vec::new();
        for (spec, &index) in finder.iter() {
            let shape = shape(spec);
            match seen.iter().find(|(s, _)| *s == shape) {
                Some(&(_, winner)) => warnings.push(format!(
                    "route \"{}\" ({}) will never be reached: it matches the same paths as \
                     \"{}\" ({}), which takes precedence",
                    entries[index].raw_route,
                    name(&entries[index].target, positions[index]),
                    entries[winner].raw_route,
                    name(&entries[winner].target, positions[winner]),
                )),
                None => seen.push((shape, index)),
            }
        }

        Ok((Self { entries, finder }, warnings))
    }

    /// Finds the route for `path`, which must be the request URI's path exactly as received:
    /// still percent-encoded, without the query string. Parameters are captured encoded, as in
    /// Spin (`/api/cart/a%20b` gives `id = "a%20b"`).
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_, T>> {
        let found = self.finder.best_match(path)?;
        let entry = &self.entries[*found.handler()];
        let captures = found.captures();
        let params = captures
            .params()
            .iter()
            .map(|c| (c.name().to_owned(), c.value().to_owned()))
            .collect();
        let path_info = match (entry.trailing_wildcard, captures.wildcard()) {
            (true, Some(rest)) => spin_path_info(rest, path.ends_with('/')),
            _ => String::new(),
        };
        Some(RouteMatch {
            target: &entry.target,
            raw_route: &entry.raw_route,
            based_route: &entry.based_route,
            path_info,
            params,
        })
    }

    /// The routes in precedence order (the order in which they are tried), as
    /// `(route as written, target)`. Useful for printing the route table at start-up.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> + '_ {
        self.finder.iter().map(|(_, &index)| {
            let entry = &self.entries[index];
            (entry.raw_route.as_str(), &entry.target)
        })
    }

    /// Number of distinct routes (after de-duplication).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no route was configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True if some route lies under `/.well-known/spin/` (and so can never be reached).
    pub fn contains_reserved_route(&self) -> bool {
        self.entries.iter().any(|e| is_reserved(&e.based_route))
    }
}

impl<T> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(raw, _)| raw))
            .finish()
    }
}

/// The result of routing a request: the target plus everything needed for the `spin-*` headers.
pub struct RouteMatch<'a, T> {
    target: &'a T,
    raw_route: &'a str,
    based_route: &'a str,
    path_info: String,
    params: Vec<(String, String)>,
}

impl<'a, T> RouteMatch<'a, T> {
    /// The match Spin fabricates for a service-chained request (`http://<id>.spin.internal/…`),
    /// which bypasses the router: it behaves as if the target were mounted at `/...`, so the
    /// callee sees the whole chained path in `spin-path-info`, `spin-matched-route` and
    /// `spin-raw-component-route` of `/...`, and an empty `spin-component-route`.
    pub fn synthetic(target: &'a T, full_path: impl Into<String>) -> Self {
        Self {
            target,
            raw_route: SYNTHETIC_ROUTE,
            based_route: SYNTHETIC_ROUTE,
            path_info: full_path.into(),
            params: Vec::new(),
        }
    }

    /// What the route leads to.
    pub fn target(&self) -> &'a T {
        self.target
    }

    /// The route exactly as written in the manifest (`spin-raw-component-route`).
    pub fn raw_route(&self) -> &str {
        self.raw_route
    }

    /// The route as Spin reports it in `spin-matched-route`: absolute, with one trailing `/`
    /// stripped, so the route `/` is the empty string.
    pub fn based_route(&self) -> &str {
        self.based_route
    }

    /// The raw route without a trailing `/...` (`spin-component-route`); `/...` gives `""`.
    /// Only the `/...` spelling is stripped: a route written `/a/*` is reported unchanged, as
    /// in Spin.
    pub fn component_route(&self) -> &str {
        self.raw_route
            .strip_suffix("/...")
            .unwrap_or(self.raw_route)
    }

    /// The part of the path matched by a trailing wildcard, with Spin's leading-slash
    /// convention (`spin-path-info`); empty for routes without a trailing wildcard.
    pub fn path_info(&self) -> &str {
        &self.path_info
    }

    /// The `:name` captures, in route order, still percent-encoded.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The value captured for `:name`, if the route has that parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<T> Clone for RouteMatch<'_, T> {
    fn clone(&self) -> Self {
        Self {
            target: self.target,
            raw_route: self.raw_route,
            based_route: self.based_route,
            path_info: self.path_info.clone(),
            params: self.params.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for RouteMatch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteMatch")
            .field("target", self.target)
            .field("raw_route", &self.raw_route)
            .field("based_route", &self.based_route)
            .field("path_info", &self.path_info)
            .field("params", &self.params)
            .finish()
    }
}

/// `spin-full-url`: `{scheme}://{Host header, or "localhost" if absent}{path and query}`.
/// `scheme` is the listener's (`http` or `https`), not whatever the client claimed.
pub fn full_url(scheme: &str, host_header: Option<&str>, path_and_query: &str) -> String {
    let host = host_header.unwrap_or("localhost");
    format!("{scheme}://{host}{path_and_query}")
}

/// The `spin-*` headers Spin adds to every request it hands to a component, in Spin's order.
///
/// `full_url` comes from [`full_url`]; `client_addr` is the peer's `ip:port`
/// ([`CHAINED_CLIENT_ADDR`] for service-chained requests). The caller should *insert* these
/// (replacing any client-sent header of the same name) after copying the client's headers, so a
/// client cannot forge them. Spin adds nothing else: a conformance test asserts no other
/// `spin-*` header is present.
pub fn spin_headers<T>(
    m: &RouteMatch<'_, T>,
    full_url: &str,
    client_addr: &str,
) -> Vec<(HeaderName, HeaderValue)> {
    let fixed: [(&'static str, &str); 7] = [
        ("spin-path-info", m.path_info()),
        ("spin-full-url", full_url),
        ("spin-matched-route", m.based_route()),
        ("spin-base-path", "/"),
        ("spin-raw-component-route", m.raw_route()),
        ("spin-component-route", m.component_route()),
        ("spin-client-addr", client_addr),
    ];
    let mut headers: Vec<(HeaderName, HeaderValue)> = fixed
        .into_iter()
        .map(|(name, value)| (HeaderName::from_static(name), header_value(value)))
        .collect();
    for (name, value) in m.params() {
        // Names were validated when the router was built; synthetic matches have no params.
        let Ok(header) = HeaderName::try_from(param_header_name(name)) else {
            continue;
        };
        let value = header_value(value);
        // Two parameters can map to one header (`:a_b` and `:a-b`); the later one wins, as
        // when Spin inserts them into the header map one after the other.
        match headers.iter_mut().find(|(h, _)| *h == header) {
            Some(slot) => slot.1 = value,
            None => headers.push((header, value)),
        }
    }
    headers
}

/// `:user_id` → `spin-path-match-user-id`: Spin builds `SPIN_PATH_MATCH_<NAME UPPER-CASED>`
/// and then turns every `_` into `-` and lower-cases the whole header name.
fn param_header_name(param: &str) -> String {
    format!("SPIN_PATH_MATCH_{}", param.to_ascii_uppercase())
        .replace('_', "-")
        .to_ascii_lowercase()
}

/// Header values must not contain control characters. Everything we put in them comes from a
/// parsed URI, a header or the manifest, so this never triggers in practice; if it did we
/// percent-encode the offending bytes rather than drop the header.
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| {
        let mut escaped = String::with_capacity(value.len());
        for byte in value.bytes() {
            if byte == b'\t' || (0x20..0x7f).contains(&byte) {
                escaped.push(byte as char);
            } else {
                escaped.push_str(&format!("%{byte:02X}"));
            }
        }
        HeaderValue::from_str(&escaped).unwrap_or_else(|_| HeaderValue::from_static(""))
    })
}

/// Spin's `spin-path-info` convention. routefinder trims trailing slashes before matching, so
/// its wildcard capture has neither a leading nor a trailing `/`; Spin has always reported
/// both, so they are put back: `/test` → `""`, `/test/` → `"/"`, `/test/a` → `"/a"`,
/// `/test/a/` → `"/a/"`.
fn spin_path_info(captured: &str, path_has_trailing_slash: bool) -> String {
    match (captured.is_empty(), path_has_trailing_slash) {
        (true, false) => String::new(),
        (true, true) => "/".to_owned(),
        (false, false) => format!("/{captured}"),
        (false, true) => format!("/{captured}/"),
    }
}

/// Spin's `sanitize_with_base` for the only base it still allows (`/`): make the route absolute
/// and strip a single trailing `/`.
fn based_route(raw_route: &str) -> String {
    let absolute = if raw_route.starts_with('/') {
        raw_route.to_owned()
    } else {
        format!("/{raw_route}")
    };
    match absolute.strip_suffix('/') {
        Some(stripped) => stripped.to_owned(),
        None => absolute,
    }
}

/// Turns a based route into a routefinder pattern: `/x/...` becomes `/x/*` (and `/x/*` is
/// taken as is); both count as a trailing wildcard for `spin-path-info`.
fn parse_pattern(based_route: &str) -> std::result::Result<(RouteSpec, bool), String> {
    let (pattern, trailing_wildcard) = if let Some(prefix) = based_route.strip_suffix("/...") {
        (format!("{prefix}/*"), true)
    } else {
        (based_route.to_owned(), based_route.ends_with("/*"))
    };

    // A `...` anywhere else is not a wildcard to routefinder: it would silently become a
    // literal glued to the previous segment. Nobody means that, so say so.
    if pattern.split('/').any(|segment| segment == "...") {
        return Err("`...` is only allowed as the last segment (`/prefix/...`)".to_owned());
    }

    let spec: RouteSpec = pattern.parse()?;
    let segments = spec.segments();
    // routefinder accepts `/a/*/b` or `/*.json` but panics when matching them.
    if let Some(i) = segments.iter().position(|s| matches!(s, Segment::Wildcard))
        && i + 1 != segments.len()
    {
        return Err("a wildcard (`*` or `...`) must be the last segment".to_owned());
    }
    for segment in segments {
        if let Segment::Param(name) = segment {
            let header = param_header_name(name);
            if HeaderName::try_from(header.as_str()).is_err() {
                return Err(format!(
                    "parameter `:{name}` cannot be passed to the component: `{header}` is not \
                     a valid header name"
                ));
            }
        }
    }
    Ok((spec, trailing_wildcard))
}

/// A pattern with parameter names erased: two routes with the same shape match the same paths.
#[derive(PartialEq, Eq)]
enum Shape {
    Slash,
    Dot,
    Exact(String),
    Param,
    Wildcard,
}

fn shape(spec: &RouteSpec) -> Vec<Shape> {
    spec.segments()
        .iter()
        .map(|segment| match segment {
            Segment::Slash => Shape::Slash,
            Segment::Dot => Shape::Dot,
            Segment::Exact(text) => Shape::Exact(text.to_string()),
            Segment::Param(_) => Shape::Param,
            Segment::Wildcard => Shape::Wildcard,
        })
        .collect()
}

/// Checks a single route pattern without building a router (e.g. for manifest validation).
pub fn validate_route(raw_route: &str) -> Result<()> {
    if let Err(why) = parse_pattern(&based_route(raw_route)) {
        bail!("invalid route \"{raw_route}\": {why}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router<String> {
        let (router, _) = Router::build(routes.iter().map(|r| (r.to_string(), r.to_string())))
            .expect("routes should be valid");
        router
    }

    fn winner(routes: &[&str], path: &str) -> Option<String> {
        router(routes).route(path).map(|m| m.target().clone())
    }

    fn header<'h>(headers: &'h [(HeaderName, HeaderValue)], name: &str) -> Option<&'h str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    // ---- §2.2 precedence table, one test per row ----

    const CART: &[&str] = &["/api/cart/...", "/api/cart/:id", "/api/cart/admin"];

    #[test]
    fn precedence_param_beats_wildcard() {
        assert_eq!(winner(CART, "/api/cart/42").unwrap(), "/api/cart/:id");
    }

    #[test]
    fn precedence_literal_beats_param() {
        assert_eq!(winner(CART, "/api/cart/admin").unwrap(), "/api/cart/admin");
    }

    #[test]
    fn precedence_wildcard_catches_deeper_paths() {
        assert_eq!(winner(CART, "/api/cart/42/x").unwrap(), "/api/cart/...");
    }

    #[test]
    fn precedence_two_segments_go_to_wildcard() {
        assert_eq!(
            winner(&["/api/...", "/api/:x"], "/api/foo/bar").unwrap(),
            "/api/..."
        );
    }

    #[test]
    fn precedence_param_needs_a_non_empty_segment() {
        assert_eq!(
            winner(&["/api/...", "/api/:x"], "/api").unwrap(),
            "/api/..."
        );
        // …and routefinder's trailing-slash trimming makes `/api/` the same path.
        assert_eq!(
            winner(&["/api/...", "/api/:x"], "/api/").unwrap(),
            "/api/..."
        );
    }

    #[test]
    fn precedence_first_differing_segment_decides() {
        assert_eq!(winner(&["/:a/b", "/x/..."], "/x/b").unwrap(), "/x/...");
        // Input order does not matter.
        assert_eq!(winner(&["/x/...", "/:a/b"], "/x/b").unwrap(), "/x/...");
        assert_eq!(winner(&["/x/...", "/:a/b"], "/y/b").unwrap(), "/:a/b");
    }

    #[test]
    fn precedence_root_exact_does_not_match_other_paths() {
        assert_eq!(winner(&["/...", "/"], "/x").unwrap(), "/...");
        assert_eq!(winner(&["/", "/..."], "/x").unwrap(), "/...");
        // The exact root only wins for the root itself.
        assert_eq!(winner(&["/...", "/"], "/").unwrap(), "/");
    }

    #[test]
    fn more_segments_win_when_compared_segments_tie() {
        assert_eq!(winner(&["/a", "/a/b"], "/a/b").unwrap(), "/a/b");
        assert_eq!(
            winner(&["/a/...", "/a/b/..."], "/a/b/c").unwrap(),
            "/a/b/..."
        );
        assert_eq!(winner(&["/a/...", "/a/b/..."], "/a/c").unwrap(), "/a/...");
    }

    // ---- matching basics ----

    #[test]
    fn exact_routes_tolerate_a_trailing_slash() {
        let r = router(&["/a", "/b/"]);
        assert_eq!(r.route("/a").unwrap().target(), "/a");
        assert_eq!(r.route("/a/").unwrap().target(), "/a");
        assert_eq!(r.route("/b").unwrap().target(), "/b/");
        assert_eq!(r.route("/b/").unwrap().target(), "/b/");
        assert!(r.route("/a/x").is_none());
        assert!(r.route("/ab").is_none());
    }

    #[test]
    fn trailing_wildcards_match_the_prefix_and_everything_below() {
        for route in ["/test/...", "/test/*"] {
            let r = router(&[route]);
            for path in ["/test", "/test/", "/test/a", "/test/a/b/c"] {
                assert!(r.route(path).is_some(), "{route} should match {path}");
            }
            assert!(
                r.route("/testing").is_none(),
                "{route} must not match /testing"
            );
            assert!(r.route("/").is_none());
        }
    }

    #[test]
    fn no_match_is_none() {
        assert!(router(&["/a", "/b/..."]).route("/c").is_none());
        assert!(router(&[]).route("/").is_none());
    }

    #[test]
    fn root_route_matches_only_the_root() {
        let r = router(&["/"]);
        assert!(r.route("/").is_some());
        assert!(r.route("/x").is_none());
    }

    #[test]
    fn percent_encoded_captures_stay_encoded() {
        let r = router(&["/api/cart/:id"]);
        let m = r.route("/api/cart/a%20b").unwrap();
        assert_eq!(m.params(), &[("id".to_owned(), "a%20b".to_owned())]);
        assert_eq!(m.param("id"), Some("a%20b"));
    }

    #[test]
    fn param_followed_by_a_dot() {
        let r = router(&["/files/:name.json"]);
        let m = r.route("/files/report.json").unwrap();
        assert_eq!(m.param("name"), Some("report"));
        assert!(r.route("/files/report.xml").is_none());
    }

    // ---- path_info ----

    #[test]
    fn path_info_follows_spins_slash_convention() {
        let r = router(&["/test/..."]);
        for (path, expected) in [
            ("/test", ""),
            ("/test/", "/"),
            ("/test/a", "/a"),
            ("/test/a/", "/a/"),
            ("/test/a/b", "/a/b"),
        ] {
            assert_eq!(r.route(path).unwrap().path_info(), expected, "path {path}");
        }
    }

    #[test]
    fn path_info_for_star_routes_and_root_wildcard() {
        let r = router(&["/test/*"]);
        assert_eq!(r.route("/test/a").unwrap().path_info(), "/a");
        let r = router(&["/..."]);
        assert_eq!(r.route("/").unwrap().path_info(), "/");
        assert_eq!(r.route("/x/y").unwrap().path_info(), "/x/y");
    }

    #[test]
    fn path_info_is_empty_for_exact_routes() {
        let r = router(&["/a", "/b/:id"]);
        assert_eq!(r.route("/a/").unwrap().path_info(), "");
        assert_eq!(r.route("/b/1").unwrap().path_info(), "");
    }

    // ---- route names and headers ----

    #[test]
    fn worked_example_from_the_reference() {
        let r = router(&["/api/products/:sku/reviews/..."]);
        let m = r.route("/api/products/ABC/reviews/9").unwrap();
        assert_eq!(m.based_route(), "/api/products/:sku/reviews/...");
        assert_eq!(m.component_route(), "/api/products/:sku/reviews");
        assert_eq!(m.path_info(), "/9");
        let url = full_url(
            "http",
            Some("shop.example"),
            "/api/products/ABC/reviews/9?x=1",
        );
        let h = spin_headers(&m, &url, "10.0.0.1:5555");
        assert_eq!(
            header(&h, "spin-matched-route"),
            Some("/api/products/:sku/reviews/...")
        );
        assert_eq!(
            header(&h, "spin-raw-component-route"),
            Some("/api/products/:sku/reviews/...")
        );
        assert_eq!(
            header(&h, "spin-component-route"),
            Some("/api/products/:sku/reviews")
        );
        assert_eq!(header(&h, "spin-path-info"), Some("/9"));
        assert_eq!(header(&h, "spin-path-match-sku"), Some("ABC"));
        assert_eq!(
            header(&h, "spin-full-url"),
            Some("http://shop.example/api/products/ABC/reviews/9?x=1")
        );
        assert_eq!(header(&h, "spin-base-path"), Some("/"));
        assert_eq!(header(&h, "spin-client-addr"), Some("10.0.0.1:5555"));
        assert_eq!(
            h.len(),
            8,
            "exactly the 7 fixed headers plus one per parameter"
        );
        assert!(h.iter().all(|(n, _)| n.as_str().starts_with("spin-")));
    }

    #[test]
    fn root_route_header_values() {
        let r = router(&["/"]);
        let m = r.route("/").unwrap();
        let h = spin_headers(&m, &full_url("http", None, "/"), "127.0.0.1:1");
        assert_eq!(header(&h, "spin-matched-route"), Some(""));
        assert_eq!(header(&h, "spin-raw-component-route"), Some("/"));
        assert_eq!(header(&h, "spin-component-route"), Some("/"));
        assert_eq!(header(&h, "spin-path-info"), Some(""));
        assert_eq!(header(&h, "spin-full-url"), Some("http://localhost/"));
    }

    #[test]
    fn catch_all_route_has_an_empty_component_route() {
        let r = router(&["/..."]);
        let m = r.route("/anything").unwrap();
        assert_eq!(m.based_route(), "/...");
        assert_eq!(m.raw_route(), "/...");
        assert_eq!(m.component_route(), "");
    }

    #[test]
    fn trailing_slash_routes_keep_their_raw_spelling() {
        let r = router(&["/trailing/"]);
        let m = r.route("/trailing").unwrap();
        assert_eq!(m.raw_route(), "/trailing/");
        assert_eq!(m.based_route(), "/trailing");
        assert_eq!(m.component_route(), "/trailing/");
    }

    #[test]
    fn star_routes_are_not_shortened_in_component_route() {
        let r = router(&["/a/*"]);
        assert_eq!(r.route("/a/b").unwrap().component_route(), "/a/*");
    }

    #[test]
    fn relative_routes_are_made_absolute_for_matched_route() {
        let r = router(&["api/..."]);
        let m = r.route("/api/x").unwrap();
        assert_eq!(m.based_route(), "/api/...");
        assert_eq!(m.raw_route(), "api/...");
    }

    #[test]
    fn param_header_names_are_normalised() {
        let r = router(&["/u/:user_id/:Mixed"]);
        let m = r.route("/u/7/q").unwrap();
        let h = spin_headers(&m, "http://localhost/u/7/q", "127.0.0.1:1");
        assert_eq!(header(&h, "spin-path-match-user-id"), Some("7"));
        assert_eq!(header(&h, "spin-path-match-mixed"), Some("q"));
    }

    #[test]
    fn synthetic_match_for_service_chaining() {
        let target = "pricing".to_owned();
        let m = RouteMatch::synthetic(&target, "/price/42");
        assert_eq!(m.target(), "pricing");
        let h = spin_headers(
            &m,
            &full_url("http", None, "/price/42?q=1"),
            CHAINED_CLIENT_ADDR,
        );
        assert_eq!(header(&h, "spin-matched-route"), Some("/..."));
        assert_eq!(header(&h, "spin-raw-component-route"), Some("/..."));
        assert_eq!(header(&h, "spin-component-route"), Some(""));
        assert_eq!(header(&h, "spin-path-info"), Some("/price/42"));
        assert_eq!(header(&h, "spin-client-addr"), Some("0.0.0.0:0"));
        assert_eq!(
            header(&h, "spin-full-url"),
            Some("http://localhost/price/42?q=1")
        );
        assert_eq!(h.len(), 7);
    }

    #[test]
    fn full_url_uses_the_host_header() {
        assert_eq!(
            full_url("https", Some("a.b:8443"), "/x?y"),
            "https://a.b:8443/x?y"
        );
        assert_eq!(full_url("http", None, "/"), "http://localhost/");
    }

    // ---- building ----

    #[test]
    fn duplicates_last_one_wins_with_a_warning() {
        let (r, warnings) = Router::build([
            ("/a".to_owned(), "first"),
            ("/b".to_owned(), "other"),
            ("/a".to_owned(), "second"),
        ])
        .unwrap();
        assert_eq!(*r.route("/a").unwrap().target(), "second");
        assert_eq!(r.len(), 2);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"/a\""), "{}", warnings[0]);
        assert!(warnings[0].contains("entry #1") && warnings[0].contains("entry #3"));
    }

    #[test]
    fn build_with_names_targets_in_warnings() {
        let (_, warnings) = Router::build_with(
            [("/a".to_owned(), "cart"), ("/a".to_owned(), "admin")],
            |t| format!("component `{t}`"),
        )
        .unwrap();
        assert!(warnings[0].contains("component `cart`"), "{}", warnings[0]);
        assert!(warnings[0].contains("component `admin`"), "{}", warnings[0]);
    }

    #[test]
    fn equivalent_spellings_warn_and_the_first_wins() {
        let (r, warnings) = Router::build([
            ("/a".to_owned(), "plain"),
            ("/a/".to_owned(), "slash"),
            ("/x/:id".to_owned(), "id"),
            ("/x/:name".to_owned(), "name"),
            ("/w/...".to_owned(), "dots"),
            ("/w/*".to_owned(), "star"),
        ])
        .unwrap();
        assert_eq!(*r.route("/a").unwrap().target(), "plain");
        assert_eq!(*r.route("/x/1").unwrap().target(), "id");
        assert_eq!(*r.route("/w/1").unwrap().target(), "dots");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("\"/a/\"") && w.contains("never"))
        );
    }

    #[test]
    fn reserved_routes_warn() {
        let (r, warnings) = Router::build([
            ("/.well-known/spin/health".to_owned(), ()),
            ("/ok".to_owned(), ()),
        ])
        .unwrap();
        assert!(r.contains_reserved_route());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("reserved"), "{}", warnings[0]);
        let (r, warnings) = Router::build([("/ok".to_owned(), ())]).unwrap();
        assert!(!r.contains_reserved_route());
        assert!(warnings.is_empty());
    }

    #[test]
    fn is_reserved_paths() {
        assert!(is_reserved("/.well-known/spin/health"));
        assert!(is_reserved("/.well-known/spin/anything/else"));
        assert!(!is_reserved("/.well-known/spin"));
        assert!(!is_reserved("/.well-known/other"));
        assert!(!is_reserved("/health"));
    }

    #[test]
    fn malformed_patterns_are_errors_naming_the_route() {
        for bad in [
            "/files/*name",
            "/users/:",
            "/a/*/b",
            "/a/.../b",
            "/*.json",
            "/u/:bad name",
        ] {
            let err = Router::build([(bad.to_owned(), ())])
                .map(|_| ())
                .expect_err(bad)
                .to_string();
            assert!(err.contains(&format!("\"{bad}\"")), "{bad}: {err}");
            assert!(!err.contains('\n'), "{bad}: {err}");
            assert!(validate_route(bad).is_err());
        }
        assert!(validate_route("/ok/:id/...").is_ok());
    }

    #[test]
    fn iter_lists_routes_in_precedence_order() {
        let r = router(&["/...", "/api/...", "/api/cart/:id", "/api/cart/admin"]);
        let order: Vec<&str> = r.iter().map(|(raw, _)| raw).collect();
        assert_eq!(
            order,
            ["/api/cart/admin", "/api/cart/:id", "/api/...", "/..."]
        );
        assert!(format!("{r:?}").contains("/api/cart/admin"));
    }
}
