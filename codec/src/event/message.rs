//! The wire layout of a stored message and of `message:new`, written by hand because they are
//! the hottest values on the wire: every fan-out encodes one, every client decodes one.
//!
//! In JSON, `message:new` carries the message twice (SPEC §4 / seed 001's nested
//! `{message, sender}`, and seed 000's flat fields beside it) so that clients written against
//! either seed work unchanged; MessagePack carries the nested form only. The decoder reads the
//! nested copy and skips the flat one without allocating, and reads a flat-only one too.

use super::server::{Message, MessageNew, Sender};
use crate::values::ParseStr;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

impl Message {
    fn field_count(&self) -> usize {
        7 + usize::from(self.seq.is_some())
            + usize::from(self.updated_at.is_some())
            + usize::from(self.is_read.is_some())
            + usize::from(self.local_id.is_some())
            + usize::from(self.reply_to.is_some())
    }

    fn serialize_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("conversation_id", &self.conversation_id)?;
        if let Some(seq) = self.seq {
            map.serialize_entry("seq", &seq)?;
        }
        map.serialize_entry("sender_id", &self.sender_id)?;
        map.serialize_entry("content", &self.content)?;
        map.serialize_entry("type", &self.kind)?;
        map.serialize_entry("metadata", &self.metadata)?;
        map.serialize_entry("created_at", &self.created_at)?;
        if let Some(t) = &self.updated_at {
            map.serialize_entry("updated_at", t)?;
        }
        if let Some(r) = &self.is_read {
            map.serialize_entry("is_read", r)?;
        }
        if let Some(l) = &self.local_id {
            map.serialize_entry("local_id", l)?;
        }
        if let Some(r) = &self.reply_to {
            map.serialize_entry("reply_to", r)?;
        }
        Ok(())
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.field_count()))?;
        self.serialize_fields(&mut map)?;
        map.end()
    }
}

impl Serialize for MessageNew {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("message", &self.message)?;
        map.serialize_entry("sender", &self.sender)?;
        map.end()
    }
}

/// `message:new` with seed 000's flat copy of the message fields beside the nested one.
/// Written for JSON connections only: seed 000's clients speak JSON, and MessagePack clients
/// (ours) read the nested form, so they do not pay for the copy.
#[derive(Debug)]
pub(crate) struct WithFlatFields<'a>(pub(crate) &'a MessageNew);

impl Serialize for WithFlatFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = &self.0.message;
        let mut map = s.serialize_map(Some(2 + m.field_count()))?;
        map.serialize_entry("message", m)?;
        map.serialize_entry("sender", &self.0.sender)?;
        m.serialize_fields(&mut map)?;
        map.end()
    }
}

/// The keys of `message:new`'s data, told apart without allocating.
enum Key {
    Message,
    Sender,
    /// One of the message's own field names, seen flat (seed 000's layout).
    Flat(&'static str),
    Other,
}

const FLAT_FIELDS: [&str; 12] = [
    "id",
    "conversation_id",
    "seq",
    "sender_id",
    "content",
    "type",
    "metadata",
    "created_at",
    "updated_at",
    "is_read",
    "local_id",
    "reply_to",
];

impl Key {
    fn from_name(v: &str) -> Result<Key, String> {
        Ok(match v {
            "message" => Key::Message,
            "sender" => Key::Sender,
            _ => FLAT_FIELDS.iter().find(|f| **f == v).map_or(Key::Other, |f| Key::Flat(f)),
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(ParseStr(Key::from_name, "a field name"))
    }
}

impl<'de> Deserialize<'de> for MessageNew {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MessageNewVisitor;
        impl<'de> Visitor<'de> for MessageNewVisitor {
            type Value = MessageNew;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message:new object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessageNew, A::Error> {
                let mut message: Option<Message> = None;
                let mut sender: Option<Sender> = None;
                // Flat fields are only kept while no nested message has been seen.
                let mut flat = serde_json::Map::new();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Message => message = Some(map.next_value()?),
                        Key::Sender => sender = Some(map.next_value()?),
                        Key::Flat(name) if message.is_none() => {
                            flat.insert(name.to_owned(), map.next_value()?);
                        }
                        Key::Flat(_) | Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let message = match message {
                    Some(m) => m,
                    None => Message::deserialize(serde_json::Value::Object(flat)).map_err(de::Error::custom)?,
                };
                let sender = sender.unwrap_or_else(|| Sender {
                    id: message.sender_id.clone(),
                    username: None,
                    avatar_url: None,
                });
                Ok(MessageNew { message, sender })
            }
        }
        d.deserialize_map(MessageNewVisitor)
    }
}
