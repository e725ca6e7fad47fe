//! The one place where errors become gRPC statuses. Rejections carry a `google.rpc.ErrorInfo`
//! whose `reason` is the stable rejection name (domain `coffer.v1`); malformed requests carry a
//! `google.rpc.BadRequest` naming each bad field. Internal details never reach the client.

use std::collections::HashMap;
use std::time::Duration;

use coffer_core::{Rejection, RejectionCode};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo.domain` of every Coffer rejection.
pub const ERROR_DOMAIN: &str = "coffer.v1";

/// Longest status message or field description sent, in bytes. Messages may quote the request,
/// and HTTP/2 limits the size of the trailers that carry them.
pub const MESSAGE_BYTES_MAX: usize = 1024;

/// Most field violations listed in one `BadRequest`.
pub const FIELD_VIOLATIONS_MAX: usize = 8;

/// Longest field path or field description in a `BadRequest`, in bytes.
pub const FIELD_TEXT_BYTES_MAX: usize = 256;

/// `text` cut to at most `bytes_max` bytes on a character boundary.
fn bounded(mut text: String, bytes_max: usize) -> String {
    if text.len() > bytes_max {
        let mut end = bytes_max - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadField {
    /// Path of the field, e.g. `expected_price[0].amount_minor_units`.
    pub field: String,
    /// What is wrong with it, in words a developer can act on.
    pub description: String,
}

impl BadField {
    /// A bad field.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        BadField {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; nothing was attempted.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<BadField>),
    /// The ledger refused the command (the refusal is stored for idempotent retries).
    #[error("{}", .0.message)]
    Rejected(Rejection),
    /// A store receipt or notification did not verify; nothing was attempted.
    #[error("{0}")]
    Receipt(coffer_receipts::ReceiptError),
    /// A looked-up entity does not exist; `reason` is the `ErrorInfo.reason` clients match on.
    #[error("{message}")]
    NotFound {
        reason: RejectionCode,
        message: String,
    },
    /// The request is well-formed but the system's state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller's request rate is over its limit.
    #[error("rate limit exceeded; retry in {} ms", retry_after.as_millis())]
    RateLimited { retry_after: Duration },
    /// A bounded resource (open streams) is used up.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Storage failed or the server is shutting down; nothing was committed. Safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected state; details are logged, not sent.
    #[error("internal error")]
    Internal(String),
}

fn describe(fields: &[BadField]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.description))
        .collect();
    parts.join("; ")
}

/// The gRPC code of a receipt that did not verify: FAILED_PRECONDITION when the server or the
/// purchase is not in a state to redeem it (store not configured, purchase pending, refunded),
/// INVALID_ARGUMENT when the payload itself is wrong (format, signature, chain, app,
/// environment). Never UNAUTHENTICATED: the caller's credentials are fine.
pub fn receipt_code(error: &coffer_receipts::ReceiptError) -> Code {
    use coffer_receipts::ReceiptError as E;
    match error {
        E::PlatformNotConfigured { .. } | E::NotPurchased { .. } | E::Revoked { .. } => {
            Code::FailedPrecondition
        }
        _ => Code::InvalidArgument,
    }
}

/// The gRPC code of each rejection. Exhaustive, so a new rejection cannot go unmapped.
pub fn rejection_code(code: RejectionCode) -> Code {
    match code {
        RejectionCode::IdempotencyKeyReused | RejectionCode::ReceiptAlreadyRedeemed => {
            Code::AlreadyExists
        }
        RejectionCode::UnknownOffer
        | RejectionCode::UnknownItem
        | RejectionCode::UnknownCurrency
        | RejectionCode::UnknownReward
        | RejectionCode::UnknownProduct
        | RejectionCode::StoreTransactionNotFound
        | RejectionCode::TransactionNotFound => Code::NotFound,
        RejectionCode::RateLimited => Code::ResourceExhausted,
        RejectionCode::AmountOverflow => Code::OutOfRange,
        RejectionCode::NotAvailable
        | RejectionCode::PriceChanged
        | RejectionCode::LimitReached
        | RejectionCode::NotUpgradable
        | RejectionCode::LevelChanged
        | RejectionCode::MaxLevelReached
        | RejectionCode::NotConsumable
        | RejectionCode::InsufficientFunds
        | RejectionCode::InsufficientItems
        | RejectionCode::CapExceeded
        | RejectionCode::StackLimitExceeded
        | RejectionCode::AlreadyReversed
        | RejectionCode::NotReversible => Code::FailedPrecondition,
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let status = status_of(error);
        if status.message().len() <= MESSAGE_BYTES_MAX {
            return status;
        }
        let message = bounded(status.message().to_owned(), MESSAGE_BYTES_MAX);
        Status::with_details(status.code(), message, status.details().to_vec().into())
    }
}

fn status_of(error: ApiError) -> Status {
    match error {
        ApiError::InvalidArgument(fields) => {
            // The message is also encoded inside the details header: bound it before, or a
            // request full of long ids outgrows the client's header limit (h2 protocol error).
            let message = bounded(
                format!("invalid request: {}", describe(&fields)),
                MESSAGE_BYTES_MAX,
            );
            // Each violation is bounded too, and so is their number, so the details fit.
            let violations: Vec<FieldViolation> = fields
                .into_iter()
                .take(FIELD_VIOLATIONS_MAX)
                .map(|f| {
                    FieldViolation::new(
                        bounded(f.field, FIELD_TEXT_BYTES_MAX),
                        bounded(f.description, FIELD_TEXT_BYTES_MAX),
                    )
                })
                .collect();
            Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations),
            )
        }
        ApiError::Rejected(rejection) => {
            let mut metadata = HashMap::new();
            if let Some(ms) = rejection.retry_after_ms {
                metadata.insert("retry_after_ms".to_owned(), ms.to_string());
            }
            let mut details =
                ErrorDetails::with_error_info(rejection.code.name(), ERROR_DOMAIN, metadata);
            if let Some(ms) = rejection.retry_after_ms {
                details.set_retry_info(Some(Duration::from_millis(ms.max(0) as u64)));
            }
            let message = bounded(
                format!("{}: {}", rejection.code.name(), rejection.message),
                MESSAGE_BYTES_MAX,
            );
            Status::with_error_details(rejection_code(rejection.code), message, details)
        }
        ApiError::Receipt(error) => with_reason(receipt_code(&error), error.code(), &error),
        ApiError::NotFound { reason, message } => {
            with_reason(Code::NotFound, reason.name(), &message)
        }
        ApiError::Unauthenticated(message) => Status::unauthenticated(message),
        ApiError::PermissionDenied(message) => Status::permission_denied(message),
        ApiError::RateLimited { retry_after } => {
            let message = format!(
                "rate limit exceeded; retry in {} ms",
                retry_after.as_millis()
            );
            let mut details = ErrorDetails::with_retry_info(Some(retry_after));
            details.set_error_info(
                "RATE_LIMITED",
                ERROR_DOMAIN,
                HashMap::from([(
                    "retry_after_ms".to_owned(),
                    retry_after.as_millis().to_string(),
                )]),
            );
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        ApiError::ResourceExhausted(message) => Status::resource_exhausted(message),
        ApiError::FailedPrecondition(message) => Status::failed_precondition(message),
        ApiError::Unavailable(message) => Status::unavailable(message),
        ApiError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error; the server log has the details")
        }
    }
}

/// A status whose `ErrorInfo.reason` is `reason` and whose message starts with it.
fn with_reason(code: Code, reason: &str, message: &dyn std::fmt::Display) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
    let message = bounded(format!("{reason}: {message}"), MESSAGE_BYTES_MAX);
    Status::with_error_details(code, message, details)
}

impl From<coffer_store::StoreError> for ApiError {
    fn from(error: coffer_store::StoreError) -> ApiError {
        tracing::error!(%error, "storage error");
        ApiError::Unavailable(
            "storage is unavailable; nothing was changed, retry with the same idempotency key"
                .to_owned(),
        )
    }
}
