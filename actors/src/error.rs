//! [`EngineError`]: what the runtime answers instead of a result.

use loyalty_engine::DomainError;
use loyalty_persistence::StoreError;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum EngineError {
    /// The domain refused the command; nothing changed.
    #[error(transparent)]
    Domain(#[from] DomainError),

    /// No such record, or it belongs to another business (the two are not
    /// told apart, so nothing leaks across tenants).
    #[error("{what} not found")]
    NotFound { what: &'static str },

    /// A queue or mailbox is full: retry shortly. Nothing changed.
    #[error("the engine is overloaded; retry")]
    Overloaded,

    /// The engine has stopped (shutting down, or a write failed and it
    /// stopped rather than answer wrongly).
    #[error("the engine is not running: {0}")]
    Stopped(String),

    /// Stored data could not be read.
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<StoreError> for EngineError {
    fn from(err: StoreError) -> Self {
        EngineError::Storage(err.to_string())
    }
}

impl EngineError {
    /// A stable code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Domain(e) => e.code(),
            EngineError::NotFound { .. } => "NOT_FOUND",
            EngineError::Overloaded => "OVERLOADED",
            EngineError::Stopped(_) => "UNAVAILABLE",
            EngineError::Storage(_) => "STORAGE_ERROR",
        }
    }
}
