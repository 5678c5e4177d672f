//! Fraud scoring before authorization: an additive, explainable points model. Every rule that
//! fires adds points and a reason; the total decides allow / review / block against configured
//! thresholds. The decision and all reasons are stored with the payment (see docs/payments.md).

use serde::Serialize;

/// What is known about a payment attempt when it is scored. Counts cover earlier attempts
/// (successful or not) and do not include this one.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub amount: u64,
    pub user_attempts_last_hour: u64,
    pub card_attempts_last_hour: u64,
    pub ip_attempts_last_hour: u64,
    pub user_failures_last_day: u64,
    /// Amounts of the user's earlier successful (authorized or later) payments.
    pub user_history: Vec<u64>,
    /// Country of the card's issuer (from its BIN), when known.
    pub bin_country: Option<String>,
    /// Where the order ships, when the caller says.
    pub shipping_country: Option<String>,
    /// Age of the customer's account / e-mail address in days, when the caller says.
    pub account_age_days: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FraudConfig {
    pub review_at: u32,
    pub block_at: u32,
    /// Largest first purchase (minor units) that is not considered unusual.
    pub first_purchase_limit: u64,
    /// Issuer country per BIN prefix (longest prefix wins), e.g. `"424242" = "US"`.
    pub bin_countries: std::collections::BTreeMap<String, String>,
}

impl Default for FraudConfig {
    fn default() -> Self {
        let bin_countries = [
            ("424242", "US"),
            ("400000", "US"),
            ("410000", "US"),
            ("555555", "US"),
            // Stripe's country test cards (4000 00<ISO numeric>…), by their 8-digit BINs: the
            // vault hands the core no more than eight digits.
            ("40000007", "BR"),
            ("40000027", "DE"),
            ("40000025", "FR"),
            ("40000082", "GB"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        Self {
            review_at: 40,
            block_at: 70,
            first_purchase_limit: 100_000,
            bin_countries,
        }
    }
}

/// Parses the `fraud_bin_countries` variable: comma-separated `prefix=CC` pairs (a BIN prefix
/// of 1 to 11 digits, an ISO 3166-1 alpha-2 country), e.g. `424242=US, 4000002760=DE`.
pub fn parse_bin_countries(
    text: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut map = std::collections::BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (prefix, country) = entry
            .split_once('=')
            .map(|(p, c)| (p.trim(), c.trim()))
            .ok_or_else(|| format!("`{entry}` is not prefix=CC"))?;
        if prefix.is_empty() || prefix.len() > 11 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{prefix}` is not a BIN prefix of 1 to 11 digits"));
        }
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("`{country}` is not a two-letter country code"));
        }
        map.insert(prefix.to_string(), country.to_ascii_uppercase());
    }
    if map.is_empty() {
        return Err("no prefix=CC pairs".to_string());
    }
    Ok(map)
}

impl FraudConfig {
    /// The issuer country of a card from its BIN (or any longer prefix of its number).
    pub fn bin_country(&self, pan_prefix: &str) -> Option<String> {
        self.bin_countries
            .iter()
            .filter(|(prefix, _)| pan_prefix.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, country)| country.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Review,
    Block,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Review => "review",
            Self::Block => "block",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub rule: &'static str,
    pub points: u32,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    pub score: u32,
    pub decision: Decision,
    pub reasons: Vec<Reason>,
}

pub fn assess(signals: &Signals, config: &FraudConfig) -> Assessment {
    let mut reasons = Vec::new();
    let mut add = |rule: &'static str, points: u32, detail: String| {
        reasons.push(Reason {
            rule,
            points,
            detail,
        })
    };
    match signals.user_attempts_last_hour {
        n if n >= 10 => add(
            "velocity_user",
            50,
            format!("{n} payment attempts by this user in the last hour"),
        ),
        n if n >= 4 => add(
            "velocity_user",
            25,
            format!("{n} payment attempts by this user in the last hour"),
        ),
        _ => {}
    }
    if signals.card_attempts_last_hour >= 4 {
        let n = signals.card_attempts_last_hour;
        add(
            "velocity_card",
            25,
            format!("{n} payment attempts with this card in the last hour"),
        );
    }
    match signals.ip_attempts_last_hour {
        n if n >= 20 => add(
            "velocity_ip",
            40,
            format!("{n} payment attempts from this address in the last hour"),
        ),
        n if n >= 6 => add(
            "velocity_ip",
            20,
            format!("{n} payment attempts from this address in the last hour"),
        ),
        _ => {}
    }
    if signals.user_failures_last_day >= 3 {
        let n = signals.user_failures_last_day;
        add(
            "recent_failures",
            20,
            format!("{n} failed payments by this user in the last 24 hours"),
        );
    }
    if signals.user_history.len() >= 3 {
        let average = signals.user_history.iter().sum::<u64>() / signals.user_history.len() as u64;
        let average = average.max(1);
        if signals.amount > average.saturating_mul(10) {
            add(
                "amount_vs_history",
                40,
                format!("amount is over 10x the user's average of {average}"),
            );
        } else if signals.amount > average.saturating_mul(5) {
            add(
                "amount_vs_history",
                25,
                format!("amount is over 5x the user's average of {average}"),
            );
        }
    } else if signals.user_history.is_empty() && signals.amount > config.first_purchase_limit {
        add(
            "large_first_purchase",
            15,
            format!("first purchase above {}", config.first_purchase_limit),
        );
    }
    if let (Some(bin), Some(ship)) = (&signals.bin_country, &signals.shipping_country)
        && !bin.eq_ignore_ascii_case(ship)
    {
        add(
            "bin_country_mismatch",
            20,
            format!("card issued in {bin}, shipping to {ship}"),
        );
    }
    match signals.account_age_days {
        Some(0) => add("new_account", 15, "account created today".to_string()),
        Some(d) if d < 7 => add("new_account", 5, format!("account is {d} days old")),
        _ => {}
    }
    let score: u32 = reasons.iter().map(|r| r.points).sum();
    let decision = if score >= config.block_at {
        Decision::Block
    } else if score >= config.review_at {
        Decision::Review
    } else {
        Decision::Allow
    };
    Assessment {
        score,
        decision,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_test_cards_map_by_the_eight_digit_bin_the_vault_returns() {
        let config = FraudConfig::default();
        // Stripe's DE and GB test cards, as `vault.tokenize-card` reports their BINs.
        assert_eq!(config.bin_country("40000027").as_deref(), Some("DE"));
        assert_eq!(config.bin_country("40000082").as_deref(), Some("GB"));
        assert_eq!(config.bin_country("42424242").as_deref(), Some("US"));
        assert_eq!(config.bin_country("51051051"), None);
    }

    #[test]
    fn a_normal_payment_is_allowed_without_reasons() {
        let a = assess(
            &Signals {
                amount: 2000,
                user_history: vec![1500, 2500, 1800],
                ..Default::default()
            },
            &FraudConfig::default(),
        );
        assert_eq!(a.decision, Decision::Allow);
        assert!(a.reasons.is_empty());
    }

    #[test]
    fn signals_add_up_to_review_and_block() {
        let config = FraudConfig::default();
        let review = assess(
            &Signals {
                amount: 2000,
                bin_country: Some("US".into()),
                shipping_country: Some("DE".into()),
                account_age_days: Some(0),
                user_attempts_last_hour: 4,
                ..Default::default()
            },
            &config,
        );
        assert_eq!(review.score, 60);
        assert_eq!(review.decision, Decision::Review);
        let rules: Vec<&str> = review.reasons.iter().map(|r| r.rule).collect();
        assert_eq!(
            rules,
            ["velocity_user", "bin_country_mismatch", "new_account"]
        );
        let block = assess(
            &Signals {
                amount: 100_000,
                user_history: vec![1000; 5],
                ip_attempts_last_hour: 25,
                ..Default::default()
            },
            &config,
        );
        assert_eq!(block.score, 80);
        assert_eq!(block.decision, Decision::Block);
    }

    #[test]
    fn bin_country_lists_parse_strictly() {
        let map = parse_bin_countries(" 424242=us,4000002760 = DE ,").unwrap();
        assert_eq!(map.get("424242").map(String::as_str), Some("US"));
        assert_eq!(map.get("4000002760").map(String::as_str), Some("DE"));
        for bad in ["", "424242", "42x=US", "424242=USA", "=US", "424242=U1"] {
            assert!(parse_bin_countries(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn longest_bin_prefix_wins() {
        let config = FraudConfig::default();
        assert_eq!(
            config.bin_country("4000002760003184").as_deref(),
            Some("DE")
        );
        assert_eq!(
            config.bin_country("4000000000000002").as_deref(),
            Some("US")
        );
        assert_eq!(config.bin_country("3782822463").as_deref(), None);
    }
}
