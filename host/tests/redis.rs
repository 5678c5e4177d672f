//! Integration tests for Redis: the Redis trigger (fan-out, reconnection), outbound Redis
//! (`fermyon:spin/redis@2.0.0`) and the embedded pub/sub broker fallback.
//!
//! They need the Redis server at 127.0.0.1:6379 and fail (never skip) without it. Tests that
//! stop a server start their own `redis-server` on a free port instead of touching that one.
//! Every key and channel name is unique per test run, so tests may run in parallel.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Runner, free_port, get_json, runner};
use futures::StreamExt as _;
use serde_json::{Value, json};

const REDIS: &str = "redis://127.0.0.1:6379";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bazaar-test-{prefix}-{}-{nanos}", std::process::id())
}

/// Query-string encoding for probe parameters.
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn connect(address: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(address)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis must be running at {address} for this test: {e}"))
}

/// `PUBLISH` on a real server; returns how many subscriptions received it.
async fn publish(
    conn: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    payload: &[u8],
) -> i64 {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(conn)
        .await
        .unwrap()
}

/// What the redis-probe components report, read from their reply channel on the real Redis.
struct Replies {
    stream: redis::aio::PubSubStream,
}

impl Replies {
    async fn subscribe(channel: &str) -> Self {
        let mut pubsub = redis::Client::open(REDIS)
            .unwrap()
            .get_async_pubsub()
            .await
            .expect("Redis must be running at 127.0.0.1:6379 for this test");
        pubsub.subscribe(channel).await.unwrap();
        Self {
            stream: pubsub.into_on_message(),
        }
    }

    /// The next `n` replies (sorted, lossy UTF-8), or fewer if `within` runs out.
    async fn take(&mut self, n: usize, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(msg)) => {
                    out.push(String::from_utf8_lossy(msg.get_payload_bytes()).into_owned())
                }
                _ => break,
            }
        }
        out.sort();
        out
    }

    async fn take_raw(&mut self, within: Duration) -> Option<Vec<u8>> {
        match tokio::time::timeout(within, self.stream.next()).await {
            Ok(Some(msg)) => Some(msg.get_payload_bytes().to_vec()),
            _ => None,
        }
    }
}

/// A `[component.<id>]` of the redis-probe fixture reporting to `reply_channel` on the real Redis.
fn subscriber(id: &str, reply_channel: &str, extra_hosts: &[&str]) -> String {
    let mut hosts = vec![format!("\"{REDIS}\"")];
    hosts.extend(extra_hosts.iter().map(|h| format!("\"{h}\"")));
    format!(
        r#"
[component.{id}]
source = "{{redis_probe}}"
allowed_outbound_hosts = [{hosts}]
[component.{id}.variables]
name = "{id}"
reply_address = "{REDIS}"
reply_channel = "{reply_channel}"
"#,
        hosts = hosts.join(", ")
    )
}

/// A private `redis-server` this test may stop and start again.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let mut this = Self { port, child: None };
        this.restart();
        this
    }

    fn address(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let client = redis::Client::open(self.address()).unwrap();
            if let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stdout_text(app: &Runner) -> String {
    app.stdout.lock().unwrap().join("\n")
}

/// Waits (bounded) until the runner's stdout satisfies `predicate` (the banner is printed right
/// after the `Serving` line the harness waits for).
fn wait_for_stdout(app: &Runner, predicate: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if predicate(&stdout_text(app)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Redis trigger
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_message_runs_every_subscriber_of_its_channel() {
    let channel = unique("orders");
    let other = unique("payments");
    let reply = unique("replies");
    let manifest = format!(
        r#"
spin_manifest_version = 2
[application]
name = "redis-fanout"
[application.trigger.redis]
address = "{REDIS}"

[[trigger.redis]]
channel = "{channel}"
component = "sub-a"
[[trigger.redis]]
channel = "{channel}"
component = "sub-b"
[[trigger.redis]]
channel = "{other}"
component = "sub-c"
{a}{b}{c}"#,
        a = subscriber("sub-a", &reply, &[]),
        b = subscriber("sub-b", &reply, &[]),
        c = subscriber("sub-c", &reply, &[]),
    );
    let mut replies = Replies::subscribe(&reply).await;
    let app = runner(&manifest).start();
    assert!(
        wait_for_stdout(&app, |out| out.contains("Redis subscriptions:")
            && out.contains(&format!("sub-b: {REDIS} channel `{channel}`"))),
        "{}",
        stdout_text(&app)
    );
    let mut conn = connect(REDIS).await;

    // One SUBSCRIBE per distinct channel: the server sees a single subscriber.
    assert_eq!(publish(&mut conn, &channel, b"hello").await, 1);
    assert_eq!(
        replies.take(2, Duration::from_secs(20)).await,
        vec!["sub-a:hello".to_string(), "sub-b:hello".to_string()]
    );
    assert!(
        replies.take(1, Duration::from_millis(500)).await.is_empty(),
        "sub-c listens on another channel"
    );

    assert_eq!(publish(&mut conn, &other, b"paid").await, 1);
    assert_eq!(
        replies.take(1, Duration::from_secs(20)).await,
        vec!["sub-c:paid".to_string()]
    );

    // The payload reaches the guest byte for byte.
    publish(&mut conn, &other, &[0xff, 0x00, b'z']).await;
    assert_eq!(
        replies.take_raw(Duration::from_secs(20)).await,
        Some(b"sub-c:\xff\x00z".to_vec())
    );

    // Handler errors and traps are logged with the component id; the trigger keeps going.
    publish(&mut conn, &channel, b"fail").await;
    assert_eq!(replies.take(2, Duration::from_secs(20)).await.len(), 2);
    publish(&mut conn, &other, b"trap").await;
    assert!(
        app.wait_for_stderr(|err| {
            let errors: Vec<&str> = err
                .lines()
                .filter(|l| l.contains("Redis handler returned an error"))
                .collect();
            errors
                .iter()
                .any(|l| l.contains("\"component_id\":\"sub-a\""))
                && errors
                    .iter()
                    .any(|l| l.contains("\"component_id\":\"sub-b\""))
                && err.lines().any(|l| {
                    l.contains("component failed to handle the Redis message")
                        && l.contains("\"component_id\":\"sub-c\"")
                })
        }),
        "{}",
        app.stderr_text()
    );
    publish(&mut conn, &channel, b"still-there").await;
    assert_eq!(
        replies.take(2, Duration::from_secs(20)).await,
        vec![
            "sub-a:still-there".to_string(),
            "sub-b:still-there".to_string()
        ]
    );
}

#[tokio::test]
async fn the_trigger_reconnects_after_redis_restarts() {
    let mut server = PrivateRedis::start(free_port());
    let channel = unique("restart");
    let reply = unique("restart-replies");
    let manifest = format!(
        r#"
spin_manifest_version = 2
[application]
name = "redis-restart"

[[trigger.redis]]
address = "{address}"
channel = "{channel}"
component = "sub"
{sub}"#,
        address = server.address(),
        sub = subscriber("sub", &reply, &[]),
    );
    let mut replies = Replies::subscribe(&reply).await;
    let app = runner(&manifest).start();
    let mut conn = connect(&server.address()).await;
    assert_eq!(publish(&mut conn, &channel, b"before").await, 1);
    assert_eq!(
        replies.take(1, Duration::from_secs(20)).await,
        vec!["sub:before".to_string()]
    );

    server.stop();
    assert!(
        app.wait_for_stderr(|err| err.contains("Redis trigger lost its connection")
            && err.contains("Redis trigger reconnect attempt failed")),
        "{}",
        app.stderr_text()
    );
    server.restart();

    // Resubscribed once a PUBLISH on the new server reaches a subscriber (backoff is capped
    // at 5 s, so this takes a few seconds at most).
    let mut conn = connect(&server.address()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while publish(&mut conn, &channel, b"after").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the trigger did not resubscribe: {}",
            app.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        replies.take(1, Duration::from_secs(20)).await,
        vec!["sub:after".to_string()]
    );
    assert!(
        app.stderr_text()
            .contains("Redis trigger reconnected and resubscribed"),
        "{}",
        app.stderr_text()
    );
    // Every reconnect attempt is a JSON log line with its attempt number.
    let attempts = app
        .stderr_text()
        .lines()
        .filter(|l| {
            l.contains("\"message\":\"Redis trigger reconnecting\"") && l.contains("\"attempt\":")
        })
        .count();
    assert!(attempts >= 1, "{}", app.stderr_text());
}

#[tokio::test]
async fn a_redis_trigger_component_must_export_inbound_redis() {
    let (code, stderr) = runner(&format!(
        r#"
spin_manifest_version = 2
[application]
name = "not-redis"
[[trigger.redis]]
address = "{REDIS}"
channel = "{channel}"
component = "web"
[component.web]
source = "{{probe}}"
"#,
        channel = unique("nobody")
    ))
    .expect_startup_failure();
    assert_eq!(code, 1);
    assert!(
        stderr.contains("component `web` is used by a Redis trigger but does not export fermyon:spin/inbound-redis"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Outbound Redis
// ---------------------------------------------------------------------------------------------

const OUTBOUND_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "redis-outbound"
[[trigger.http]]
route = "/allowed"
component = "allowed"
[[trigger.http]]
route = "/wrong-port"
component = "wrong-port"
[[trigger.http]]
route = "/none"
component = "none"
[component.allowed]
source = "{probe}"
allowed_outbound_hosts = ["redis://127.0.0.1:6379", "redis://127.0.0.1:1"]
[component.wrong-port]
source = "{probe}"
allowed_outbound_hosts = ["redis://127.0.0.1:6380"]
[component.none]
source = "{probe}"
"#;

/// Runs one redis probe op as component `route` against `address`; `rest` is extra query text.
async fn redis_op(app: &Runner, route: &str, address: &str, op: &str, rest: &str) -> Value {
    let url = app.url(&format!(
        "/{route}?probe=redis&address={}&op={op}{rest}",
        enc(address)
    ));
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200, "{url}: {body}");
    body
}

#[tokio::test]
async fn outbound_redis_commands_on_an_allowed_address() {
    let app = runner(OUTBOUND_APP).start();
    let k = unique("k");
    let (str_key, counter, set, set2, list) = (
        format!("{k}-str"),
        format!("{k}-counter"),
        format!("{k}-set"),
        format!("{k}-set2"),
        format!("{k}-list"),
    );
    let op = |op: &'static str, rest: String| {
        let app = &app;
        async move { redis_op(app, "allowed", REDIS, op, &rest).await }
    };

    let result = async {
        assert_eq!(op("open", String::new()).await, json!({"ok": null}));
        assert_eq!(
            op("get", format!("&key={str_key}")).await,
            json!({"ok": null})
        );
        assert_eq!(
            op("set", format!("&key={str_key}&value=v%C3%A9")).await,
            json!({"ok": null})
        );
        assert_eq!(
            op("get", format!("&key={str_key}")).await,
            json!({"ok": "vé"})
        );
        assert_eq!(
            op("incr", format!("&key={counter}")).await,
            json!({"ok": 1})
        );
        assert_eq!(
            op("incr", format!("&key={counter}")).await,
            json!({"ok": 2})
        );
        assert_eq!(
            op("incr", format!("&key={str_key}")).await,
            json!({"error": "type-error"})
        );
        assert_eq!(
            op("sadd", format!("&key={set}&values=b,a")).await,
            json!({"ok": 2})
        );
        assert_eq!(
            op("sadd", format!("&key={set}&values=a,c")).await,
            json!({"ok": 1})
        );
        assert_eq!(
            op("smembers", format!("&key={set}")).await,
            json!({"ok": ["a", "b", "c"]})
        );
        assert_eq!(
            op("srem", format!("&key={set}&values=b,zz")).await,
            json!({"ok": 1})
        );
        assert_eq!(
            op("get", format!("&key={set}")).await,
            json!({"error": "type-error"}),
            "GET on a set"
        );
        assert_eq!(
            op("execute", format!("&command=SET&args={set2},x")).await,
            json!({"ok": [{"status": "OK"}]})
        );
        assert_eq!(
            op("execute", format!("&command=GET&args={set2}")).await,
            json!({"ok": ["x"]})
        );
        assert_eq!(
            op("execute", format!("&command=INCRBY&args={counter},int:40")).await,
            json!({"ok": [42]})
        );
        assert_eq!(
            op("execute", format!("&command=RPUSH&args={list},one,two")).await,
            json!({"ok": [2]})
        );
        // Array replies are flattened, nil is null.
        assert_eq!(
            op(
                "execute",
                format!("&command=LRANGE&args={list},int:0,int:-1")
            )
            .await,
            json!({"ok": ["one", "two"]})
        );
        assert_eq!(
            op("execute", format!("&command=MGET&args={set2},{k}-missing")).await,
            json!({"ok": ["x", null]})
        );
        // Pooled connections are shared: connection-state commands are refused.
        let select = op("execute", "&command=SELECT&args=int:1".into()).await;
        assert!(
            select["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("other:") && e.contains("connection state")),
            "{select}"
        );
        assert_eq!(
            op(
                "del",
                format!("&keys={str_key},{counter},{set},{set2},{list},{k}-missing")
            )
            .await,
            json!({"ok": 5})
        );

        // Publish reaches real subscribers.
        let channel = unique("outbound-publish");
        let mut subscriber = Replies::subscribe(&channel).await;
        assert_eq!(
            op("publish", format!("&channel={channel}&value=ping")).await,
            json!({"ok": null})
        );
        assert_eq!(
            subscriber.take(1, Duration::from_secs(10)).await,
            vec!["ping".to_string()]
        );
    }
    .await;
    let mut conn = connect(REDIS).await;
    let _: i64 = redis::cmd("DEL")
        .arg(&[&str_key, &counter, &set, &set2, &list])
        .query_async(&mut conn)
        .await
        .unwrap();
    result
}

#[tokio::test]
async fn outbound_redis_is_denied_outside_allowed_outbound_hosts() {
    let app = runner(OUTBOUND_APP).start();
    for route in ["wrong-port", "none"] {
        assert_eq!(
            redis_op(&app, route, REDIS, "get", "&key=x").await,
            json!({"error": "invalid-address"}),
            "{route}"
        );
    }
    // Allowed hosts are matched with the redis scheme's default port.
    assert_eq!(
        redis_op(&app, "allowed", "redis://127.0.0.1", "open", "").await,
        json!({"ok": null})
    );
    assert_eq!(
        redis_op(&app, "allowed", "redis://127.0.0.2:6379", "open", "").await,
        json!({"error": "invalid-address"})
    );
    assert!(
        app.wait_for_stderr(|err| err.lines().any(
            |l| l.contains("outbound Redis denied") && l.contains("\"component_id\":\"none\"")
        )),
        "{}",
        app.stderr_text()
    );
    // Allowed but nothing listening: a clear `other` error, not a hang.
    let refused = redis_op(&app, "allowed", "redis://127.0.0.1:1", "get", "&key=x").await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("other: cannot connect to Redis at redis://127.0.0.1:1")),
        "{refused}"
    );
}

// ---------------------------------------------------------------------------------------------
// Embedded broker fallback
// ---------------------------------------------------------------------------------------------

fn fallback_app(port: u16, channel: &str, reply: &str, setting: &str) -> String {
    let address = format!("redis://127.0.0.1:{port}");
    format!(
        r#"
spin_manifest_version = 2
[application]
name = "redis-fallback"
[application.trigger.redis]
address = "{address}"
{setting}

[[trigger.http]]
route = "/pub"
component = "pub"
[[trigger.redis]]
channel = "{channel}"
component = "sub"

[component.pub]
source = "{{probe}}"
allowed_outbound_hosts = ["{address}", "redis://localhost:{port}"]
{sub}"#,
        sub = subscriber("sub", reply, &[]),
    )
}

#[tokio::test]
async fn without_a_redis_server_the_embedded_broker_serves_publish_subscribe() {
    let port = free_port(); // nothing listens there
    let address = format!("redis://127.0.0.1:{port}");
    let channel = unique("embedded");
    let reply = unique("embedded-replies");
    let mut replies = Replies::subscribe(&reply).await;
    // The fallback is on by default.
    let app = runner(&fallback_app(port, &channel, &reply, "")).start();
    assert!(
        wait_for_stdout(&app, |out| {
            out.contains(&format!(
            "Redis {address} did not answer: bazaar's embedded broker serves its publish/subscribe in-process"
        )) && out.contains(&format!("sub: {address} channel `{channel}` (embedded broker)"))
        }),
        "{}",
        stdout_text(&app)
    );

    // An HTTP component's publish reaches the Redis-triggered component.
    assert_eq!(
        redis_op(
            &app,
            "pub",
            &address,
            "publish",
            &format!("&channel={channel}&value=hi")
        )
        .await,
        json!({"ok": null})
    );
    assert_eq!(
        replies.take(1, Duration::from_secs(20)).await,
        vec!["sub:hi".to_string()]
    );
    // `localhost` is the same server as 127.0.0.1; `execute PUBLISH` reports the receivers.
    assert_eq!(
        redis_op(
            &app,
            "pub",
            &format!("redis://localhost:{port}"),
            "execute",
            &format!("&command=PUBLISH&args={channel},again")
        )
        .await,
        json!({"ok": [1]})
    );
    assert_eq!(
        replies.take(1, Duration::from_secs(20)).await,
        vec!["sub:again".to_string()]
    );

    // Anything but publish/subscribe fails clearly.
    for (op, rest) in [
        ("get", "&key=k"),
        ("set", "&key=k&value=v"),
        ("incr", "&key=k"),
    ] {
        let answer = redis_op(&app, "pub", &address, op, rest).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("other: ")
                && error.contains("embedded pub/sub broker, which supports only publish/subscribe"),
            "{op}: {answer}"
        );
    }
}

#[tokio::test]
async fn without_a_redis_server_and_the_fallback_disabled_startup_fails() {
    let port = free_port();
    let manifest = fallback_app(
        port,
        &unique("no-fallback"),
        &unique("no-fallback-replies"),
        "[application.tool.bazaar]\nembedded_redis_fallback = false",
    );
    let (code, stderr) = runner(&manifest).expect_startup_failure();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to Redis at `redis://127.0.0.1:{port}`"
        )) && stderr.contains("embedded_redis_fallback = true"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_a_redis_server_the_real_one_is_used_even_with_the_fallback_on() {
    let channel = unique("real");
    let reply = unique("real-replies");
    let mut replies = Replies::subscribe(&reply).await;
    let app = runner(&fallback_app(6379, &channel, &reply, "")).start();
    assert!(
        wait_for_stdout(&app, |out| out.contains("Redis subscriptions:")),
        "{}",
        stdout_text(&app)
    );
    assert!(
        !stdout_text(&app).contains("embedded"),
        "{}",
        stdout_text(&app)
    );
    // A publish from outside the runner reaches the component: the subscription is real.
    let mut conn = connect(REDIS).await;
    assert_eq!(publish(&mut conn, &channel, b"outside").await, 1);
    assert_eq!(
        replies.take(1, Duration::from_secs(20)).await,
        vec!["sub:outside".to_string()]
    );
    // And get/set work on that address.
    let key = unique("real-key");
    assert_eq!(
        redis_op(&app, "pub", REDIS, "set", &format!("&key={key}&value=1")).await,
        json!({"ok": null})
    );
    assert_eq!(
        redis_op(&app, "pub", REDIS, "del", &format!("&keys={key}")).await,
        json!({"ok": 1})
    );
}
