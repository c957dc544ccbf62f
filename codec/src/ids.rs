//! Identifier newtypes: checked once when built, cheap to clone afterwards.
//!
//! Every id on the wire (users, conversations, messages, photos, connections, requests, local
//! ids) follows one rule, documented in `docs/protocol.md`: 1 to 128 characters from
//! `A-Z a-z 0-9 - _ . : @ + = ~`. That admits UUIDs, the seeds' `conv_123`/`msg-uuid-1` styles and
//! e-mail-like JWT subjects, and keeps ids safe to put in a URL path or a log line unescaped.
//! Ids are `Arc<str>` inside because the server copies them into every fan-out.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, sync::Arc};

/// Longest id accepted, in bytes (all allowed characters are ASCII).
pub const MAX_ID_LEN: usize = 128;

/// Which bytes an id may hold, as a table: ids are checked in every decoded message.
const ID_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'+' | b'=' | b'~');
        c += 1;
    }
    t
};

fn id_char(c: u8) -> bool {
    ID_CHARS[usize::from(c)]
}

/// Checks the id rule; the error is the reason, without the field name.
pub fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_ID_LEN {
        return Err(format!("must be at most {MAX_ID_LEN} characters, got {}", s.chars().count()));
    }
    if let Some(bad) = s.bytes().find(|&c| !id_char(c)) {
        let shown = if bad.is_ascii_graphic() || bad == b' ' {
            format!("{:?}", bad as char)
        } else {
            format!("byte 0x{bad:02x}")
        };
        return Err(format!("contains {shown}; ids use A-Z a-z 0-9 and - _ . : @ + = ~"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Builds the id if `s` follows the id rule; the error is the reason.
            pub fn parse(s: &str) -> Result<Self, String> {
                check_id(s)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A server-made id: `prefix` (id characters only) and `value` in hex.
            pub fn generate(prefix: &'static str, value: u128) -> Self {
                debug_assert!(check_id(prefix).is_ok());
                Self(Arc::from(format!("{prefix}{value:x}")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(crate::values::ParseStr(Self::parse, "an id"))
            }
        }
    };
}

id_type!(
    /// A user, as in the JWT's `sub` claim.
    UserId
);
id_type!(
    /// A conversation (a match's chat, or a group).
    ConversationId
);
id_type!(
    /// A stored message, assigned by the server (`msg_...`).
    MessageId
);
id_type!(
    /// An ephemeral photo, assigned by the server.
    PhotoId
);
id_type!(
    /// One connection (one device) of a user, assigned by the server.
    ConnectionId
);
id_type!(
    /// A client's `message_id` on a request, echoed as `request_id` on the answer.
    RequestId
);
id_type!(
    /// A client-chosen id that makes `message:send` idempotent per sender and conversation.
    LocalId
);

/// A message's position in its conversation: 1, 2, 3, ... with no gaps (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_style_ids_are_accepted() {
        for s in ["conv-uuid-1", "conv_123456789", "msg_1700000000_abc123xyz", "user@example.com", "a"] {
            assert!(ConversationId::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn bad_ids_say_why() {
        assert_eq!(UserId::parse(""), Err("must not be empty".to_string()));
        assert!(UserId::parse(&"x".repeat(129)).unwrap_err().contains("at most 128"));
        assert!(UserId::parse("a/b").unwrap_err().contains("'/'"));
        assert!(UserId::parse("a b").unwrap_err().contains("' '"));
        assert!(UserId::parse("caf\u{e9}").unwrap_err().contains("byte 0xc3"));
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = MessageId::parse("msg_1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serde_json::to_string(&id).ok().as_deref(), Some("\"msg_1\""));
        let back: Result<MessageId, _> = serde_json::from_str("\"bad id\"");
        assert!(back.is_err());
    }
}
