//! The `allowed_outbound_hosts` sandbox and the runtime-config `block_networks` list.
//!
//! A component may only reach what its manifest lists. Each entry reads
//! `<scheme>://<host>[:<port>]` (a single trailing `/` is tolerated, nothing else after the
//! authority): see [`AllowedHost::parse`] for the full grammar. A request is allowed iff some
//! entry matches its scheme, host and port; an empty list allows nothing. The same list guards
//! HTTP, Redis, MySQL, PostgreSQL, MQTT and raw sockets, which is why schemes matter and why
//! ports default per scheme.
//!
//! Where Spin's parser accepts input that can never match anything (an empty host, an empty
//! port range, an unbracketed IPv6 address it mis-splits) we reject it with a one-line error
//! instead: a typo in a sandbox rule should fail loudly at start-up, not deny silently later.
//! Hosts are compared case-insensitively (Spin compares the raw strings, which makes
//! `redis://MyHost` and `redis://myhost` differ because the `url` crate does not lower-case
//! hosts of non-HTTP schemes).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use anyhow::{Result, bail};
use ipnet::IpNet;
use url::Url;

/// The domain under which every component of the app is reachable by service chaining.
pub const SERVICE_CHAINING_DOMAIN: &str = "spin.internal";

/// The host some SDKs use for "a request to my own app" when they cannot send a relative URL.
pub const SELF_ALT_HOST: &str = "self.alt";

/// The ports Spin fills in when an entry or a URL names no port. Only these schemes have one:
/// any other scheme must spell its port out in an entry.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Which component a service-chaining host names: `cart.spin.internal` (optionally with a
/// port, which chaining ignores) gives `cart`. `None` for any other host. The runner uses this
/// both to intercept outbound requests and to strip a forged `Host: x.spin.internal` from
/// inbound ones.
pub fn service_chaining_target(host: &str) -> Option<&str> {
    let host = host.trim();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let (first, rest) = host.split_once('.')?;
    (rest.eq_ignore_ascii_case(SERVICE_CHAINING_DOMAIN) && !first.is_empty()).then_some(first)
}

/// Parses a URL the way Spin does before checking it against the allowed hosts: if it does not
/// parse, or parses without a host (`example.com:8080` parses with scheme `example.com`), it is
/// retried with `{default_scheme}://` in front. So `db.example.com:5432` checked for Postgres
/// means `postgres://db.example.com:5432`, and a socket address `10.0.0.1:80` checked for TCP
/// means `tcp://10.0.0.1:80`.
///
/// Like Spin, any user-info before the first `@` of the authority is percent-encoded first, so
/// passwords containing `#`, `/` or `?` do not derail parsing. The result is meant for the
/// permission check; do not use it to connect (its user-info may have been re-encoded).
pub fn parse_outbound_url(s: &str, default_scheme: &str) -> Option<Url> {
    let s = encode_userinfo(s);
    match Url::parse(&s) {
        Ok(url) if url.has_host() => Some(url),
        _ => Url::parse(&format!("{default_scheme}://{s}"))
            .ok()
            .filter(Url::has_host),
    }
}

fn encode_userinfo(s: &str) -> String {
    let Some(at) = s.find('@') else {
        return s.to_owned();
    };
    let authority_start = s.find("://").map_or(0, |i| i + 3);
    let path_start = s[authority_start..]
        .find('/')
        .map_or(usize::MAX, |i| i + authority_start);
    if at < authority_start || at > path_start {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..authority_start]);
    for byte in s[authority_start..at].bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out.push_str(&s[at..]);
    out
}

/// The parsed `allowed_outbound_hosts` of one component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses a component's list. `entries` must already have had their `{{ variable }}`
    /// templates rendered; `app_component_ids` (every component of the app) is needed because
    /// a `*.spin.internal` host is expanded into one entry per component, as in Spin.
    ///
    /// Errors are a single line naming the offending entry and the reason.
    pub fn parse(entries: &[String], app_component_ids: &[String]) -> Result<Self> {
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            let host = AllowedHost::parse(entry)?;
            let is_chaining_wildcard = matches!(
                &host.host,
                HostPattern::Subdomains(suffix) if suffix[1..] == *SERVICE_CHAINING_DOMAIN
            );
            if is_chaining_wildcard {
                parsed.extend(app_component_ids.iter().map(|id| AllowedHost {
                    host: HostPattern::Domain(
                        format!("{id}.{SERVICE_CHAINING_DOMAIN}").to_ascii_lowercase(),
                    ),
                    ..host.clone()
                }));
            } else {
                parsed.push(host);
            }
        }
        Ok(Self { entries: parsed })
    }

    /// The parsed entries (after `*.spin.internal` expansion).
    pub fn entries(&self) -> &[AllowedHost] {
        &self.entries
    }

    /// True if nothing at all is allowed (the default for a component without the key).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True if some entry is `*://*:*`, i.e. the component is not sandboxed at all.
    pub fn allows_all(&self) -> bool {
        self.entries.iter().any(|e| {
            e.scheme == SchemePattern::Any
                && e.host == HostPattern::Any
                && e.port == PortPattern::Any
        })
    }

    /// Whether an outbound request to `url` is allowed: some entry must match the URL's scheme,
    /// host and port, the port defaulting from the URL's scheme ([`well_known_port`]) when the
    /// URL has none. This applies to every URL, `*.spin.internal` ones included (Spin checks
    /// the chained URL, port and all, before intercepting it).
    ///
    /// A `self`/`self.alt` entry never matches here: self requests (relative URLs, or host
    /// `self.alt`) are checked with [`AllowedHosts::allows_self_request`] instead.
    pub fn allows(&self, url: &Url) -> bool {
        let Some(host) = UrlHost::of(url) else {
            return false;
        };
        let scheme = url.scheme();
        let port = url.port().or_else(|| well_known_port(scheme));
        self.entries
            .iter()
            .any(|e| e.scheme.matches(scheme) && e.host.matches(&host) && e.port.matches(port))
    }

    /// Parses `url` with [`parse_outbound_url`] and checks it with [`AllowedHosts::allows`];
    /// an unparseable URL is denied.
    pub fn allows_str(&self, url: &str, default_scheme: &str) -> bool {
        parse_outbound_url(url, default_scheme).is_some_and(|u| self.allows(&u))
    }

    /// Whether a self request (a relative URL, or one to `self.alt`) may use `scheme`: some
    /// entry must match the scheme and have host `self`, `self.alt` (the two are synonyms) or
    /// `*`. Ports are not checked: the request goes to the runner's own listener.
    pub fn allows_relative(&self, scheme: &str) -> bool {
        self.entries.iter().any(|e| {
            e.scheme.matches(scheme) && matches!(e.host, HostPattern::Any | HostPattern::SelfHost)
        })
    }

    /// Spin's actual check for a self request: it asks [`AllowedHosts::allows_relative`] for
    /// `http` *or* `https`, whatever the listener's scheme, so `https://self` also permits self
    /// requests to a plain-HTTP listener.
    pub fn allows_self_request(&self) -> bool {
        self.allows_relative("http") || self.allows_relative("https")
    }

    /// Whether chaining to `component_id` over `scheme` is allowed, ignoring ports (chaining
    /// never touches the network). Note that Spin's own check is [`AllowedHosts::allows`] on
    /// the full URL, which does look at the port; this helper is for callers that only have
    /// the component id.
    pub fn allows_spin_internal(&self, component_id: &str, scheme: &str) -> bool {
        let host = UrlHost {
            name: format!("{component_id}.{SERVICE_CHAINING_DOMAIN}").to_ascii_lowercase(),
            ip: None,
        };
        self.entries
            .iter()
            .any(|e| e.scheme.matches(scheme) && e.host.matches(&host))
    }
}

/// One `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    original: String,
    scheme: SchemePattern,
    host: HostPattern,
    port: PortPattern,
}

/// The scheme part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemePattern {
    /// `*`: any scheme.
    Any,
    /// One scheme, lower-cased.
    Exact(String),
}

/// The host part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.example.com`, stored as the suffix `.example.com`: strict sub-domains only, never
    /// `example.com` itself.
    Subdomains(String),
    /// A domain name, lower-cased (IDNA-normalised for non-ASCII names).
    Domain(String),
    /// A literal IP address (IPv6 written in brackets in the entry).
    Ip(IpAddr),
    /// An IP network such as `10.0.0.0/8` (host bits are truncated).
    Cidr(IpNet),
    /// `self` or `self.alt`: the app itself, for self requests by route.
    SelfHost,
}

/// The port part of an entry, after defaulting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortPattern {
    /// `*`: any port.
    Any,
    /// One port (explicit or the scheme's well-known port).
    Port(u16),
    /// `a..b`: from `a` included to `b` excluded, like a Rust range.
    Range(Range<u16>),
}

impl AllowedHost {
    /// Parses one entry (already template-rendered):
    ///
    /// * surrounding whitespace is ignored, and so is a single trailing `/`; any other path is
    ///   an error;
    /// * scheme: `*` or letters only (`http`, `redis`, `postgres`, …); `{a,b}` lists are not
    ///   supported;
    /// * host: `*`; `*.domain` (sub-domains only); a domain; an IPv4 address; an IPv6 address
    ///   in brackets; a CIDR network (`10.0.0.0/8`, `fd00::/8`); `self` / `self.alt`;
    ///   `<id>.spin.internal` or `*.spin.internal`;
    /// * port: omitted → the scheme's well-known port (an error for other schemes, `*`
    ///   included); `*`; a number; or `a..b`, end excluded.
    ///
    /// `insecure:allow-all` (a Spin 1 leftover) is rejected with a hint to use `*://*:*`.
    pub fn parse(entry: &str) -> Result<Self> {
        match parse_entry(entry.trim()) {
            Ok((scheme, host, port)) => Ok(Self {
                original: entry.trim().to_owned(),
                scheme,
                host,
                port,
            }),
            Err(why) => bail!("invalid allowed_outbound_hosts entry {entry:?}: {why}"),
        }
    }

    /// The entry as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The scheme part.
    pub fn scheme(&self) -> &SchemePattern {
        &self.scheme
    }

    /// The host part.
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    /// The port part.
    pub fn port(&self) -> &PortPattern {
        &self.port
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

const GRAMMAR_HINT: &str = "entries look like <scheme>://<host>[:<port>], e.g. \
                            \"https://api.example.com\" or \"redis://cache:6380\"; \
                            \"*://*:*\" allows everything";

fn parse_entry(
    entry: &str,
) -> std::result::Result<(SchemePattern, HostPattern, PortPattern), String> {
    if entry == "insecure:allow-all" {
        return Err(
            "\"insecure:allow-all\" is no longer supported; use \"*://*:*\" if you \
                    really want to allow all outbound networking"
                .to_owned(),
        );
    }
    if entry.contains("{{") {
        return Err("contains an unrendered {{ template }}".to_owned());
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err(format!("missing \"://\" after the scheme; {GRAMMAR_HINT}"));
    };

    let scheme = parse_scheme(scheme)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = split_host_port(rest)?;
    let port = match port {
        None => match &scheme {
            SchemePattern::Exact(s) => match well_known_port(s) {
                Some(p) => PortPattern::Port(p),
                None => {
                    return Err(format!(
                        "no port given and scheme \"{s}\" has no well-known port; add one \
                         (\":1234\", \":1000..2000\" or \":*\")"
                    ));
                }
            },
            SchemePattern::Any => {
                return Err(
                    "no port given, and scheme \"*\" has no default port; add one \
                            (\":1234\", \":1000..2000\" or \":*\")"
                        .to_owned(),
                );
            }
        },
        Some(port) => parse_port(port)?,
    };
    Ok((scheme, host, port))
}

fn parse_scheme(scheme: &str) -> std::result::Result<SchemePattern, String> {
    if scheme == "*" {
        return Ok(SchemePattern::Any);
    }
    if scheme.starts_with('{') {
        return Err("scheme lists ({a,b}) are not supported; write one entry per scheme".into());
    }
    if scheme.is_empty() {
        return Err(format!("missing scheme; {GRAMMAR_HINT}"));
    }
    if !scheme.chars().all(char::is_alphabetic) {
        return Err(format!("scheme \"{scheme}\" must be \"*\" or letters only"));
    }
    Ok(SchemePattern::Exact(scheme.to_lowercase()))
}

/// Splits `host[:port]` (trailing `/` already removed) and parses the host.
fn split_host_port(rest: &str) -> std::result::Result<(HostPattern, Option<&str>), String> {
    if rest.is_empty() {
        return Err("missing host".to_owned());
    }

    // `[v6]` or `[v6]:port`.
    if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((addr, after)) = bracketed.split_once(']') else {
            return Err("unclosed '[' in IPv6 address".to_owned());
        };
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("\"[{addr}]\" is not a valid IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) if !port.contains('/') => Some(port),
                _ => return Err(path_error()),
            },
        };
        return Ok((HostPattern::Ip(IpAddr::V6(addr)), port));
    }

    // A `/` is either a CIDR prefix length (`10.0.0.0/8[:port]`, `fd00::/8:port`) or a path.
    if let Some((addr, after)) = rest.split_once('/') {
        let Ok(addr) = addr.parse::<IpAddr>() else {
            return Err(path_error());
        };
        let (prefix, port) = match after.split_once(':') {
            Some((prefix, port)) => (prefix, Some(port)),
            None => (after, None),
        };
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(path_error());
        }
        let net = prefix
            .parse::<u8>()
            .ok()
            .and_then(|len| IpNet::new(addr, len).ok())
            .ok_or_else(|| format!("\"{addr}/{prefix}\": prefix length too large"))?;
        return Ok((HostPattern::Cidr(net.trunc()), port));
    }

    // Plain `host[:port]`. More than one colon means an unbracketed IPv6 address, which
    // cannot be told apart from its port.
    if rest.matches(':').count() > 1 {
        return Err(
            "IPv6 addresses must be written in brackets, e.g. \"http://[::1]:8080\"".into(),
        );
    }
    let (host, port) = match rest.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    Ok((parse_host(host)?, port))
}

fn path_error() -> String {
    "entries must not contain a path (only a single trailing '/' is allowed)".to_owned()
}

fn parse_host(host: &str) -> std::result::Result<HostPattern, String> {
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if host.eq_ignore_ascii_case("self") || host.eq_ignore_ascii_case(SELF_ALT_HOST) {
        return Ok(HostPattern::SelfHost);
    }
    if host.starts_with('{') {
        return Err("host lists ({a,b}) are not supported; write one entry per host".into());
    }
    if let Some(domain) = host.strip_prefix("*.") {
        if domain.contains('*') {
            return Err("only a single leading \"*.\" wildcard is allowed in a host".into());
        }
        return match url::Host::parse(domain) {
            Ok(url::Host::Domain(d)) if !d.is_empty() => {
                Ok(HostPattern::Subdomains(format!(".{d}")))
            }
            _ => Err(format!(
                "\"{domain}\" after \"*.\" is not a valid domain name"
            )),
        };
    }
    if host.contains('*') {
        return Err(
            "wildcards are only allowed as a whole host (\"*\") or a leading \"*.\"".into(),
        );
    }
    match url::Host::parse(host) {
        Ok(url::Host::Domain(d)) => Ok(HostPattern::Domain(d)),
        Ok(url::Host::Ipv4(ip)) => Ok(HostPattern::Ip(IpAddr::V4(ip))),
        Ok(url::Host::Ipv6(ip)) => Ok(HostPattern::Ip(IpAddr::V6(ip))),
        Err(e) => Err(format!("\"{host}\" is not a valid host ({e})")),
    }
}

fn parse_port(port: &str) -> std::result::Result<PortPattern, String> {
    match port {
        "" => Err("empty port after ':'".to_owned()),
        "*" => Ok(PortPattern::Any),
        p if p.starts_with('{') => Err(
            "port lists ({a,b}) are not supported; use a range a..b or one entry per port".into(),
        ),
        p => match p.split_once("..") {
            Some((start, end)) => {
                let number = |s: &str| {
                    s.parse::<u16>()
                        .map_err(|_| format!("port range \"{p}\": \"{s}\" is not a port number"))
                };
                let (start, end) = (number(start)?, number(end)?);
                if start >= end {
                    return Err(format!(
                        "port range \"{p}\" is empty (the end is excluded: {start}..{end} \
                         needs {start} < {end})"
                    ));
                }
                Ok(PortPattern::Range(start..end))
            }
            None => p
                .parse()
                .map(PortPattern::Port)
                .map_err(|_| format!("port \"{p}\" is not a number between 0 and 65535")),
        },
    }
}

/// A URL's host, normalised for comparison with entries.
struct UrlHost {
    /// Lower-case text form (IPv6 in brackets, as the `url` crate prints it).
    name: String,
    ip: Option<IpAddr>,
}

impl UrlHost {
    fn of(url: &Url) -> Option<Self> {
        let raw = url.host_str()?;
        if raw.is_empty() {
            return None;
        }
        // The `url` crate only normalises hosts of "special" schemes (http, https, …); for
        // redis://, postgres:// etc. the host is kept verbatim. Normalise those the same way.
        let host = url::Host::parse(raw).ok();
        Some(match host {
            Some(url::Host::Ipv4(ip)) => Self {
                name: ip.to_string(),
                ip: Some(IpAddr::V4(ip)),
            },
            Some(url::Host::Ipv6(ip)) => Self {
                name: format!("[{ip}]"),
                ip: Some(IpAddr::V6(ip)),
            },
            Some(url::Host::Domain(d)) => Self { name: d, ip: None },
            None => Self {
                name: raw.to_ascii_lowercase(),
                ip: None,
            },
        })
    }
}

impl SchemePattern {
    fn matches(&self, scheme: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => s.eq_ignore_ascii_case(scheme),
        }
    }
}

impl HostPattern {
    fn matches(&self, host: &UrlHost) -> bool {
        match self {
            Self::Any => true,
            Self::Subdomains(suffix) => host.name.ends_with(suffix.as_str()),
            Self::Domain(d) => host.name == *d,
            Self::Ip(ip) => host.ip == Some(*ip),
            Self::Cidr(net) => host.ip.is_some_and(|ip| net.contains(&ip)),
            // Self requests never reach the host check (see `allows_relative`).
            Self::SelfHost => false,
        }
    }
}

impl PortPattern {
    fn matches(&self, port: Option<u16>) -> bool {
        match (self, port) {
            (Self::Any, _) => true,
            (Self::Port(p), Some(port)) => *p == port,
            (Self::Range(r), Some(port)) => r.contains(&port),
            // A URL without a port whose scheme has no well-known port only matches `:*`.
            (_, None) => false,
        }
    }
}

/// `[outbound_networking] block_networks` from the runtime config: IP ranges no component may
/// connect to, even when `allowed_outbound_hosts` allows the host name. It is applied to the
/// resolved addresses, which is what defeats DNS names pointing into an internal network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockedNetworks {
    networks: Vec<IpNet>,
    block_private: bool,
}

impl BlockedNetworks {
    /// Each entry is a CIDR network (`"1.2.3.4/32"`, `"fd00::/8"`; host bits are truncated, a
    /// bare address without `/len` is an error as in Spin) or the keyword `"private"`.
    ///
    /// `"private"` is broader than RFC 1918: like Spin (which uses `ip_network`'s `is_global`)
    /// it blocks every address that is not globally routable — for IPv4 `0.0.0.0/8`,
    /// `10.0.0.0/8`, `100.64.0.0/10`, `127.0.0.0/8`, `169.254.0.0/16`, `172.16.0.0/12`,
    /// `192.0.0.0/24` (but `192.0.0.9` and `192.0.0.10`), `192.0.2.0/24`, `192.168.0.0/16`,
    /// `198.18.0.0/15`, `198.51.100.0/24`, `203.0.113.0/24`, `240.0.0.0/4` and
    /// `255.255.255.255`; for IPv6 `::`, `::1`, `fc00::/7`, `fe80::/10`, `fec0::/10`,
    /// `2001:db8::/32` and non-global-scope multicast.
    pub fn parse(entries: &[String]) -> Result<Self> {
        let mut blocked = Self::default();
        for entry in entries {
            let text = entry.trim();
            if text == "private" {
                blocked.block_private = true;
                continue;
            }
            match text.parse::<IpNet>() {
                Ok(net) => blocked.networks.push(net.trunc()),
                Err(_) => bail!(
                    "invalid block_networks entry {entry:?}: expected an IP network in CIDR \
                     notation (e.g. \"10.0.0.0/8\" or \"1.2.3.4/32\") or the keyword \"private\""
                ),
            }
        }
        Ok(blocked)
    }

    /// True if nothing is blocked (no need to check addresses at all).
    pub fn is_empty(&self) -> bool {
        !self.block_private && self.networks.is_empty()
    }

    /// Whether `"private"` was given.
    pub fn blocks_private(&self) -> bool {
        self.block_private
    }

    /// Whether connecting to `ip` is forbidden. An IPv6 address embedding an IPv4 one
    /// (`::ffff:10.0.0.1`, `::10.0.0.1`) is also checked as that IPv4 address, so the block
    /// cannot be sidestepped by spelling the address differently.
    pub fn blocks(&self, ip: IpAddr) -> bool {
        if self.block_private && !is_global(ip) {
            return true;
        }
        if self.networks.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V6(v6) => v6.to_ipv4().is_some_and(|v4| self.blocks(IpAddr::V4(v4))),
            IpAddr::V4(_) => false,
        }
    }
}

/// Globally routable, by the same rules as the `ip_network` crate Spin relies on.
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    // The only two globally routable addresses inside 192.0.0.0/24.
    if [a, b, c] == [192, 0, 0] && (d == 9 || d == 10) {
        return true;
    }
    let non_global = a == 0 // "this network"
        || a == 10
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 168)
        || [a, b, c] == [192, 0, 0] // IETF protocol assignments
        || (a == 100 && (b & 0xc0) == 64) // shared address space (CGNAT)
        || a == 127
        || (a == 169 && b == 254)
        || ip.is_broadcast()
        || ip.is_documentation()
        || (a == 198 && (b & 0xfe) == 18) // benchmarking
        || (a & 0xf0) == 240; // reserved
    !non_global
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    if ip.is_multicast() {
        // Only multicast with global scope (ffXe::) is globally routable.
        return first & 0x000f == 0xe;
    }
    let non_global = ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8); // documentation
    !non_global
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> AllowedHost {
        AllowedHost::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn parts(s: &str) -> (SchemePattern, HostPattern, PortPattern) {
        let e = entry(s);
        (e.scheme, e.host, e.port)
    }

    fn err(s: &str) -> String {
        let e = AllowedHost::parse(s).expect_err(s).to_string();
        assert!(!e.contains('\n'), "multi-line error for {s}: {e}");
        assert!(
            e.contains(&format!("{s:?}")),
            "error must name the entry: {e}"
        );
        e
    }

    fn hosts(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowedHosts::parse(&entries, &["cart".into(), "pricing".into()]).unwrap()
    }

    fn allows(h: &AllowedHosts, url: &str) -> bool {
        h.allows(&Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}")))
    }

    fn exact(s: &str) -> SchemePattern {
        SchemePattern::Exact(s.into())
    }

    fn domain(s: &str) -> HostPattern {
        HostPattern::Domain(s.into())
    }

    // ---- grammar ----

    #[test]
    fn default_ports_per_scheme() {
        for (scheme, port) in [
            ("postgres", 5432),
            ("mysql", 3306),
            ("redis", 6379),
            ("mqtt", 1883),
            ("http", 80),
            ("https", 443),
        ] {
            assert_eq!(
                parts(&format!("{scheme}://x")),
                (exact(scheme), domain("x"), PortPattern::Port(port))
            );
        }
    }

    #[test]
    fn schemes_without_default_port_need_one() {
        assert!(err("foo://x").contains("well-known port"));
        assert!(err("tcp://10.0.0.1").contains("port"));
        assert!(err("*://example.com").contains("port"));
        assert!(err("*://*.spin.internal").contains("port"));
        assert_eq!(parts("foo://x:9").2, PortPattern::Port(9));
    }

    #[test]
    fn allow_everything() {
        assert_eq!(
            parts("*://*:*"),
            (SchemePattern::Any, HostPattern::Any, PortPattern::Any)
        );
        let h = hosts(&["*://*:*"]);
        assert!(h.allows_all());
        assert!(allows(&h, "tcp://1.2.3.4:9"));
        assert!(allows(&h, "https://anything.example/x"));
        assert!(allows(&h, "ws://no-default-port"));
        assert!(h.allows_self_request());
        assert!(!hosts(&["https://x"]).allows_all());
    }

    #[test]
    fn explicit_ports_and_port_wildcard() {
        assert_eq!(parts("http://x:8080").2, PortPattern::Port(8080));
        assert_eq!(parts("http://x:*").2, PortPattern::Any);
        assert_eq!(parts("redis://x:0").2, PortPattern::Port(0));
        assert!(err("http://x:65536").contains("not a number"));
        assert!(err("http://x:http").contains("not a number"));
        assert!(err("http://x:").contains("empty port"));
        assert!(err("http://x:{80,443}").contains("not supported"));
    }

    #[test]
    fn port_ranges_are_end_exclusive() {
        assert_eq!(
            parts("http://x:8000..8003").2,
            PortPattern::Range(8000..8003)
        );
        let h = hosts(&["http://x:8000..8003"]);
        assert!(!allows(&h, "http://x:7999/"));
        assert!(allows(&h, "http://x:8000/"));
        assert!(allows(&h, "http://x:8002/"));
        assert!(!allows(&h, "http://x:8003/"));
        assert!(
            !allows(&h, "http://x/"),
            "default port 80 is outside the range"
        );
        assert!(err("http://x:9..9").contains("empty"));
        assert!(err("http://x:10..9").contains("empty"));
        assert!(err("http://x:1..").contains("not a port number"));
        assert!(err("http://x:a..9").contains("not a port number"));
        assert!(err("http://x:1..70000").contains("not a port number"));
    }

    #[test]
    fn trailing_slash_whitespace_and_paths() {
        assert_eq!(
            parts("  https://api.example.com/  ").1,
            domain("api.example.com")
        );
        assert_eq!(
            parts("https://api.example.com:8443/").2,
            PortPattern::Port(8443)
        );
        assert_eq!(entry(" https://a.b ").as_str(), "https://a.b");
        assert!(err("https://api.example.com/v1").contains("path"));
        assert!(err("https://api.example.com//").contains("path"));
        assert!(err("https://api.example.com:443/v1").contains("path"));
        assert!(err("http://*.example.com/a").contains("path"));
    }

    #[test]
    fn malformed_entries() {
        assert!(err("example.com").contains("://"));
        assert!(err("example.com:80").contains("://"));
        assert!(err("").contains("://"));
        assert!(err("*").contains("://"));
        assert!(err("http://").contains("missing host"));
        assert!(err("http:///").contains("missing host"));
        assert!(err("http://:80").contains("missing host"));
        assert!(err("://example.com").contains("missing scheme"));
        assert!(err("h2c1://x:1").contains("letters only"));
        assert!(err("{http,https}://x").contains("not supported"));
        assert!(err("http://{a,b}").contains("not supported"));
        assert!(err("http://exa mple.com").contains("not a valid host"));
        assert!(err("http://a*.example.com").contains("wildcard"));
        assert!(err("http://*.*.example.com").contains("wildcard"));
        assert!(err("http://*.").contains("not a valid domain"));
        assert!(err("http://{{ host }}").contains("template"));
        assert!(err("http://::1").contains("brackets"));
        assert!(err("http://[::1").contains("unclosed"));
        assert!(err("http://[zz]").contains("IPv6"));
    }

    #[test]
    fn insecure_allow_all_is_rejected_with_a_hint() {
        assert!(err("insecure:allow-all").contains("*://*:*"));
        let list = vec!["https://ok".to_owned(), "insecure:allow-all".to_owned()];
        assert!(AllowedHosts::parse(&list, &[]).is_err());
    }

    #[test]
    fn list_errors_name_the_entry() {
        let list = vec!["https://ok".to_owned(), "foo://bad".to_owned()];
        let e = AllowedHosts::parse(&list, &[]).unwrap_err().to_string();
        assert!(e.contains("\"foo://bad\""), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn empty_list_allows_nothing() {
        let h = AllowedHosts::parse(&[], &[]).unwrap();
        assert!(h.is_empty());
        assert!(!allows(&h, "https://example.com/"));
        assert!(!h.allows_self_request());
        assert!(!h.allows_spin_internal("cart", "http"));
    }

    // ---- hosts ----

    #[test]
    fn exact_hosts_scheme_and_default_port() {
        let h = hosts(&["https://api.example.com", "redis://cache"]);
        assert!(allows(&h, "https://api.example.com/v1/x?y=1"));
        assert!(allows(&h, "https://api.example.com:443/"));
        assert!(!allows(&h, "http://api.example.com/"), "scheme must match");
        assert!(
            !allows(&h, "https://api.example.com:8443/"),
            "port must match"
        );
        assert!(!allows(&h, "https://other.example.com/"));
        assert!(allows(&h, "redis://cache"));
        assert!(allows(&h, "redis://cache:6379/0"));
        assert!(!allows(&h, "redis://cache:6380"));
    }

    #[test]
    fn plain_names_with_underscores_and_localhost() {
        // docker-compose style service names are common targets.
        assert_eq!(parts("redis://my_cache").1, domain("my_cache"));
        assert_eq!(parts("http://localhost:3001").1, domain("localhost"));
        let h = hosts(&["redis://my_cache", "http://localhost:3001"]);
        assert!(allows(&h, "redis://my_cache:6379"));
        assert!(allows(&h, "http://localhost:3001/x"));
        assert!(!allows(&h, "http://localhost/x"));
    }

    #[test]
    fn hosts_are_case_insensitive() {
        assert_eq!(parts("HTTPS://API.Example.COM").0, exact("https"));
        assert_eq!(
            parts("https://API.Example.COM").1,
            domain("api.example.com")
        );
        let h = hosts(&[
            "https://API.example.com",
            "redis://MyCache",
            "http://*.Example.org",
        ]);
        assert!(allows(&h, "https://api.EXAMPLE.com/"));
        assert!(allows(&h, "redis://mycache"));
        assert!(allows(&h, "redis://MYCACHE:6379"));
        assert!(allows(&h, "http://A.example.ORG/"));
    }

    #[test]
    fn wildcard_subdomains_exclude_the_apex() {
        assert_eq!(
            parts("http://*.example.com").1,
            HostPattern::Subdomains(".example.com".into())
        );
        let h = hosts(&["http://*.example.com", "http://*.example2.com:8383"]);
        assert!(allows(&h, "http://a.example.com/foo"));
        assert!(allows(&h, "http://a.b.example.com/foo"));
        assert!(!allows(&h, "http://example.com/"));
        assert!(!allows(&h, "http://myexample.com/"));
        assert!(allows(&h, "http://a.example2.com:8383/"));
        assert!(!allows(&h, "http://a.example2.com/"));
        assert!(!allows(&h, "http://example2.com:8383/"));
    }

    #[test]
    fn wildcard_host_any_name_but_port_still_checked() {
        let h = hosts(&["https://*"]);
        assert!(allows(&h, "https://anything.example/"));
        assert!(allows(&h, "https://10.1.2.3/"));
        assert!(!allows(&h, "https://anything.example:8443/"));
        assert!(!allows(&h, "http://anything.example/"));
    }

    #[test]
    fn ip_literals() {
        assert_eq!(
            parts("http://192.168.1.1").1,
            HostPattern::Ip("192.168.1.1".parse().unwrap())
        );
        assert_eq!(
            parts("http://[::1]:8001").1,
            HostPattern::Ip("::1".parse().unwrap())
        );
        assert_eq!(parts("http://[::1]").2, PortPattern::Port(80));
        let h = hosts(&[
            "http://192.168.1.1:3002",
            "http://[::1]:8001",
            "postgres://10.0.0.5",
        ]);
        assert!(allows(&h, "http://192.168.1.1:3002/"));
        assert!(!allows(&h, "http://192.168.1.2:3002/"));
        assert!(allows(&h, "http://[::1]:8001/"));
        assert!(allows(&h, "postgres://user:pw@10.0.0.5/db"));
        assert!(allows(&h, "postgres://10.0.0.5:5432/db"));
    }

    #[test]
    fn cidr_matching() {
        assert_eq!(
            parts("*://127.0.0.1/24:63551").1,
            HostPattern::Cidr("127.0.0.0/24".parse().unwrap())
        );
        assert_eq!(
            parts("*://ff00::/8:80").1,
            HostPattern::Cidr("ff00::/8".parse().unwrap())
        );
        assert_eq!(parts("http://10.0.0.0/8").2, PortPattern::Port(80));
        assert!(err("*://127.0.0.0/24").contains("port"));
        assert!(err("http://10.0.0.0/33").contains("prefix"));
        assert!(err("http://10.0.0.0/x").contains("path"));
        let h = hosts(&[
            "*://10.0.0.0/8:*",
            "http://[::1]:1",
            "tcp://192.168.0.0/16:5000..5002",
        ]);
        assert!(allows(&h, "http://10.200.3.4/"));
        assert!(allows(&h, "redis://10.0.0.1:6379"));
        assert!(!allows(&h, "http://11.0.0.1/"));
        assert!(
            !allows(&h, "http://ten.example/"),
            "names never match a CIDR"
        );
        assert!(h.allows_str("192.168.7.7:5001", "tcp"));
        assert!(!h.allows_str("192.168.7.7:5002", "tcp"));
        assert!(!h.allows_str("192.169.7.7:5001", "tcp"));
    }

    #[test]
    fn self_entries_only_allow_self_requests() {
        assert_eq!(parts("http://self").1, HostPattern::SelfHost);
        assert_eq!(parts("https://self.alt").1, HostPattern::SelfHost);
        let h = hosts(&["http://self"]);
        assert!(h.allows_relative("http"));
        assert!(!h.allows_relative("https"));
        assert!(h.allows_self_request());
        assert!(!allows(&h, "http://self/x"));
        assert!(!allows(&h, "http://self.alt/x"));
        assert!(hosts(&["https://self.alt"]).allows_self_request());
        assert!(hosts(&["*://self:*"]).allows_relative("https"));
        assert!(hosts(&["http://*"]).allows_relative("http"));
        assert!(!hosts(&["http://example.com"]).allows_self_request());
        assert!(!hosts(&["redis://self"]).allows_self_request());
    }

    // ---- service chaining ----

    #[test]
    fn spin_internal_wildcard_expands_per_component() {
        let h = hosts(&["http://*.spin.internal"]);
        assert_eq!(h.entries().len(), 2);
        assert_eq!(h.entries()[0].host(), &domain("cart.spin.internal"));
        assert_eq!(h.entries()[1].host(), &domain("pricing.spin.internal"));
        assert_eq!(h.entries()[0].as_str(), "http://*.spin.internal");
        assert!(allows(&h, "http://cart.spin.internal/x"));
        assert!(allows(&h, "http://pricing.spin.internal/"));
        assert!(!allows(&h, "http://unknown.spin.internal/"));
        assert!(
            !allows(&h, "https://cart.spin.internal/"),
            "scheme kept from the entry"
        );
        assert!(h.allows_spin_internal("cart", "http"));
        assert!(!h.allows_spin_internal("unknown", "http"));
        // Expansion keeps the port too.
        let h = hosts(&["https://*.spin.internal:*"]);
        assert!(allows(&h, "https://cart.spin.internal:1234/"));
        // Without component ids nothing is allowed.
        let list = vec!["http://*.spin.internal".to_owned()];
        assert!(AllowedHosts::parse(&list, &[]).unwrap().is_empty());
    }

    #[test]
    fn spin_internal_single_component() {
        let h = hosts(&["http://pricing.spin.internal"]);
        assert!(allows(&h, "http://pricing.spin.internal/price/1"));
        assert!(!allows(&h, "http://cart.spin.internal/"));
        assert!(h.allows_spin_internal("pricing", "http"));
        assert!(h.allows_spin_internal("PRICING", "http"));
        assert!(!h.allows_spin_internal("pricing", "https"));
        // Spin checks the URL's port like any other URL; the helper ignores it.
        assert!(!allows(&h, "http://pricing.spin.internal:3000/"));
        let h = hosts(&["http://pricing.spin.internal:3000"]);
        assert!(h.allows_spin_internal("pricing", "http"));
    }

    #[test]
    fn service_chaining_targets() {
        assert_eq!(service_chaining_target("cart.spin.internal"), Some("cart"));
        assert_eq!(
            service_chaining_target("cart.spin.internal:8080"),
            Some("cart")
        );
        assert_eq!(service_chaining_target("Cart.Spin.Internal"), Some("Cart"));
        assert_eq!(service_chaining_target("spin.internal"), None);
        assert_eq!(service_chaining_target("a.b.spin.internal"), None);
        assert_eq!(service_chaining_target("cart.example.com"), None);
        assert_eq!(service_chaining_target("localhost:3000"), None);
    }

    // ---- URL parsing for checks ----

    #[test]
    fn outbound_urls_retry_with_the_default_scheme() {
        let u = parse_outbound_url("example.com:8383", "http").unwrap();
        assert_eq!(
            (u.scheme(), u.host_str(), u.port()),
            ("http", Some("example.com"), Some(8383))
        );
        let u = parse_outbound_url("10.0.0.1:80", "tcp").unwrap();
        assert_eq!(
            (u.scheme(), u.host_str(), u.port()),
            ("tcp", Some("10.0.0.1"), Some(80))
        );
        let u = parse_outbound_url("[::1]:80", "tcp").unwrap();
        assert_eq!(u.host_str(), Some("[::1]"));
        let u = parse_outbound_url("https://example.com/x", "http").unwrap();
        assert_eq!(u.scheme(), "https");
        assert!(parse_outbound_url("", "http").is_none());
        // Mirrors Spin's retry literally: "http://" becomes "http://http://", whose host is
        // "http". Harmless, since no sensible entry names that host.
        assert_eq!(
            parse_outbound_url("http://", "http").unwrap().host_str(),
            Some("http")
        );
        assert!(!hosts(&["http://*.example.com"]).allows_str("http://", "http"));
    }

    #[test]
    fn outbound_urls_with_awkward_passwords() {
        let h = hosts(&["mysql://xyz.com"]);
        assert!(h.allows_str("mysql://user:pass#word@xyz.com", "mysql"));
        assert!(h.allows_str("mysql://user%3Apass%23word@xyz.com", "mysql"));
        assert!(h.allows_str("user%3Apass%23word@xyz.com", "mysql"));
        let u = parse_outbound_url("https://example.com/file@0.1.0.json", "https").unwrap();
        assert_eq!(u.host_str(), Some("example.com"));
        assert!(!h.allows_str("not a url at all", "mysql"));
    }

    #[test]
    fn url_without_port_and_unknown_scheme_needs_port_wildcard() {
        assert!(!allows(&hosts(&["ws://x:80"]), "ws://x/"));
        assert!(allows(&hosts(&["ws://x:*"]), "ws://x/"));
        // Quirk kept from Spin: the `url` crate drops ws's default port 80 from the URL and
        // Spin's own table has no default for ws, so an explicit `:80` entry cannot match.
        assert!(!allows(&hosts(&["ws://x:80"]), "ws://x:80/"));
        assert!(allows(&hosts(&["ws://x:81"]), "ws://x:81/"));
    }

    // ---- block_networks ----

    fn blocked(entries: &[&str]) -> BlockedNetworks {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        BlockedNetworks::parse(&entries).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocked_networks_by_cidr() {
        let b = blocked(&["123.123.0.0/16", "2001::/96", "8.8.8.8/16"]);
        assert!(!b.is_empty());
        assert!(!b.blocks_private());
        assert!(b.blocks(ip("123.123.123.123")));
        assert!(b.blocks(ip("2001::1000")));
        assert!(b.blocks(ip("::ffff:123.123.123.123")), "IPv4-mapped IPv6");
        assert!(b.blocks(ip("8.8.1.1")), "host bits truncated");
        assert!(!b.blocks(ip("123.100.100.100")));
        assert!(!b.blocks(ip("2002::1000")));
        assert!(
            !b.blocks(ip("127.0.0.1")),
            "private not blocked unless asked"
        );
    }

    #[test]
    fn blocked_private_means_not_globally_routable() {
        let b = blocked(&["private"]);
        assert!(b.blocks_private());
        for addr in [
            "0.0.0.0",
            "10.10.10.10",
            "100.64.1.1",
            "127.0.0.1",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.10.10.10",
            "fc00::f00d",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(b.blocks(ip(addr)), "{addr} should be blocked");
        }
        for addr in [
            "123.123.123.123",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.0.9",
            "192.0.0.10",
            "2600::beef",
            "ff0e::1",
        ] {
            assert!(!b.blocks(ip(addr)), "{addr} should not be blocked");
        }
    }

    #[test]
    fn blocked_networks_parse_errors() {
        assert!(BlockedNetworks::parse(&[]).unwrap().is_empty());
        for bad in ["1.2.3.4", "private-ish", "10.0.0.0/33", "", "example.com/8"] {
            let e = BlockedNetworks::parse(&[bad.to_owned()])
                .expect_err(bad)
                .to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(!e.contains('\n'));
        }
        assert!(blocked(&[" private ", " fd00::/8 "]).blocks(ip("fd00::1")));
    }
}
