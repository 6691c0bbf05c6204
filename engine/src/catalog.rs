//! The catalog: businesses, their API keys, programs, customers, and the
//! creation of enrollments. These change rarely and are read on the hot
//! path, so the runtime keeps them apart from enrollment actors.
//!
//! Each function checks a request against records the caller has looked
//! up (the caller does the I/O; see `actors::catalog`) and returns the event
//! to record.

use crate::enrollment::EnrollmentEvent;
use crate::error::DomainError;
use crate::ids::{BusinessId, CustomerId, EnrollmentId, ProgramId};
use crate::limits::TEXT_BYTES_MAX;
use crate::program::{check_name, Program, ProgramRules, ProgramStatus};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Business {
    pub business_id: BusinessId,
    pub name: String,
    pub created_at: Timestamp,
}

/// A customer of one business.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: CustomerId,
    pub business_id: BusinessId,
    /// The business's own id for this customer; unique within the business.
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub created_at: Timestamp,
}

/// Where an enrollment belongs: what a runtime needs to find and check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRef {
    pub enrollment_id: EnrollmentId,
    pub business_id: BusinessId,
    pub customer_id: CustomerId,
    pub program_id: ProgramId,
}

/// Events of the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogEvent {
    /// Internal: not published.
    BusinessCreated(Business),
    /// Internal: not published. Only a hash of the key is ever stored.
    ApiKeyIssued {
        business_id: BusinessId,
        key_id: uuid::Uuid,
        key_sha256: [u8; 32],
    },
    /// `loyalty.program.created`.
    ProgramCreated(Program),
    /// `loyalty.program.activated`.
    ProgramActivated {
        program_id: ProgramId,
        business_id: BusinessId,
    },
    /// `customer.created`.
    CustomerCreated(Customer),
}

impl CatalogEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            CatalogEvent::BusinessCreated(_) => "business.created",
            CatalogEvent::ApiKeyIssued { .. } => "business.apikey.issued",
            CatalogEvent::ProgramCreated(_) => "loyalty.program.created",
            CatalogEvent::ProgramActivated { .. } => "loyalty.program.activated",
            CatalogEvent::CustomerCreated(_) => "customer.created",
        }
    }

    /// Whether the event goes to the business's event feed. Business and
    /// key records are the operator's, not the business's.
    pub fn is_published(&self) -> bool {
        !matches!(
            self,
            CatalogEvent::BusinessCreated(_) | CatalogEvent::ApiKeyIssued { .. }
        )
    }
}

pub fn create_business(
    business_id: BusinessId,
    name: &str,
    now: Timestamp,
) -> Result<CatalogEvent, DomainError> {
    check_name("name", name)?;
    Ok(CatalogEvent::BusinessCreated(Business {
        business_id,
        name: name.to_owned(),
        created_at: now,
    }))
}

pub fn create_program(
    business_id: BusinessId,
    program_id: ProgramId,
    name: &str,
    rules: ProgramRules,
    now: Timestamp,
) -> Result<CatalogEvent, DomainError> {
    check_name("name", name)?;
    Ok(CatalogEvent::ProgramCreated(Program {
        program_id,
        business_id,
        name: name.to_owned(),
        rules,
        status: ProgramStatus::Draft,
        created_at: now,
        activated_at: None,
    }))
}

pub fn activate_program(program: &Program) -> Result<CatalogEvent, DomainError> {
    if program.status == ProgramStatus::Active {
        return Err(DomainError::ProgramAlreadyActive(
            program.program_id.to_string(),
        ));
    }
    Ok(CatalogEvent::ProgramActivated {
        program_id: program.program_id,
        business_id: program.business_id,
    })
}

/// Applies a program event to the program it concerns.
pub fn apply_to_program(program: &mut Program, event: &CatalogEvent, at: Timestamp) {
    if let CatalogEvent::ProgramActivated { program_id, .. } = event {
        assert_eq!(*program_id, program.program_id);
        program.status = ProgramStatus::Active;
        program.activated_at = Some(at);
    }
}

/// A new customer. `external_id_taken` is whether another customer of the
/// business already has this external id.
pub fn create_customer(
    business_id: BusinessId,
    customer_id: CustomerId,
    external_id: &str,
    name: Option<&str>,
    email: Option<&str>,
    external_id_taken: bool,
    now: Timestamp,
) -> Result<CatalogEvent, DomainError> {
    if external_id.is_empty()
        || external_id.len() > TEXT_BYTES_MAX
        || external_id.chars().any(char::is_control)
    {
        return Err(DomainError::invalid(
            "externalId",
            format!("must be 1 to {TEXT_BYTES_MAX} bytes without control characters"),
        ));
    }
    if let Some(name) = name {
        check_name("name", name)?;
    }
    if let Some(email) = email {
        let plausible = email.len() <= TEXT_BYTES_MAX
            && email
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !plausible {
            return Err(DomainError::invalid("email", "is not an email address"));
        }
    }
    if external_id_taken {
        return Err(DomainError::CustomerExists);
    }
    Ok(CatalogEvent::CustomerCreated(Customer {
        customer_id,
        business_id,
        external_id: external_id.to_owned(),
        name: name.map(str::to_owned),
        email: email.map(str::to_owned),
        created_at: now,
    }))
}

/// Enrolls a customer in a program. Both must belong to `business_id` (the
/// caller answers "not found" otherwise); `already_enrolled` is whether this
/// customer has an enrollment in this program.
pub fn enroll(
    business_id: BusinessId,
    program: &Program,
    customer: &Customer,
    enrollment_id: EnrollmentId,
    already_enrolled: bool,
) -> Result<EnrollmentEvent, DomainError> {
    assert_eq!(
        program.business_id, business_id,
        "caller scopes the program to the business"
    );
    assert_eq!(
        customer.business_id, business_id,
        "caller scopes the customer to the business"
    );
    if program.status != ProgramStatus::Active {
        return Err(DomainError::ProgramNotActive(
            program.program_id.to_string(),
        ));
    }
    if already_enrolled {
        return Err(DomainError::AlreadyEnrolled);
    }
    let tier = program
        .rules
        .tier_name(program.rules.tier_for(0))
        .map(str::to_owned);
    Ok(EnrollmentEvent::Enrolled {
        enrollment_id,
        business_id,
        customer_id: customer.customer_id,
        program_id: program.program_id,
        tier,
    })
}
