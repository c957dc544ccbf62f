//! Length-prefixed frames for byte streams (WebTransport streams, SPEC §3).
//!
//! Each frame is a QUIC variable-length integer (RFC 9000 §16: the two high bits of the first
//! byte say whether the prefix is 1, 2, 4 or 8 bytes long) holding the payload length, then
//! the payload: one envelope. A 200-byte message costs a 2-byte prefix.
//!
//! [`FrameDecoder`] is incremental: push bytes in any chunking, take whole frames out.
//! `Ok(None)` means "not enough bytes yet"; an error means the stream cannot be trusted any
//! more (a length over the limit), and is reported as soon as the prefix is readable, before
//! the payload is buffered.

use bytes::{Buf, Bytes, BytesMut};

/// Largest client frame accepted (SPEC §4: frames over 32 KiB are rejected).
pub const MAX_FRAME_BYTES: usize = 32 * 1024;

/// Largest server-to-client frame a client should accept: a `history` answer of 100 messages
/// at their largest. Server frames are not bound by the client limit.
pub const MAX_SERVER_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Largest value a QUIC varint holds.
pub const MAX_VARINT: u64 = (1 << 62) - 1;

/// A frame's declared length is over the decoder's limit. The stream must be closed: what
/// follows cannot be told apart from payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
pub struct FrameTooLarge {
    pub size: u64,
    pub limit: usize,
}

/// Appends a QUIC varint. Values over [`MAX_VARINT`] are clamped (no frame is that large).
pub fn put_varint(value: u64, out: &mut Vec<u8>) {
    let v = value.min(MAX_VARINT);
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Reads a QUIC varint from the front of `buf`: `Some((value, prefix_len))`, or `None` if
/// `buf` is too short to hold it.
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// Appends one frame (prefix and payload) to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    put_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    limit: usize,
    /// Frames over `limit` but not over this are skipped (reported, then their payload
    /// dropped as it arrives, never buffered); larger ones break the stream.
    skip_limit: usize,
    /// Payload bytes of a skipped frame still to drop.
    skipping: u64,
    broken: bool,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `limit` bytes; the first one breaks it.
    pub fn new(limit: usize) -> Self {
        Self::with_skip_limit(limit, limit)
    }

    /// A decoder that reports frames longer than `limit` and, up to `skip_limit`, skips them
    /// and goes on with the next frame: a client that sent one oversized message gets an
    /// error and keeps its stream. Past `skip_limit` the decoder is broken.
    pub fn with_skip_limit(limit: usize, skip_limit: usize) -> Self {
        Self { buf: BytesMut::new(), limit, skip_limit: skip_limit.max(limit), skipping: 0, broken: false }
    }

    /// Adds bytes read from the stream. Fails at once if the pending frame's prefix declares a
    /// length over the limit, so an attacker cannot make the decoder buffer a huge payload.
    /// Call [`FrameDecoder::next_frame`] until it returns `Ok(None)` after each push (also
    /// after an error, unless [`FrameDecoder::is_broken`]).
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), FrameTooLarge> {
        if self.broken {
            return Ok(());
        }
        if self.skipping > 0 {
            let n = bytes.len().min(usize::try_from(self.skipping).unwrap_or(usize::MAX));
            bytes = &bytes[n..];
            self.skipping -= n as u64;
        }
        self.buf.extend_from_slice(bytes);
        self.check_pending().map(|_| ())
    }

    /// Whether a frame over the skip limit made the rest of the stream unreadable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The next whole frame's payload, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameTooLarge> {
        let Some((len, prefix)) = self.check_pending()? else {
            return Ok(None);
        };
        if self.buf.len() < prefix + len {
            return Ok(None);
        }
        self.buf.advance(prefix);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes held that are not yet a whole frame (at most the limit plus one read).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn check_pending(&mut self) -> Result<Option<(usize, usize)>, FrameTooLarge> {
        match get_varint(&self.buf) {
            None => Ok(None),
            Some((len, prefix)) if len <= self.limit as u64 => Ok(Some((len as usize, prefix))),
            Some((len, prefix)) if len <= self.skip_limit as u64 => {
                self.buf.advance(prefix);
                let have = self.buf.len().min(len as usize);
                self.buf.advance(have);
                self.skipping = len - have as u64;
                Err(FrameTooLarge { size: len, limit: self.limit })
            }
            Some((len, _)) => {
                self.buf = BytesMut::new();
                self.broken = true;
                Err(FrameTooLarge { size: len, limit: self.limit })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_use_the_shortest_rfc_9000_form() {
        for (v, len) in [(0u64, 1), (63, 1), (64, 2), (16383, 2), (16384, 4), ((1 << 30) - 1, 4), (1 << 30, 8)] {
            let mut out = Vec::new();
            put_varint(v, &mut out);
            assert_eq!(out.len(), len, "{v}");
            assert_eq!(get_varint(&out), Some((v, len)));
        }
        // RFC 9000 §A.1 examples.
        assert_eq!(get_varint(&[0x7b, 0xbd]), Some((15293, 2)));
        assert_eq!(get_varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494_878_333, 4)));
        assert_eq!(get_varint(&[0x40]), None);
    }

    #[test]
    fn frames_come_out_whole_in_any_chunking() {
        let mut stream = Vec::new();
        encode_frame(b"hello", &mut stream);
        encode_frame(&[7u8; 300], &mut stream);
        let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut frames = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b)).unwrap();
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0][..], b"hello");
        assert_eq!(frames[1].len(), 300);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_its_payload_arrives() {
        let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut prefix = Vec::new();
        put_varint(MAX_FRAME_BYTES as u64 + 1, &mut prefix);
        assert_eq!(d.push(&prefix), Err(FrameTooLarge { size: MAX_FRAME_BYTES as u64 + 1, limit: MAX_FRAME_BYTES }));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn an_empty_frame_is_a_frame() {
        let mut d = FrameDecoder::new(16);
        d.push(&[0]).unwrap();
        assert_eq!(d.next_frame().unwrap().map(|b| b.len()), Some(0));
    }

    #[test]
    fn an_oversized_frame_under_the_skip_limit_is_skipped_in_any_chunking() {
        let mut stream = Vec::new();
        encode_frame(b"before", &mut stream);
        encode_frame(&[9u8; 100], &mut stream);
        encode_frame(b"after", &mut stream);
        for chunk in [1, 2, 7, 50, stream.len()] {
            let mut d = FrameDecoder::with_skip_limit(16, 1000);
            let (mut frames, mut errors) = (Vec::new(), Vec::new());
            for piece in stream.chunks(chunk) {
                if let Err(e) = d.push(piece) {
                    errors.push(e);
                }
                loop {
                    match d.next_frame() {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(e) => errors.push(e),
                    }
                }
            }
            assert_eq!(frames, vec![Bytes::from_static(b"before"), Bytes::from_static(b"after")], "chunk {chunk}");
            assert_eq!(errors, vec![FrameTooLarge { size: 100, limit: 16 }], "chunk {chunk}");
            assert!(!d.is_broken());
            assert_eq!(d.buffered(), 0);
        }
        let mut d = FrameDecoder::with_skip_limit(16, 64);
        let mut prefix = Vec::new();
        put_varint(65, &mut prefix);
        assert!(d.push(&prefix).is_err());
        assert!(d.is_broken());
    }
}
