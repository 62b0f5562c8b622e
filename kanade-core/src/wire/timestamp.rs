//! Wire timestamps: RFC 3339 text in UTC, the same text chrono's serde
//! implementation writes and reads, encoded and decoded with less work.
//!
//! - **Encoding** writes `to_rfc3339_opts(SecondsFormat::AutoSi, true)`:
//!   the very call chrono's `Serialize` makes (`write_rfc3339` with
//!   `AutoSi` and `Z`), into one string handed to the serializer whole,
//!   not character by character through the serializer's escaping as
//!   chrono's `collect_str` does. Fractions come as 0, 3, 6 or 9 digits,
//!   e.g. `2026-05-01T10:20:30.123Z`.
//! - **Decoding** accepts exactly what chrono's `Deserialize` accepts: a
//!   strict RFC 3339 parse first (what kanade and the reference write),
//!   then chrono's relaxed parse (a space for `T`, lower case, …) when
//!   that fails; a string both accept gives the same instant. Any offset
//!   is converted to UTC.
//!
//! Used as `#[serde(with = "timestamp")]` on `DateTime<Utc>` fields and
//! `#[serde(with = "timestamp::optional")]` on `Option<DateTime<Utc>>`
//! ones. A fleet sends millions of heartbeats and results a day, each
//! stamped; the simulation of a 10,000-agent day spent about 4 % of its
//! time in chrono's serde paths.

use std::fmt;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{de, Deserializer, Serializer};

/// Writes `at` as RFC 3339 text (see the module docs).
///
/// # Errors
/// Only the serializer's own.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Reads RFC 3339 text (see the module docs).
///
/// # Errors
/// Text chrono's parser refuses, with chrono's message.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Rfc3339Visitor)
}

/// Parses a timestamp as chrono's `Deserialize` would: strict RFC 3339,
/// then the relaxed form.
///
/// # Errors
/// The relaxed parser's error when neither accepts `text`.
pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| text.parse::<DateTime<FixedOffset>>())
        .map(|at| at.with_timezone(&Utc))
}

struct Rfc3339Visitor;

impl de::Visitor<'_> for Rfc3339Visitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse(text).map_err(E::custom)
    }
}

/// The same for `Option<DateTime<Utc>>` fields: `None` is JSON `null`
/// (fields usually also skip it when serialising).
pub mod optional {
    use super::*;

    /// Writes `Some` as RFC 3339 text, `None` as `null`.
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::serialize(at, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads RFC 3339 text or `null`.
    ///
    /// # Errors
    /// Text chrono's parser refuses, with chrono's message.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        deserializer.deserialize_option(OptionalVisitor)
    }

    struct OptionalVisitor;

    impl<'de> de::Visitor<'de> for OptionalVisitor {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("an RFC 3339 formatted date and time string or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            super::deserialize(deserializer).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Ours {
        #[serde(with = "super")]
        at: DateTime<Utc>,
        #[serde(default, with = "optional")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Chrono {
        at: DateTime<Utc>,
        #[serde(default)]
        maybe: Option<DateTime<Utc>>,
    }

    fn instants() -> Vec<DateTime<Utc>> {
        let base = Utc.with_ymd_and_hms(2026, 5, 1, 10, 20, 30).single();
        let base = base.unwrap_or_default();
        let mut all = vec![
            base,
            DateTime::<Utc>::default(),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59)
                .single()
                .unwrap_or_default(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .single()
                .unwrap_or_default(),
        ];
        for nanos in [
            1,
            120,
            123_000,
            123_456,
            1_000_000,
            123_456_789,
            999_999_999,
        ] {
            all.push(base + chrono::Duration::nanoseconds(nanos));
        }
        all
    }

    #[test]
    fn writes_what_chrono_writes() {
        for at in instants() {
            for maybe in [None, Some(at)] {
                let ours = serde_json::to_string(&Ours { at, maybe }).ok();
                let chrono = serde_json::to_string(&Chrono { at, maybe }).ok();
                assert!(ours.is_some());
                assert_eq!(ours, chrono, "{at:?}");
            }
        }
    }

    #[test]
    fn reads_what_chrono_reads() {
        let texts = [
            "2026-05-01T10:20:30Z",
            "2026-05-01T10:20:30.5Z",
            "2026-05-01T10:20:30.123456789Z",
            "2026-05-01T12:20:30+02:00",
            "2026-05-01T10:20:30.1234567891Z",
            "2026-05-01 10:20:30Z",
            "2026-05-01t10:20:30z",
            "2026-05-01T10:20:30-00:00",
            "2026-05-01T10:20:30 +02:00",
            "2026-05-01T10:20:30",
            "2026-05-01",
            "not a time",
            "2026-02-30T00:00:00Z",
            "",
        ];
        for text in texts {
            let json = format!(r#"{{"at":"{text}","maybe":"{text}"}}"#);
            let ours = serde_json::from_str::<Ours>(&json).map(|o| (o.at, o.maybe));
            let chrono = serde_json::from_str::<Chrono>(&json).map(|c| (c.at, c.maybe));
            assert_eq!(ours.ok(), chrono.ok(), "{text:?}");
        }
        for json in [
            r#"{"at":"2026-05-01T10:20:30Z","maybe":null}"#,
            r#"{"at":"2026-05-01T10:20:30Z"}"#,
        ] {
            let ours = serde_json::from_str::<Ours>(json).map(|o| o.maybe);
            assert_eq!(ours.ok(), Some(None), "{json}");
        }
        let refused = serde_json::from_str::<Ours>(r#"{"at":"yesterday"}"#);
        let chrono = serde_json::from_str::<Chrono>(r#"{"at":"yesterday"}"#);
        assert_eq!(
            refused.err().map(|e| e.to_string()),
            chrono.err().map(|e| e.to_string()),
            "the same message"
        );
    }
}
