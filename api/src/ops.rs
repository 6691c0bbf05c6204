//! The operations both front doors share, below the decoding: HTTP and
//! NATS each turn their request into these calls and their answers back
//! into bytes. Validation, tenancy and idempotency live here (and below),
//! so the two doors cannot drift apart.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::events::event_json;
use crate::wire::*;
use loyalty_actors::Engine;
use loyalty_engine::enrollment::earn::{EarnPoints, EarnValue};
use loyalty_engine::enrollment::redeem::RedeemPoints;
use loyalty_engine::enrollment::reverse::ReverseTransaction;
use loyalty_engine::enrollment::{EnrollmentEvent, Request};
use loyalty_engine::idempotency::IdempotencyKey;
use loyalty_engine::program::{EarnRule, ProgramRules, Tier};
use loyalty_engine::{DomainEvent, EnrollmentId};
use serde::Serialize;
use std::str::FromStr;
use std::sync::Arc;

/// Parses an id from the path or body, naming the field on failure.
pub fn parse_id<T: FromStr>(field: &str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(field, "is not a valid id"))
}

/// The idempotency key from the body or the `Idempotency-Key` header.
fn idempotency_key(body: Option<String>, header: Option<&str>) -> Result<IdempotencyKey, ApiError> {
    let key = match (body, header) {
        (Some(body), Some(header)) if body != header => {
            return Err(ApiError::invalid(
                "idempotencyKey",
                "differs from the Idempotency-Key header",
            ))
        }
        (Some(key), _) => key,
        (None, Some(header)) => header.to_owned(),
        (None, None) => return Err(ApiError::invalid("idempotencyKey", "is required")),
    };
    Ok(IdempotencyKey::parse(&key)?)
}

/// The enrollment id from the path (HTTP) or the body (NATS).
fn enrollment_id(path: Option<&str>, body: Option<&str>) -> Result<EnrollmentId, ApiError> {
    match (path, body) {
        (Some(path), Some(body)) if path != body => Err(ApiError::invalid(
            "enrollmentId",
            "differs from the id in the path",
        )),
        (Some(id), _) | (None, Some(id)) => parse_id("enrollmentId", id),
        (None, None) => Err(ApiError::invalid("enrollmentId", "is required")),
    }
}

#[derive(Clone)]
pub struct Ops {
    pub engine: Arc<Engine>,
}

impl Ops {
    pub async fn create_program(
        &self,
        caller: &Caller,
        body: CreateProgram,
    ) -> Result<ProgramBody, ApiError> {
        let rules = ProgramRules::new(
            EarnRule {
                points_per_unit: body.earn_rule.points_per_unit,
                minor_units_per_unit: body.earn_rule.minor_units_per_unit,
            },
            body.tiers
                .into_iter()
                .map(|t| Tier {
                    name: t.name,
                    min_points: t.min_points,
                })
                .collect(),
            body.points_expire_after_days,
            body.pending_days,
        )?;
        let program = self
            .engine
            .catalog
            .create_program(caller.business_id, &body.name, rules)
            .await?;
        Ok((&program).into())
    }

    pub async fn activate_program(
        &self,
        caller: &Caller,
        program_id: &str,
    ) -> Result<ProgramBody, ApiError> {
        let id = parse_id("programId", program_id)?;
        let program = self
            .engine
            .catalog
            .activate_program(caller.business_id, id)
            .await?;
        Ok((&program).into())
    }

    pub fn program(&self, caller: &Caller, program_id: &str) -> Result<ProgramBody, ApiError> {
        let id = parse_id("programId", program_id)?;
        Ok((&self.engine.catalog.program(caller.business_id, id)?).into())
    }

    pub async fn create_customer(
        &self,
        caller: &Caller,
        body: CreateCustomer,
    ) -> Result<CustomerBody, ApiError> {
        let customer = self
            .engine
            .catalog
            .create_customer(
                caller.business_id,
                &body.external_id,
                body.name.as_deref(),
                body.email.as_deref(),
            )
            .await?;
        Ok((&customer).into())
    }

    pub fn customer(&self, caller: &Caller, customer_id: &str) -> Result<CustomerBody, ApiError> {
        let id = parse_id("customerId", customer_id)?;
        Ok((&self.engine.catalog.customer(caller.business_id, id)?).into())
    }

    pub async fn enroll(
        &self,
        caller: &Caller,
        body: CreateEnrollment,
    ) -> Result<EnrollmentBody, ApiError> {
        let customer = parse_id("customerId", &body.customer_id)?;
        let program = parse_id("programId", &body.program_id)?;
        let reference = self
            .engine
            .catalog
            .enroll(caller.business_id, customer, program)
            .await?;
        // The answer is built from what the enrollment was created with, not
        // read back: once the creation is durable, nothing can fail the call.
        let rules = self
            .engine
            .catalog
            .program(caller.business_id, program)?
            .rules;
        Ok(EnrollmentBody {
            enrollment_id: reference.enrollment_id.to_string(),
            customer_id: reference.customer_id.to_string(),
            program_id: reference.program_id.to_string(),
            balance: 0,
            pending: 0,
            lifetime_points: 0,
            tier: rules.tier_name(rules.tier_for(0)).map(str::to_owned),
            version: 1,
        })
    }

    pub async fn enrollment(
        &self,
        caller: &Caller,
        enrollment_id: &str,
    ) -> Result<EnrollmentBody, ApiError> {
        let id = parse_id("enrollmentId", enrollment_id)?;
        Ok((&self.engine.balance(caller.business_id, id).await?).into())
    }

    pub async fn earn(
        &self,
        caller: &Caller,
        path_id: Option<&str>,
        key_header: Option<&str>,
        body: EarnBody,
    ) -> Result<TransactionBody, ApiError> {
        let (id, key, request) = earn_command(path_id, key_header, body)?;
        self.transact(caller, id, key, request).await
    }

    pub async fn redeem(
        &self,
        caller: &Caller,
        path_id: Option<&str>,
        key_header: Option<&str>,
        body: RedeemBody,
    ) -> Result<TransactionBody, ApiError> {
        let id = enrollment_id(path_id, body.enrollment_id.as_deref())?;
        let key = idempotency_key(body.idempotency_key, key_header)?;
        let request = Request::Redeem(RedeemPoints {
            points: body.points,
            reason: body.reason,
            reference: body.reference,
        });
        self.transact(caller, id, key, request).await
    }

    pub async fn reverse(
        &self,
        caller: &Caller,
        path_id: Option<&str>,
        key_header: Option<&str>,
        body: ReverseBody,
    ) -> Result<TransactionBody, ApiError> {
        let id = enrollment_id(path_id, body.enrollment_id.as_deref())?;
        let key = idempotency_key(body.idempotency_key, key_header)?;
        let target = parse_id("transactionId", &body.transaction_id)?;
        let request = Request::Reverse(ReverseTransaction {
            target,
            points: body.points,
            reason: body.reason,
        });
        self.transact(caller, id, key, request).await
    }

    /// Earn, redeem and reverse share this last step: run the request,
    /// answer with the transaction (and, for a reversal, its shortfall).
    async fn transact(
        &self,
        caller: &Caller,
        id: EnrollmentId,
        key: IdempotencyKey,
        request: Request,
    ) -> Result<TransactionBody, ApiError> {
        let reverse = matches!(request, Request::Reverse(_));
        let answer = self
            .engine
            .transact(caller.business_id, id, key, request)
            .await?;
        Ok(TransactionBody::new(id.to_string(), &answer, reverse))
    }

    /// Many independent earns; one answer or error per item, in order.
    pub async fn earn_batch(
        &self,
        caller: &Caller,
        body: EarnBatchBody,
    ) -> Result<BatchResults, ApiError> {
        if body.items.is_empty() || body.items.len() > BATCH_ITEMS_MAX {
            return Err(batch_items_out_of_range());
        }
        // Items that fail validation answer at once; the rest travel
        // together, one message per shard.
        let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(body.items.len());
        let mut commands = Vec::new();
        // Where each command's answer goes, and whose it is.
        let mut positions = Vec::new();
        for item in body.items {
            match earn_command(None, None, item) {
                Ok(command) => {
                    positions.push((results.len(), command.0));
                    commands.push(command);
                    results.push(None);
                }
                Err(err) => results.push(Some(BatchItem::Err(ErrorItem::from(&err)))),
            }
        }
        let answers = self
            .engine
            .transact_many(caller.business_id, commands)
            .await;
        for ((position, id), answer) in positions.into_iter().zip(answers) {
            results[position] = Some(match answer {
                Ok(answer) => BatchItem::Ok(TransactionBody::new(id.to_string(), &answer, false)),
                Err(err) => BatchItem::Err(ErrorItem::from(&ApiError::from(err))),
            });
        }
        Ok(BatchResults {
            results: results
                .into_iter()
                .map(|r| r.expect("every item answered"))
                .collect(),
        })
    }

    /// Transaction history, newest first, with a cursor to the next page.
    pub async fn transactions(
        &self,
        caller: &Caller,
        enrollment_id: &str,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<TransactionsPage, ApiError> {
        let id: EnrollmentId = parse_id("enrollmentId", enrollment_id)?;
        let limit = page_limit(limit)?;
        // Only durable history is shown: the balance query answers from the
        // newest durable version, and so does this.
        let newest = self.engine.balance(caller.business_id, id).await?.version;
        let mut below = match cursor {
            None => newest + 1,
            Some(c) => c
                .parse::<u64>()
                .map_err(|_| ApiError::invalid("cursor", "is not a cursor from this API"))?
                .min(newest + 1),
        };
        let mut items = Vec::new();
        // Read back in chunks until the page is full or history runs out.
        while items.len() < limit && below > 1 {
            let from = below.saturating_sub(4 * limit as u64).max(1);
            let chunk = self
                .engine
                .store()
                .aggregate_events(id.0, from, below - 1)
                .map_err(loyalty_actors::EngineError::from)?;
            for (seq, record) in chunk.iter().rev() {
                below = record.version;
                if let DomainEvent::Enrollment(event) = &record.event {
                    if is_transaction(event) {
                        items.push(event_json(*seq, record));
                        if items.len() == limit {
                            break;
                        }
                    }
                }
            }
            if chunk.is_empty() {
                break;
            }
        }
        let next_cursor = (items.len() == limit && below > 1).then(|| below.to_string());
        Ok(TransactionsPage { items, next_cursor })
    }

    /// The business's published events in commit order after `after`.
    pub fn events(
        &self,
        caller: &Caller,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<EventsPage, ApiError> {
        let limit = page_limit(limit)?;
        let mut after = after.unwrap_or(0);
        let durable = self
            .engine
            .commit_stats()
            .durable_sequence
            .load(std::sync::atomic::Ordering::Acquire);
        let mut items = Vec::new();
        // Bound the work of one page: other businesses' events are skipped,
        // but at most this many records are read before answering.
        let scan_max = limit * 20;
        let mut scanned = 0;
        while items.len() < limit && scanned < scan_max && after < durable {
            let chunk = self
                .engine
                .store()
                .read_log(after, (scan_max - scanned).min(1_000))
                .map_err(loyalty_actors::EngineError::from)?;
            if chunk.is_empty() {
                break;
            }
            for (seq, record) in &chunk {
                if *seq > durable {
                    break;
                }
                after = *seq;
                scanned += 1;
                if record.business_id == caller.business_id && record.event.is_published() {
                    items.push(event_json(*seq, record));
                    if items.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(EventsPage {
            items,
            next_after: after,
        })
    }
}

fn is_transaction(event: &EnrollmentEvent) -> bool {
    event.transaction_id().is_some()
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(PAGE_ITEMS_DEFAULT),
        Some(n) if (1..=PAGE_ITEMS_MAX).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {PAGE_ITEMS_MAX}"),
        )),
    }
}

/// A page of transaction history; `nextCursor` is null on the last page.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionsPage {
    pub items: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
}

/// A page of the event feed; ask again with `after=nextAfter`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    pub items: Vec<serde_json::Value>,
    pub next_after: u64,
}

#[derive(Serialize)]
pub struct ErrorItem {
    pub error: ErrorItemDetail,
}

#[derive(Serialize)]
pub struct ErrorItemDetail {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub status: u16,
}

impl From<&ApiError> for ErrorItem {
    fn from(err: &ApiError) -> Self {
        ErrorItem {
            error: ErrorItemDetail {
                code: err.code,
                message: err.message.clone(),
                field: err.field.clone(),
                status: err.status,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum BatchItem {
    Ok(TransactionBody),
    Err(ErrorItem),
}

#[derive(Serialize)]
pub struct BatchResults {
    pub results: Vec<BatchItem>,
}

/// An earn body (and the path's enrollment id and header key, where the
/// door has them) as the command the engine takes.
fn earn_command(
    path_id: Option<&str>,
    key_header: Option<&str>,
    body: EarnBody,
) -> Result<(EnrollmentId, IdempotencyKey, Request), ApiError> {
    let id = enrollment_id(path_id, body.enrollment_id.as_deref())?;
    let key = idempotency_key(body.idempotency_key, key_header)?;
    let value = match (body.points, body.amount) {
        (Some(points), None) => EarnValue::Points(points),
        (None, Some(amount)) => EarnValue::AmountMinor(amount),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "points",
                "give points or amount, not both",
            ))
        }
        (None, None) => return Err(ApiError::invalid("points", "points or amount is required")),
    };
    let request = Request::Earn(EarnPoints {
        value,
        reason: body.reason,
        reference: body.reference,
    });
    Ok((id, key, request))
}
