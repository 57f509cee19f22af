//! Typed reads out of a parsed LogEvent (`google.protobuf.Struct`).
//!
//! Every read is total: a value of an unexpected JSON type reads as "absent", never as an error
//! or a panic, because Okta sends numbers where strings are documented, `"null"` strings,
//! nulls and absences alike (SPEC.md H).

use prost_types::value::Kind;
use prost_types::{Struct, Value};

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
