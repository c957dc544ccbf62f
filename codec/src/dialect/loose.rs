//! Reading the seed dialects other than Winkr: a frame is parsed into a JSON value (from JSON
//! or MessagePack) and its fields are taken one by one, each failure naming its field.
//!
//! These dialects are spoken by existing apps at human rates, so they trade the Winkr decoder's
//! one-pass speed for code that reads like the seeds' own documents.

use crate::error::{CodecError, DecodeError};
use crate::format::{EncodeError, Format};
use crate::ids::{ConversationId, RequestId};
use crate::values::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use std::marker::PhantomData;

pub(crate) type Object = Map<String, Value>;

/// Parses a frame that must hold one object.
fn object(format: Format, bytes: &[u8]) -> Result<Object, DecodeError> {
    let value = format
        .deserialize_seed(bytes, PhantomData::<Value>)
        .map_err(|e| CodecError::Malformed { format: format.name(), reason: e.0 })?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(CodecError::Malformed { format: format.name(), reason: "expected an object".into() }.into()),
    }
}

/// A request's document, its name (under `name_key`) and its id (under `id_key`, if the dialect
/// has one): what every dialect's decoder reads first.
pub(crate) fn request(
    format: Format,
    bytes: &[u8],
    name_key: &str,
    id_key: Option<&str>,
) -> Result<(Object, String, Option<RequestId>), DecodeError> {
    let m = object(format, bytes)?;
    let name = kind(&m, name_key)?;
    let id = id_key.and_then(|k| request_id(&m, k));
    Ok((m, name, id))
}

/// The request's name under `key` (`type` or `action`).
fn kind(m: &Object, key: &str) -> Result<String, DecodeError> {
    match m.get(key) {
        None | Some(Value::Null) => Err(CodecError::MissingType.into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(CodecError::invalid(key, "must be a string").into()),
    }
}

/// A client-chosen request id under `key`, if it follows the id rule (one that does not is
/// not echoed, and is not an error: these dialects' ids are informational).
fn request_id(m: &Object, key: &str) -> Option<RequestId> {
    m.get(key).and_then(Value::as_str).and_then(|s| RequestId::parse(s).ok())
}

/// An optional `timestamp` string.
pub(crate) fn sent_at(m: &Object) -> Result<Option<Timestamp>, CodecError> {
    match m.get("timestamp") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            Timestamp::parse_clamped(s).map(Some).map_err(|r| CodecError::invalid("timestamp", r))
        }
        Some(_) => Err(CodecError::invalid("timestamp", "must be an RFC 3339 string")),
    }
}

/// A nested object (`payload`, `data`); absent or null is empty.
pub(crate) fn nested<'a>(m: &'a Object, key: &str, empty: &'a Object) -> Result<&'a Object, CodecError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(empty),
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(CodecError::invalid(key, "must be an object")),
    }
}

/// The fields of one object, with the path used in error messages.
pub(crate) struct Fields<'a> {
    pub(crate) m: &'a Object,
    pub(crate) path: &'static str,
}

impl Fields<'_> {
    fn name(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    pub(crate) fn str_opt(&self, key: &str) -> Result<Option<String>, CodecError> {
        match self.m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(CodecError::invalid(self.name(key), "must be a string")),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<String, CodecError> {
        self.str_opt(key)?.ok_or_else(|| CodecError::invalid(self.name(key), "required"))
    }

    pub(crate) fn bool(&self, key: &str) -> Result<bool, CodecError> {
        match self.m.get(key) {
            Some(Value::Bool(b)) => Ok(*b),
            None | Some(Value::Null) => Err(CodecError::invalid(self.name(key), "required: true or false")),
            Some(_) => Err(CodecError::invalid(self.name(key), "must be true or false")),
        }
    }

    pub(crate) fn array(&self, key: &str) -> Result<Option<&Vec<Value>>, CodecError> {
        match self.m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(CodecError::invalid(self.name(key), "must be an array")),
        }
    }

    /// An id field, checked by the id rule.
    pub(crate) fn id<T>(&self, key: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, CodecError> {
        let s = self.str(key)?;
        parse(&s).map_err(|r| CodecError::invalid(self.name(key), r))
    }
}

/// The conversation a connection is scoped to, for dialects whose frames name none.
pub(crate) fn scoped(scope: Option<&ConversationId>, hint: &str) -> Result<ConversationId, CodecError> {
    scope.cloned().ok_or_else(|| CodecError::invalid("conversation", hint.to_owned()))
}

/// Attaches the request's name and id to a field error.
pub(crate) fn in_request(kind: &str, request_id: Option<&RequestId>) -> impl Fn(CodecError) -> DecodeError + use<> {
    let kind = kind.to_owned();
    let rid = request_id.map(|r| r.as_str().to_owned());
    move |error| DecodeError { error, request_event: Some(kind.clone()), request_id: rid.clone() }
}

/// Writes one outgoing event.
pub(crate) fn write<T: Serialize>(format: Format, value: &T, out: &mut Vec<u8>) -> Result<bool, EncodeError> {
    format.serialize_into(value, out).map(|()| true)
}
