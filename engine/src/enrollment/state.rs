//! The state of one enrollment and how events change it.

use super::event::EnrollmentEvent;
use super::lots::{self, Lot};
use crate::ids::{BusinessId, CustomerId, EnrollmentId, ProgramId, TransactionId};
use crate::limits::{REVERSAL_WINDOW_DAYS, REVERSIBLE_DRAWS_MAX, REVERSIBLE_TRANSACTIONS_MAX};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// Points of one earn waiting out the program's pending period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLot {
    pub transaction_id: TransactionId,
    /// Always > 0 while the lot exists.
    pub points: i64,
    pub available_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// What a reversal of a recent transaction needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReversibleKind {
    /// An earn, whose points went to the lot expiring at `expires_at`.
    Earn { expires_at: Option<Timestamp> },
    /// A redeem, and the lots its points came from.
    Redeem { drawn: Vec<super::LotDraw> },
}

/// A recent earn or redeem that may still be reversed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReversibleTransaction {
    pub transaction_id: TransactionId,
    pub at: Timestamp,
    /// Points of the original transaction.
    pub points: i64,
    /// Points already covered by reversals; never above `points`.
    pub reversed: i64,
    pub kind: ReversibleKind,
}

/// An upper bound of the transaction ids an enrollment remembers, so that a
/// new id above it is known to be unused without looking through all of
/// `recent` (up to 256 entries, a cache miss each: the largest cost of a
/// decision before). A cache, not state: snapshots skip it, comparisons
/// ignore it, and it is worked out from `recent` when first needed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NewestTransactionId(pub(crate) Option<TransactionId>);

impl PartialEq for NewestTransactionId {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for NewestTransactionId {}

/// One customer in one program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub enrollment_id: EnrollmentId,
    pub business_id: BusinessId,
    pub customer_id: CustomerId,
    pub program_id: ProgramId,
    pub enrolled_at: Timestamp,
    /// Points that can be spent now: always the sum of `lots`, never below zero.
    pub points_available: i64,
    /// Points earned but still pending: always the sum of `pending`.
    pub points_pending: i64,
    /// Points ever made available, less reversed earns. Tiers follow it.
    pub points_lifetime: i64,
    /// The current tier's name. Shared, not copied: every earn's answer
    /// and in-flight figures carry it, and cloning a `String` was an
    /// allocation each time. Stored as a string (serde writes an `Arc<str>`
    /// as it writes a `String`).
    pub tier: Option<Arc<str>>,
    /// Available points by expiry, soonest first.
    pub lots: Vec<Lot>,
    /// Pending earns, oldest first.
    pub pending: Vec<PendingLot>,
    /// Earns and redeems that can still be reversed, oldest first; bounded
    /// by count and by age.
    pub recent: VecDeque<ReversibleTransaction>,
    /// Number of events applied; the version of the first event is 1.
    pub version: u64,
    /// Not stored: see [`NewestTransactionId`].
    #[serde(skip)]
    pub(crate) newest_transaction_id: NewestTransactionId,
}

/// Makes room for one more entry, giving an empty list room for exactly
/// one. Most active enrollments hold one lot, no pending earn and a few
/// recent transactions, and a list's first growth is to four entries:
/// for an enrollment with one earn, that spare room was a third of its
/// memory. From the second entry on, lists grow as usual (to 4, 8, ...).
pub(crate) fn room_for_one<T>(list: &mut Vec<T>) {
    if list.is_empty() {
        list.reserve_exact(1);
    }
}

/// What a balance query answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    pub enrollment_id: EnrollmentId,
    pub business_id: BusinessId,
    pub customer_id: CustomerId,
    pub program_id: ProgramId,
    pub balance: i64,
    pub pending: i64,
    pub lifetime_points: i64,
    pub tier: Option<String>,
    pub version: u64,
}

impl Enrollment {
    /// The state an `Enrolled` event creates, at version 1.
    pub fn from_enrolled(event: &EnrollmentEvent, at: Timestamp) -> Enrollment {
        let EnrollmentEvent::Enrolled {
            enrollment_id,
            business_id,
            customer_id,
            program_id,
            tier,
        } = event
        else {
            panic!("an enrollment starts with its Enrolled event");
        };
        Enrollment {
            enrollment_id: *enrollment_id,
            business_id: *business_id,
            customer_id: *customer_id,
            program_id: *program_id,
            enrolled_at: at,
            points_available: 0,
            points_pending: 0,
            points_lifetime: 0,
            tier: tier.as_deref().map(Arc::from),
            lots: Vec::new(),
            pending: Vec::new(),
            recent: VecDeque::new(),
            version: 1,
            newest_transaction_id: NewestTransactionId::default(),
        }
    }

    pub fn view(&self) -> BalanceView {
        BalanceView {
            enrollment_id: self.enrollment_id,
            business_id: self.business_id,
            customer_id: self.customer_id,
            program_id: self.program_id,
            balance: self.points_available,
            pending: self.points_pending,
            lifetime_points: self.points_lifetime,
            tier: self.tier.as_deref().map(str::to_owned),
            version: self.version,
        }
    }

    /// Applies one event recorded at `at`. Never fails: the handler that
    /// produced the event checked every bound. A panic here is a bug, and
    /// the invariant checks at the end make it loud rather than silent.
    pub fn apply(&mut self, event: &EnrollmentEvent, at: Timestamp) {
        match event {
            EnrollmentEvent::Enrolled { .. } => {
                panic!("Enrolled is only the first event; use Enrollment::from_enrolled")
            }
            EnrollmentEvent::PointsEarned {
                transaction_id,
                points,
                available_at,
                expires_at,
                ..
            } => {
                match available_at {
                    Some(available_at) => {
                        room_for_one(&mut self.pending);
                        self.pending.push(PendingLot {
                            transaction_id: *transaction_id,
                            points: *points,
                            available_at: *available_at,
                            expires_at: *expires_at,
                        });
                        self.points_pending = checked(self.points_pending.checked_add(*points));
                    }
                    None => {
                        lots::add(&mut self.lots, *expires_at, *points);
                        self.points_available = checked(self.points_available.checked_add(*points));
                        self.points_lifetime = checked(self.points_lifetime.checked_add(*points));
                    }
                }
                self.remember(ReversibleTransaction {
                    transaction_id: *transaction_id,
                    at,
                    points: *points,
                    reversed: 0,
                    kind: ReversibleKind::Earn {
                        expires_at: *expires_at,
                    },
                });
            }
            EnrollmentEvent::PointsMatured {
                transaction_id,
                points,
                expires_at,
            } => {
                let i = self
                    .pending
                    .iter()
                    .position(|p| p.transaction_id == *transaction_id)
                    .expect("a matured earn is pending");
                self.pending.remove(i);
                self.points_pending = checked(self.points_pending.checked_sub(*points));
                lots::add(&mut self.lots, *expires_at, *points);
                self.points_available = checked(self.points_available.checked_add(*points));
                self.points_lifetime = checked(self.points_lifetime.checked_add(*points));
            }
            EnrollmentEvent::PointsRedeemed {
                transaction_id,
                points,
                drawn,
                ..
            } => {
                lots::remove(&mut self.lots, drawn);
                self.points_available = checked(self.points_available.checked_sub(*points));
                self.remember(ReversibleTransaction {
                    transaction_id: *transaction_id,
                    at,
                    points: *points,
                    reversed: 0,
                    kind: ReversibleKind::Redeem {
                        drawn: drawn.clone(),
                    },
                });
            }
            EnrollmentEvent::PointsReversed {
                reversed_transaction_id,
                points,
                from_pending,
                lots_drawn,
                lots_restored,
                lifetime_delta,
                ..
            } => {
                if *from_pending > 0 {
                    let i = self
                        .pending
                        .iter()
                        .position(|p| p.transaction_id == *reversed_transaction_id)
                        .expect("a pending reversal finds its pending earn");
                    self.pending[i].points =
                        checked(self.pending[i].points.checked_sub(*from_pending));
                    if self.pending[i].points == 0 {
                        self.pending.remove(i);
                    }
                    self.points_pending = checked(self.points_pending.checked_sub(*from_pending));
                }
                lots::remove(&mut self.lots, lots_drawn);
                self.points_available =
                    checked(self.points_available.checked_sub(lots::total(lots_drawn)));
                for restored in lots_restored {
                    lots::add(&mut self.lots, restored.expires_at, restored.points);
                }
                self.points_available = checked(
                    self.points_available
                        .checked_add(lots::total(lots_restored)),
                );
                self.points_lifetime = checked(self.points_lifetime.checked_add(*lifetime_delta));
                if let Some(t) = self
                    .recent
                    .iter_mut()
                    .find(|t| t.transaction_id == *reversed_transaction_id)
                {
                    t.reversed = checked(t.reversed.checked_add(*points));
                    // The one place `reversed` grows: checked here rather
                    // than by scanning every recent transaction per event.
                    assert!(t.reversed <= t.points, "over-reversed");
                }
            }
            EnrollmentEvent::PointsExpired {
                points,
                lots: expired,
            } => {
                lots::remove(&mut self.lots, expired);
                self.points_available = checked(self.points_available.checked_sub(*points));
            }
            EnrollmentEvent::TierUpgraded { to, .. } => self.tier = Some(Arc::from(to.as_str())),
            EnrollmentEvent::TierDowngraded { to, .. } => self.tier = to.as_deref().map(Arc::from),
        }
        self.version += 1;
        self.forget_old(at);
        self.check_balances();
    }

    /// Remembers a transaction for reversal, dropping the oldest beyond the
    /// cap, but never an earn that is still pending: it must stay reversible
    /// until it matures (so `recent` holds at most the cap plus
    /// `PENDING_LOTS_MAX` entries). A redeem may also push out older
    /// redeems: see [`Self::forget_draws_past_cap`].
    fn remember(&mut self, transaction: ReversibleTransaction) {
        let is_redeem = matches!(transaction.kind, ReversibleKind::Redeem { .. });
        // Unknown stays unknown: it is worked out from `recent`, which will
        // hold this one.
        if let Some(newest) = &mut self.newest_transaction_id.0 {
            *newest = (*newest).max(transaction.transaction_id);
        }
        if self.recent.is_empty() {
            // As `room_for_one`, for the deque.
            self.recent.reserve_exact(1);
        }
        self.recent.push_back(transaction);
        while self.recent.len() > REVERSIBLE_TRANSACTIONS_MAX {
            let pending = &self.pending;
            let evictable = self
                .recent
                .iter()
                .position(|t| !pending.iter().any(|p| p.transaction_id == t.transaction_id));
            match evictable {
                Some(i) => {
                    self.recent.remove(i);
                }
                None => break,
            }
        }
        if is_redeem {
            self.forget_draws_past_cap();
        }
    }

    /// Drops the oldest remembered redeems while the lots all of them drew
    /// from number more than [`REVERSIBLE_DRAWS_MAX`]. Only a redeem adds
    /// draws, so only remembering one can pass the bound, and the newest
    /// (at most one draw per expiry day) always fits under it.
    fn forget_draws_past_cap(&mut self) {
        fn draws(t: &ReversibleTransaction) -> usize {
            match &t.kind {
                ReversibleKind::Redeem { drawn } => drawn.len(),
                ReversibleKind::Earn { .. } => 0,
            }
        }
        let mut total: usize = self.recent.iter().map(draws).sum();
        while total > REVERSIBLE_DRAWS_MAX {
            match self.recent.iter().position(|t| draws(t) > 0) {
                Some(i) if i + 1 < self.recent.len() => {
                    total -= draws(&self.recent[i]);
                    self.recent.remove(i);
                }
                _ => break,
            }
        }
    }

    /// Whether `id` belongs to a remembered transaction. Engine-made ids
    /// grow with time, so a new one is above every remembered id and the
    /// answer costs one comparison; only an id at or below the newest is
    /// looked for in `recent`.
    pub(crate) fn remembers(&mut self, id: TransactionId) -> bool {
        let newest = match self.newest_transaction_id.0 {
            Some(newest) => Some(newest),
            None => {
                let newest = self.recent.iter().map(|t| t.transaction_id).max();
                self.newest_transaction_id.0 = newest;
                newest
            }
        };
        match newest {
            Some(newest) if id <= newest => self.recent.iter().any(|t| t.transaction_id == id),
            _ => false,
        }
    }

    /// Drops transactions older than the reversal window, as of `at`.
    fn forget_old(&mut self, at: Timestamp) {
        while let Some(oldest) = self.recent.front() {
            match oldest.at.plus_days(REVERSAL_WINDOW_DAYS) {
                Some(until) if until < at => {
                    self.recent.pop_front();
                }
                _ => break,
            }
        }
    }

    /// The invariants every state must hold, checked in full at the ends of
    /// a boundary (before a snapshot is written, after one is read).
    pub fn check_invariants(&self) {
        self.check_balances();
        assert!(
            self.recent.iter().all(|t| t.reversed <= t.points),
            "over-reversed"
        );
    }

    /// The figures' invariants, run after every event: cheap, since lots and
    /// pending earns are bounded in number. (`reversed` is checked where it
    /// changes, in `apply`.)
    fn check_balances(&self) {
        assert!(self.points_available >= 0, "balance below zero");
        assert!(self.points_pending >= 0, "pending below zero");
        assert!(self.points_lifetime >= 0, "lifetime below zero");
        let lots: i64 = self.lots.iter().map(|l| l.points).sum();
        assert_eq!(
            lots, self.points_available,
            "lots do not add up to the balance"
        );
        let pending: i64 = self.pending.iter().map(|p| p.points).sum();
        assert_eq!(pending, self.points_pending, "pending lots do not add up");
        assert!(self.lots.iter().all(|l| l.points > 0), "empty lot kept");
    }
}

/// Unwraps checked arithmetic inside `apply`, where the handler has already
/// proven the result fits.
fn checked(value: Option<i64>) -> i64 {
    value.expect("handler checked the arithmetic before emitting the event")
}
