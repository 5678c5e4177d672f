//! Publishes the outbox (payment events written in the same transaction as the state change) to
//! the Redis `payments` channel. At-least-once: an event is marked published only after Redis
//! accepted it; consumers deduplicate by the event's `id`. While Redis is down events wait.

use std::sync::Arc;
use std::time::Duration;

use super::store::Store;

pub async fn relay(store: Arc<Store>, address: String) {
    let client = match redis::Client::open(address.as_str()) {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "payments outbox: invalid redis_address; events stay in the outbox");
            return;
        }
    };
    let mut connection = None;
    let mut warned = false;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if connection.is_none() {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => {
                    connection = Some(c);
                    warned = false;
                }
                Err(err) => {
                    if !warned {
                        tracing::warn!(error = %err, "payments outbox: Redis unavailable; events are kept and retried");
                        warned = true;
                    }
                    continue;
                }
            }
        }
        let Ok(batch) = store.unpublished(100) else {
            continue;
        };
        for (seq, channel, payload) in batch {
            let Some(conn) = connection.as_mut() else {
                break;
            };
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&payload)
                .query_async(conn)
                .await;
            match published {
                Ok(_) => {
                    if let Err(err) = store.mark_published(seq, super::core::now_ms()) {
                        tracing::error!(error = %err, "payments outbox: marking an event published failed");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "payments outbox: publish failed; will retry");
                    connection = None;
                    break;
                }
            }
        }
    }
}
