//! The connection contract a client needs besides the events: where to connect, how to ask
//! for a dialect and a format, what each close code means and whether to reconnect, how a
//! WebTransport stream is reset, and the timings. The server answers by these, and a client
//! (the JS client, the benchmark, a native SDK) reads them from here instead of copying them.

use crate::dialect::{Codec, Dialect};
use crate::format::Format;
use crate::ids::{ConversationId, Seq};
use std::time::Duration;

/// Endpoint paths (SPEC §3, §7).
pub mod path {
    /// WebSocket: JSON or MessagePack, any dialect.
    pub const WS: &str = "/ws";
    /// WebSocket, seed 000's path (Winkr's `message:new` carries its fields flat there too).
    pub const WS_V1: &str = "/v1/ws";
    /// WebTransport (HTTP/3 extended CONNECT), on the HTTPS port over UDP.
    pub const WT: &str = "/wt";
    /// Seed 003's chat socket: this prefix, then the chat's id (the chatrooms dialect, scoped).
    pub const CHAT_PREFIX: &str = "/api/v1/ws/chat/";
    /// Seed 003's personal socket: this prefix, then the user's own id.
    pub const PERSONAL_PREFIX: &str = "/api/v1/ws/";
}

/// `Sec-WebSocket-Protocol` values (browsers cannot set headers, so these carry what a query
/// parameter would).
pub mod subprotocol {
    /// MessagePack binary frames (JSON text frames otherwise).
    pub const MSGPACK: &str = "confab.msgpack";
    pub const JSON: &str = "confab.json";
    pub const V1: &str = "confab.v1";
    /// `confab.<dialect>` asks for a dialect (`confab.winkr`, ...).
    pub const DIALECT_PREFIX: &str = "confab.";
    /// `bearer.<token>` carries the token; the server never echoes it.
    pub const BEARER_PREFIX: &str = "bearer.";
    /// Those the server may select, in its order of preference.
    pub const SELECTABLE: [&str; 7] =
        [JSON, MSGPACK, V1, "confab.winkr", "confab.systimz", "confab.chatrooms", "confab.actions"];
}

/// Query parameters of a connection URL (SPEC §7).
pub mod query {
    pub const TOKEN: &str = "token";
    /// `json` or `msgpack`.
    pub const CODEC: &str = "codec";
    /// `winkr`, `systimz`, `chatrooms` or `actions`.
    pub const DIALECT: &str = "dialect";
    /// The conversation of a dialect whose frames name none.
    pub const CONVERSATION_ID: &str = "conversation_id";
    /// For a connection scoped to one conversation: replay its messages after this seq.
    pub const SINCE_SEQ: &str = "since_seq";
}

/// What a connection asks for besides its query: where it connected, and what the server is
/// configured to give when nothing is asked.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// The dialect the path implies (seed 003's paths), if any.
    pub dialect: Option<Dialect>,
    /// The conversation the path names, if any.
    pub scope: Option<String>,
    /// The path is seed 000's (`/v1/ws`): Winkr's `message:new` carries its fields flat too.
    pub flat_messages: bool,
}

/// The largest frame of the actions dialect, whose messages carry files inline (1 MiB, the
/// transports' hard limit).
pub const ATTACHMENT_FRAME_BYTES: usize = 1024 * 1024;

/// What the server does when a connection asks for nothing.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub dialect: Dialect,
    /// The format when neither `?codec=` nor a subprotocol names one.
    pub format: Format,
    /// The frame limit of every dialect but actions (which gets at least
    /// [`ATTACHMENT_FRAME_BYTES`]).
    pub max_frame: usize,
}

/// A connection's codec from its endpoint, its query (`codec`, `dialect`, `conversation_id`)
/// and its offered subprotocols; `Err` says what is wrong, for a 400 answer. SPEC §7: the
/// endpoint's dialect first, then `?dialect=`, then a `confab.<dialect>` subprotocol, then the
/// default; a format from `?codec=`, else the default.
pub fn negotiate<'a>(
    query: impl Fn(&str) -> Option<&'a str>,
    mut offered: impl Iterator<Item = &'a str>,
    endpoint: &Endpoint,
    defaults: Defaults,
) -> Result<Codec, String> {
    let format = match query(query::CODEC) {
        None => defaults.format,
        Some(c) => Format::from_name(c).ok_or_else(|| format!("unknown codec {c:?}: use json or msgpack"))?,
    };
    let dialect = match (endpoint.dialect, query(query::DIALECT)) {
        (Some(d), _) => d,
        (None, Some(d)) => Dialect::from_name(d)
            .ok_or_else(|| format!("unknown dialect {d:?}: use winkr, systimz, chatrooms or actions"))?,
        (None, None) => offered
            .find_map(|p| p.strip_prefix(subprotocol::DIALECT_PREFIX).and_then(Dialect::from_name))
            .unwrap_or(defaults.dialect),
    };
    let scope = match endpoint.scope.as_deref().or_else(|| query(query::CONVERSATION_ID)) {
        Some(c) if dialect.needs_scope() => {
            Some(ConversationId::parse(c).map_err(|r| format!("conversation_id: {r}"))?)
        }
        _ => None,
    };
    // Seed 003 on a generic endpoint: a chat socket with `?conversation_id=`, else the user's
    // personal socket (the token says whose).
    let dialect = if dialect == Dialect::Chatrooms && scope.is_none() { Dialect::ChatroomsPersonal } else { dialect };
    // Seed 004 sends files inline, in base64: its frames may be as large as the transports'
    // hard limit, not only the contract's 32 KiB.
    let max_frame =
        if dialect == Dialect::Actions { defaults.max_frame.max(ATTACHMENT_FRAME_BYTES) } else { defaults.max_frame };
    Ok(Codec::new(dialect, format)
        .with_max_frame(max_frame)
        .with_scope(scope)
        .with_flat_messages(endpoint.flat_messages))
}

/// `?since_seq=`: where a connection scoped to one conversation resumes.
pub fn resume<'a>(query: impl Fn(&str) -> Option<&'a str>) -> Result<Option<Seq>, String> {
    query(query::SINCE_SEQ)
        .map(|s| s.parse::<u64>().map(Seq).map_err(|_| format!("since_seq: {s:?} is not a non-negative integer")))
        .transpose()
}

/// What a client should do after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Not by itself: the client or the app ended it, or the server will refuse again
    /// (a bad token, a forbidden user or conversation).
    No,
    /// With backoff and jitter, then re-join with `since_seq`: nothing acknowledged is lost.
    WithBackoff,
    /// After getting a new token.
    AfterNewToken,
}

/// Close codes (SPEC §3): a WebSocket close frame's code, and the `code` of
/// `connection:closed`, which precedes every close on both transports.
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down or restarting.
    pub const GOING_AWAY: u16 = 1001;
    /// Over the rate limit, too slow to read, or no pong within the keepalive window.
    pub const POLICY: u16 = 1008;
    /// A frame over the transport's hard limit.
    pub const TOO_BIG: u16 = 1009;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const UNAUTHORIZED: u16 = 4003;
    pub const FORBIDDEN: u16 = 4004;
    /// Too many connections for the user, or too many connects too fast.
    pub const TOO_MANY_CONNECTIONS: u16 = 4008;
}

/// What a client should do after a close with `code`.
pub const fn reconnect_advice(code: u16) -> Reconnect {
    match code {
        close::NORMAL | close::UNAUTHORIZED | close::FORBIDDEN => Reconnect::No,
        close::TOKEN_EXPIRED => Reconnect::AfterNewToken,
        _ => Reconnect::WithBackoff,
    }
}

/// Application error codes a WebTransport stream is reset (or stopped) with: opaque to QUIC;
/// WebTransport maps them into the HTTP/3 error space for the client.
pub mod stream_reset {
    /// The client stopped reading this conversation's stream and its queue filled up; re-join
    /// with `since_seq` on a new stream.
    pub const SLOW_CONSUMER: u32 = 0x10;
    /// A frame over 1 MiB: the rest of the stream cannot be read.
    pub const FRAME_TOO_LARGE: u32 = 0x11;
    /// The session is over.
    pub const SESSION_GONE: u32 = 0x12;
}

/// Timings both sides keep.
pub mod timing {
    use super::Duration;

    /// How often a client should send `heartbeat` (advertised in `connection:established`).
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
    /// A typing state the client does not stop is cleared by the server after this long.
    pub const TYPING_TIMEOUT: Duration = Duration::from_secs(6);
    /// The server's default ping interval, and how long it waits for a pong (configurable).
    pub const PING_INTERVAL: Duration = Duration::from_secs(30);
    pub const PONG_TIMEOUT: Duration = Duration::from_secs(60);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn codec(q: &[(&str, &str)], offered: &[&str], endpoint: &Endpoint) -> Result<Codec, String> {
        let q: HashMap<&str, &str> = q.iter().copied().collect();
        let defaults = Defaults { dialect: Dialect::Winkr, format: Format::Json, max_frame: 32 * 1024 };
        negotiate(|k| q.get(k).copied(), offered.iter().copied(), endpoint, defaults)
    }

    #[test]
    fn the_path_then_the_query_then_a_subprotocol_name_the_dialect() {
        let chat = Endpoint { dialect: Some(Dialect::Chatrooms), scope: Some("room".into()), flat_messages: false };
        let c = codec(&[("dialect", "systimz")], &["confab.actions"], &chat).unwrap();
        assert_eq!((c.dialect, c.scope.as_ref().map(|s| s.as_str())), (Dialect::Chatrooms, Some("room")));
        let c = codec(&[("dialect", "systimz"), ("conversation_id", "c1")], &["confab.actions"], &Endpoint::default());
        assert_eq!(c.unwrap().dialect, Dialect::Systimz);
        let c = codec(&[("codec", "msgpack")], &["bearer.x", "confab.actions"], &Endpoint::default()).unwrap();
        assert_eq!((c.dialect, c.format, c.max_frame), (Dialect::Actions, Format::MsgPack, ATTACHMENT_FRAME_BYTES));
        assert_eq!(codec(&[], &[], &Endpoint::default()).unwrap().dialect, Dialect::Winkr);
        let personal = codec(&[("dialect", "chatrooms")], &[], &Endpoint::default()).unwrap();
        assert_eq!(personal.dialect, Dialect::ChatroomsPersonal, "chatrooms without a chat is the personal socket");
        assert!(codec(&[("codec", "xml")], &[], &Endpoint::default()).unwrap_err().contains("xml"));
        assert!(codec(&[("dialect", "irc")], &[], &Endpoint::default()).unwrap_err().contains("irc"));
    }

    #[test]
    fn since_seq_is_a_non_negative_integer() {
        assert_eq!(resume(|_| Some("7")), Ok(Some(Seq(7))));
        assert_eq!(resume(|_| None), Ok(None));
        assert!(resume(|_| Some("-1")).is_err());
    }

    #[test]
    fn only_a_refusal_or_a_normal_close_stops_reconnecting() {
        assert_eq!(reconnect_advice(close::UNAUTHORIZED), Reconnect::No);
        assert_eq!(reconnect_advice(close::FORBIDDEN), Reconnect::No);
        assert_eq!(reconnect_advice(close::TOKEN_EXPIRED), Reconnect::AfterNewToken);
        for code in [close::GOING_AWAY, close::POLICY, close::TOO_BIG, close::TOO_MANY_CONNECTIONS, 1006] {
            assert_eq!(reconnect_advice(code), Reconnect::WithBackoff, "{code}");
        }
    }
}
