//! Bazaar's embedded publish/subscribe broker.
//!
//! `bazaar up` must run the whole shop on a laptop without a Redis server. When a Redis address
//! the app is configured with does not answer at startup (and `[application.tool.bazaar]
//! embedded_redis_fallback` allows it), publish/subscribe for that address is served here,
//! in-process: the Redis trigger subscribes to this broker and outbound `publish` on a connection
//! to that address lands here. Nothing else of Redis is emulated.
//!
//! Semantics follow Redis pub/sub: channels belong to a server (not to a database number),
//! delivery is at-most-once, a message published with no subscriber is dropped, and `publish`
//! reports how many subscribers received it. A subscriber that falls more than
//! [`CHANNEL_CAPACITY`] messages behind loses the oldest ones (Redis would disconnect it instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::broadcast;

/// Messages buffered per channel for the slowest subscriber.
pub const CHANNEL_CAPACITY: usize = 1024;

/// `(endpoint, channel)` → sender. An entry exists while someone subscribes to it.
type Channels = HashMap<(String, String), broadcast::Sender<Bytes>>;

/// Shared by the outbound Redis factor and the Redis trigger. Cheap to clone.
#[derive(Clone, Default)]
pub struct EmbeddedBroker {
    channels: Arc<Mutex<Channels>>,
}

impl EmbeddedBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to `channel` of the server `endpoint` (see [`super::endpoint_key`]).
    pub fn subscribe(&self, endpoint: &str, channel: &str) -> broadcast::Receiver<Bytes> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .entry((endpoint.to_owned(), channel.to_owned()))
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Delivers `payload` to every current subscriber of `channel` on `endpoint`; returns how
    /// many there were, like Redis' `PUBLISH`.
    pub fn publish(&self, endpoint: &str, channel: &str, payload: Bytes) -> usize {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (endpoint.to_owned(), channel.to_owned());
        let Some(sender) = channels.get(&key) else {
            return 0;
        };
        match sender.send(payload) {
            Ok(receivers) => receivers,
            Err(_) => {
                // Every subscriber is gone: forget the channel so the map does not grow forever.
                channels.remove(&key);
                0
            }
        }
    }

    /// Number of live subscriptions to `channel` on `endpoint`.
    pub fn subscribers(&self, endpoint: &str, channel: &str) -> usize {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .get(&(endpoint.to_owned(), channel.to_owned()))
            .map_or(0, broadcast::Sender::receiver_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    #[tokio::test]
    async fn every_subscriber_of_a_channel_gets_each_message_in_order() {
        let broker = EmbeddedBroker::new();
        let mut a = broker.subscribe("localhost:6379", "orders");
        let mut b = broker.subscribe("localhost:6379", "orders");
        assert_eq!(broker.subscribers("localhost:6379", "orders"), 2);

        assert_eq!(
            broker.publish("localhost:6379", "orders", Bytes::from_static(b"one")),
            2
        );
        assert_eq!(
            broker.publish("localhost:6379", "orders", Bytes::from(vec![0, 255])),
            2
        );
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"one"));
            assert_eq!(rx.recv().await.unwrap(), Bytes::from(vec![0, 255]));
        }
    }

    #[tokio::test]
    async fn channels_and_servers_are_separate() {
        let broker = EmbeddedBroker::new();
        let mut orders = broker.subscribe("localhost:6379", "orders");
        let mut other_server = broker.subscribe("localhost:6380", "orders");
        let mut payments = broker.subscribe("localhost:6379", "payments");

        assert_eq!(
            broker.publish("localhost:6379", "orders", Bytes::from_static(b"x")),
            1
        );
        assert_eq!(orders.recv().await.unwrap(), Bytes::from_static(b"x"));
        assert!(matches!(other_server.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(payments.try_recv(), Err(TryRecvError::Empty)));
    }

    #[tokio::test]
    async fn publishing_without_subscribers_drops_the_message() {
        let broker = EmbeddedBroker::new();
        assert_eq!(
            broker.publish("localhost:6379", "nobody", Bytes::from_static(b"lost")),
            0
        );
        // A later subscriber does not see earlier messages (no replay, as in Redis).
        let mut late = broker.subscribe("localhost:6379", "nobody");
        assert!(matches!(late.try_recv(), Err(TryRecvError::Empty)));

        // Once every subscriber is gone the channel is forgotten.
        drop(late);
        assert_eq!(
            broker.publish("localhost:6379", "nobody", Bytes::from_static(b"x")),
            0
        );
        assert!(broker.channels.lock().unwrap().is_empty());
        assert_eq!(broker.subscribers("localhost:6379", "nobody"), 0);
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_the_oldest_messages_but_keeps_going() {
        let broker = EmbeddedBroker::new();
        let mut slow = broker.subscribe("localhost:6379", "firehose");
        for i in 0..CHANNEL_CAPACITY + 3 {
            broker.publish(
                "localhost:6379",
                "firehose",
                Bytes::from(i.to_string().into_bytes()),
            );
        }
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(3))));
        assert_eq!(slow.recv().await.unwrap(), Bytes::from_static(b"3"));
    }
}
