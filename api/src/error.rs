//! [`ApiError`]: the contract's error body, and the one place every
//! engine and domain error is given its status and code.

use loyalty_actors::EngineError;
use loyalty_engine::DomainError;
use serde::Serialize;

/// `{"error":{"code","message","field"?}}` with an HTTP status (also sent
/// as `Nats-Service-Error-Code` over NATS).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, where one is.
    pub field: Option<String>,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after_s: Option<u32>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        ApiError {
            field: Some(field),
            ..ApiError::new(400, "INVALID_FIELD", message)
        }
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "UNAUTHORIZED", "missing or unknown API key")
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(404, "NOT_FOUND", format!("{what} not found"))
    }

    pub fn too_large(limit_bytes: usize) -> Self {
        ApiError::new(
            413,
            "PAYLOAD_TOO_LARGE",
            format!("body is larger than {limit_bytes} bytes"),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        })
        .expect("an error body always serializes")
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        let status = match &err {
            DomainError::InvalidField { .. } => 400,
            DomainError::TransactionNotFound(_) => 404,
            DomainError::IdempotencyConflict
            | DomainError::ProgramAlreadyActive(_)
            | DomainError::AlreadyEnrolled
            | DomainError::CustomerExists => 409,
            DomainError::InsufficientPoints { .. }
            | DomainError::Overflow { .. }
            | DomainError::ProgramNotActive(_)
            | DomainError::AlreadyReversed(_)
            | DomainError::ReversalExceedsTransaction { .. }
            | DomainError::TooManyPending { .. } => 422,
        };
        ApiError {
            status,
            code: err.code(),
            message: err.to_string(),
            field: err.field().map(str::to_owned),
            retry_after_s: None,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Domain(err) => err.into(),
            EngineError::NotFound { what } => ApiError::not_found(what),
            EngineError::Overloaded => ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(
                    429,
                    "OVERLOADED",
                    "the engine is at capacity; retry shortly",
                )
            },
            EngineError::Stopped(detail) => ApiError {
                retry_after_s: Some(5),
                ..ApiError::new(503, "UNAVAILABLE", detail)
            },
            EngineError::Storage(detail) => {
                tracing::error!(cause = %detail, "storage error answered as 500");
                ApiError::new(500, "STORAGE_ERROR", "stored data could not be read")
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}
