//! Time as the domain sees it: an input, never read from a clock here.

use serde::{Deserialize, Serialize};

/// Milliseconds in one day.
pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus `days` whole days, or `None` on overflow.
    pub fn plus_days(self, days: u32) -> Option<Timestamp> {
        i64::from(days)
            .checked_mul(DAY_MS)
            .and_then(|ms| self.0.checked_add(ms))
            .map(Timestamp)
    }

    /// The first UTC midnight strictly after this instant plus `days` days.
    ///
    /// Points expire at day boundaries so that all points earned on one day
    /// share one lot: the number of lots an enrollment holds is bounded by
    /// the number of days in the expiry period, not by its number of earns.
    pub fn midnight_after_days(self, days: u32) -> Option<Timestamp> {
        let t = self.plus_days(days)?.0;
        let next = t.div_euclid(DAY_MS).checked_add(1)?.checked_mul(DAY_MS)?;
        Some(Timestamp(next))
    }
}
