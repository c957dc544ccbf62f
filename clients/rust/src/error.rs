//! What can go wrong, typed. A refusal by the server carries the protocol's error code
//! (docs/protocol.md §6) and, for a closed connection, its close code (§13).

/// A client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot work (a bad server URL, a bad certificate hash).
    #[error("configuration: {0}")]
    Config(String),
    /// The server refused the credentials: close 4001 (token expired, no new one), 4003
    /// (missing or invalid token) or 4004 (not this user's). The client does not reconnect.
    #[error("refused by the server ({code}, close {close_code}): {message}")]
    Refused { code: String, close_code: u16, message: String },
    /// The server could not be reached or the connection broke; the client reconnects by itself.
    #[error("connection: {0}")]
    Connection(String),
    /// The outbox file could not be opened or written.
    #[error("outbox: {0}")]
    Outbox(String),
    /// The client has stopped (`close`, or a refusal).
    #[error("the client has stopped")]
    Stopped,
}

impl ClientError {
    /// The protocol's error code, where the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The close codes after which reconnecting with the same token is pointless (§13).
pub(crate) fn is_refusal(close_code: u16) -> bool {
    matches!(close_code, 4001 | 4003 | 4004)
}

/// The error code a refusal's close code stands for, when no `error` event named it.
pub(crate) fn refusal_code(close_code: u16) -> &'static str {
    match close_code {
        4001 => "TOKEN_EXPIRED",
        4004 => "FORBIDDEN",
        _ => "UNAUTHORIZED",
    }
}
