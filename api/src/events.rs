//! Domain events as consumers see them: the contract's envelope
//! `{eventId, eventType, version, timestamp, aggregateId, businessId,
//! sequence, data}` with camelCase `data`.
//!
//! `version` is the aggregate's version after the event; `sequence` is the
//! event's place in the global commit order.

use crate::wire::rfc3339;
use loyalty_engine::catalog::CatalogEvent;
use loyalty_engine::enrollment::{EnrollmentEvent, LotDraw};
use loyalty_engine::DomainEvent;
use loyalty_persistence::LogRecord;
use serde_json::{json, Value};

pub fn event_json(sequence: u64, record: &LogRecord) -> Value {
    json!({
        "eventId": record.event_id.to_string(),
        "eventType": record.event.event_type(),
        "version": record.version,
        "timestamp": rfc3339(record.recorded_at),
        "aggregateId": record.aggregate_id.to_string(),
        "businessId": record.business_id.to_string(),
        "sequence": sequence,
        "data": data(&record.event),
    })
}

fn lots(lots: &[LotDraw]) -> Value {
    Value::Array(
        lots.iter()
            .map(|l| json!({"expiresAt": l.expires_at.map(rfc3339), "points": l.points}))
            .collect(),
    )
}

fn data(event: &DomainEvent) -> Value {
    match event {
        DomainEvent::Catalog(event) => match event {
            CatalogEvent::BusinessCreated(b) => {
                json!({"businessId": b.business_id.to_string(), "name": b.name})
            }
            CatalogEvent::ApiKeyIssued { key_id, .. } => json!({"keyId": key_id.to_string()}),
            CatalogEvent::ProgramCreated(p) => {
                serde_json::to_value(crate::wire::ProgramBody::from(p)).unwrap_or(Value::Null)
            }
            CatalogEvent::ProgramActivated { program_id, .. } => {
                json!({"programId": program_id.to_string()})
            }
            CatalogEvent::CustomerCreated(c) => {
                serde_json::to_value(crate::wire::CustomerBody::from(c)).unwrap_or(Value::Null)
            }
        },
        DomainEvent::Enrollment(event) => match event {
            EnrollmentEvent::Enrolled {
                enrollment_id,
                customer_id,
                program_id,
                tier,
                ..
            } => json!({
                "enrollmentId": enrollment_id.to_string(),
                "customerId": customer_id.to_string(),
                "programId": program_id.to_string(),
                "tier": tier,
            }),
            EnrollmentEvent::PointsEarned {
                transaction_id,
                points,
                amount_minor,
                available_at,
                expires_at,
                reason,
                reference,
            } => json!({
                "transactionId": transaction_id.to_string(),
                "points": points,
                "amount": amount_minor,
                "pendingUntil": available_at.map(rfc3339),
                "expiresAt": expires_at.map(rfc3339),
                "reason": reason,
                "reference": reference,
            }),
            EnrollmentEvent::PointsMatured {
                transaction_id,
                points,
                expires_at,
            } => json!({
                "transactionId": transaction_id.to_string(),
                "points": points,
                "expiresAt": expires_at.map(rfc3339),
            }),
            EnrollmentEvent::PointsRedeemed {
                transaction_id,
                points,
                drawn,
                reason,
                reference,
            } => json!({
                "transactionId": transaction_id.to_string(),
                "points": points,
                "lots": lots(drawn),
                "reason": reason,
                "reference": reference,
            }),
            EnrollmentEvent::PointsReversed {
                transaction_id,
                reversed_transaction_id,
                points,
                shortfall,
                from_pending,
                lots_drawn,
                lots_restored,
                lifetime_delta,
                reason,
            } => json!({
                "transactionId": transaction_id.to_string(),
                "reversedTransactionId": reversed_transaction_id.to_string(),
                "points": points,
                "shortfall": shortfall,
                "fromPending": from_pending,
                "lotsTaken": lots(lots_drawn),
                "lotsRestored": lots(lots_restored),
                "lifetimeDelta": lifetime_delta,
                "reason": reason,
            }),
            EnrollmentEvent::PointsExpired {
                points,
                lots: expired,
            } => json!({"points": points, "lots": lots(expired)}),
            EnrollmentEvent::TierUpgraded {
                from,
                to,
                lifetime_points,
            } => json!({"from": from, "to": to, "lifetimePoints": lifetime_points}),
            EnrollmentEvent::TierDowngraded {
                from,
                to,
                lifetime_points,
            } => json!({"from": from, "to": to, "lifetimePoints": lifetime_points}),
        },
    }
}
