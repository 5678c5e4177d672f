//! The Redis trigger (spin-reference §4): `[[trigger.redis]]` subscribes a component to a
//! channel; each message runs every component subscribed to that channel, each in a fresh
//! instance, concurrently, with the raw payload.
//!
//! As in Spin: one connection per distinct address, one `SUBSCRIBE` per distinct channel,
//! messages of one connection handled in order (the next waits until every subscriber of the
//! previous one returned), handler errors only logged, at-most-once delivery (messages
//! published while disconnected are lost).
//!
//! Bazaar differs in two ways. Where Spin exits when the subscription connection ends, the
//! runner reconnects with exponential backoff (capped at [`MAX_BACKOFF`]) and resubscribes,
//! logging each attempt; and an address the factor put on the embedded broker (see
//! `factors::redis`) is served from that in-process broker instead of a server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::app::{App, AppComponent, InstanceState};
use crate::factors::redis::{redact_address, trigger_address};

/// Bindings of the export spin-sdk 5.x `#[redis_component]` produces.
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/redis",
        world: "bazaar:runner/redis-trigger",
        exports: { default: async },
    });
}

use bindings::RedisTriggerPre as InboundRedisPre;

/// First delay before reconnecting a lost subscription; doubled after each failed attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Longest delay between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Upper bound for connecting and subscribing once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One resolved `[[trigger.redis]]`, for the startup output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub component: String,
    /// Password redacted.
    pub address: String,
    pub channel: String,
    /// Served by the embedded broker rather than a Redis server.
    pub embedded: bool,
}

/// The Redis trigger of one app: what to subscribe to, resolved and validated.
pub struct RedisTrigger {
    app: Arc<App>,
    servers: Vec<Arc<Server>>,
}

/// One distinct address and the channels subscribed on it.
struct Server {
    address: String,
    /// `address` with its password redacted, for logs.
    shown: String,
    /// The broker endpoint when the embedded broker serves this address.
    embedded: Option<String>,
    /// Channel → its subscribers, in manifest order.
    channels: BTreeMap<String, Vec<Arc<Subscriber>>>,
}

struct Subscriber {
    component: Arc<AppComponent>,
    pre: InboundRedisPre<InstanceState>,
}

/// The running trigger; [`RedisTriggerHandle::stop`] ends it.
pub struct RedisTriggerHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisTrigger {
    /// Resolves every `[[trigger.redis]]` (templates rendered, components checked to export
    /// `fermyon:spin/inbound-redis`) without connecting to anything.
    pub fn new(app: Arc<App>) -> anyhow::Result<Arc<Self>> {
        let mut by_address: BTreeMap<String, BTreeMap<String, Vec<Arc<Subscriber>>>> =
            BTreeMap::new();
        for trigger in &app.manifest.redis_triggers {
            let address = trigger_address(&app.manifest, &app.variables, trigger)?;
            let channel = app
                .variables
                .render(&trigger.channel)
                .with_context(|| format!("channel of Redis trigger `{}`", trigger.id))?;
            let component = app
                .components
                .get(&trigger.component)
                .cloned()
                .with_context(|| {
                    format!(
                        "Redis trigger `{}` uses unknown component `{}`",
                        trigger.id, trigger.component
                    )
                })?;
            let pre = InboundRedisPre::new(component.pre.clone()).map_err(|_| {
                anyhow::anyhow!(
                    "component `{}` is used by a Redis trigger but does not export fermyon:spin/inbound-redis (build it with spin-sdk's #[redis_component])",
                    trigger.component
                )
            })?;
            by_address
                .entry(address)
                .or_default()
                .entry(channel)
                .or_default()
                .push(Arc::new(Subscriber { component, pre }));
        }
        let servers = by_address
            .into_iter()
            .map(|(address, channels)| {
                Arc::new(Server {
                    shown: redact_address(&address),
                    embedded: app.redis.embedded_endpoint(&address),
                    address,
                    channels,
                })
            })
            .collect();
        Ok(Arc::new(Self { app, servers }))
    }

    /// Every (component, address, channel), grouped by address then channel.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut out = Vec::new();
        for server in &self.servers {
            for (channel, subscribers) in &server.channels {
                for subscriber in subscribers {
                    out.push(Subscription {
                        component: subscriber.component.id.to_string(),
                        address: server.shown.clone(),
                        channel: channel.clone(),
                        embedded: server.embedded.is_some(),
                    });
                }
            }
        }
        out
    }

    /// Subscribes everywhere, then keeps delivering in background tasks. The first connection
    /// to each server is made before this returns, so a message published once the runner says
    /// it is serving is not missed; if it fails, the background task keeps retrying.
    pub async fn start(self: &Arc<Self>) -> RedisTriggerHandle {
        let (shutdown, watcher) = watch::channel(false);
        let mut tasks = Vec::new();
        for server in &self.servers {
            match &server.embedded {
                Some(endpoint) => {
                    for channel in server.channels.keys() {
                        let receiver = self.app.redis.broker().subscribe(endpoint, channel);
                        tasks.push(tokio::spawn(self.clone().run_embedded(
                            server.clone(),
                            channel.clone(),
                            receiver,
                            watcher.clone(),
                        )));
                    }
                }
                None => {
                    let first = match subscribe(server).await {
                        Ok(pubsub) => {
                            tracing::info!(
                                address = %server.shown,
                                channels = ?server.channels.keys().collect::<Vec<_>>(),
                                "Redis trigger subscribed"
                            );
                            Some(pubsub)
                        }
                        Err(err) => {
                            tracing::warn!(
                                address = %server.shown,
                                error = format!("{err:#}"),
                                "Redis trigger cannot subscribe yet; retrying in the background"
                            );
                            None
                        }
                    };
                    tasks.push(tokio::spawn(self.clone().run_server(
                        server.clone(),
                        first,
                        watcher.clone(),
                    )));
                }
            }
        }
        RedisTriggerHandle { shutdown, tasks }
    }

    /// Delivers messages from a Redis server until shutdown, reconnecting whenever the
    /// subscription connection is lost.
    async fn run_server(
        self: Arc<Self>,
        server: Arc<Server>,
        mut pubsub: Option<redis::aio::PubSub>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut attempt: u32 = 0;
        loop {
            let mut connection = match pubsub.take() {
                Some(connection) => connection,
                None => {
                    attempt += 1;
                    let delay = backoff(attempt);
                    tracing::warn!(
                        address = %server.shown,
                        attempt,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "Redis trigger reconnecting"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                    match subscribe(&server).await {
                        Ok(connection) => {
                            tracing::info!(
                                address = %server.shown,
                                attempt,
                                "Redis trigger reconnected and resubscribed"
                            );
                            attempt = 0;
                            connection
                        }
                        Err(err) => {
                            tracing::warn!(
                                address = %server.shown,
                                attempt,
                                error = format!("{err:#}"),
                                "Redis trigger reconnect attempt failed"
                            );
                            continue;
                        }
                    }
                }
            };
            let mut messages = connection.on_message();
            loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => {
                            let channel = message.get_channel_name().to_owned();
                            let payload = message.get_payload_bytes().to_vec();
                            self.dispatch(&server, &channel, payload).await;
                        }
                        None => {
                            tracing::warn!(
                                address = %server.shown,
                                "Redis trigger lost its connection; messages published until it reconnects are lost"
                            );
                            break;
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    /// Delivers messages of one channel of the embedded broker until shutdown (one task per
    /// channel, so ordering holds within a channel rather than per connection).
    async fn run_embedded(
        self: Arc<Self>,
        server: Arc<Server>,
        channel: String,
        mut receiver: broadcast::Receiver<bytes::Bytes>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                message = receiver.recv() => match message {
                    Ok(payload) => self.dispatch(&server, &channel, payload.to_vec()).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            address = %server.shown,
                            channel = %channel,
                            missed,
                            "Redis trigger fell behind the embedded broker; messages dropped"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Runs every subscriber of `channel` on `payload`, each in its own fresh instance and
    /// task, and waits for all of them.
    async fn dispatch(&self, server: &Server, channel: &str, payload: Vec<u8>) {
        let Some(subscribers) = server.channels.get(channel) else {
            tracing::warn!(
                address = %server.shown,
                channel,
                "Redis message on a channel nobody subscribed to"
            );
            return;
        };
        let payload = Arc::new(payload);
        let runs = subscribers.iter().map(|subscriber| {
            let app = self.app.clone();
            let subscriber = subscriber.clone();
            let payload = payload.clone();
            let channel = channel.to_owned();
            tokio::spawn(async move { handle_message(&app, &subscriber, &channel, payload).await })
        });
        for run in futures::future::join_all(runs).await {
            if let Err(join) = run {
                tracing::error!(channel, error = %join, "Redis handler task failed");
            }
        }
    }
}

impl RedisTriggerHandle {
    /// Stops subscribing; messages being handled get up to `timeout` to finish.
    pub async fn stop(self, timeout: Duration) {
        if self.tasks.is_empty() {
            return;
        }
        let _ = self.shutdown.send(true);
        let mut tasks = self.tasks;
        let wait = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(timeout, wait).await.is_err() {
            tracing::warn!("Redis trigger: handlers still running at shutdown were abandoned");
            for task in &tasks {
                task.abort();
            }
        } else {
            tracing::info!("Redis trigger stopped");
        }
    }
}

/// Runs one fresh instance of `subscriber` on one message; never fails (errors are logged with
/// the component id).
async fn handle_message(app: &App, subscriber: &Subscriber, channel: &str, payload: Arc<Vec<u8>>) {
    let started = Instant::now();
    let component_id = &subscriber.component.id;
    let span = crate::telemetry::redis_message_span(component_id, channel);
    let result: anyhow::Result<_> = async {
        let mut store = app.new_store(&subscriber.component, None)?;
        let instance = subscriber.pre.instantiate_async(&mut store).await?;
        Ok(instance
            .fermyon_spin_inbound_redis()
            .call_handle_message(&mut store, &payload)
            .await?)
    }
    .instrument(span)
    .await;
    crate::telemetry::record_request("redis", &app.manifest.application.name, component_id);
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(())) => {
            tracing::info!(component_id = %component_id, channel, duration_ms, "redis message")
        }
        Ok(Err(_)) => tracing::error!(
            component_id = %component_id,
            channel,
            duration_ms,
            "Redis handler returned an error"
        ),
        Err(err) => tracing::error!(
            component_id = %component_id,
            channel,
            duration_ms,
            error = format!("{err:#}"),
            "component failed to handle the Redis message"
        ),
    }
}

/// Connects to `server` and subscribes to all its channels.
async fn subscribe(server: &Server) -> anyhow::Result<redis::aio::PubSub> {
    let attempt = async {
        let client = redis::Client::open(server.address.as_str())?;
        let mut pubsub = client.get_async_pubsub().await?;
        for channel in server.channels.keys() {
            pubsub.subscribe(channel).await?;
        }
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result.with_context(|| format!("subscribing on Redis at {}", server.shown)),
        Err(_) => anyhow::bail!(
            "subscribing on Redis at {}: timed out after {}s",
            server.shown,
            CONNECT_TIMEOUT.as_secs()
        ),
    }
}

/// Delay before reconnection attempt `attempt` (1-based): doubling from [`INITIAL_BACKOFF`],
/// capped at [`MAX_BACKOFF`].
fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    INITIAL_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let delays: Vec<u128> = (1..=8).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(delays, vec![250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
