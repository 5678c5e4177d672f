//! The payment state machine and money, free of I/O so every transition is unit-tested.
//!
//! ```text
//! requires_authorization ──authorize──▶ authorized ──capture──▶ captured ──refund──▶ partially_refunded ──▶ refunded
//!        │                                  │                                (refund while refundable > 0)
//!        └──decline / fraud block──▶ failed  └──void / expiry──▶ voided
//! ```

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    RequiresAuthorization,
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    Voided,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresAuthorization => "requires_authorization",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Voided => "voided",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "requires_authorization" => Self::RequiresAuthorization,
            "authorized" => Self::Authorized,
            "captured" => Self::Captured,
            "partially_refunded" => Self::PartiallyRefunded,
            "refunded" => Self::Refunded,
            "voided" => Self::Voided,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// An ISO 4217 code: three upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())).then(|| Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Amounts are positive and bounded so sums of captures and refunds cannot overflow `i64` in
/// storage (the bound is far above any single real payment).
pub const MAX_AMOUNT: u64 = 1_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(u64);

impl Amount {
    pub fn parse(value: i64) -> Option<Self> {
        u64::try_from(value)
            .ok()
            .filter(|v| (1..=MAX_AMOUNT).contains(v))
            .map(Self)
    }
    pub fn get(&self) -> u64 {
        self.0
    }
}

/// A rejected transition: the operation and the state it was attempted in.
#[derive(Debug, PartialEq, Eq)]
pub struct Transition {
    pub message: String,
}

fn illegal(op: &str, status: Status) -> Transition {
    Transition {
        message: format!("cannot {op} a payment that is {}", status.as_str()),
    }
}

/// The money figures of a payment, whose invariants the operations below keep:
/// `captured <= authorized`, `refunded <= captured`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    pub status: Status,
    pub authorized: u64,
    pub captured: u64,
    pub refunded: u64,
}

impl Ledger {
    /// Checks a capture of `amount` (default: everything authorized) and returns the amount.
    pub fn capture(&self, amount: Option<u64>) -> Result<u64, Transition> {
        if self.status != Status::Authorized {
            return Err(illegal("capture", self.status));
        }
        let amount = amount.unwrap_or(self.authorized);
        if amount == 0 || amount > self.authorized {
            return Err(Transition {
                message: format!("capture amount must be 1..={}", self.authorized),
            });
        }
        Ok(amount)
    }

    pub fn void(&self) -> Result<(), Transition> {
        match self.status {
            Status::Authorized | Status::RequiresAuthorization => Ok(()),
            other => Err(illegal("void", other)),
        }
    }

    /// Checks a refund of `amount` (default: everything still refundable).
    pub fn refund(&self, amount: Option<u64>) -> Result<u64, Transition> {
        if !matches!(self.status, Status::Captured | Status::PartiallyRefunded) {
            return Err(illegal("refund", self.status));
        }
        let refundable = self.captured.saturating_sub(self.refunded);
        let amount = amount.unwrap_or(refundable);
        if amount == 0 || amount > refundable {
            return Err(Transition {
                message: format!("refund amount must be 1..={refundable}"),
            });
        }
        Ok(amount)
    }

    /// The status after `refunded` has been refunded in total.
    pub fn after_refund(&self, refunded: u64) -> Status {
        if refunded >= self.captured {
            Status::Refunded
        } else {
            Status::PartiallyRefunded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(status: Status, authorized: u64, captured: u64, refunded: u64) -> Ledger {
        Ledger {
            status,
            authorized,
            captured,
            refunded,
        }
    }

    #[test]
    fn capture_rules() {
        let l = ledger(Status::Authorized, 1000, 0, 0);
        assert_eq!(l.capture(None), Ok(1000));
        assert_eq!(l.capture(Some(400)), Ok(400));
        assert!(l.capture(Some(1001)).is_err());
        assert!(l.capture(Some(0)).is_err());
        for s in [
            Status::Captured,
            Status::Voided,
            Status::Failed,
            Status::Refunded,
            Status::RequiresAuthorization,
        ] {
            assert!(ledger(s, 1000, 0, 0).capture(None).is_err(), "{s:?}");
        }
    }

    #[test]
    fn refund_rules_up_to_the_captured_amount() {
        let l = ledger(Status::Captured, 1000, 600, 0);
        assert_eq!(l.refund(None), Ok(600));
        assert_eq!(l.refund(Some(200)), Ok(200));
        assert!(l.refund(Some(601)).is_err());
        let partly = ledger(Status::PartiallyRefunded, 1000, 600, 500);
        assert_eq!(partly.refund(None), Ok(100));
        assert!(partly.refund(Some(101)).is_err());
        assert_eq!(partly.after_refund(600), Status::Refunded);
        assert_eq!(l.after_refund(200), Status::PartiallyRefunded);
        assert!(ledger(Status::Authorized, 1000, 0, 0).refund(None).is_err());
        assert!(
            ledger(Status::Refunded, 1000, 600, 600)
                .refund(None)
                .is_err()
        );
    }

    #[test]
    fn void_only_before_capture() {
        assert!(ledger(Status::Authorized, 1, 0, 0).void().is_ok());
        assert!(ledger(Status::Captured, 1, 1, 0).void().is_err());
        assert!(ledger(Status::Voided, 1, 0, 0).void().is_err());
    }

    #[test]
    fn money_parsing() {
        assert!(Amount::parse(0).is_none());
        assert!(Amount::parse(-5).is_none());
        assert!(Amount::parse(MAX_AMOUNT as i64 + 1).is_none());
        assert_eq!(Amount::parse(1999).unwrap().get(), 1999);
        assert!(Currency::parse("EUR").is_some());
        assert!(Currency::parse("eur").is_none());
        assert!(Currency::parse("EURO").is_none());
        for s in [
            "requires_authorization",
            "authorized",
            "captured",
            "partially_refunded",
            "refunded",
            "voided",
            "failed",
        ] {
            assert_eq!(Status::parse(s).unwrap().as_str(), s);
        }
    }
}
