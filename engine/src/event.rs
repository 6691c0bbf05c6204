//! [`DomainEvent`]: everything the log records, catalog and enrollment alike.

use crate::catalog::CatalogEvent;
use crate::enrollment::EnrollmentEvent;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainEvent {
    Catalog(CatalogEvent),
    Enrollment(EnrollmentEvent),
}

impl DomainEvent {
    /// The contract's `eventType`, e.g. `loyalty.points.earned`.
    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::Catalog(e) => e.event_type(),
            DomainEvent::Enrollment(e) => e.event_type(),
        }
    }

    /// Whether the event belongs in the business's feed.
    pub fn is_published(&self) -> bool {
        match self {
            DomainEvent::Catalog(e) => e.is_published(),
            DomainEvent::Enrollment(_) => true,
        }
    }
}
