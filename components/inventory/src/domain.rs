//! Inventory rules, free of I/O: quantities, the warehouse choice for a reservation, and
//! low-stock / restock crossings.

use serde::Serialize;

/// A warehouse's stock of one product as the allocation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseStock {
    pub warehouse_id: String,
    /// Lower is preferred.
    pub priority: i64,
    pub on_hand: i64,
    pub reserved: i64,
}

impl WarehouseStock {
    pub fn available(&self) -> i64 {
        (self.on_hand - self.reserved).max(0)
    }
}

/// Where the units of one reservation line come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    pub warehouse_id: String,
    pub quantity: i64,
}

/// Not enough stock for a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfStock {
    pub requested: i64,
    pub available: i64,
}

/// The warehouse rule, in order:
/// 1. one warehouse that can ship the whole line, the best priority first (ties: more
///    available first, then id) — one parcel beats several;
/// 2. otherwise split across warehouses in that same order until the line is filled;
/// 3. otherwise out of stock (nothing is allocated).
pub fn allocate(stock: &[WarehouseStock], quantity: i64) -> Result<Vec<Allocation>, OutOfStock> {
    let mut ordered: Vec<&WarehouseStock> = stock.iter().filter(|w| w.available() > 0).collect();
    ordered.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.available().cmp(&a.available()))
            .then(a.warehouse_id.cmp(&b.warehouse_id))
    });
    let total: i64 = ordered.iter().map(|w| w.available()).sum();
    if quantity <= 0 || total < quantity {
        return Err(OutOfStock {
            requested: quantity,
            available: total,
        });
    }
    if let Some(whole) = ordered.iter().find(|w| w.available() >= quantity) {
        return Ok(vec![Allocation {
            warehouse_id: whole.warehouse_id.clone(),
            quantity,
        }]);
    }
    let mut left = quantity;
    let mut allocations = Vec::new();
    for w in ordered {
        let take = w.available().min(left);
        allocations.push(Allocation {
            warehouse_id: w.warehouse_id.clone(),
            quantity: take,
        });
        left -= take;
        if left == 0 {
            break;
        }
    }
    Ok(allocations)
}

/// A restock alert, raised when a product's available stock crosses its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockAlert {
    /// Available fell below the threshold.
    Low,
    /// Available rose back to the threshold or above.
    Restocked,
}

impl StockAlert {
    pub fn event_type(self) -> &'static str {
        match self {
            StockAlert::Low => "inventory.stock_low",
            StockAlert::Restocked => "inventory.restocked",
        }
    }
}

/// The alert, if any, for a change of available stock from `before` to `after`.
/// `threshold` 0 disables alerts for the product.
pub fn crossing(before: i64, after: i64, threshold: i64) -> Option<StockAlert> {
    if threshold <= 0 {
        return None;
    }
    match (before >= threshold, after >= threshold) {
        (true, false) => Some(StockAlert::Low),
        (false, true) => Some(StockAlert::Restocked),
        _ => None,
    }
}

/// An id the API accepts for products, warehouses and reservations: 1..=64 of `[A-Za-z0-9_-]`.
pub fn parse_id(value: &str) -> Option<&str> {
    (!value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(value)
}

/// Reservation lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Held,
    Committed,
    Released,
    Expired,
    /// Committed units put back on the shelf (an order cancelled after payment).
    Returned,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Held => "held",
            ReservationState::Committed => "committed",
            ReservationState::Released => "released",
            ReservationState::Expired => "expired",
            ReservationState::Returned => "returned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "held" => ReservationState::Held,
            "committed" => ReservationState::Committed,
            "released" => ReservationState::Released,
            "expired" => ReservationState::Expired,
            "returned" => ReservationState::Returned,
            _ => return None,
        })
    }
}

/// What a commit or release request does to a reservation in `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Apply it.
    Apply,
    /// Already in the requested end state: answer success, change nothing (retries are safe).
    AlreadyDone,
    /// Not possible from here (e.g. committing a released reservation): 409.
    Illegal,
}

pub fn commit_transition(state: ReservationState) -> Transition {
    match state {
        ReservationState::Held => Transition::Apply,
        ReservationState::Committed | ReservationState::Returned => Transition::AlreadyDone,
        ReservationState::Released | ReservationState::Expired => Transition::Illegal,
    }
}

pub fn release_transition(state: ReservationState) -> Transition {
    match state {
        ReservationState::Held => Transition::Apply,
        ReservationState::Released | ReservationState::Expired => Transition::AlreadyDone,
        // Committed stock has left the shelf; putting it back is a return.
        ReservationState::Committed | ReservationState::Returned => Transition::Illegal,
    }
}

pub fn return_transition(state: ReservationState) -> Transition {
    match state {
        ReservationState::Committed => Transition::Apply,
        ReservationState::Returned => Transition::AlreadyDone,
        ReservationState::Held | ReservationState::Released | ReservationState::Expired => {
            Transition::Illegal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: &str, priority: i64, on_hand: i64, reserved: i64) -> WarehouseStock {
        WarehouseStock {
            warehouse_id: id.into(),
            priority,
            on_hand,
            reserved,
        }
    }

    #[test]
    fn one_warehouse_that_fits_beats_a_better_priority_that_does_not() {
        let stock = [w("near", 1, 3, 0), w("far", 2, 10, 0)];
        assert_eq!(
            allocate(&stock, 5).unwrap(),
            vec![Allocation {
                warehouse_id: "far".into(),
                quantity: 5
            }]
        );
        assert_eq!(
            allocate(&stock, 2).unwrap(),
            vec![Allocation {
                warehouse_id: "near".into(),
                quantity: 2
            }]
        );
    }

    #[test]
    fn splits_in_priority_order_when_no_single_warehouse_fits() {
        let stock = [w("b", 2, 4, 1), w("a", 1, 5, 0), w("c", 3, 9, 9)];
        assert_eq!(
            allocate(&stock, 7).unwrap(),
            vec![
                Allocation {
                    warehouse_id: "a".into(),
                    quantity: 5
                },
                Allocation {
                    warehouse_id: "b".into(),
                    quantity: 2
                },
            ]
        );
        assert_eq!(
            allocate(&stock, 9),
            Err(OutOfStock {
                requested: 9,
                available: 8
            })
        );
        assert!(allocate(&stock, 0).is_err());
        assert!(allocate(&[], 1).is_err());
    }

    #[test]
    fn over_reserved_rows_count_as_empty() {
        assert_eq!(w("x", 1, 2, 5).available(), 0);
    }

    #[test]
    fn alerts_fire_on_crossings_only() {
        assert_eq!(crossing(10, 4, 5), Some(StockAlert::Low));
        assert_eq!(crossing(4, 3, 5), None);
        assert_eq!(crossing(3, 5, 5), Some(StockAlert::Restocked));
        assert_eq!(crossing(6, 5, 5), None);
        assert_eq!(crossing(10, 0, 0), None);
    }

    #[test]
    fn transitions_are_idempotent_where_safe() {
        use ReservationState::*;
        assert_eq!(commit_transition(Held), Transition::Apply);
        assert_eq!(commit_transition(Committed), Transition::AlreadyDone);
        assert_eq!(commit_transition(Expired), Transition::Illegal);
        assert_eq!(release_transition(Released), Transition::AlreadyDone);
        assert_eq!(release_transition(Expired), Transition::AlreadyDone);
        assert_eq!(release_transition(Committed), Transition::Illegal);
        assert_eq!(return_transition(Committed), Transition::Apply);
        assert_eq!(return_transition(Returned), Transition::AlreadyDone);
        assert_eq!(return_transition(Held), Transition::Illegal);
        assert_eq!(commit_transition(Returned), Transition::AlreadyDone);
        for s in [Held, Committed, Released, Expired, Returned] {
            assert_eq!(ReservationState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn ids() {
        assert!(parse_id("prd_1").is_some());
        assert!(parse_id("").is_none());
        assert!(parse_id("a/b").is_none());
        assert!(parse_id(&"a".repeat(65)).is_none());
    }
}
