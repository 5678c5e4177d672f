//! Outbound Redis capability: `fermyon:spin/redis@2.0.0`, plus the app-wide Redis state the
//! Redis trigger shares (which addresses are served by the [embedded broker](broker)).
//!
//! * `open(address)` is checked against the component's `allowed_outbound_hosts` with Spin's
//!   grammar (scheme `redis`, default port 6379) and the runtime config's `block_networks`. A
//!   denied address answers `error::invalid-address`, as Spin does: the 2.0.0 interface has no
//!   access-denied variant.
//! * Connections are pooled app-wide, one `redis::aio::ConnectionManager` (multiplexed,
//!   reconnects by itself) per address string, instead of Spin's one connection per `open`: a
//!   request-per-instance model would otherwise pay a TCP + handshake on every request. Because
//!   instances share those connections, `execute` refuses the few commands that change
//!   connection state (`SELECT`, `MULTI`, `SUBSCRIBE`, ...); put the database number in the
//!   address (`redis://host/2`) instead of `SELECT`.
//! * When an address the manifest configures for Redis (a trigger's `address`, or
//!   `[application.trigger.redis] address`) does not answer at startup and
//!   `[application.tool.bazaar] embedded_redis_fallback` is on (the default), that address is
//!   served by the embedded broker: `publish` goes to the in-process subscribers and every other
//!   operation fails with a message saying why.

pub mod broker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bazaar_manifest::variables::ResolvedVariables;
use bazaar_manifest::{Manifest, RedisTrigger};
use bazaar_routing::allowed_hosts::{AllowedHosts, BlockedNetworks};
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use self::bindings::fermyon::spin::redis_types;
use self::bindings::fermyon::spin2_0_0::redis as redis2;
use self::broker::EmbeddedBroker;
use redis2::{Error, RedisParameter, RedisResult};

/// Host bindings of the Redis worlds in `host/wit/redis/` (a WIT tree of its own, see there).
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/redis",
        world: "bazaar:runner/redis-host",
        imports: { default: async },
        with: {
            "fermyon:spin/redis@2.0.0.connection": super::ConnectionHandle,
        },
    });
}

/// The `[application.tool.bazaar]` key that allows the embedded broker fallback.
pub const FALLBACK_SETTING: &str = "embedded_redis_fallback";
/// Connections one instance may hold open at once (`too-many-connections` beyond that, like
/// Spin's per-instance table).
const MAX_OPEN_CONNECTIONS: usize = 1024;
/// How long the startup check waits for a Redis server to answer before calling it absent.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound for establishing a pooled connection on behalf of a guest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one Redis command issued on behalf of a guest.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Commands that change the state of the connection they run on. Pooled connections are shared
/// by every instance, so letting one guest change them would leak into the others.
const CONNECTION_STATE_COMMANDS: &[&str] = &[
    "AUTH",
    "CLIENT",
    "DISCARD",
    "EXEC",
    "HELLO",
    "MONITOR",
    "MULTI",
    "PSUBSCRIBE",
    "PUNSUBSCRIBE",
    "QUIT",
    "RESET",
    "SELECT",
    "SSUBSCRIBE",
    "SUBSCRIBE",
    "SUNSUBSCRIBE",
    "UNSUBSCRIBE",
    "UNWATCH",
    "WATCH",
];

/// App-wide Redis state. Cheap to clone.
#[derive(Clone)]
pub struct RedisFactor {
    inner: Arc<FactorInner>,
}

struct FactorInner {
    /// Address string → its shared connection, created on first use. A failed connect leaves
    /// the cell empty so the next `open` tries again.
    pool: Mutex<HashMap<String, Arc<OnceCell<ConnectionManager>>>>,
    broker: EmbeddedBroker,
    /// Endpoints (see [`endpoint_key`]) served by the embedded broker → the address as
    /// configured (password redacted), for messages.
    embedded: BTreeMap<String, String>,
}

/// Per-instance Redis state: what the component may reach and its open connections.
pub struct RedisInstance {
    factor: RedisFactor,
    component_id: Arc<str>,
    allowed: Arc<AllowedHosts>,
    blocked: Arc<BlockedNetworks>,
    table: ResourceTable,
}

/// Guest-visible handle of an open connection (resource `connection`).
pub struct ConnectionHandle {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Server(ConnectionManager),
    /// An address served by the embedded broker: only `publish` works.
    Embedded {
        endpoint: String,
        address: String,
    },
}

impl RedisFactor {
    /// Reads the manifest's Redis addresses and the fallback setting, then checks that each
    /// address answers (see [`RedisFactor::start`]).
    pub async fn new(manifest: &Manifest, variables: &ResolvedVariables) -> anyhow::Result<Self> {
        let fallback = embedded_fallback_enabled(&manifest.application.tool)?;
        let addresses = configured_addresses(manifest, variables)?;
        Self::start(&addresses, fallback).await
    }

    /// Checks that every configured address answers. One that does not is served by the
    /// embedded broker when `fallback` allows it, and stops startup otherwise (Spin's trigger
    /// would exit). An address that answers with an error (bad password, ...) or does not parse
    /// is a configuration mistake and always stops startup.
    pub async fn start(addresses: &[String], fallback: bool) -> anyhow::Result<Self> {
        let mut embedded = BTreeMap::new();
        for address in addresses {
            let shown = redact_address(address);
            let endpoint = endpoint_key(address).with_context(|| {
                format!("invalid Redis address `{shown}`: expected redis://host[:port][/db]")
            })?;
            match probe(address).await {
                Probe::Answered => {}
                Probe::Failed(err) => bail!("Redis at `{shown}`: {err}"),
                Probe::Absent(reason) if fallback => {
                    tracing::warn!(
                        address = %shown,
                        reason = %reason,
                        "Redis does not answer; serving its publish/subscribe with the embedded broker"
                    );
                    embedded.insert(endpoint, shown);
                }
                Probe::Absent(reason) => bail!(
                    "cannot connect to Redis at `{shown}`: {reason} (start a Redis server there, or set `{FALLBACK_SETTING} = true` under [application.tool.bazaar] to serve publish/subscribe in-process)"
                ),
            }
        }
        Ok(Self {
            inner: Arc::new(FactorInner {
                pool: Mutex::new(HashMap::new()),
                broker: EmbeddedBroker::new(),
                embedded,
            }),
        })
    }

    pub fn broker(&self) -> &EmbeddedBroker {
        &self.inner.broker
    }

    /// The broker endpoint serving `address`, if the embedded broker stands in for it.
    pub fn embedded_endpoint(&self, address: &str) -> Option<String> {
        endpoint_key(address).filter(|key| self.inner.embedded.contains_key(key))
    }

    /// Configured addresses served by the embedded broker (passwords redacted).
    pub fn embedded_addresses(&self) -> Vec<String> {
        self.inner.embedded.values().cloned().collect()
    }

    /// Fresh per-instance state for `component_id`.
    pub fn instance_state(
        &self,
        component_id: Arc<str>,
        allowed: Arc<AllowedHosts>,
        blocked: Arc<BlockedNetworks>,
    ) -> RedisInstance {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_OPEN_CONNECTIONS);
        RedisInstance {
            factor: self.clone(),
            component_id,
            allowed,
            blocked,
            table,
        }
    }

    /// The pooled connection for `address`, connecting on first use.
    async fn pooled(&self, address: &str) -> Result<ConnectionManager, Error> {
        let cell = {
            let mut pool = self
                .inner
                .pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pool.entry(address.to_owned()).or_default().clone()
        };
        let display = redact_address(address);
        cell.get_or_try_init(|| async {
            let client = redis::Client::open(address).map_err(|_| Error::InvalidAddress)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(5))
                .set_response_timeout(RESPONSE_TIMEOUT)
                // A guest waits a few seconds at most while Redis is down, not minutes.
                .set_number_of_retries(2)
                .set_max_delay(500);
            match tokio::time::timeout(
                CONNECT_TIMEOUT,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(Error::Other(format!(
                    "cannot connect to Redis at {display}: {e}"
                ))),
                Err(_) => Err(Error::Other(format!(
                    "cannot connect to Redis at {display}: timed out after {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))),
            }
        })
        .await
        .cloned()
    }
}

/// `[application.tool.bazaar] embedded_redis_fallback`: a boolean, default `true` (`bazaar up`
/// is a local runner; a laptop without Redis should still run the shop).
pub fn embedded_fallback_enabled(tool: &BTreeMap<String, toml::Table>) -> anyhow::Result<bool> {
    match tool.get("bazaar").and_then(|t| t.get(FALLBACK_SETTING)) {
        None => Ok(true),
        Some(toml::Value::Boolean(on)) => Ok(*on),
        Some(other) => bail!(
            "[application.tool.bazaar] {FALLBACK_SETTING} must be true or false, found {}",
            other.type_str()
        ),
    }
}

/// The rendered address a Redis trigger subscribes on: its own `address`, else
/// `[application.trigger.redis] address` (manifest loading guarantees one of them exists).
pub fn trigger_address(
    manifest: &Manifest,
    variables: &ResolvedVariables,
    trigger: &RedisTrigger,
) -> anyhow::Result<String> {
    let template = trigger
        .address
        .as_ref()
        .or(manifest.application.redis_address.as_ref())
        .with_context(|| {
            format!(
                "Redis trigger `{}` has no address and [application.trigger.redis] sets none",
                trigger.id
            )
        })?;
    variables
        .render(template)
        .with_context(|| format!("address of Redis trigger `{}`", trigger.id))
}

/// Every Redis address the manifest configures, rendered, without duplicates, in manifest order.
pub fn configured_addresses(
    manifest: &Manifest,
    variables: &ResolvedVariables,
) -> anyhow::Result<Vec<String>> {
    let mut addresses: Vec<String> = Vec::new();
    if let Some(template) = &manifest.application.redis_address {
        addresses.push(
            variables
                .render(template)
                .context("[application.trigger.redis] address")?,
        );
    }
    for trigger in &manifest.redis_triggers {
        let address = trigger_address(manifest, variables, trigger)?;
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

/// The server an address designates, as `host:port`: what pub/sub channels belong to (Redis
/// channels are per server, not per database). Loopback spellings are folded together so
/// `redis://localhost` and `redis://127.0.0.1:6379` reach the same embedded channels.
/// `None` if `address` is not a `redis://` or `rediss://` URL with a host.
pub fn endpoint_key(address: &str) -> Option<String> {
    let url = url::Url::parse(address.trim()).ok()?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return None;
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())?
        .to_ascii_lowercase();
    let host = match host.as_str() {
        "localhost" | "127.0.0.1" | "[::1]" => "localhost".to_owned(),
        _ => host,
    };
    Some(format!("{host}:{}", url.port().unwrap_or(6379)))
}

/// `redis://:secret@host` → `redis://:***@host`, for logs, errors and startup output.
pub fn redact_address(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

enum Probe {
    Answered,
    /// Nothing answers there (refused, unreachable, unresolvable, timed out).
    Absent(String),
    /// Something answered, but not as a usable Redis (authentication, protocol, ...).
    Failed(String),
}

async fn probe(address: &str) -> Probe {
    let client = match redis::Client::open(address) {
        Ok(client) => client,
        Err(e) => return Probe::Failed(format!("invalid address: {e}")),
    };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(_)) => Probe::Answered,
        Ok(Err(e))
            if e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout() =>
        {
            Probe::Absent(e.to_string())
        }
        Ok(Err(e)) => Probe::Failed(e.to_string()),
        Err(_) => Probe::Absent(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    }
}

/// Whether any address `address`'s host resolves to is in a blocked network. The connection
/// resolves the name again; a DNS answer that changes in between is not caught.
async fn resolves_to_blocked(address: &str, blocked: &BlockedNetworks) -> bool {
    let Ok(url) = url::Url::parse(address) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return blocked.blocks(ip);
    }
    match tokio::net::lookup_host((host, url.port().unwrap_or(6379))).await {
        Ok(addrs) => addrs.into_iter().any(|addr| blocked.blocks(addr.ip())),
        Err(_) => false,
    }
}

fn redis_error(e: redis::RedisError) -> Error {
    if e.kind() == redis::ErrorKind::TypeError || e.code() == Some("WRONGTYPE") {
        Error::TypeError
    } else {
        Error::Other(e.to_string())
    }
}

fn embedded_only(address: &str, operation: &str) -> Error {
    Error::Other(format!(
        "{address} is served by bazaar's embedded pub/sub broker, which supports only publish/subscribe, so `{operation}` is unavailable (no Redis server answered there at startup; start one and restart bazaar)"
    ))
}

/// Flattens a reply into `redis-result`s the way Spin does: arrays and sets are spliced in,
/// `OK` is `status("OK")`, doubles and big numbers become their text, booleans 0/1.
fn to_results(value: redis::Value, out: &mut Vec<RedisResult>) -> Result<(), Error> {
    use redis::Value;
    match value {
        Value::Nil => out.push(RedisResult::Nil),
        Value::Int(v) => out.push(RedisResult::Int64(v)),
        Value::BulkString(bytes) => out.push(RedisResult::Binary(bytes)),
        Value::SimpleString(s) => out.push(RedisResult::Status(s)),
        Value::Okay => out.push(RedisResult::Status("OK".to_owned())),
        Value::Double(v) => out.push(RedisResult::Binary(v.to_string().into_bytes())),
        Value::Boolean(v) => out.push(RedisResult::Int64(i64::from(v))),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                to_results(item, out)?;
            }
        }
        Value::ServerError(err) => {
            return Err(redis_error(redis::RedisError::from(err)));
        }
        other => {
            return Err(Error::Other(format!(
                "unsupported Redis reply type for execute: {other:?}"
            )));
        }
    }
    Ok(())
}

impl RedisInstance {
    fn target(&self, handle: &Resource<ConnectionHandle>) -> Result<Target, Error> {
        self.table
            .get(handle)
            .map(|h| h.target.clone())
            .map_err(|e| Error::Other(format!("invalid connection handle: {e}")))
    }

    /// The server connection behind `handle`, or the embedded-broker error for `operation`.
    fn server(
        &self,
        handle: &Resource<ConnectionHandle>,
        operation: &str,
    ) -> Result<ConnectionManager, Error> {
        match self.target(handle)? {
            Target::Server(conn) => Ok(conn),
            Target::Embedded { address, .. } => Err(embedded_only(&address, operation)),
        }
    }
}

impl redis_types::Host for RedisInstance {}
impl redis2::Host for RedisInstance {}

impl redis2::HostConnection for RedisInstance {
    async fn open(&mut self, address: String) -> Result<Resource<ConnectionHandle>, Error> {
        let shown = redact_address(&address);
        if !self.allowed.allows_str(&address, "redis") {
            tracing::warn!(
                component_id = %self.component_id,
                address = %shown,
                "outbound Redis denied: address not in allowed_outbound_hosts"
            );
            return Err(Error::InvalidAddress);
        }
        if endpoint_key(&address).is_none() {
            return Err(Error::InvalidAddress);
        }
        if !self.blocked.is_empty() && resolves_to_blocked(&address, &self.blocked).await {
            tracing::warn!(
                component_id = %self.component_id,
                address = %shown,
                "outbound Redis denied: destination is in a blocked network"
            );
            return Err(Error::Other(format!(
                "{shown} is in a network blocked by the runtime config (block_networks)"
            )));
        }
        let target = match self.factor.embedded_endpoint(&address) {
            Some(endpoint) => Target::Embedded {
                endpoint,
                address: shown,
            },
            None => Target::Server(self.factor.pooled(&address).await?),
        };
        self.table
            .push(ConnectionHandle { target })
            .map_err(|_| Error::TooManyConnections)
    }

    async fn publish(
        &mut self,
        self_: Resource<ConnectionHandle>,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        match self.target(&self_)? {
            Target::Server(mut conn) => redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map(drop)
                .map_err(redis_error),
            Target::Embedded { endpoint, .. } => {
                self.factor
                    .broker()
                    .publish(&endpoint, &channel, Bytes::from(payload));
                Ok(())
            }
        }
    }

    async fn get(
        &mut self,
        self_: Resource<ConnectionHandle>,
        key: String,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut conn = self.server(&self_, "get")?;
        redis::cmd("GET")
            .arg(key)
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn set(
        &mut self,
        self_: Resource<ConnectionHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        let mut conn = self.server(&self_, "set")?;
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn incr(&mut self, self_: Resource<ConnectionHandle>, key: String) -> Result<i64, Error> {
        let mut conn = self.server(&self_, "incr")?;
        redis::cmd("INCR")
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| {
                // The interface promises `type-error` for a value that is not an integer, which
                // Redis reports as a plain `ERR`.
                if e.detail().is_some_and(|d| d.contains("not an integer")) {
                    Error::TypeError
                } else {
                    redis_error(e)
                }
            })
    }

    async fn del(
        &mut self,
        self_: Resource<ConnectionHandle>,
        keys: Vec<String>,
    ) -> Result<u32, Error> {
        let mut conn = self.server(&self_, "del")?;
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<u32>(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn sadd(
        &mut self,
        self_: Resource<ConnectionHandle>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, Error> {
        let mut conn = self.server(&self_, "sadd")?;
        redis::cmd("SADD")
            .arg(key)
            .arg(values)
            .query_async::<u32>(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn smembers(
        &mut self,
        self_: Resource<ConnectionHandle>,
        key: String,
    ) -> Result<Vec<String>, Error> {
        let mut conn = self.server(&self_, "smembers")?;
        redis::cmd("SMEMBERS")
            .arg(key)
            .query_async::<Vec<String>>(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn srem(
        &mut self,
        self_: Resource<ConnectionHandle>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, Error> {
        let mut conn = self.server(&self_, "srem")?;
        redis::cmd("SREM")
            .arg(key)
            .arg(values)
            .query_async::<u32>(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn execute(
        &mut self,
        self_: Resource<ConnectionHandle>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> Result<Vec<RedisResult>, Error> {
        let name = command.trim().to_ascii_uppercase();
        let mut conn = match self.target(&self_)? {
            Target::Server(conn) => conn,
            // `PUBLISH channel payload` is the one command the embedded broker understands.
            Target::Embedded { endpoint, .. } if name == "PUBLISH" => {
                let [channel, payload] = <[RedisParameter; 2]>::try_from(arguments)
                    .map_err(|_| Error::Other("PUBLISH takes a channel and a payload".into()))?;
                let channel = match channel {
                    RedisParameter::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    RedisParameter::Int64(n) => n.to_string(),
                };
                let payload = match payload {
                    RedisParameter::Binary(bytes) => Bytes::from(bytes),
                    RedisParameter::Int64(n) => Bytes::from(n.to_string().into_bytes()),
                };
                let receivers = self.factor.broker().publish(&endpoint, &channel, payload);
                return Ok(vec![RedisResult::Int64(
                    i64::try_from(receivers).unwrap_or(i64::MAX),
                )]);
            }
            Target::Embedded { address, .. } => {
                return Err(embedded_only(&address, &command));
            }
        };
        if CONNECTION_STATE_COMMANDS.contains(&name.as_str()) {
            return Err(Error::Other(format!(
                "`{name}` changes connection state, and bazaar shares pooled Redis connections between instances; it is not available through execute (choose the database in the address, e.g. redis://host/2)"
            )));
        }
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(v) => cmd.arg(v),
                RedisParameter::Binary(v) => cmd.arg(v),
            };
        }
        let value = cmd
            .query_async::<redis::Value>(&mut conn)
            .await
            .map_err(redis_error)?;
        let mut results = Vec::new();
        to_results(value, &mut results)?;
        Ok(results)
    }

    async fn drop(&mut self, rep: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

/// `HasData` marker: the generated linker functions hand out `&mut RedisInstance`.
struct RedisData;

impl HasData for RedisData {
    type Data<'a> = &'a mut RedisInstance;
}

/// Links `fermyon:spin/redis@2.0.0` and the type-only `fermyon:spin/redis-types` (imported by
/// every component that exports `fermyon:spin/inbound-redis`) into `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut RedisInstance,
) -> anyhow::Result<()> {
    redis2::add_to_linker::<T, RedisData>(linker, get).map_err(|e| {
        anyhow::Error::from_boxed(e.into()).context("linking fermyon:spin/redis@2.0.0")
    })?;
    redis_types::add_to_linker::<T, RedisData>(linker, get).map_err(|e| {
        anyhow::Error::from_boxed(e.into()).context("linking fermyon:spin/redis-types")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis2::HostConnection as _;

    const REDIS: &str = "redis://127.0.0.1:6379";

    /// A second (borrowed) handle to the same table entry, as a guest method call would pass it.
    fn borrow(handle: &Resource<ConnectionHandle>) -> Resource<ConnectionHandle> {
        Resource::new_borrow(handle.rep())
    }

    fn instance(factor: &RedisFactor, allowed: &[&str]) -> RedisInstance {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        factor.instance_state(
            "test".into(),
            Arc::new(AllowedHosts::parse(&allowed, &[]).unwrap()),
            Arc::new(BlockedNetworks::default()),
        )
    }

    /// An address on a local port nothing listens on.
    fn dead_address() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis://127.0.0.1:{port}")
    }

    fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("bazaar-redis-unit-{prefix}-{}-{nanos}", std::process::id())
    }

    #[test]
    fn endpoints_are_host_and_port_with_loopback_folded() {
        assert_eq!(
            endpoint_key("redis://127.0.0.1:6379/2").as_deref(),
            Some("localhost:6379")
        );
        assert_eq!(
            endpoint_key("redis://LocalHost").as_deref(),
            Some("localhost:6379")
        );
        assert_eq!(
            endpoint_key("redis://[::1]:7000").as_deref(),
            Some("localhost:7000")
        );
        assert_eq!(
            endpoint_key("rediss://:pw@Cache.Example.com:6380").as_deref(),
            Some("cache.example.com:6380")
        );
        assert_eq!(endpoint_key("http://127.0.0.1:6379"), None);
        assert_eq!(endpoint_key("127.0.0.1:6379"), None);
        assert_eq!(endpoint_key("not a url"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_address("redis://user:hunter2@host:6379/1"),
            "redis://user:***@host:6379/1"
        );
        assert_eq!(redact_address("redis://host"), "redis://host");
    }

    #[test]
    fn fallback_setting_defaults_to_on_and_must_be_a_boolean() {
        let tool = |toml_text: &str| -> BTreeMap<String, toml::Table> {
            toml::from_str(toml_text).unwrap()
        };
        assert!(embedded_fallback_enabled(&BTreeMap::new()).unwrap());
        assert!(embedded_fallback_enabled(&tool("[bazaar]\nother = 1")).unwrap());
        assert!(
            embedded_fallback_enabled(&tool("[bazaar]\nembedded_redis_fallback = true")).unwrap()
        );
        assert!(
            !embedded_fallback_enabled(&tool("[bazaar]\nembedded_redis_fallback = false")).unwrap()
        );
        let err = embedded_fallback_enabled(&tool("[bazaar]\nembedded_redis_fallback = \"no\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "[application.tool.bazaar] embedded_redis_fallback must be true or false, found string"
        );
    }

    #[test]
    fn execute_replies_are_flattened_like_spin() {
        use redis::Value as V;
        let mut out = Vec::new();
        to_results(
            V::Array(vec![
                V::Nil,
                V::Int(-3),
                V::BulkString(vec![0, 255]),
                V::Okay,
                V::SimpleString("QUEUED".into()),
                V::Set(vec![V::Boolean(true), V::Double(1.5)]),
            ]),
            &mut out,
        )
        .unwrap();
        let shown: Vec<String> = out
            .iter()
            .map(|r| match r {
                RedisResult::Nil => "nil".to_owned(),
                RedisResult::Status(s) => format!("status:{s}"),
                RedisResult::Int64(n) => format!("int:{n}"),
                RedisResult::Binary(b) => format!("bin:{b:?}"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "nil",
                "int:-3",
                "bin:[0, 255]",
                "status:OK",
                "status:QUEUED",
                "int:1",
                "bin:[49, 46, 53]"
            ]
        );
        assert!(matches!(
            to_results(V::Map(vec![]), &mut Vec::new()),
            Err(Error::Other(_))
        ));
    }

    #[tokio::test]
    async fn an_absent_server_is_embedded_only_when_the_fallback_allows_it() {
        let dead = dead_address();
        let factor = RedisFactor::start(std::slice::from_ref(&dead), true)
            .await
            .unwrap();
        assert_eq!(factor.embedded_addresses(), vec![dead.clone()]);
        assert!(factor.embedded_endpoint(&dead).is_some());
        // Another spelling of the same server is the same endpoint; another server is not.
        let port = dead.rsplit(':').next().unwrap();
        assert!(
            factor
                .embedded_endpoint(&format!("redis://localhost:{port}/3"))
                .is_some()
        );
        assert!(factor.embedded_endpoint(REDIS).is_none());

        let err = RedisFactor::start(std::slice::from_ref(&dead), false)
            .await
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            err.starts_with(&format!("cannot connect to Redis at `{dead}`")),
            "{err}"
        );
        assert!(err.contains("embedded_redis_fallback = true"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        let err = RedisFactor::start(&["http://127.0.0.1:6379".to_owned()], true)
            .await
            .err()
            .expect("not a Redis URL")
            .to_string();
        assert!(err.starts_with("invalid Redis address"), "{err}");
    }

    #[tokio::test]
    async fn open_checks_allowed_outbound_hosts() {
        let factor = RedisFactor::start(&[], true).await.unwrap();
        let mut none = instance(&factor, &[]);
        assert!(matches!(
            none.open(REDIS.into()).await,
            Err(Error::InvalidAddress)
        ));
        let mut other_port = instance(&factor, &["redis://127.0.0.1:6380"]);
        assert!(matches!(
            other_port.open(REDIS.into()).await,
            Err(Error::InvalidAddress)
        ));
        // The scheme matters: an http rule does not open Redis.
        let mut http = instance(&factor, &["http://127.0.0.1:6379"]);
        assert!(matches!(
            http.open(REDIS.into()).await,
            Err(Error::InvalidAddress)
        ));
    }

    #[tokio::test]
    async fn blocked_networks_apply_to_redis() {
        let factor = RedisFactor::start(&[], true).await.unwrap();
        let mut inst = factor.instance_state(
            "test".into(),
            Arc::new(AllowedHosts::parse(&["redis://*:*".to_owned()], &[]).unwrap()),
            Arc::new(BlockedNetworks::parse(&["127.0.0.0/8".to_owned()]).unwrap()),
        );
        match inst.open(REDIS.into()).await {
            Err(Error::Other(msg)) => assert!(msg.contains("block_networks"), "{msg}"),
            Err(other) => panic!("expected Other, got {other:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[tokio::test]
    async fn embedded_connections_publish_to_the_broker_and_refuse_the_rest() {
        let dead = dead_address();
        let factor = RedisFactor::start(std::slice::from_ref(&dead), true)
            .await
            .unwrap();
        let endpoint = factor.embedded_endpoint(&dead).unwrap();
        let mut subscriber = factor.broker().subscribe(&endpoint, "events");
        let mut inst = instance(&factor, &["redis://127.0.0.1:*"]);
        let conn = inst.open(dead.clone()).await.unwrap();

        inst.publish(borrow(&conn), "events".into(), b"one".to_vec())
            .await
            .unwrap();
        assert_eq!(subscriber.recv().await.unwrap(), Bytes::from_static(b"one"));
        let receivers = inst
            .execute(
                borrow(&conn),
                "publish".into(),
                vec![
                    RedisParameter::Binary(b"events".to_vec()),
                    RedisParameter::Binary(b"two".to_vec()),
                ],
            )
            .await
            .unwrap();
        assert!(matches!(receivers.as_slice(), [RedisResult::Int64(1)]));
        assert_eq!(subscriber.recv().await.unwrap(), Bytes::from_static(b"two"));

        match inst.get(borrow(&conn), "k".into()).await {
            Err(Error::Other(msg)) => {
                assert!(msg.starts_with(&format!("{dead} is served by bazaar's embedded pub/sub broker, which supports only publish/subscribe")), "{msg}");
                assert!(msg.contains("`get`"), "{msg}");
            }
            other => panic!("expected Other, got {other:?}"),
        }
        assert!(matches!(
            inst.execute(borrow(&conn), "GET".into(), vec![]).await,
            Err(Error::Other(_))
        ));
        inst.drop(conn).await.unwrap();
        assert!(inst.table.is_empty());
    }

    /// Needs the Redis server at 127.0.0.1:6379; fails (does not skip) when it is unreachable.
    #[tokio::test]
    async fn real_redis_round_trip_through_one_pooled_connection() {
        let factor = RedisFactor::start(&[REDIS.to_owned()], false)
            .await
            .expect("Redis must be running at 127.0.0.1:6379 for this test");
        assert!(factor.embedded_addresses().is_empty());
        let mut inst = instance(&factor, &[REDIS]);
        let conn = inst
            .open(REDIS.into())
            .await
            .expect("Redis must be running at 127.0.0.1:6379 for this test");
        let second = inst.open(REDIS.into()).await.unwrap();
        assert_eq!(
            factor.inner.pool.lock().unwrap().len(),
            1,
            "one pooled connection"
        );

        let key = unique("key");
        let counter = unique("counter");
        let set = unique("set");
        // Unique keys: a failed assertion leaves nothing another run would trip over.
        {
            assert_eq!(inst.get(borrow(&conn), key.clone()).await.unwrap(), None);
            inst.set(borrow(&conn), key.clone(), vec![0, 159, 146, 150])
                .await
                .unwrap();
            assert_eq!(
                inst.get(borrow(&second), key.clone()).await.unwrap(),
                Some(vec![0, 159, 146, 150])
            );
            assert!(matches!(
                inst.incr(borrow(&conn), key.clone()).await,
                Err(Error::TypeError)
            ));
            assert_eq!(inst.incr(borrow(&conn), counter.clone()).await.unwrap(), 1);
            assert_eq!(
                inst.sadd(borrow(&conn), set.clone(), vec!["a".into(), "b".into()])
                    .await
                    .unwrap(),
                2
            );
            let mut members = inst.smembers(borrow(&conn), set.clone()).await.unwrap();
            members.sort();
            assert_eq!(members, ["a", "b"]);
            assert!(matches!(
                inst.get(borrow(&conn), set.clone()).await,
                Err(Error::TypeError)
            ));
            assert_eq!(
                inst.srem(borrow(&conn), set.clone(), vec!["a".into()])
                    .await
                    .unwrap(),
                1
            );
            match inst
                .execute(
                    borrow(&conn),
                    "select".into(),
                    vec![RedisParameter::Int64(1)],
                )
                .await
            {
                Err(Error::Other(msg)) => assert!(msg.contains("connection state"), "{msg}"),
                other => panic!("expected Other, got {other:?}"),
            }
            let results = inst
                .execute(
                    borrow(&conn),
                    "INCRBY".into(),
                    vec![
                        RedisParameter::Binary(counter.clone().into_bytes()),
                        RedisParameter::Int64(9),
                    ],
                )
                .await
                .unwrap();
            assert!(matches!(results.as_slice(), [RedisResult::Int64(10)]));
            // A server error is an error, not a result.
            assert!(
                inst.execute(borrow(&conn), "NOSUCHCOMMAND".into(), vec![])
                    .await
                    .is_err()
            );
        }
        let deleted = inst
            .del(
                borrow(&conn),
                vec![key.clone(), counter.clone(), set.clone()],
            )
            .await
            .unwrap();
        assert_eq!(deleted, 3);
    }
}
