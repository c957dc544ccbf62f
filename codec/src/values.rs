//! Domain values other than ids: time stamps, message kinds, presence statuses and bounded
//! texts. Each is checked when built, so the session never holds an unchecked string.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// A point in time, in whole milliseconds since the Unix epoch, UTC.
///
/// On the wire it is RFC 3339 in UTC (`2025-01-01T12:00:00Z`, or `...:00.250Z` when the
/// milliseconds are not zero). The codec never reads a clock: the caller passes time in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(i64);

/// The earliest and latest instants accepted (years 1970 to 9999), so formatting never fails.
const MAX_MILLIS: i64 = 253_402_300_799_999;

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From milliseconds since the epoch, clamped to years 1970..=9999.
    pub const fn from_millis(ms: i64) -> Self {
        Self(if ms < 0 {
            0
        } else if ms > MAX_MILLIS {
            MAX_MILLIS
        } else {
            ms
        })
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (any offset; converted to UTC, sub-millisecond digits dropped).
    pub fn parse(s: &str) -> Result<Self, String> {
        let ms = parse_millis(s)?;
        if !(0..=i128::from(MAX_MILLIS)).contains(&ms) {
            return Err("must be between 1970 and 9999".into());
        }
        Ok(Self(ms as i64))
    }

    /// Parses RFC 3339 of any year, clamped to years 1970..=9999: for a client's own clock
    /// (an informational `timestamp`), which may be reset to 1970 in its time zone, or to Go's
    /// zero time, and must never decide whether a request is accepted.
    pub fn parse_clamped(s: &str) -> Result<Self, String> {
        Ok(Self(parse_millis(s)?.clamp(0, i128::from(MAX_MILLIS)) as i64))
    }

    /// Adds whole milliseconds, saturating at the ends of the range.
    pub fn plus_millis(self, ms: i64) -> Self {
        Self::from_millis(self.0.saturating_add(ms))
    }
}

/// RFC 3339 (any offset, any year) as milliseconds since the epoch, sub-millisecond digits
/// dropped: the common form on the fast path, the rest through the general parser.
fn parse_millis(s: &str) -> Result<i128, String> {
    if let Some(t) = parse_utc_fast(s.as_bytes()) {
        return Ok(i128::from(t.0));
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 time ({e})"))?;
    Ok(t.unix_timestamp_nanos() / 1_000_000)
}

/// The form every server and browser writes (`YYYY-MM-DDTHH:MM:SS[.fff]Z`), parsed without the
/// general RFC 3339 machinery because every envelope and message carries one. Anything else
/// (offsets, odd digits, out-of-range fields) returns `None` and takes the general path.
fn parse_utc_fast(b: &[u8]) -> Option<Timestamp> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if *b.last()? != b'Z' {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, s) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let frac = &b[19..b.len() - 1];
    let millis = match frac {
        [] => 0,
        [b'.', digits @ ..] if !digits.is_empty() && digits.len() <= 9 => {
            let mut ms = 0;
            for i in 0..3 {
                ms = ms * 10 + digits.get(i).map_or(Some(0), |c| num(std::slice::from_ref(c)))?;
            }
            num(digits)?; // every digit must be a digit, even those dropped
            ms
        }
        _ => return None,
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if y < 1970 || !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] || h > 23 || mi > 59 || s > 59
    {
        return None;
    }
    // Days from 1970-01-01 to the civil date (H. Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = yy / 400;
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(Timestamp::from_millis(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + millis))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000);
        let t = OffsetDateTime::from_unix_timestamp(secs).map_err(|_| fmt::Error)?;
        let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
        let (h, mi, s) = (t.hour(), t.minute(), t.second());
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")?;
        if millis != 0 {
            write!(f, ".{millis:03}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseStr(Self::parse, "an RFC 3339 time"))
    }
}

/// Deserializes a value from a string by a parse function, without first copying the string
/// into a `String` (ids and times are in every message; the copy showed up in profiles).
pub(crate) struct ParseStr<T>(pub(crate) fn(&str) -> Result<T, String>, pub(crate) &'static str);

impl<T> serde::de::Visitor<'_> for ParseStr<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
        let s = std::str::from_utf8(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(v), &self))?;
        self.visit_str(s)
    }
}

/// What a message carries (SPEC §4 "Message types and limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Plain text, 1 to 2000 characters.
    Text,
    /// An `http(s)` URL of a photo (up to 10 MB).
    Photo,
    /// An `http(s)` URL of a photo meant to be seen once.
    PhotoEphemeral,
    /// A place; `metadata` holds `lat` and `lng`.
    Location,
    /// A virtual gift; `content` names it.
    Gift,
    /// Written by the server (or the app backend through the server API), never by a client.
    System,
    /// Written by an AI assistant through the server API (seed 002's `type: "ai"`).
    Ai,
}

impl MessageKind {
    pub const ALL: [MessageKind; 7] =
        [Self::Text, Self::Photo, Self::PhotoEphemeral, Self::Location, Self::Gift, Self::System, Self::Ai];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Photo => "photo",
            Self::PhotoEphemeral => "photo_ephemeral",
            Self::Location => "location",
            Self::Gift => "gift",
            Self::System => "system",
            Self::Ai => "ai",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A user's presence status (SPEC §4 `status:update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Away,
    Busy,
    Offline,
}

impl PresenceStatus {
    pub const ALL: [PresenceStatus; 4] = [Self::Online, Self::Away, Self::Busy, Self::Offline];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Counts characters as the contract does: Unicode scalar values, like a JavaScript client's
/// `[...s].length` (not UTF-16 units, not bytes).
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_like_the_seeds() {
        let t = Timestamp::parse("2025-01-01T12:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2025-01-01T12:00:00Z");
        let t = Timestamp::parse("2025-01-01T12:00:00.250Z").unwrap();
        assert_eq!(t.to_string(), "2025-01-01T12:00:00.250Z");
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_parser() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999Z",
            "2024-12-31T10:30:00.1Z",
            "2025-03-01T00:00:00.123456789Z",
            "2100-02-28T12:00:00Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let general = OffsetDateTime::parse(s, &Rfc3339).unwrap();
            let ms = (general.unix_timestamp_nanos() / 1_000_000) as i64;
            assert_eq!(parse_utc_fast(s.as_bytes()), Some(Timestamp(ms)), "{s}");
        }
        for s in ["2025-02-29T00:00:00Z", "2025-01-01T24:00:00Z", "2025-01-01T00:00:00.Z", "2025-01-01T00:00:00.1x3Z"] {
            assert_eq!(parse_utc_fast(s.as_bytes()), None, "{s}");
            assert!(Timestamp::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let t = Timestamp::parse("2025-01-01T14:00:00+02:00").unwrap();
        assert_eq!(t.to_string(), "2025-01-01T12:00:00Z");
    }

    #[test]
    fn out_of_range_times_are_refused_or_clamped() {
        assert!(Timestamp::parse("1969-12-31T23:59:59Z").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        assert_eq!(Timestamp::from_millis(i64::MAX).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::from_millis(-5), Timestamp::EPOCH);
    }

    #[test]
    fn a_clients_clock_before_1970_is_clamped_not_refused() {
        for s in ["1970-01-01T00:00:00+02:00", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"] {
            assert_eq!(Timestamp::parse_clamped(s), Ok(Timestamp::EPOCH), "{s}");
        }
        assert_eq!(Timestamp::parse_clamped("2025-01-01T14:00:00+02:00"), Timestamp::parse("2025-01-01T12:00:00Z"));
        assert!(Timestamp::parse_clamped("yesterday").is_err(), "still RFC 3339");
    }

    #[test]
    fn kinds_and_statuses_round_trip_by_name() {
        for k in MessageKind::ALL {
            assert_eq!(MessageKind::from_name(k.as_str()), Some(k));
        }
        for s in PresenceStatus::ALL {
            assert_eq!(PresenceStatus::from_name(s.as_str()), Some(s));
        }
        assert_eq!(MessageKind::from_name("video"), None);
    }
}
