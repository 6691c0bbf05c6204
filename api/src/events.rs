//! Domain events as consumers see them: the contract's envelope
//! `{eventId, eventType, version, timestamp, aggregateId, businessId,
//! sequence, data}` with camelCase `data`.
//!
//! `version` is the aggregate's version after the event; `sequence` is the
//! event's place in the global commit order.
//!
//! [`EventJson`] borrows the log record and serializes straight to JSON: the
//! publisher writes every durable event through it, so it builds no
//! intermediate `serde_json::Value` (that tree was most of the publisher's
//! CPU under load). The publisher calls [`publish_bytes`], which writes the
//! envelope and the earned event's `data` by hand ([`EventJson::write`]);
//! its derived `Serialize` is the reference those bytes are tested
//! against. The HTTP pages use [`event_json`], the same shape as a `Value`.

use crate::wire::{CustomerBody, ProgramBody, Rfc3339};
use loyalty_engine::catalog::CatalogEvent;
use loyalty_engine::enrollment::{EnrollmentEvent, LotDraw};
use loyalty_engine::{DomainEvent, Timestamp};
use loyalty_persistence::LogRecord;
use serde::{Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

/// One event in the contract's JSON shape, borrowing its log record.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson<'a> {
    event_id: Uuid,
    event_type: &'static str,
    version: u64,
    timestamp: Rfc3339,
    aggregate_id: Uuid,
    business_id: Uuid,
    sequence: u64,
    data: Data<'a>,
}

impl<'a> EventJson<'a> {
    pub fn new(sequence: u64, record: &'a LogRecord) -> Self {
        EventJson {
            event_id: record.event_id.0,
            event_type: record.event.event_type(),
            version: record.version,
            timestamp: Rfc3339(record.recorded_at),
            aggregate_id: record.aggregate_id,
            business_id: record.business_id.0,
            sequence,
            data: Data::new(&record.event),
        }
    }

    /// Appends the event's JSON to `out`: the bytes
    /// `serde_json::to_writer` gives for `self` (the tests hold the two
    /// equal), written here field by field.
    ///
    /// Why by hand: serde_json scans every string it writes for characters
    /// to escape, field names included. Ids, timestamps, event types and
    /// field names never have any, and under the batch load that scan was
    /// half of the publisher's encoding. Field by field also skips serde's
    /// call per field and key: criterion `event_json` takes about a third
    /// of serde's time (notes item 26). Text that comes from callers
    /// (reasons, references, names) is still escaped by serde_json, and
    /// the event types other than the earned one, rarer, write their
    /// `data` through serde.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"eventId\":");
        put_uuid(out, self.event_id);
        out.extend_from_slice(b",\"eventType\":");
        put_plain(out, self.event_type);
        out.extend_from_slice(b",\"version\":");
        put_int(out, self.version);
        out.extend_from_slice(b",\"timestamp\":");
        put_time(out, self.timestamp);
        out.extend_from_slice(b",\"aggregateId\":");
        put_uuid(out, self.aggregate_id);
        out.extend_from_slice(b",\"businessId\":");
        put_uuid(out, self.business_id);
        out.extend_from_slice(b",\"sequence\":");
        put_int(out, self.sequence);
        out.extend_from_slice(b",\"data\":");
        self.data.write(out);
        out.push(b'}');
    }
}

/// Bytes reserved for an event's JSON: an earned event is about 450, so
/// the buffer is not regrown on the way.
const EVENT_BYTES_RESERVED: usize = 512;

/// The JSON the publisher sends for an event.
pub fn publish_bytes(sequence: u64, record: &LogRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(EVENT_BYTES_RESERVED);
    EventJson::new(sequence, record).write(&mut out);
    out
}

/// Text in quotes, for text known to need no escaping.
fn put_quoted(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// A lower-case, hyphenated id: nothing in it needs escaping.
fn put_uuid(out: &mut Vec<u8>, id: Uuid) {
    put_quoted(
        out,
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
}

/// A string known to need no escaping (an event type).
fn put_plain(out: &mut Vec<u8>, text: &'static str) {
    debug_assert!(
        text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'),
        "{text:?} needs escaping"
    );
    put_quoted(out, text.as_bytes());
}

fn put_time(out: &mut Vec<u8>, at: Rfc3339) {
    match at.ascii() {
        Some(text) => put_quoted(out, &text),
        // Years outside 0 to 9999: written as serde would.
        None => put_serde(out, &at),
    }
}

/// An integer as serde_json writes it (which uses `itoa` too).
fn put_int(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A value written by `put`, or `null` when absent (as serde writes a
/// `None`).
fn put_or_null<T>(out: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => put(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn put_serde<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value).expect("events serialize");
}

/// The event as a JSON value (for pages that collect events of several
/// chunks read from the log).
pub fn event_json(sequence: u64, record: &LogRecord) -> Value {
    serde_json::to_value(EventJson::new(sequence, record)).expect("events serialize")
}

fn at(t: Option<Timestamp>) -> Option<Rfc3339> {
    t.map(Rfc3339)
}

/// Lots drawn or restored: `[{expiresAt, points}]`.
struct Lots<'a>(&'a [LotDraw]);

impl Serialize for Lots<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Lot {
            expires_at: Option<Rfc3339>,
            points: i64,
        }
        serializer.collect_seq(self.0.iter().map(|l| Lot {
            expires_at: at(l.expires_at),
            points: l.points,
        }))
    }
}

/// The `data` of each event type.
#[derive(Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
enum Data<'a> {
    BusinessCreated {
        business_id: Uuid,
        name: &'a str,
    },
    ApiKeyIssued {
        key_id: Uuid,
    },
    Program(ProgramBody),
    ProgramActivated {
        program_id: Uuid,
    },
    Customer(CustomerBody),
    Enrolled {
        enrollment_id: Uuid,
        customer_id: Uuid,
        program_id: Uuid,
        tier: Option<&'a str>,
    },
    PointsEarned {
        transaction_id: Uuid,
        points: i64,
        amount: Option<i64>,
        pending_until: Option<Rfc3339>,
        expires_at: Option<Rfc3339>,
        reason: Option<&'a str>,
        reference: Option<&'a str>,
    },
    PointsMatured {
        transaction_id: Uuid,
        points: i64,
        expires_at: Option<Rfc3339>,
    },
    PointsRedeemed {
        transaction_id: Uuid,
        points: i64,
        lots: Lots<'a>,
        reason: Option<&'a str>,
        reference: Option<&'a str>,
    },
    PointsReversed {
        transaction_id: Uuid,
        reversed_transaction_id: Uuid,
        points: i64,
        shortfall: i64,
        from_pending: i64,
        lots_taken: Lots<'a>,
        lots_restored: Lots<'a>,
        lifetime_delta: i64,
        reason: Option<&'a str>,
    },
    PointsExpired {
        points: i64,
        lots: Lots<'a>,
    },
    /// Upgrades and downgrades: `from` is null on a first tier, `to` on
    /// falling below the lowest.
    TierChanged {
        from: Option<&'a str>,
        to: Option<&'a str>,
        lifetime_points: i64,
    },
}

impl<'a> Data<'a> {
    /// Appends the JSON of `data`; see [`EventJson::write`].
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Data::PointsEarned {
                transaction_id,
                points,
                amount,
                pending_until,
                expires_at,
                reason,
                reference,
            } => {
                out.extend_from_slice(b"{\"transactionId\":");
                put_uuid(out, *transaction_id);
                out.extend_from_slice(b",\"points\":");
                put_int(out, *points);
                out.extend_from_slice(b",\"amount\":");
                put_or_null(out, *amount, put_int);
                out.extend_from_slice(b",\"pendingUntil\":");
                put_or_null(out, *pending_until, put_time);
                out.extend_from_slice(b",\"expiresAt\":");
                put_or_null(out, *expires_at, put_time);
                out.extend_from_slice(b",\"reason\":");
                // Caller's text: escaped by serde_json.
                put_or_null(out, *reason, put_serde);
                out.extend_from_slice(b",\"reference\":");
                put_or_null(out, *reference, put_serde);
                out.push(b'}');
            }
            other => put_serde(out, other),
        }
    }

    fn new(event: &'a DomainEvent) -> Self {
        match event {
            DomainEvent::Catalog(event) => match event {
                CatalogEvent::BusinessCreated(b) => Data::BusinessCreated {
                    business_id: b.business_id.0,
                    name: &b.name,
                },
                CatalogEvent::ApiKeyIssued { key_id, .. } => Data::ApiKeyIssued { key_id: *key_id },
                CatalogEvent::ProgramCreated(p) => Data::Program(ProgramBody::from(p)),
                CatalogEvent::ProgramActivated { program_id, .. } => Data::ProgramActivated {
                    program_id: program_id.0,
                },
                CatalogEvent::CustomerCreated(c) => Data::Customer(CustomerBody::from(c)),
            },
            DomainEvent::Enrollment(event) => match event {
                EnrollmentEvent::Enrolled {
                    enrollment_id,
                    customer_id,
                    program_id,
                    tier,
                    ..
                } => Data::Enrolled {
                    enrollment_id: enrollment_id.0,
                    customer_id: customer_id.0,
                    program_id: program_id.0,
                    tier: tier.as_deref(),
                },
                EnrollmentEvent::PointsEarned {
                    transaction_id,
                    points,
                    amount_minor,
                    available_at,
                    expires_at,
                    reason,
                    reference,
                } => Data::PointsEarned {
                    transaction_id: transaction_id.0,
                    points: *points,
                    amount: *amount_minor,
                    pending_until: at(*available_at),
                    expires_at: at(*expires_at),
                    reason: reason.as_deref(),
                    reference: reference.as_deref(),
                },
                EnrollmentEvent::PointsMatured {
                    transaction_id,
                    points,
                    expires_at,
                } => Data::PointsMatured {
                    transaction_id: transaction_id.0,
                    points: *points,
                    expires_at: at(*expires_at),
                },
                EnrollmentEvent::PointsRedeemed {
                    transaction_id,
                    points,
                    drawn,
                    reason,
                    reference,
                } => Data::PointsRedeemed {
                    transaction_id: transaction_id.0,
                    points: *points,
                    lots: Lots(drawn),
                    reason: reason.as_deref(),
                    reference: reference.as_deref(),
                },
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
                } => Data::PointsReversed {
                    transaction_id: transaction_id.0,
                    reversed_transaction_id: reversed_transaction_id.0,
                    points: *points,
                    shortfall: *shortfall,
                    from_pending: *from_pending,
                    lots_taken: Lots(lots_drawn),
                    lots_restored: Lots(lots_restored),
                    lifetime_delta: *lifetime_delta,
                    reason: reason.as_deref(),
                },
                EnrollmentEvent::PointsExpired { points, lots } => Data::PointsExpired {
                    points: *points,
                    lots: Lots(lots),
                },
                EnrollmentEvent::TierUpgraded {
                    from,
                    to,
                    lifetime_points,
                } => Data::TierChanged {
                    from: from.as_deref(),
                    to: Some(to),
                    lifetime_points: *lifetime_points,
                },
                EnrollmentEvent::TierDowngraded {
                    from,
                    to,
                    lifetime_points,
                } => Data::TierChanged {
                    from: Some(from),
                    to: to.as_deref(),
                    lifetime_points: *lifetime_points,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_engine::catalog::Business;
    use loyalty_engine::{BusinessId, CustomerId, EnrollmentId, EventId, ProgramId, TransactionId};
    use proptest::prelude::*;
    use serde_json::json;

    const T0: i64 = 1_700_000_000_123;
    const T0_TEXT: &str = "2023-11-14T22:13:20.123Z";

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn record(event: DomainEvent) -> LogRecord {
        LogRecord {
            aggregate_id: id(1),
            version: 7,
            event_id: EventId(id(2)),
            business_id: BusinessId(id(3)),
            recorded_at: Timestamp(T0),
            event,
        }
    }

    /// The whole envelope, and each event type's `data`, exactly as the
    /// contract spells them (null fields included).
    #[test]
    fn every_event_type_has_the_contracts_shape() {
        let lot = |expires: Option<i64>, points| LotDraw {
            expires_at: expires.map(Timestamp),
            points,
        };
        let tx = TransactionId(id(10));
        let cases: Vec<(DomainEvent, Value)> = vec![
            (
                DomainEvent::Catalog(CatalogEvent::BusinessCreated(Business {
                    business_id: BusinessId(id(3)),
                    name: "Shop".into(),
                    created_at: Timestamp(T0),
                })),
                json!({"businessId": id(3).to_string(), "name": "Shop"}),
            ),
            (
                DomainEvent::Catalog(CatalogEvent::ApiKeyIssued {
                    business_id: BusinessId(id(3)),
                    key_id: id(4),
                    key_sha256: [0; 32],
                }),
                json!({"keyId": id(4).to_string()}),
            ),
            (
                DomainEvent::Catalog(CatalogEvent::ProgramActivated {
                    program_id: ProgramId(id(5)),
                    business_id: BusinessId(id(3)),
                }),
                json!({"programId": id(5).to_string()}),
            ),
            (
                DomainEvent::Enrollment(EnrollmentEvent::Enrolled {
                    enrollment_id: EnrollmentId(id(1)),
                    business_id: BusinessId(id(3)),
                    customer_id: CustomerId(id(6)),
                    program_id: ProgramId(id(5)),
                    tier: None,
                }),
                json!({"enrollmentId": id(1).to_string(), "customerId": id(6).to_string(),
                       "programId": id(5).to_string(), "tier": null}),
            ),
            (
                DomainEvent::Enrollment(EnrollmentEvent::PointsEarned {
                    transaction_id: tx,
                    points: 120,
                    amount_minor: Some(1_200),
                    available_at: None,
                    expires_at: Some(Timestamp(T0)),
                    reason: None,
                    reference: Some("till 4".into()),
                }),
                json!({"transactionId": id(10).to_string(), "points": 120, "amount": 1200,
                       "pendingUntil": null, "expiresAt": T0_TEXT, "reason": null,
                       "reference": "till 4"}),
            ),
            (
                DomainEvent::Enrollment(EnrollmentEvent::PointsMatured {
                    transaction_id: tx,
                    points: 120,
                    expires_at: None,
                }),
                json!({"transactionId": id(10).to_string(), "points": 120, "expiresAt": null}),
            ),
            (
                DomainEvent::Enrollment(EnrollmentEvent::PointsRedeemed {
                    transaction_id: tx,
                    points: 50,
                    drawn: vec![lot(Some(T0), 30), lot(None, 20)],
                    reason: Some("coffee".into()),
                    reference: None,
                }),
                json!({"transactionId": id(10).to_string(), "points": 50,
                       "lots": [{"expiresAt": T0_TEXT, "points": 30}, {"expiresAt": null, "points": 20}],
                       "reason": "coffee", "reference": null}),
            ),
            (
                DomainEvent::Enrollment(EnrollmentEvent::PointsReversed {
                    transaction_id: tx,
                    reversed_transaction_id: TransactionId(id(11)),
                    points: 40,
                    shortfall: 5,
                    from_pending: 10,
                    lots_drawn: vec![lot(None, 25)],
                    lots_restored: vec![],
                    lifetime_delta: -40,
                    reason: None,
                }),
                json!({"transactionId": id(10).to_string(),
                       "reversedTransactionId": id(11).to_string(), "points": 40,
                       "shortfall": 5, "fromPending": 10,
                       "lotsTaken": [{"expiresAt": null, "points": 25}], "lotsRestored": [],
                       "lifetimeDelta": -40, "reason": null}),
            ),
            (
                DomainEvent::Enrollment(EnrollmentEvent::PointsExpired {
                    points: 30,
                    lots: vec![lot(Some(T0), 30)],
                }),
                json!({"points": 30, "lots": [{"expiresAt": T0_TEXT, "points": 30}]}),
            ),
            (
                DomainEvent::Enrollment(EnrollmentEvent::TierUpgraded {
                    from: None,
                    to: "gold".into(),
                    lifetime_points: 1_000,
                }),
                json!({"from": null, "to": "gold", "lifetimePoints": 1000}),
            ),
            (
                DomainEvent::Enrollment(EnrollmentEvent::TierDowngraded {
                    from: "gold".into(),
                    to: None,
                    lifetime_points: 900,
                }),
                json!({"from": "gold", "to": null, "lifetimePoints": 900}),
            ),
        ];
        for (event, data) in cases {
            let record = record(event);
            let expected = json!({
                "eventId": id(2).to_string(),
                "eventType": record.event.event_type(),
                "version": 7,
                "timestamp": T0_TEXT,
                "aggregateId": id(1).to_string(),
                "businessId": id(3).to_string(),
                "sequence": 42,
                "data": data,
            });
            assert_eq!(event_json(42, &record), expected);
            // The bytes the publisher sends parse to the same value.
            let bytes = publish_bytes(42, &record);
            assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);
            assert_same_bytes(42, &record);
        }
    }

    /// The publisher's hand-written bytes are serde's, byte for byte.
    fn assert_same_bytes(sequence: u64, record: &LogRecord) {
        let by_hand = publish_bytes(sequence, record);
        let by_serde = serde_json::to_vec(&EventJson::new(sequence, record)).unwrap();
        assert_eq!(
            String::from_utf8(by_hand).unwrap(),
            String::from_utf8(by_serde).unwrap()
        );
    }

    /// Milliseconds since 1970: mostly in years 0 to 9999 (written digit
    /// by digit), sometimes anywhere (written through `Display`).
    fn time() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => -62_167_219_200_000..253_402_300_800_000i64,
            1 => any::<i64>(),
        ]
    }

    /// Text a caller may send: often the characters JSON escapes (quotes,
    /// backslashes, control characters) among plain and non-ASCII ones,
    /// sometimes any string at all.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => r#"["\\\x00-\x1f a-z\u{e9}\u{1f600}]{0,12}"#,
            1 => any::<String>(),
        ]
    }

    /// The extremes of every number, which random draws all but never hit.
    #[test]
    fn earned_events_with_extreme_numbers_are_written_as_serde_writes_them() {
        for (n, points) in [(0, i64::MIN), (u64::MAX, i64::MAX), (1, 0)] {
            let record = LogRecord {
                version: n,
                recorded_at: Timestamp(points),
                event: DomainEvent::Enrollment(EnrollmentEvent::PointsEarned {
                    transaction_id: TransactionId(id(10)),
                    points,
                    amount_minor: Some(points),
                    available_at: Some(Timestamp(points)),
                    expires_at: Some(Timestamp(-points.saturating_add(1))),
                    reason: Some(String::new()),
                    reference: Some("\u{7f}\"\\".into()),
                }),
                ..record(DomainEvent::Enrollment(EnrollmentEvent::PointsMatured {
                    transaction_id: TransactionId(id(10)),
                    points: 0,
                    expires_at: None,
                }))
            };
            assert_same_bytes(n, &record);
        }
    }

    proptest! {
        /// Earned events, which the publisher writes by hand end to end,
        /// with any text (escapes, control characters, non-ASCII), any
        /// numbers and any times (years outside 0 to 9999 included).
        #[test]
        fn earned_events_are_written_as_serde_writes_them(
            ids in any::<[u128; 4]>(),
            version in any::<u64>(),
            sequence in any::<u64>(),
            recorded_at in time(),
            points in any::<i64>(),
            amount in any::<Option<i64>>(),
            available_at in proptest::option::of(time()),
            expires_at in proptest::option::of(time()),
            reason in proptest::option::of(text()),
            reference in proptest::option::of(text()),
        ) {
            let record = LogRecord {
                aggregate_id: id(ids[0]),
                version,
                event_id: EventId(id(ids[1])),
                business_id: BusinessId(id(ids[2])),
                recorded_at: Timestamp(recorded_at),
                event: DomainEvent::Enrollment(EnrollmentEvent::PointsEarned {
                    transaction_id: TransactionId(id(ids[3])),
                    points,
                    amount_minor: amount,
                    available_at: available_at.map(Timestamp),
                    expires_at: expires_at.map(Timestamp),
                    reason,
                    reference,
                }),
            };
            assert_same_bytes(sequence, &record);
        }
    }
}
