//! Profile values as JSON: the kept form of one attribute value (plain or a keyed hash), JSON
//! equality as a reader means it, the canonical text hashes are taken over, and the
//! `google.protobuf.Value` the record carries. The floor of [`super`]: rules and snapshots
//! both build on it.

use std::fmt::Write as _;

use serde_json::Value;

/// One kept attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// The value as Okta's Users API returned it (null when unset).
    Plain(Value),
    /// `sha256:<hex>` of a redacted value (see [`super::rules::RedactionKey::hash`]).
    Redacted(String),
}

impl AttributeValue {
    /// Equal when both are plain and equal as JSON ([`json_equal`]), or both the same hash.
    pub fn same_as(&self, other: &AttributeValue) -> bool {
        match (self, other) {
            (Self::Plain(a), Self::Plain(b)) => json_equal(a, b),
            (Self::Redacted(a), Self::Redacted(b)) => a == b,
            _ => false,
        }
    }

    /// The value as the record carries it, a `google.protobuf.Value`.
    pub fn to_proto(&self) -> prost_types::Value {
        match self {
            Self::Plain(value) => json_to_proto(value),
            Self::Redacted(hash) => prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(hash.clone())),
            },
        }
    }
}

/// JSON equality as a reader means it: numbers by value (`3` equals `3.0`), objects regardless
/// of key order, arrays element by element in order.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_text(x) == number_text(y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// One text per JSON value under [`json_equal`]: object keys sorted, integral numbers without
/// a fraction, no whitespace. What redacted values are hashed over.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&value.to_string()),
        Value::Number(n) => out.push_str(&number_text(n)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
    }
}

/// A number's canonical text: integers as integers, integral floats below 2^53 as integers,
/// other floats as serde_json prints them.
fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
            let mut text = String::new();
            let _ = write!(text, "{}", f as i64);
            text
        }
        _ => n.to_string(),
    }
}

/// A JSON value as a `google.protobuf.Value` (numbers become doubles, as in every `Struct`).
pub fn json_to_proto(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_proto(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
