//! Lots: available points grouped by the instant they expire.
//!
//! Lots are kept sorted soonest-expiring first, with never-expiring points
//! last, and merged by expiry instant, so spending "soonest first" is a walk
//! from the front.

use super::event::LotDraw;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Available points that expire together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// `None`: these points never expire.
    pub expires_at: Option<Timestamp>,
    /// Always > 0 while the lot exists.
    pub points: i64,
}

/// Orders expiry instants soonest first, `None` (never) last.
pub(crate) fn expiry_order(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Adds points to the lot with this expiry, creating it in order.
pub(crate) fn add(lots: &mut Vec<Lot>, expires_at: Option<Timestamp>, points: i64) {
    debug_assert!(points > 0);
    match lots.binary_search_by(|lot| expiry_order(lot.expires_at, expires_at)) {
        Ok(i) => {
            lots[i].points = lots[i]
                .points
                .checked_add(points)
                .expect("handler checked the balance for overflow");
        }
        Err(i) => {
            super::state::room_for_one(lots);
            lots.insert(i, Lot { expires_at, points })
        }
    }
}

/// Takes drawn points out of their lots. The draws were computed from this
/// same state, so every lot exists and holds enough.
pub(crate) fn remove(lots: &mut Vec<Lot>, draws: &[LotDraw]) {
    for draw in draws {
        let i = lots
            .binary_search_by(|lot| expiry_order(lot.expires_at, draw.expires_at))
            .expect("a drawn lot exists");
        lots[i].points = lots[i]
            .points
            .checked_sub(draw.points)
            .expect("a lot never goes below zero");
        assert!(lots[i].points >= 0, "a lot never goes below zero");
        if lots[i].points == 0 {
            lots.remove(i);
        }
    }
}

/// Plans drawing `points` from `lots`: first from the lot expiring at
/// `preferred` (if given and present), then soonest-expiring first. Draws
/// at most what the lots hold; the caller compares the total with what it
/// asked for.
pub(crate) fn plan_draw(
    lots: &[Lot],
    points: i64,
    preferred: Option<Option<Timestamp>>,
) -> Vec<LotDraw> {
    let mut left = points;
    let mut draws = Vec::new();
    if let Some(preferred) = preferred {
        if let Some(lot) = lots.iter().find(|l| l.expires_at == preferred) {
            let take = left.min(lot.points);
            if take > 0 {
                draws.push(LotDraw {
                    expires_at: lot.expires_at,
                    points: take,
                });
                left -= take;
            }
        }
    }
    for lot in lots {
        if left == 0 {
            break;
        }
        if Some(lot.expires_at) == preferred {
            continue;
        }
        let take = left.min(lot.points);
        draws.push(LotDraw {
            expires_at: lot.expires_at,
            points: take,
        });
        left -= take;
    }
    draws
}

/// Sum of drawn points.
pub(crate) fn total(draws: &[LotDraw]) -> i64 {
    draws.iter().map(|d| d.points).sum()
}
