//! Dialects: the client APIs the server speaks, each mapped to and from the typed model.
//!
//! The session layer only ever sees [`ClientEnvelope`] and [`ServerEnvelope`]; a [`Codec`]
//! (dialect + format + frame limit) is what a connection uses to turn bytes into them and back.
//! Adding a dialect means a variant here and a module beside `winkr`; nothing outside the codec.

mod winkr;

use crate::error::{CodecError, DecodeError};
use crate::event::{ClientEnvelope, ServerEnvelope};
use crate::format::{EncodeError, Format};
use crate::frame::MAX_FRAME_BYTES;

/// A client API (SPEC §4, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Seeds 000 and 001: `{type, data, timestamp, message_id}`.
    Winkr,
}

impl Dialect {
    /// The name used in `?dialect=`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Winkr => "winkr",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "winkr" => Some(Self::Winkr),
            _ => None,
        }
    }
}

/// How one connection encodes envelopes: its dialect, its format, and its frame limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec {
    pub dialect: Dialect,
    pub format: Format,
    /// Largest frame decoded; bigger ones are refused before parsing (`MESSAGE_TOO_LARGE`).
    pub max_frame: usize,
}

impl Codec {
    /// A codec with the contract's 32 KiB frame limit.
    pub const fn new(dialect: Dialect, format: Format) -> Self {
        Self { dialect, format, max_frame: MAX_FRAME_BYTES }
    }

    pub const fn with_max_frame(self, max_frame: usize) -> Self {
        Self { max_frame, ..self }
    }

    /// Decodes one client frame into a checked request, or says what is wrong with it.
    pub fn decode_client(&self, bytes: &[u8]) -> Result<ClientEnvelope, DecodeError> {
        self.check_size(bytes)?;
        match self.dialect {
            Dialect::Winkr => winkr::decode_client(self.format, bytes),
        }
    }

    /// Encodes a server event, appending to `out` (so a caller can put a frame prefix first).
    pub fn encode_server_into(&self, env: &ServerEnvelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self.dialect {
            Dialect::Winkr => winkr::encode_server(self.format, env, out),
        }
    }

    pub fn encode_server(&self, env: &ServerEnvelope) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        self.encode_server_into(env, &mut out)?;
        Ok(out)
    }

    /// Decodes a server frame (for clients: the benchmark, tests, SDKs).
    pub fn decode_server(&self, bytes: &[u8]) -> Result<ServerEnvelope, DecodeError> {
        self.check_size(bytes)?;
        match self.dialect {
            Dialect::Winkr => winkr::decode_server(self.format, bytes),
        }
    }

    /// Encodes a client request (for clients), appending to `out`.
    pub fn encode_client_into(&self, env: &ClientEnvelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self.dialect {
            Dialect::Winkr => winkr::encode_client(self.format, env, out),
        }
    }

    pub fn encode_client(&self, env: &ClientEnvelope) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        self.encode_client_into(env, &mut out)?;
        Ok(out)
    }

    fn check_size(&self, bytes: &[u8]) -> Result<(), DecodeError> {
        if bytes.len() > self.max_frame {
            return Err(CodecError::FrameTooLarge { size: bytes.len(), limit: self.max_frame }.into());
        }
        Ok(())
    }
}
