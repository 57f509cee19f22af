//! JSON bytes straight into `google.protobuf.Struct`, and typed reads out of it.
//!
//! The record keeps the whole LogEvent as a `Struct` (`event_details`), so the mapping parses the
//! bytes once, directly into `prost_types` values (no `serde_json::Value` in between), and then
//! reads the typed fields from that tree. Every read is total: a value of an unexpected JSON type
//! reads as "absent", never as an error or a panic.

use std::collections::BTreeMap;
use std::fmt;

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deepest object/array nesting accepted in a LogEvent (the top-level object is depth 1).
///
/// In `event_details` every JSON object level costs three levels of protobuf message nesting
/// (`Struct`, map entry, `Value`), and protobuf decoders stop at 100 levels (prost, C++, Java,
/// Python alike): measured with prost, an `Event` stops decoding at 35 levels, inside a
/// `ListEventsResponse` at 34. Without a limit an event could be stored that no subscriber can
/// decode; 24 leaves room for wrapping messages. Real LogEvents nest about 6 deep.
pub const MAX_DEPTH: u32 = 24;

/// Parses `bytes` as one JSON value. A top-level object becomes `Some(Struct)`; any other
/// top-level value is `None`. Nesting deeper than [`MAX_DEPTH`] is an error.
pub fn parse_object(bytes: &[u8]) -> Result<Option<Struct>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let object = TopSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(object)
}

/// Deserializes the top-level value: an object becomes a `Struct`, anything else is skipped.
struct TopSeed;

impl<'de> DeserializeSeed<'de> for TopSeed {
    type Value = Option<Struct>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match (ValueSeed { depth: 0 }).deserialize(deserializer)?.kind {
            Some(Kind::StructValue(object)) => Ok(Some(object)),
            _ => Ok(None),
        }
    }
}

/// Deserializes any JSON value into a `prost_types::Value`, `depth` levels below the top.
#[derive(Clone, Copy)]
struct ValueSeed {
    depth: u32,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

impl ValueSeed {
    /// The seed for the members of a container at this depth, or an error past [`MAX_DEPTH`].
    fn enter<E: de::Error>(self) -> Result<ValueSeed, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(ValueSeed { depth })
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(value(Kind::BoolValue(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v as f64)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v as f64)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(value(Kind::StringValue(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(value(Kind::StringValue(v)))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(value(Kind::NullValue(
            prost_types::NullValue::NullValue as i32,
        )))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(value(Kind::NullValue(
            prost_types::NullValue::NullValue as i32,
        )))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(inner)? {
            values.push(v);
        }
        Ok(value(Kind::ListValue(ListValue { values })))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut fields = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(inner)?;
            // Duplicate keys: the last one wins, as in serde_json and JavaScript.
            fields.insert(key, v);
        }
        Ok(value(Kind::StructValue(Struct { fields })))
    }
}

/// Typed, total reads of a `Struct` member. "Absent" covers a missing key, JSON null, and a
/// value of a type the read cannot use.
pub trait Read {
    /// The member `key`, unless absent or null.
    fn kind(&self, key: &str) -> Option<&Kind>;

    /// The member `key` if it is an object.
    fn object(&self, key: &str) -> Option<&Struct> {
        match self.kind(key) {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        }
    }

    /// The member `key` if it is an array.
    fn array(&self, key: &str) -> Option<&[Value]> {
        match self.kind(key) {
            Some(Kind::ListValue(l)) => Some(&l.values),
            _ => None,
        }
    }

    /// The member `key` as text: strings as they are, numbers and booleans written out
    /// (`version: 0` reads as `"0"`), anything else empty.
    fn text(&self, key: &str) -> String {
        self.kind(key).map(scalar_text).unwrap_or_default()
    }

    /// Like [`Read::text`], but the string `"null"` (Okta's spelling of "no value" in
    /// `client.zone` and `client.ipAddress`) reads as empty too.
    fn text_not_null(&self, key: &str) -> String {
        match self.kind(key) {
            Some(Kind::StringValue(s)) if s == "null" => String::new(),
            kind => kind.map(scalar_text).unwrap_or_default(),
        }
    }

    /// The member `key` as a number: a JSON number, or a string holding one (`"50"`).
    fn number(&self, key: &str) -> Option<f64> {
        match self.kind(key) {
            Some(Kind::NumberValue(n)) => Some(*n),
            Some(Kind::StringValue(s)) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        }
    }

    /// The member `key` as a boolean: JSON `true`/`false`, or the strings `"true"`/`"false"`.
    fn bool(&self, key: &str) -> Option<bool> {
        match self.kind(key) {
            Some(Kind::BoolValue(b)) => Some(*b),
            Some(Kind::StringValue(s)) if s.eq_ignore_ascii_case("true") => Some(true),
            Some(Kind::StringValue(s)) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
}

impl Read for Struct {
    fn kind(&self, key: &str) -> Option<&Kind> {
        match self.fields.get(key)?.kind.as_ref()? {
            Kind::NullValue(_) => None,
            kind => Some(kind),
        }
    }
}

/// A scalar as text; containers and null as empty.
fn scalar_text(kind: &Kind) -> String {
    match kind {
        Kind::StringValue(s) => s.clone(),
        Kind::NumberValue(n) => number_text(*n),
        Kind::BoolValue(b) => b.to_string(),
        Kind::NullValue(_) | Kind::StructValue(_) | Kind::ListValue(_) => String::new(),
    }
}

/// Writes a JSON number the way it was most likely sent: integers without a fraction
/// (`10013`, not `10013.0`), other values in the shortest form that reads back the same.
pub fn number_text(n: f64) -> String {
    // 2^53: beyond it f64 no longer holds every integer, and `as i64` would be lossy anyway.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() < EXACT {
        (n as i64).to_string()
    } else {
        n.to_string()
    }
}

/// Converts a JSON number to an integer field, saturating at the type's bounds and truncating
/// any fraction (Okta sends integers here; anything else is at least not a panic).
pub fn saturating_i64(n: f64) -> i64 {
    // `as` saturates and maps NaN to 0.
    n as i64
}
