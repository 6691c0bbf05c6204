//! The catalog service: businesses, API keys, programs, customers and
//! enrollment creation.
//!
//! Catalog writes are rare (back-office work) and each checks uniqueness
//! against rows it reads, so they are serialised by one async lock held
//! across read, decide and commit: two creations of the same external id or
//! the same enrollment cannot both pass their check. The hot path never
//! takes this lock; it reads programs from the [`ProgramCache`] and
//! everything else straight from the store.
//!
//! [`ProgramCache`]: crate::runtime::ProgramCache

use crate::error::EngineError;
use crate::runtime::Runtime;
use loyalty_engine::catalog::{self, Business, CatalogEvent, Customer, EnrollmentRef};
use loyalty_engine::enrollment::EnrollmentEvent;
use loyalty_engine::program::{Program, ProgramRules};
use loyalty_engine::{BusinessId, CustomerId, DomainEvent, EnrollmentId, EventId, ProgramId};
use loyalty_persistence::keys::catalog as key;
use loyalty_persistence::{ApiKeyRecord, CommitGroup, LogRecord, Put, Store};
use std::sync::Arc;
use tokio::sync::Mutex;
use uuid::Uuid;

pub(crate) struct CatalogInner {
    rt: Arc<Runtime>,
    write_lock: Mutex<()>,
    /// API keys already looked up, by SHA-256: every request authenticates,
    /// and keys never change once issued (there is no revocation yet), so
    /// a hit never needs the store. Bounded; cleared when full.
    api_keys: std::sync::RwLock<std::collections::HashMap<[u8; 32], ApiKeyRecord>>,
}

/// Most API keys the authentication cache holds.
const API_KEY_CACHE_MAX: usize = 100_000;

impl CatalogInner {
    /// Appends one catalog event with its rows and waits until durable.
    async fn commit(
        &self,
        aggregate_id: Uuid,
        business_id: BusinessId,
        event: DomainEvent,
        puts: Vec<Put>,
    ) -> Result<EventId, EngineError> {
        let version = self.rt.store.aggregate_version(aggregate_id)?.unwrap_or(0) + 1;
        let record = LogRecord {
            aggregate_id,
            version,
            event_id: EventId(Uuid::now_v7()),
            business_id,
            recorded_at: self.rt.clock.now(),
            event,
        };
        let group = CommitGroup {
            events: vec![Store::encode_event(&record)?],
            puts,
        };
        let event_id = record.event_id;
        let durable = self.rt.committer.submit(group, vec![record])?;
        durable
            .await
            .map_err(|_| EngineError::Stopped("the commit thread exited".into()))??;
        Ok(event_id)
    }

    pub async fn create_business(&self, name: &str) -> Result<Business, EngineError> {
        let _serial = self.write_lock.lock().await;
        let id = BusinessId(Uuid::now_v7());
        let event = catalog::create_business(id, name, self.rt.clock.now())?;
        let CatalogEvent::BusinessCreated(business) = &event else {
            unreachable!("create_business makes BusinessCreated")
        };
        let business = business.clone();
        let puts = vec![Store::catalog_put(key::business(id.as_bytes()), &business)?];
        self.commit(id.0, id, DomainEvent::Catalog(event), puts)
            .await?;
        Ok(business)
    }

    pub fn business(&self, id: BusinessId) -> Result<Business, EngineError> {
        self.rt
            .store
            .catalog(&key::business(id.as_bytes()))?
            .ok_or(EngineError::NotFound { what: "business" })
    }

    /// Records an API key for a business by its SHA-256; the key itself is
    /// never stored.
    pub async fn issue_api_key(
        &self,
        business_id: BusinessId,
        key_sha256: [u8; 32],
    ) -> Result<ApiKeyRecord, EngineError> {
        let _serial = self.write_lock.lock().await;
        self.business(business_id)?;
        let record = ApiKeyRecord {
            key_id: Uuid::now_v7(),
            business_id,
            issued_at: self.rt.clock.now(),
        };
        let event = CatalogEvent::ApiKeyIssued {
            business_id,
            key_id: record.key_id,
            key_sha256,
        };
        let puts = vec![Store::catalog_put(key::api_key(&key_sha256), &record)?];
        self.commit(
            business_id.0,
            business_id,
            DomainEvent::Catalog(event),
            puts,
        )
        .await?;
        Ok(record)
    }

    /// The business an API key (by its SHA-256) belongs to.
    pub fn api_key(&self, key_sha256: &[u8; 32]) -> Result<Option<ApiKeyRecord>, EngineError> {
        let cache = &self.api_keys;
        if let Some(record) = cache
            .read()
            .expect("api key cache lock is never poisoned")
            .get(key_sha256)
        {
            return Ok(Some(record.clone()));
        }
        let record: Option<ApiKeyRecord> = self.rt.store.catalog(&key::api_key(key_sha256))?;
        if let Some(record) = &record {
            let mut cache = cache.write().expect("api key cache lock is never poisoned");
            if cache.len() >= API_KEY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(*key_sha256, record.clone());
        }
        Ok(record)
    }

    pub async fn create_program(
        &self,
        business_id: BusinessId,
        name: &str,
        rules: ProgramRules,
    ) -> Result<Program, EngineError> {
        let _serial = self.write_lock.lock().await;
        self.business(business_id)?;
        let id = ProgramId(Uuid::now_v7());
        let event = catalog::create_program(business_id, id, name, rules, self.rt.clock.now())?;
        let CatalogEvent::ProgramCreated(program) = &event else {
            unreachable!("create_program makes ProgramCreated")
        };
        let program = program.clone();
        let puts = vec![Store::catalog_put(key::program(id.as_bytes()), &program)?];
        self.commit(id.0, business_id, DomainEvent::Catalog(event), puts)
            .await?;
        self.rt.programs.insert(program.clone());
        Ok(program)
    }

    pub async fn activate_program(
        &self,
        business_id: BusinessId,
        program_id: ProgramId,
    ) -> Result<Program, EngineError> {
        let _serial = self.write_lock.lock().await;
        let mut program = (*self.program_arc(business_id, program_id)?).clone();
        let event = catalog::activate_program(&program)?;
        catalog::apply_to_program(&mut program, &event, self.rt.clock.now());
        let puts = vec![Store::catalog_put(
            key::program(program_id.as_bytes()),
            &program,
        )?];
        self.commit(program_id.0, business_id, DomainEvent::Catalog(event), puts)
            .await?;
        self.rt.programs.insert(program.clone());
        Ok(program)
    }

    fn program_arc(
        &self,
        business_id: BusinessId,
        program_id: ProgramId,
    ) -> Result<Arc<Program>, EngineError> {
        self.rt
            .programs
            .get(program_id)
            .filter(|p| p.business_id == business_id)
            .ok_or(EngineError::NotFound { what: "program" })
    }

    pub fn program(
        &self,
        business_id: BusinessId,
        program_id: ProgramId,
    ) -> Result<Program, EngineError> {
        self.program_arc(business_id, program_id)
            .map(|p| (*p).clone())
    }

    pub async fn create_customer(
        &self,
        business_id: BusinessId,
        external_id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Customer, EngineError> {
        let _serial = self.write_lock.lock().await;
        let external_key = key::customer_external(business_id.as_bytes(), external_id);
        let taken = self
            .rt
            .store
            .catalog::<CustomerId>(&external_key)?
            .is_some();
        let id = CustomerId(Uuid::now_v7());
        let event = catalog::create_customer(
            business_id,
            id,
            external_id,
            name,
            email,
            taken,
            self.rt.clock.now(),
        )?;
        let CatalogEvent::CustomerCreated(customer) = &event else {
            unreachable!("create_customer makes CustomerCreated")
        };
        let customer = customer.clone();
        let puts = vec![
            Store::catalog_put(key::customer(id.as_bytes()), &customer)?,
            Store::catalog_put(external_key, &id)?,
        ];
        self.commit(id.0, business_id, DomainEvent::Catalog(event), puts)
            .await?;
        Ok(customer)
    }

    pub fn customer(
        &self,
        business_id: BusinessId,
        customer_id: CustomerId,
    ) -> Result<Customer, EngineError> {
        self.rt
            .store
            .catalog::<Customer>(&key::customer(customer_id.as_bytes()))?
            .filter(|c| c.business_id == business_id)
            .ok_or(EngineError::NotFound { what: "customer" })
    }

    /// Enrolls a customer in an active program of the same business.
    pub async fn enroll(
        &self,
        business_id: BusinessId,
        customer_id: CustomerId,
        program_id: ProgramId,
    ) -> Result<EnrollmentRef, EngineError> {
        let _serial = self.write_lock.lock().await;
        let program = self.program_arc(business_id, program_id)?;
        let customer = self.customer(business_id, customer_id)?;
        let membership = key::enrollment_membership(program_id.as_bytes(), customer_id.as_bytes());
        let already = self
            .rt
            .store
            .catalog::<EnrollmentId>(&membership)?
            .is_some();
        let id = EnrollmentId(Uuid::now_v7());
        let event = catalog::enroll(business_id, &program, &customer, id, already)?;
        let reference = EnrollmentRef {
            enrollment_id: id,
            business_id,
            customer_id,
            program_id,
        };
        debug_assert!(matches!(event, EnrollmentEvent::Enrolled { .. }));
        let puts = vec![
            Store::catalog_put(key::enrollment(id.as_bytes()), &reference)?,
            Store::catalog_put(membership, &id)?,
        ];
        self.commit(id.0, business_id, DomainEvent::Enrollment(event), puts)
            .await?;
        Ok(reference)
    }

    pub fn enrollment(
        &self,
        business_id: BusinessId,
        enrollment_id: EnrollmentId,
    ) -> Result<EnrollmentRef, EngineError> {
        self.rt
            .store
            .catalog::<EnrollmentRef>(&key::enrollment(enrollment_id.as_bytes()))?
            .filter(|e| e.business_id == business_id)
            .ok_or(EngineError::NotFound { what: "enrollment" })
    }
}

/// The catalog's handle. Each write runs as a task of its own, so it runs
/// to its end (commit, cache update, lock release) even if the caller stops
/// waiting: a dropped HTTP request can never leave the program cache behind
/// the disk or a uniqueness check half done.
pub struct Catalog {
    inner: Arc<CatalogInner>,
}

impl Catalog {
    pub(crate) fn new(rt: Arc<Runtime>) -> Self {
        Catalog {
            inner: Arc::new(CatalogInner {
                rt,
                write_lock: Mutex::new(()),
                api_keys: Default::default(),
            }),
        }
    }

    async fn detached<T, F>(
        &self,
        write: impl FnOnce(Arc<CatalogInner>) -> F,
    ) -> Result<T, EngineError>
    where
        F: std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
        T: Send + 'static,
    {
        tokio::spawn(write(self.inner.clone()))
            .await
            .map_err(|_| EngineError::Stopped("a catalog write failed to complete".into()))?
    }

    pub async fn create_business(&self, name: &str) -> Result<Business, EngineError> {
        let name = name.to_owned();
        self.detached(|c| async move { c.create_business(&name).await })
            .await
    }

    pub fn business(&self, id: BusinessId) -> Result<Business, EngineError> {
        self.inner.business(id)
    }

    /// Records an API key for a business by its SHA-256; the key itself is
    /// never stored.
    pub async fn issue_api_key(
        &self,
        business_id: BusinessId,
        key_sha256: [u8; 32],
    ) -> Result<ApiKeyRecord, EngineError> {
        self.detached(move |c| async move { c.issue_api_key(business_id, key_sha256).await })
            .await
    }

    /// The business an API key (by its SHA-256) belongs to.
    pub fn api_key(&self, key_sha256: &[u8; 32]) -> Result<Option<ApiKeyRecord>, EngineError> {
        self.inner.api_key(key_sha256)
    }

    pub async fn create_program(
        &self,
        business_id: BusinessId,
        name: &str,
        rules: ProgramRules,
    ) -> Result<Program, EngineError> {
        let name = name.to_owned();
        self.detached(move |c| async move { c.create_program(business_id, &name, rules).await })
            .await
    }

    pub async fn activate_program(
        &self,
        business_id: BusinessId,
        program_id: ProgramId,
    ) -> Result<Program, EngineError> {
        self.detached(move |c| async move { c.activate_program(business_id, program_id).await })
            .await
    }

    pub fn program(
        &self,
        business_id: BusinessId,
        program_id: ProgramId,
    ) -> Result<Program, EngineError> {
        self.inner.program(business_id, program_id)
    }

    pub async fn create_customer(
        &self,
        business_id: BusinessId,
        external_id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Customer, EngineError> {
        let (external_id, name, email) = (
            external_id.to_owned(),
            name.map(str::to_owned),
            email.map(str::to_owned),
        );
        self.detached(move |c| async move {
            c.create_customer(business_id, &external_id, name.as_deref(), email.as_deref())
                .await
        })
        .await
    }

    pub fn customer(
        &self,
        business_id: BusinessId,
        customer_id: CustomerId,
    ) -> Result<Customer, EngineError> {
        self.inner.customer(business_id, customer_id)
    }

    /// Enrolls a customer in an active program of the same business.
    pub async fn enroll(
        &self,
        business_id: BusinessId,
        customer_id: CustomerId,
        program_id: ProgramId,
    ) -> Result<EnrollmentRef, EngineError> {
        self.detached(move |c| async move { c.enroll(business_id, customer_id, program_id).await })
            .await
    }

    pub fn enrollment(
        &self,
        business_id: BusinessId,
        enrollment_id: EnrollmentId,
    ) -> Result<EnrollmentRef, EngineError> {
        self.inner.enrollment(business_id, enrollment_id)
    }
}
