//! Reading an envelope (`{type, data, message_id, timestamp}`) in one pass, for any event set.
//!
//! The fast path decodes `data` straight into the typed event when `type` comes first (as it
//! does from every client we know, and from our own encoder); otherwise `data` is buffered
//! and decoded once the type is known. When anything fails, a second, lenient pass over the
//! same bytes works out what went wrong (unknown type, which field, not a document at all) so
//! the error names the field and carries the request's type and id. Errors are rare, so only
//! they pay for that.

use crate::error::{CodecError, DecodeError};
use crate::format::{Format, FormatError};
use crate::values::ParseStr;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::{fmt, marker::PhantomData};

/// A set of events that can be decoded from an envelope's `data`, chosen by the `type`.
pub(crate) trait EventSet: Sized {
    /// Decodes the data of an event of type `kind`; an unknown kind is an error.
    fn deserialize_data<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error>;
    /// Whether `kind` names an event of this set.
    fn is_known(kind: &str) -> bool;
}

/// An envelope whose data has been decoded but not yet checked.
#[derive(Debug)]
pub(crate) struct RawEnvelope<E> {
    pub(crate) kind: String,
    pub(crate) data: E,
    pub(crate) message_id: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) timestamp: Option<String>,
}

/// Decodes `bytes` as one envelope of the event set `E`.
pub(crate) fn decode<E: EventSet>(format: Format, bytes: &[u8]) -> Result<RawEnvelope<E>, DecodeError> {
    format
        .deserialize_seed(bytes, EnvelopeSeed::<E>(PhantomData))
        .map_err(|failure| diagnose::<E>(format, bytes, failure))
}

enum Key {
    Type,
    Data,
    MessageId,
    RequestId,
    Timestamp,
    Other,
}

impl Key {
    fn from_name(v: &str) -> Result<Key, String> {
        // SPEC §4: `event` is an alias of `type`, `payload` of `data`.
        Ok(match v {
            "type" | "event" => Key::Type,
            "data" | "payload" => Key::Data,
            "message_id" => Key::MessageId,
            "request_id" => Key::RequestId,
            "timestamp" => Key::Timestamp,
            _ => Key::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(ParseStr(Key::from_name, "an envelope field name"))
    }
}

struct EnvelopeSeed<E>(PhantomData<E>);

impl<'de, E: EventSet> DeserializeSeed<'de> for EnvelopeSeed<E> {
    type Value = RawEnvelope<E>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, E: EventSet> Visitor<'de> for EnvelopeSeed<E> {
    type Value = RawEnvelope<E>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kind: Option<String> = None;
        let mut data: Option<E> = None;
        let mut buffered: Option<Value> = None;
        let mut message_id = None;
        let mut request_id = None;
        let mut timestamp = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => kind = Some(map.next_value()?),
                Key::Data => match &kind {
                    Some(k) => data = map.next_value_seed(DataSeed::<E> { kind: k, _e: PhantomData })?,
                    None => buffered = Some(map.next_value()?),
                },
                Key::MessageId => message_id = map.next_value()?,
                Key::RequestId => request_id = map.next_value()?,
                Key::Timestamp => timestamp = map.next_value()?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        let data = match data {
            Some(d) => d,
            None => {
                // Data that came before the type, or no data at all (`{"type":"heartbeat"}`).
                let value = buffered.filter(|v| !v.is_null()).unwrap_or_else(|| Value::Object(Default::default()));
                E::deserialize_data(&kind, value).map_err(de::Error::custom)?
            }
        };
        Ok(RawEnvelope { kind, data, message_id, request_id, timestamp })
    }
}

/// Decodes `data` for a known kind; `null` counts as absent.
struct DataSeed<'k, E> {
    kind: &'k str,
    _e: PhantomData<E>,
}

impl<'de, E: EventSet> DeserializeSeed<'de> for DataSeed<'_, E> {
    type Value = Option<E>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, E: EventSet> Visitor<'de> for DataSeed<'_, E> {
    type Value = Option<E>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event's data object")
    }
    fn visit_none<Er: de::Error>(self) -> Result<Self::Value, Er> {
        Ok(None)
    }
    fn visit_unit<Er: de::Error>(self) -> Result<Self::Value, Er> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        E::deserialize_data(self.kind, d).map(Some)
    }
}

/// The lenient second pass: only the envelope fields, every value accepted.
#[derive(Deserialize)]
struct Lenient {
    #[serde(rename = "type")]
    kind: Option<Value>,
    event: Option<Value>,
    data: Option<Value>,
    payload: Option<Value>,
    message_id: Option<Value>,
    timestamp: Option<Value>,
}

/// Works out why `bytes` failed to decode as an envelope of `E`.
fn diagnose<E: EventSet>(format: Format, bytes: &[u8], failure: FormatError) -> DecodeError {
    let malformed = |reason: String| DecodeError::from(CodecError::Malformed { format: format.name(), reason });
    let lenient = match format.deserialize_seed(bytes, PhantomData::<Lenient>) {
        Ok(l) => l,
        Err(_) => return malformed(failure.0),
    };
    let request_id = lenient.message_id.as_ref().and_then(Value::as_str).map(str::to_owned);
    let kind_value = lenient.kind.or(lenient.event);
    let with_context = |error: CodecError, event: Option<String>| DecodeError {
        error,
        request_event: event,
        request_id: request_id.clone(),
    };
    let kind = match kind_value {
        None | Some(Value::Null) => return with_context(CodecError::MissingType, None),
        Some(Value::String(k)) => k,
        Some(_) => return with_context(CodecError::invalid("type", "must be a string"), None),
    };
    if !E::is_known(&kind) {
        return with_context(CodecError::UnknownType(kind.clone()), Some(kind));
    }
    let data = lenient.data.or(lenient.payload).filter(|v| !v.is_null());
    let data = data.unwrap_or_else(|| Value::Object(Default::default()));
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(data, &mut track);
    if let Err(e) = E::deserialize_data(&kind, tracked) {
        let reason = e.to_string();
        let path = track.path().to_string();
        let field = match (path.as_str(), missing_field_name(&reason)) {
            (".", Some(name)) => name.to_owned(),
            (".", None) => "data".to_owned(),
            (p, Some(name)) => format!("{p}.{name}"),
            (p, None) => p.to_owned(),
        };
        return with_context(CodecError::InvalidField { field, reason }, Some(kind));
    }
    for (name, value) in [("message_id", &lenient.message_id), ("timestamp", &lenient.timestamp)] {
        if value.as_ref().is_some_and(|v| !v.is_string() && !v.is_null()) {
            return with_context(CodecError::invalid(name, "must be a string"), Some(kind));
        }
    }
    with_context(CodecError::Malformed { format: format.name(), reason: failure.0 }, Some(kind))
}

/// serde reports a missing field at its parent's path; this finds the field's own name.
fn missing_field_name(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("missing field `")?;
    rest.split('`').next()
}
