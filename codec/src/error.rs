//! The protocol's error codes, and the codec's own error type mapped onto them.
//!
//! Every way a client frame can be wrong is a [`CodecError`] variant; [`CodecError::code`] is the
//! one place that decides which wire code (SPEC §4 "Errors") a client sees for it. The session
//! layer has its own errors (forbidden, rate limited, ...) and maps them onto the same
//! [`ErrorCode`] enum, so the set of codes on the wire is defined here once.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A wire error code, as in seeds 000 and 001 (SPEC §4 "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request's data is malformed or a field is out of range.
    ValidationError,
    /// No credentials, or credentials that do not identify a user.
    Unauthorized,
    /// The JWT's `exp` has passed; refresh it (`auth:refresh`) or reconnect with a new one.
    TokenExpired,
    /// The JWT does not verify (signature, algorithm, audience, issuer).
    TokenInvalid,
    /// The user may not act on this resource (not a member of the conversation).
    Forbidden,
    /// The user may not perform this action (deleting someone else's message).
    PermissionDenied,
    /// A message, photo or other resource does not exist.
    NotFound,
    /// The conversation does not exist.
    ConversationNotFound,
    /// A rate limit was hit; `details` carries `limit`, `interval` and `retry_after`.
    RateLimited,
    /// The frame or the message content exceeds its size limit.
    MessageTooLarge,
    /// The message `type` is not one the server accepts from a client.
    InvalidMessageType,
    /// The conversation has reached its member limit.
    ConversationFull,
    /// A connection-level failure (seed 001); the server uses close codes instead.
    ConnectionError,
    /// The server failed; the request may be retried.
    InternalError,
    /// The server cannot store anything right now (its disk is full, its store unreachable):
    /// nothing was stored. Retry after `details.retry_after` seconds; it resumes by itself.
    ServiceUnavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ValidationError => "VALIDATION_ERROR",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::Forbidden => "FORBIDDEN",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::ConversationNotFound => "CONVERSATION_NOT_FOUND",
            Self::RateLimited => "RATE_LIMITED",
            Self::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Self::InvalidMessageType => "INVALID_MESSAGE_TYPE",
            Self::ConversationFull => "CONVERSATION_FULL",
            Self::ConnectionError => "CONNECTION_ERROR",
            Self::InternalError => "INTERNAL_ERROR",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client frame could not be turned into a typed event.
///
/// None of these is fatal to a connection: the session answers with an `error` event carrying
/// [`CodecError::code`] and reads the next frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// The frame is larger than the limit (32 KiB by default). Refused before it is parsed.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    /// The bytes are not a JSON / MessagePack document at all, or not an object.
    #[error("malformed {format}: {reason}")]
    Malformed { format: &'static str, reason: String },
    /// The envelope has no `type` (or `event`, or `action`) field.
    #[error("type: required")]
    MissingType,
    /// The envelope's type names no event this dialect accepts from a client.
    #[error("type: unknown event type {0:?}")]
    UnknownType(String),
    /// A field of `data` has the wrong JSON type, or a required field is missing.
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// A text field is longer than its limit (message content: 2000 characters).
    #[error("{field}: must be {min} to {max} characters, got {got}")]
    TooLong { field: &'static str, min: usize, max: usize, got: usize },
    /// A photo message states a size over the limit (10 MB).
    #[error("metadata.size_bytes: photo of {bytes} bytes exceeds the limit of 10 MB")]
    PhotoTooLarge { bytes: u64 },
    /// A message `type` the server does not accept from a client.
    #[error("type: {0}")]
    InvalidMessageType(String),
}

impl CodecError {
    /// The wire code a client sees for this error. The only mapping from codec errors to codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } | Self::TooLong { .. } | Self::PhotoTooLarge { .. } => {
                ErrorCode::MessageTooLarge
            }
            Self::InvalidMessageType(_) => ErrorCode::InvalidMessageType,
            Self::Malformed { .. } | Self::MissingType | Self::UnknownType(_) | Self::InvalidField { .. } => {
                ErrorCode::ValidationError
            }
        }
    }

    /// The field the error is about, for the `details.field` of the wire error.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidField { field, .. } => Some(field),
            Self::TooLong { field, .. } => Some(field),
            Self::PhotoTooLarge { .. } => Some("metadata.size_bytes"),
            Self::MissingType | Self::UnknownType(_) | Self::InvalidMessageType(_) => Some("type"),
            Self::FrameTooLarge { .. } | Self::Malformed { .. } => None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField { field: field.into(), reason: reason.into() }
    }
}

/// A [`CodecError`] with what could be learned about the request it came from, so that the
/// `error` reply can carry `request_event` and `request_id` (SPEC §4 "Errors").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    pub error: CodecError,
    /// The envelope's type, when it could be read (even if unknown).
    pub request_event: Option<String>,
    /// The envelope's `message_id`, when it could be read.
    pub request_id: Option<String>,
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        self.error.code()
    }
}

impl From<CodecError> for DecodeError {
    fn from(error: CodecError) -> Self {
        Self { error, request_event: None, request_id: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in [ErrorCode::ValidationError, ErrorCode::ConversationNotFound, ErrorCode::RateLimited] {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn too_long_content_reads_like_the_contract() {
        let e = CodecError::TooLong { field: "content", min: 1, max: 2000, got: 2001 };
        assert_eq!(e.to_string(), "content: must be 1 to 2000 characters, got 2001");
        assert_eq!(e.code(), ErrorCode::MessageTooLarge);
    }
}
