//! A JSON parser that builds `google.protobuf.Struct` values directly from bytes.
//!
//! The record keeps the whole LogEvent as a `Struct` (`event_details`), so the mapping parses
//! the bytes exactly once, into `prost_types` values, with no `serde_json::Value` in between.
//! It is hand-written rather than a serde `Visitor` because parsing is the largest cost of the
//! mapping and a serde `Visitor` into the same tree measured about 20% slower (BENCHMARKS.md): the input
//! is checked for UTF-8 once up front, and strings without escapes are copied straight from it.
//!
//! It accepts exactly RFC 8259 JSON, as `serde_json` does (tests compare the two on arbitrary
//! input): no comments, no trailing commas, no lone surrogates in `\u` escapes, no control
//! characters in strings; duplicate keys keep the last value. Numbers are `f64`, correctly
//! rounded (the only number type a `Struct` has); a number too large for `f64` is an error.

use std::collections::BTreeMap;

use prost_types::value::Kind;
use prost_types::{ListValue, NullValue, Struct, Value};

/// Deepest object/array nesting accepted in a LogEvent (the top-level object is level 1).
///
/// In `event_details` every JSON object level costs three levels of protobuf message nesting
/// (`Struct`, map entry, `Value`), and protobuf decoders stop at 100 levels (prost, C++, Java,
/// Python alike): measured with prost, an `Event` stops decoding at 35 levels, inside a
/// `ListEventsResponse` at 34. Without a limit an event could be stored that no subscriber can
/// decode; 24 leaves room for wrapping messages. Real LogEvents nest about 6 deep.
pub const MAX_DEPTH: u32 = 24;

/// Why bytes are not a JSON value the mapping accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON: what was expected, and the byte offset where it was not found.
    #[error("not JSON: {what} at byte {at}")]
    Syntax {
        /// What the parser expected or found.
        what: &'static str,
        /// Byte offset into the input.
        at: usize,
    },
    /// Valid so far, but objects and arrays nest deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Parses `bytes` as one JSON value. A top-level object becomes `Some(Struct)`; any other
/// valid top-level value is `None`.
pub fn parse_object(bytes: &[u8]) -> Result<Option<Struct>, ParseError> {
    // Checked once here, so every string slice taken below (always between ASCII quotes, hence
    // on character boundaries) is valid UTF-8 without another check.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return Err(ParseError::Syntax {
                what: "invalid UTF-8",
                at: e.valid_up_to(),
            });
        }
    };
    let mut parser = Parser {
        text,
        bytes,
        at: 0,
        scratch: String::new(),
        error: None,
    };
    let parsed = parser.document();
    let value = parsed.map_err(|Stop| {
        parser.error.take().unwrap_or(ParseError::Syntax {
            what: "invalid JSON",
            at: parser.at,
        })
    })?;
    Ok(match value.kind {
        Some(Kind::StructValue(object)) => Some(object),
        _ => None,
    })
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// Reused buffer for strings with escapes.
    scratch: String,
    /// Why the parse stopped, once it has.
    error: Option<ParseError>,
}

/// Marks a failed parse step; the reason is in [`Parser::error`]. Keeping the error out of the
/// return type keeps `Step<Value>` as small as `Value`, which measurably speeds up the parser.
struct Stop;

/// The result of one parse step.
type Step<T> = Result<T, Stop>;

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

impl Parser<'_> {
    /// The whole input: one value between optional whitespace.
    fn document(&mut self) -> Step<Value> {
        self.skip_ws();
        let value = self.value(0)?;
        self.skip_ws();
        if self.at != self.bytes.len() {
            return Err(self.syntax("trailing characters"));
        }
        Ok(value)
    }

    /// Records a syntax error at the cursor and returns the marker that unwinds the parse.
    fn syntax(&mut self, what: &'static str) -> Stop {
        self.error = Some(ParseError::Syntax { what, at: self.at });
        Stop
    }

    /// Records that the nesting limit was passed.
    fn too_deep(&mut self) -> Stop {
        self.error = Some(ParseError::TooDeep);
        Stop
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Moves the cursor past string bytes that need no attention (anything but `"`, `\\` and
    /// control characters), eight at a time while it can.
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        // A byte of `x` is zero  <=>  its byte in `has_zero(x)` has the high bit set (SWAR).
        let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            let quote = has_zero(x ^ (ONES * u64::from(b'"')));
            let backslash = has_zero(x ^ (ONES * u64::from(b'\\')));
            // Bytes below 0x20: subtracting 0x20 borrows into the high bit (non-ASCII bytes
            // have it set already and are masked out by `!x`).
            let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
            let stop = quote | backslash | control;
            if stop != 0 {
                self.at += (stop.trailing_zeros() / 8) as usize;
                return;
            }
            self.at += 8;
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// One value at `depth` containers below the top (the top-level value has depth 0).
    fn value(&mut self, depth: u32) -> Step<Value> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(value(Kind::StringValue(self.string()?))),
            Some(b't') => self.literal("true", value(Kind::BoolValue(true))),
            Some(b'f') => self.literal("false", value(Kind::BoolValue(false))),
            Some(b'n') => self.literal("null", value(Kind::NullValue(NullValue::NullValue as i32))),
            Some(b'-' | b'0'..=b'9') => Ok(value(Kind::NumberValue(self.number()?))),
            Some(_) => Err(self.syntax("expected a value")),
            None => Err(self.syntax("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &'static str, v: Value) -> Step<Value> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(v)
        } else {
            Err(self.syntax("expected a value"))
        }
    }

    /// An object whose nesting level is `level`; the cursor is on `{`.
    fn object(&mut self, level: u32) -> Step<Value> {
        if level > MAX_DEPTH {
            return Err(self.too_deep());
        }
        self.at += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(value(Kind::StructValue(Struct::default())));
        }
        // Most LogEvent objects have 2 to 8 members; this saves the first regrowths.
        let mut members: Vec<(String, Value)> = Vec::with_capacity(8);
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a member name"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.syntax("expected ':'"));
            }
            self.at += 1;
            self.skip_ws();
            let v = self.value(level)?;
            members.push((key, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.syntax("expected ',' or '}'")),
            }
        }
        // Sorting then bulk-building measured a little faster than inserting one by one. For a
        // duplicate key the later member wins, as in serde_json and JavaScript (the sort is
        // stable and the bulk build keeps the last of equal keys).
        let fields: BTreeMap<String, Value> = members.into_iter().collect();
        Ok(value(Kind::StructValue(Struct { fields })))
    }

    /// An array whose nesting level is `level`; the cursor is on `[`.
    fn array(&mut self, level: u32) -> Step<Value> {
        if level > MAX_DEPTH {
            return Err(self.too_deep());
        }
        self.at += 1;
        self.skip_ws();
        let mut values = Vec::new();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(value(Kind::ListValue(ListValue { values })));
        }
        loop {
            values.push(self.value(level)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.syntax("expected ',' or ']'")),
            }
        }
        Ok(value(Kind::ListValue(ListValue { values })))
    }

    /// A string; the cursor is on the opening quote.
    fn string(&mut self) -> Step<String> {
        self.at += 1;
        let start = self.at;
        // Fast path: no escapes, copied straight from the (already UTF-8 checked) input.
        self.skip_plain();
        loop {
            match self.peek() {
                Some(b'"') => {
                    let s = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(s.to_owned());
                }
                Some(b'\\') => break,
                Some(0..=0x1f) => return Err(self.syntax("control character in a string")),
                Some(_) => self.at += 1,
                None => return Err(self.syntax("unterminated string")),
            }
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.push_str(&self.text[start..self.at]);
        let result = self.escaped_rest(&mut out);
        let s = result.map(|()| out.as_str().to_owned());
        self.scratch = out;
        s
    }

    /// The rest of a string from its first backslash, appended to `out`.
    fn escaped_rest(&mut self, out: &mut String) -> Step<()> {
        loop {
            let run = self.at;
            loop {
                match self.peek() {
                    Some(b'"' | b'\\') => break,
                    Some(0..=0x1f) => return Err(self.syntax("control character in a string")),
                    Some(_) => self.at += 1,
                    None => return Err(self.syntax("unterminated string")),
                }
            }
            out.push_str(&self.text[run..self.at]);
            if self.peek() == Some(b'"') {
                self.at += 1;
                return Ok(());
            }
            // A backslash.
            self.at += 1;
            let c = match self.peek() {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    self.at += 1;
                    let unit = self.hex4()?;
                    let c = match unit {
                        0xD800..=0xDBFF => {
                            if !self.bytes[self.at..].starts_with(b"\\u") {
                                return Err(self.syntax("lone leading surrogate in \\u escape"));
                            }
                            self.at += 2;
                            let low = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(self.syntax("invalid surrogate pair in \\u escape"));
                            }
                            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            char::from_u32(code)
                        }
                        0xDC00..=0xDFFF => None,
                        _ => char::from_u32(unit),
                    };
                    out.push(
                        c.ok_or_else(|| self.syntax("lone trailing surrogate in \\u escape"))?,
                    );
                    continue;
                }
                _ => return Err(self.syntax("invalid escape")),
            };
            out.push(c);
            self.at += 1;
        }
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Step<u32> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.syntax("unterminated \\u escape"))?;
        let mut n = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.syntax("invalid \\u escape")),
            };
            n = n * 16 + u32::from(v);
        }
        self.at += 4;
        Ok(n)
    }

    /// A number per RFC 8259: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Step<f64> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax("invalid number")),
        }
        let int_end = self.at;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("invalid number"));
            }
            self.digits();
        }
        // Short integers, the common case (`0`, `33363`), without the float parser.
        if integer && int_end - int_start <= 15 {
            let magnitude = self.bytes[int_start..int_end]
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            let n = magnitude as f64;
            return Ok(if negative { -n } else { n });
        }
        match self.text[start..self.at].parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(n),
            Ok(_) => {
                self.at = start;
                Err(self.syntax("number out of range"))
            }
            Err(_) => Err(self.syntax("invalid number")),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
}
