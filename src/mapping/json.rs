//! Typed reads out of a parsed LogEvent ([`Obj`]).
//!
//! Every read is total: a value of an unexpected JSON type reads as "absent", never as an error
//! or a panic, because Okta sends numbers where strings are documented, `"null"` strings,
//! nulls and absences alike (SPEC.md H).

use std::borrow::Cow;

use super::parse::{Arr, Obj, Val};

/// A member's value if it is an object.
pub fn object(value: Option<Val<'_>>) -> Option<Obj<'_>> {
    match value {
        Some(Val::Object(o)) => Some(o),
        _ => None,
    }
}

/// A member's value if it is an array.
pub fn array(value: Option<Val<'_>>) -> Option<Arr<'_>> {
    match value {
        Some(Val::Array(a)) => Some(a),
        _ => None,
    }
}

/// A member's value as text: strings as they are, numbers and booleans written out
/// (`version: 0` reads as `"0"`), anything else (absent, null, containers) empty.
pub fn text(value: Option<Val<'_>>) -> Cow<'_, str> {
    match value {
        Some(Val::Str(s)) => Cow::Borrowed(s),
        Some(Val::Number(n)) => Cow::Owned(number_text(n)),
        Some(Val::Bool(b)) => Cow::Borrowed(if b { "true" } else { "false" }),
        Some(Val::Object(_) | Val::Array(_)) | None => Cow::Borrowed(""),
    }
}

impl<'d> Obj<'d> {
    /// The member `key` if it is an object.
    pub fn object(&self, key: &str) -> Option<Obj<'d>> {
        object(self.get(key))
    }

    /// The member `key` if it is an array.
    pub fn array(&self, key: &str) -> Option<Arr<'d>> {
        array(self.get(key))
    }

    /// The member `key` as text (see [`text`]).
    pub fn text(&self, key: &str) -> Cow<'d, str> {
        text(self.get(key))
    }

    /// Like [`Obj::text`], but the string `"null"` (Okta's spelling of "no value" in
    /// `client.zone` and `client.ipAddress`) reads as empty too.
    pub fn text_not_null(&self, key: &str) -> Cow<'d, str> {
        match self.get(key) {
            Some(Val::Str("null")) => Cow::Borrowed(""),
            value => text(value),
        }
    }

    /// The member `key` as a number: a JSON number, or a string holding one (`"50"`).
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.get(key) {
            Some(Val::Number(n)) => Some(n),
            Some(Val::Str(s)) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        }
    }

    /// The member `key` as a boolean: JSON `true`/`false`, or the strings `"true"`/`"false"`.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.get(key) {
            Some(Val::Bool(b)) => Some(b),
            Some(Val::Str(s)) if s.eq_ignore_ascii_case("true") => Some(true),
            Some(Val::Str(s)) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
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
