//! The session layer's errors and close reasons, each mapped to the wire in one place.
//!
//! [`SessionError`] is what one request can fail with; the connection carries on after it.
//! [`CloseReason`] is why a connection ends; [`CloseReason::code`] is the only mapping to
//! WebSocket close codes (SPEC §3), and its doc says whether a client should reconnect.

use crate::store::StoreError;
use confab_codec::ErrorCode;
use confab_codec::event::ErrorData;
use confab_codec::wire::{Reconnect, close};
use serde_json::json;

/// Why one client request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The frame did not decode (bad JSON, wrong field, too large, ...).
    #[error(transparent)]
    Decode(#[from] confab_codec::DecodeError),
    /// The conversation does not exist.
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    /// The user is not a member of the conversation.
    #[error("not a member of conversation {0}")]
    NotMember(String),
    /// The message, photo or other resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The user may not do this to this resource (delete someone else's message).
    #[error("{0}")]
    PermissionDenied(String),
    /// A rate limit was hit.
    #[error("rate limit exceeded: {limit} per {interval_s} s; retry in {retry_after_s} s")]
    RateLimited { limit: u32, interval_s: u64, retry_after_s: u64 },
    /// The refreshed token is not valid.
    #[error("{message}")]
    Token { code: ErrorCode, message: String },
    /// The store cannot write now (disk full, I/O error); nothing was stored. Retryable.
    #[error("the server cannot store this now, retry later: {0}")]
    Unavailable(String),
    /// The store failed; nothing was acknowledged.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Seconds a client is told to wait before retrying what the store could not take.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 5;

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ConversationNotFound(c) => Self::ConversationNotFound(c),
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::NotOwner => Self::PermissionDenied("only the sender may delete a message".into()),
            StoreError::Unavailable(why) => Self::Unavailable(why),
            StoreError::RateLimited { limit, interval_s, retry_after_s } => {
                Self::RateLimited { limit, interval_s, retry_after_s }
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl SessionError {
    /// The wire code. The only mapping from session errors to codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Decode(e) => e.code(),
            Self::ConversationNotFound(_) => ErrorCode::ConversationNotFound,
            Self::NotMember(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Token { code, .. } => *code,
            Self::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The `error` event's data for this error, answering `request_event` / `request_id`.
    pub fn to_error_data(&self, request_event: Option<&str>, request_id: Option<&str>) -> ErrorData {
        let (details, event, id) = match self {
            Self::Decode(e) => (
                e.error.field().map(|f| json!({"field": f, "error": e.error.to_string()})),
                e.request_event.as_deref().or(request_event),
                e.request_id.as_deref().or(request_id),
            ),
            Self::RateLimited { limit, interval_s, retry_after_s } => (
                Some(json!({"limit": limit, "interval": interval_s, "retry_after": retry_after_s})),
                request_event,
                request_id,
            ),
            Self::Unavailable(_) => {
                (Some(json!({"retry_after": UNAVAILABLE_RETRY_AFTER_S})), request_event, request_id)
            }
            Self::ConversationNotFound(c) | Self::NotMember(c) => {
                (Some(json!({"conversation_id": c})), request_event, request_id)
            }
            _ => (None, request_event, request_id),
        };
        ErrorData {
            code: self.code(),
            message: self.to_string(),
            details,
            request_event: event.map(str::to_owned),
            request_id: id.map(str::to_owned),
        }
    }
}

/// Why a connection ends. Sent as `connection:closed` `{reason, code}` and then as the close
/// frame's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed, or asked to. Do not reconnect unless the app wants to.
    Normal,
    /// The server is shutting down or restarting. Reconnect with backoff, then re-join with
    /// `since_seq`: nothing acknowledged is lost.
    ServerShutdown,
    /// The client sent far over its rate limit. Reconnect after a pause, send slower.
    RateLimited,
    /// The client did not read its events fast enough and its queue filled up. Reconnect and
    /// re-join with `since_seq`.
    SlowConsumer,
    /// A frame over the transport's hard size limit. Fix the client; reconnecting is fine.
    TooBig,
    /// No pong within the keepalive window. Reconnect.
    Timeout,
    /// The token expired during the connection. Get a new token, then reconnect.
    TokenExpired,
    /// No token, or an invalid one. Do not reconnect with the same token.
    Unauthorized,
    /// The token is valid but the user may not connect. Do not reconnect.
    AccessDenied,
    /// The user already has the maximum number of connections, or opened too many too fast.
    /// Reconnect later, or close another device.
    TooManyConnections,
    /// An operator disconnected this device (the admin console). Do not reconnect by itself:
    /// the same close as [`CloseReason::AccessDenied`].
    Disconnected,
}

impl CloseReason {
    /// The WebSocket close code (SPEC §3). The only mapping from reasons to codes.
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => close::NORMAL,
            Self::ServerShutdown => close::GOING_AWAY,
            Self::RateLimited | Self::SlowConsumer | Self::Timeout => close::POLICY,
            Self::TooBig => close::TOO_BIG,
            Self::TokenExpired => close::TOKEN_EXPIRED,
            Self::Unauthorized => close::UNAUTHORIZED,
            Self::AccessDenied | Self::Disconnected => close::FORBIDDEN,
            Self::TooManyConnections => close::TOO_MANY_CONNECTIONS,
        }
    }

    /// What the client should do next (the codec's advice for this close code).
    pub const fn reconnect(self) -> Reconnect {
        confab_codec::wire::reconnect_advice(self.code())
    }

    /// The snake_case reason in `connection:closed` and the close frame.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal_closure",
            Self::ServerShutdown => "server_shutdown",
            Self::RateLimited => "rate_limited",
            Self::SlowConsumer => "slow_consumer",
            Self::TooBig => "message_too_big",
            Self::Timeout => "ping_timeout",
            Self::TokenExpired => "token_expired",
            Self::Unauthorized => "unauthorized",
            Self::AccessDenied => "access_denied",
            Self::TooManyConnections => "too_many_connections",
            Self::Disconnected => "disconnected_by_operator",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_the_spec() {
        assert_eq!(CloseReason::Normal.code(), 1000);
        assert_eq!(CloseReason::ServerShutdown.code(), 1001);
        assert_eq!(CloseReason::SlowConsumer.code(), 1008);
        assert_eq!(CloseReason::TooBig.code(), 1009);
        assert_eq!(CloseReason::TokenExpired.code(), 4001);
        assert_eq!(CloseReason::Unauthorized.code(), 4003);
        assert_eq!(CloseReason::AccessDenied.code(), 4004);
        assert_eq!(CloseReason::TooManyConnections.code(), 4008);
        assert_eq!(CloseReason::Disconnected.code(), 4004);
        assert_eq!(CloseReason::Disconnected.reconnect(), Reconnect::No);
        assert_eq!(CloseReason::Unauthorized.reconnect(), Reconnect::No);
        assert_eq!(CloseReason::SlowConsumer.reconnect(), Reconnect::WithBackoff);
        assert_eq!(CloseReason::TokenExpired.reconnect(), Reconnect::AfterNewToken);
    }

    #[test]
    fn rate_limit_errors_carry_the_seed_details() {
        let e = SessionError::RateLimited { limit: 30, interval_s: 60, retry_after_s: 2 };
        let d = e.to_error_data(Some("message:send"), Some("r1"));
        assert_eq!(d.code, ErrorCode::RateLimited);
        assert_eq!(d.details, Some(json!({"limit": 30, "interval": 60, "retry_after": 2})));
        assert_eq!(d.request_id.as_deref(), Some("r1"));
    }
}
