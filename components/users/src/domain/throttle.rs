//! Failed-login throttling.
//!
//! A counter per subject (an account's e-mail key, or a client address) counts failed logins in
//! a window that opens at the first failure and lasts [`Policy::window_ms`]; once `limit`
//! failures are in the window, further attempts for that subject are refused with 429 until the
//! window ends, even with the right password (otherwise the lock would tell an attacker when they
//! guessed right). The next failure after the window ends opens a new one.
//!
//! The counters live in SQL and are bumped with one atomic upsert whose `CASE` expressions are
//! [`after_failure`] (see `store::record_failure`), so concurrent failures are never lost.

/// A limit per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub limit: i64,
    pub window_ms: i64,
}

/// Fifteen minutes.
pub const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failures per account (e-mail) per window: a password guesser gets 5 tries per 15 minutes.
pub const PER_ACCOUNT: Policy = Policy {
    limit: 5,
    window_ms: WINDOW_MS,
};
/// Failures per client address per window: room for a household or office behind one NAT
/// mistyping, not for credential stuffing across many accounts.
pub const PER_CLIENT: Policy = Policy {
    limit: 20,
    window_ms: WINDOW_MS,
};

/// A subject's stored counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// Unix millis of the first failure of the current window.
    pub window_start: i64,
    pub failures: i64,
}

/// `Ok` when an attempt may proceed, else the whole seconds until it may (for `Retry-After`).
pub fn check(counter: Option<Counter>, policy: Policy, now_ms: i64) -> Result<(), u64> {
    let Some(counter) = counter else {
        return Ok(());
    };
    let window_end = counter.window_start.saturating_add(policy.window_ms);
    if now_ms >= window_end || counter.failures < policy.limit {
        return Ok(());
    }
    let remaining_ms = (window_end - now_ms).max(0) as u64;
    Err(remaining_ms.div_ceil(1000).max(1))
}

/// The counter after one more failure at `now_ms` (what the SQL upsert computes).
pub fn after_failure(counter: Option<Counter>, policy: Policy, now_ms: i64) -> Counter {
    match counter {
        Some(c) if now_ms < c.window_start.saturating_add(policy.window_ms) => Counter {
            window_start: c.window_start,
            failures: c.failures + 1,
        },
        _ => Counter {
            window_start: now_ms,
            failures: 1,
        },
    }
}

/// The subject key of an account.
pub fn account_subject(email_key: &str) -> String {
    format!("account:{email_key}")
}

/// The subject key of a client address.
pub fn client_subject(addr: &str) -> String {
    format!("client:{}", client_ip(addr))
}

/// The IP of `ip`, `ip:port` or `[v6]:port`: the port changes with every connection and must not
/// give a client a fresh counter.
fn client_ip(addr: &str) -> &str {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        // Exactly one colon: IPv4 with a port. More: a bare IPv6 address.
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        limit: 3,
        window_ms: 60_000,
    };

    #[test]
    fn blocks_at_the_limit_until_the_window_ends() {
        let mut counter = None;
        let start = 1_000_000;
        for i in 0..3 {
            assert_eq!(check(counter, P, start + i), Ok(()), "attempt {i}");
            counter = Some(after_failure(counter, P, start + i));
        }
        assert_eq!(counter.unwrap().failures, 3);
        assert_eq!(counter.unwrap().window_start, start);
        assert_eq!(check(counter, P, start + 10), Err(60));
        assert_eq!(check(counter, P, start + 59_001), Err(1));
        assert_eq!(check(counter, P, start + 59_999), Err(1));
        assert_eq!(check(counter, P, start + 60_000), Ok(()));
    }

    #[test]
    fn a_failure_after_the_window_opens_a_new_one() {
        let old = Counter {
            window_start: 0,
            failures: 7,
        };
        assert_eq!(
            after_failure(Some(old), P, 60_000),
            Counter {
                window_start: 60_000,
                failures: 1
            }
        );
        assert_eq!(after_failure(Some(old), P, 59_999).failures, 8);
        assert_eq!(after_failure(None, P, 5).failures, 1);
    }

    #[test]
    fn the_shipped_policies() {
        assert_eq!(PER_ACCOUNT.limit, 5);
        assert_eq!(PER_CLIENT.limit, 20);
        assert_eq!(PER_ACCOUNT.window_ms, 900_000);
        let five = Counter {
            window_start: 0,
            failures: 5,
        };
        assert_eq!(check(Some(five), PER_ACCOUNT, 0), Err(900));
        assert_eq!(check(Some(five), PER_CLIENT, 0), Ok(()));
    }

    #[test]
    fn clients_are_keyed_by_ip_without_port() {
        assert_eq!(client_subject("203.0.113.9:51234"), "client:203.0.113.9");
        assert_eq!(client_subject("203.0.113.9"), "client:203.0.113.9");
        assert_eq!(client_subject("[2001:db8::1]:443"), "client:2001:db8::1");
        assert_eq!(client_subject("2001:db8::1"), "client:2001:db8::1");
        assert_eq!(account_subject("a@b.co"), "account:a@b.co");
    }
}
