//! Bulk data for the probes: a data directory holding a business, an active
//! program, many enrolled customers and, optionally, a long history of earns.
//!
//! Through the engine's catalog each enrollment is one fsync, so a million
//! would take minutes of set-up; here the same domain functions make the
//! same events and catalog rows, written with the commit path's own
//! [`Store::add_group`] in large unsynced batches, then flushed once. The
//! engine must not be running on the store while this writes: it numbers
//! log records itself.

use loyalty_engine::catalog::{self, Business, CatalogEvent, Customer};
use loyalty_engine::enrollment::earn::{EarnPoints, EarnValue};
use loyalty_engine::enrollment::{decide, Enrollment, Request};
use loyalty_engine::program::{EarnRule, Program, ProgramRules, Tier};
use loyalty_engine::*;
use loyalty_persistence::keys::catalog as key;
use loyalty_persistence::{
    ApiKeyRecord, CommitGroup, IdempotencyRecord, LogRecord, Put, Store, StoreError, StoredAnswer,
};
use uuid::Uuid;

/// Events per unsynced write while filling.
const WRITE_EVENTS: usize = 20_000;

pub type FixtureError = Box<dyn std::error::Error + Send + Sync>;

/// What was written: enough to drive the engine afterwards.
pub struct Fixture {
    pub business_id: BusinessId,
    /// An API key of the business, as the front doors take it.
    pub api_key: String,
    pub program: Program,
    pub enrollments: Vec<EnrollmentId>,
}

/// Numbers log records and versions the way the commit thread and the
/// catalog do, and writes in large unsynced batches.
struct Writer<'a> {
    store: &'a Store,
    next_sequence: u64,
    pending: Vec<CommitGroup>,
    pending_events: usize,
    now: Timestamp,
}

impl<'a> Writer<'a> {
    fn new(store: &'a Store, now: Timestamp) -> Result<Self, StoreError> {
        Ok(Writer {
            store,
            next_sequence: store.next_sequence()?,
            pending: Vec::new(),
            pending_events: 0,
            now,
        })
    }

    fn record(
        &self,
        aggregate_id: Uuid,
        version: u64,
        business_id: BusinessId,
        event: DomainEvent,
    ) -> LogRecord {
        LogRecord {
            aggregate_id,
            version,
            event_id: EventId(Uuid::now_v7()),
            business_id,
            recorded_at: self.now,
            event,
        }
    }

    fn add(&mut self, records: &[LogRecord], puts: Vec<Put>) -> Result<(), FixtureError> {
        let events = records
            .iter()
            .map(Store::encode_event)
            .collect::<Result<Vec<_>, _>>()?;
        self.pending_events += events.len().max(1);
        self.pending.push(CommitGroup { events, puts });
        if self.pending_events >= WRITE_EVENTS {
            self.write()?;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<(), FixtureError> {
        let mut batch = self.store.batch();
        for group in self.pending.drain(..) {
            self.store
                .add_group(&mut batch, &group, &mut self.next_sequence);
        }
        self.pending_events = 0;
        self.store.write(batch, false)?;
        Ok(())
    }

    /// Writes what is left, flushes memtables and syncs the log.
    fn finish(mut self) -> Result<(), FixtureError> {
        self.write()?;
        self.store.flush()?;
        self.store.write(self.store.batch(), true)?;
        Ok(())
    }
}

/// The program rules the probes use: 10 points per unit, two tiers, points
/// valid a year.
pub fn rules() -> ProgramRules {
    ProgramRules::new(
        EarnRule {
            points_per_unit: 10,
            minor_units_per_unit: 100,
        },
        vec![
            Tier {
                name: "member".into(),
                min_points: 0,
            },
            Tier {
                name: "gold".into(),
                min_points: 10_000,
            },
        ],
        Some(365),
        None,
    )
    .expect("valid rules")
}

/// A business with an active program and `enrollments` enrolled customers.
/// `earns` earns are then spread round robin over the enrollments, each with
/// its idempotency record, and a snapshot every `snapshot_every` events as
/// the engine writes them. `progress` is called now and then with the
/// events written so far.
pub fn populate(
    store: &Store,
    enrollments: usize,
    earns: u64,
    snapshot_every: u64,
    now: Timestamp,
    mut progress: impl FnMut(u64),
) -> Result<Fixture, FixtureError> {
    let mut w = Writer::new(store, now)?;
    let business_id = BusinessId(Uuid::now_v7());
    let CatalogEvent::BusinessCreated(business) =
        catalog::create_business(business_id, "probe", now)?
    else {
        unreachable!("create_business makes BusinessCreated")
    };
    let business: Business = business;
    let program_id = ProgramId(Uuid::now_v7());
    let created = catalog::create_program(business_id, program_id, "probe", rules(), now)?;
    let CatalogEvent::ProgramCreated(mut program) = created.clone() else {
        unreachable!("create_program makes ProgramCreated")
    };
    let activated = catalog::activate_program(&program)?;
    catalog::apply_to_program(&mut program, &activated, now);
    let api_key = loyalty_api::auth::new_api_key();
    let key_sha256 = loyalty_api::auth::sha256(&api_key);
    let key_record = ApiKeyRecord {
        key_id: Uuid::now_v7(),
        business_id,
        issued_at: now,
    };
    let records = [
        w.record(
            business_id.0,
            1,
            business_id,
            DomainEvent::Catalog(CatalogEvent::BusinessCreated(business.clone())),
        ),
        w.record(
            business_id.0,
            2,
            business_id,
            DomainEvent::Catalog(CatalogEvent::ApiKeyIssued {
                business_id,
                key_id: key_record.key_id,
                key_sha256,
            }),
        ),
        w.record(program_id.0, 1, business_id, DomainEvent::Catalog(created)),
        w.record(
            program_id.0,
            2,
            business_id,
            DomainEvent::Catalog(activated),
        ),
    ];
    w.add(
        &records,
        vec![
            Store::catalog_put(key::business(business_id.as_bytes()), &business)?,
            Store::catalog_put(key::api_key(&key_sha256), &key_record)?,
            Store::catalog_put(key::program(program_id.as_bytes()), &program)?,
        ],
    )?;

    let mut states = Vec::with_capacity(enrollments);
    for i in 0..enrollments {
        let customer_id = CustomerId(Uuid::now_v7());
        let external = format!("probe-{i}");
        let event =
            catalog::create_customer(business_id, customer_id, &external, None, None, false, now)?;
        let CatalogEvent::CustomerCreated(customer) = &event else {
            unreachable!("create_customer makes CustomerCreated")
        };
        let customer: Customer = customer.clone();
        let record = w.record(customer_id.0, 1, business_id, DomainEvent::Catalog(event));
        w.add(
            &[record],
            vec![
                Store::catalog_put(key::customer(customer_id.as_bytes()), &customer)?,
                Store::catalog_put(
                    key::customer_external(business_id.as_bytes(), &external),
                    &customer_id,
                )?,
            ],
        )?;
        let enrollment_id = EnrollmentId(Uuid::now_v7());
        let enrolled = catalog::enroll(business_id, &program, &customer, enrollment_id, false)?;
        let reference = loyalty_engine::catalog::EnrollmentRef {
            enrollment_id,
            business_id,
            customer_id,
            program_id,
        };
        let record = w.record(
            enrollment_id.0,
            1,
            business_id,
            DomainEvent::Enrollment(enrolled.clone()),
        );
        w.add(
            &[record],
            vec![
                Store::catalog_put(key::enrollment(enrollment_id.as_bytes()), &reference)?,
                Store::catalog_put(
                    key::enrollment_membership(program_id.as_bytes(), customer_id.as_bytes()),
                    &enrollment_id,
                )?,
            ],
        )?;
        states.push(Enrollment::from_enrolled(&enrolled, now));
    }

    let every = snapshot_every.max(1);
    for n in 0..earns {
        let state = &mut states[(n % enrollments.max(1) as u64) as usize];
        let request = Request::Earn(EarnPoints {
            value: EarnValue::Points(10 + (n % 90) as i64),
            reason: None,
            reference: None,
        });
        let transaction_id = TransactionId(Uuid::now_v7());
        let decision = decide(state, &program.rules, Some((&request, transaction_id)), now)?;
        let outcome = decision.outcome.expect("an earn has an outcome");
        let records: Vec<LogRecord> = decision
            .events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                w.record(
                    state.enrollment_id.0,
                    state.version + 1 + i as u64,
                    business_id,
                    DomainEvent::Enrollment(event),
                )
            })
            .collect();
        let answer = StoredAnswer {
            event_id: records[outcome.event_index].event_id,
            outcome,
        };
        let mut puts = vec![Store::idempotency_put(
            state.enrollment_id,
            &format!("probe-{n}"),
            &IdempotencyRecord {
                request,
                answer,
                recorded_at: now,
            },
        )?];
        let before = state.version;
        *state = decision.state;
        if before / every != state.version / every {
            // Without key digests: an activation reads them from the
            // records, as after a crash.
            puts.push(Store::snapshot_put(state, None)?);
        }
        w.add(&records, puts)?;
        if n % 1_000_000 == 0 {
            progress(n);
        }
    }
    w.finish()?;
    progress(earns);
    Ok(Fixture {
        business_id,
        api_key,
        program,
        enrollments: states.iter().map(|s| s.enrollment_id).collect(),
    })
}

/// An earn of `points` points with no options, as the load tests send.
pub fn earn(points: i64) -> Request {
    Request::Earn(EarnPoints {
        value: EarnValue::Points(points),
        reason: None,
        reference: None,
    })
}
