//! One error-code map for both edges: every client-facing error is an [`ApiError`] with a
//! [`Code`], turned into an HTTP response or a `tonic::Status` in exactly one place each.
//!
//! Internal details (storage errors, paths) are logged where they happen and never sent to
//! clients; the message of an `ApiError` is written for the client.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::ingest::IngestError;
use crate::journal::JournalError;

/// What kind of failure a client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The request is malformed; the message names what is wrong.
    InvalidArgument,
    /// Missing or wrong credentials.
    Unauthenticated,
    /// Valid credentials whose scope does not cover the call (a read token asking for the
    /// quarantine).
    PermissionDenied,
    /// The named thing does not exist.
    NotFound,
    /// A position outside what the journal retains.
    OutOfRange,
    /// A limit was reached (subscribers, lag).
    ResourceExhausted,
    /// Try again later: the journal cannot commit, or the server is shutting down.
    Unavailable,
    /// The request body is larger than allowed.
    PayloadTooLarge,
    /// The request body has a content type we do not accept.
    UnsupportedMediaType,
    /// The client did not send its request (body) in time.
    RequestTimeout,
    /// Stored data cannot be read back (a damaged journal); retrying gives the same answer.
    DataLoss,
    /// A bug or an unexpected state; details are in the server log.
    Internal,
}

impl Code {
    /// The gRPC status code.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Code::InvalidArgument | Code::PayloadTooLarge | Code::UnsupportedMediaType => {
                tonic::Code::InvalidArgument
            }
            Code::Unauthenticated => tonic::Code::Unauthenticated,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::NotFound => tonic::Code::NotFound,
            Code::OutOfRange => tonic::Code::OutOfRange,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::RequestTimeout => tonic::Code::DeadlineExceeded,
            Code::DataLoss => tonic::Code::DataLoss,
            Code::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status.
    pub fn http(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::DataLoss | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The kind of failure.
    pub code: Code,
    /// A message for the client, naming what was wrong.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `InvalidArgument` naming a field.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(Code::InvalidArgument, format!("{field}: {problem}"))
    }
}

impl From<JournalError> for ApiError {
    fn from(error: JournalError) -> Self {
        tracing::error!(%error, "journal error");
        match error {
            JournalError::Storage { .. }
            | JournalError::Closed
            | JournalError::Conflict { .. }
            | JournalError::Damaged { .. }
            | JournalError::Vanished { .. }
            | JournalError::TooNew { .. } => {
                ApiError::new(Code::Unavailable, "the journal is unavailable; retry later")
            }
            JournalError::Unreadable { cursor, .. } => ApiError::new(
                Code::DataLoss,
                format!("the event at cursor {cursor} cannot be read: the journal is damaged"),
            ),
            JournalError::Corrupt(_) => ApiError::new(Code::Internal, "internal error"),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Journal(error) => error.into(),
            IngestError::Cancelled => {
                tracing::error!(%error, "ingest error");
                ApiError::new(
                    Code::Unavailable,
                    "the service is shutting down; retry later",
                )
            }
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        tonic::Status::new(error.code.grpc(), error.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.code.http(), axum::Json(body)).into_response()
    }
}
