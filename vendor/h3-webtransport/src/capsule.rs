//! Session-level capsules on the CONNECT stream (confab's patch, see PATCHES.md).
//!
//! After the `200` answer to the extended CONNECT, the CONNECT stream carries capsules
//! (RFC 9297) inside HTTP/3 DATA frames. Only two matter to a WebTransport session
//! (draft-ietf-webtrans-http3 §5): CLOSE_WEBTRANSPORT_SESSION, which ends the session with an
//! application error code and a reason, and DRAIN_WEBTRANSPORT_SESSION, a hint. Every other
//! capsule type must be skipped. A DATA frame may hold part of a capsule or several, so
//! [`CapsuleReader`] buffers across frames.

use bytes::{Buf, BufMut, BytesMut};

/// CLOSE_WEBTRANSPORT_SESSION.
pub const CLOSE_WEBTRANSPORT_SESSION: u64 = 0x2843;
/// DRAIN_WEBTRANSPORT_SESSION.
pub const DRAIN_WEBTRANSPORT_SESSION: u64 = 0x78ae;
/// The longest reason a close may carry, in bytes (draft-ietf-webtrans-http3 §5).
pub const MAX_REASON_BYTES: usize = 1024;
/// A capsule longer than this is refused rather than buffered: a close is at most 1028 bytes,
/// and unknown capsules this large have no business on a WebTransport CONNECT stream.
pub const MAX_CAPSULE_BYTES: u64 = 64 * 1024;

/// How the peer ended the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClose {
    /// The application error code (`WebTransportCloseInfo.closeCode` in browsers).
    pub code: u32,
    /// The reason, UTF-8 (invalid sequences replaced).
    pub reason: String,
}

impl SessionClose {
    /// A CONNECT stream finished without a capsule: the same as code 0 with no reason.
    pub fn clean() -> Self {
        Self { code: 0, reason: String::new() }
    }
}

/// Why the CONNECT stream's capsules could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapsuleError {
    /// A capsule declared more than [`MAX_CAPSULE_BYTES`].
    TooLong(u64),
    /// A CLOSE_WEBTRANSPORT_SESSION shorter than its 4-byte code, or with a reason over 1024 bytes.
    MalformedClose,
    /// The stream ended in the middle of a capsule.
    Truncated,
}

impl std::fmt::Display for CapsuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLong(n) => write!(f, "capsule of {n} bytes is too long"),
            Self::MalformedClose => f.write_str("malformed CLOSE_WEBTRANSPORT_SESSION capsule"),
            Self::Truncated => f.write_str("CONNECT stream ended inside a capsule"),
        }
    }
}

impl std::error::Error for CapsuleError {}

/// Encodes CLOSE_WEBTRANSPORT_SESSION. A reason over 1024 bytes is cut at a character boundary.
pub fn encode_close(code: u32, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let mut out = BytesMut::with_capacity(16 + reason.len());
    put_varint(&mut out, CLOSE_WEBTRANSPORT_SESSION);
    put_varint(&mut out, 4 + reason.len() as u64);
    out.put_u32(code);
    out.put_slice(reason);
    out.to_vec()
}

/// Reads capsules from the CONNECT stream's DATA, however it is split into frames.
#[derive(Debug, Default)]
pub struct CapsuleReader {
    buf: BytesMut,
}

impl CapsuleReader {
    /// Adds the payload of one DATA frame.
    pub fn push(&mut self, mut data: impl Buf) {
        while data.has_remaining() {
            let chunk = data.chunk();
            self.buf.extend_from_slice(chunk);
            let n = chunk.len();
            data.advance(n);
        }
    }

    /// The close, if a whole CLOSE_WEBTRANSPORT_SESSION has arrived; other capsules are skipped.
    pub fn next_close(&mut self) -> Result<Option<SessionClose>, CapsuleError> {
        loop {
            let mut peek = &self.buf[..];
            let Some(kind) = get_varint(&mut peek) else { return Ok(None) };
            let Some(len) = get_varint(&mut peek) else { return Ok(None) };
            if len > MAX_CAPSULE_BYTES {
                return Err(CapsuleError::TooLong(len));
            }
            let len = len as usize;
            if peek.len() < len {
                return Ok(None);
            }
            let header = self.buf.len() - peek.len();
            let payload = &peek[..len];
            if kind == CLOSE_WEBTRANSPORT_SESSION {
                if len < 4 || len - 4 > MAX_REASON_BYTES {
                    return Err(CapsuleError::MalformedClose);
                }
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let reason = String::from_utf8_lossy(&payload[4..]).into_owned();
                self.buf.advance(header + len);
                return Ok(Some(SessionClose { code, reason }));
            }
            // DRAIN_WEBTRANSPORT_SESSION and unknown capsules carry nothing we act on.
            self.buf.advance(header + len);
        }
    }

    /// The stream ended: a clean end outside a capsule is a close with code 0.
    pub fn finish(&self) -> Result<SessionClose, CapsuleError> {
        if self.buf.is_empty() {
            Ok(SessionClose::clean())
        } else {
            Err(CapsuleError::Truncated)
        }
    }
}

fn put_varint(out: &mut BytesMut, v: u64) {
    if v < 1 << 6 {
        out.put_u8(v as u8);
    } else if v < 1 << 14 {
        out.put_u16(0x4000 | v as u16);
    } else if v < 1 << 30 {
        out.put_u32(0x8000_0000 | v as u32);
    } else {
        out.put_u64(0xc000_0000_0000_0000 | v);
    }
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for b in &buf[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    *buf = &buf[len..];
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_round_trips_whatever_the_split() {
        let wire = encode_close(4003, "unauthorized");
        // type 0x2843 as a 2-byte varint, length 16.
        assert_eq!(&wire[..3], &[0x68, 0x43, 16]);
        for split in 0..=wire.len() {
            let mut r = CapsuleReader::default();
            r.push(&wire[..split]);
            let early = r.next_close().unwrap();
            if split < wire.len() {
                assert_eq!(early, None, "split at {split}");
                r.push(&wire[split..]);
            }
            let close = early.or_else(|| r.next_close().unwrap()).unwrap();
            assert_eq!(close, SessionClose { code: 4003, reason: "unauthorized".into() });
            assert_eq!(r.finish(), Ok(SessionClose::clean()));
        }
    }

    #[test]
    fn unknown_and_drain_capsules_are_skipped() {
        let mut wire = Vec::new();
        let mut b = BytesMut::new();
        put_varint(&mut b, 0x17); // some unknown capsule type
        put_varint(&mut b, 3);
        b.put_slice(b"abc");
        put_varint(&mut b, DRAIN_WEBTRANSPORT_SESSION);
        put_varint(&mut b, 0);
        wire.extend_from_slice(&b);
        wire.extend_from_slice(&encode_close(7, ""));
        let mut r = CapsuleReader::default();
        r.push(&wire[..]);
        assert_eq!(r.next_close().unwrap(), Some(SessionClose { code: 7, reason: String::new() }));
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let reason = "é".repeat(600); // 1200 bytes
        let wire = encode_close(1, &reason);
        let mut r = CapsuleReader::default();
        r.push(&wire[..]);
        let close = r.next_close().unwrap().unwrap();
        assert_eq!(close.reason.len(), 1024);
        assert!(close.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn bad_capsules_are_refused() {
        let mut b = BytesMut::new();
        put_varint(&mut b, CLOSE_WEBTRANSPORT_SESSION);
        put_varint(&mut b, 2);
        b.put_slice(&[0, 1]);
        let mut r = CapsuleReader::default();
        r.push(&b[..]);
        assert_eq!(r.next_close(), Err(CapsuleError::MalformedClose));

        let mut b = BytesMut::new();
        put_varint(&mut b, 0x21);
        put_varint(&mut b, 1 << 20);
        let mut r = CapsuleReader::default();
        r.push(&b[..]);
        assert_eq!(r.next_close(), Err(CapsuleError::TooLong(1 << 20)));

        let mut r = CapsuleReader::default();
        r.push(&encode_close(1, "x")[..3]);
        assert_eq!(r.next_close(), Ok(None));
        assert_eq!(r.finish(), Err(CapsuleError::Truncated));
    }
}
