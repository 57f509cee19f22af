//! Protobuf fields written straight into the record's bytes.
//!
//! The mapping writes the record as it reads the LogEvent instead of building an `Event` of
//! owned strings and encoding that: the strings are copied once, from the parsed body into
//! the encoding. Scalars at their default value are left out, as proto3 (and prost) do;
//! a sub-message is written whenever it is present, even empty.

use std::ops::Range;

use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::Timestamp;

/// Appends a string field, unless empty.
pub(super) fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    if !value.is_empty() {
        bytes(out, field, value.as_bytes());
    }
}

/// Appends a string field, unless empty, and returns where its bytes lie in `out`.
pub(super) fn string_at(out: &mut Vec<u8>, field: u32, value: &str) -> Range<usize> {
    string(out, field, value);
    out.len() - value.len()..out.len()
}

/// Appends a length-delimited field holding `value`.
pub(super) fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// Appends an `int32`, `int64` or enum field, unless 0 (negative values take ten bytes, as
/// protobuf sign-extends them).
pub(super) fn int(out: &mut Vec<u8>, field: u32, value: i64) {
    if value != 0 {
        encode_key(field, WireType::Varint, out);
        encode_varint(value as u64, out);
    }
}

/// Appends a `bool` field whatever its value (for `optional bool`, where false is said).
pub(super) fn bool_present(out: &mut Vec<u8>, field: u32, value: bool) {
    encode_key(field, WireType::Varint, out);
    out.push(u8::from(value));
}

/// Appends a `double` field, unless 0.
pub(super) fn double(out: &mut Vec<u8>, field: u32, value: f64) {
    if value != 0.0 {
        encode_key(field, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Appends a `google.protobuf.Timestamp` field.
pub(super) fn timestamp(out: &mut Vec<u8>, field: u32, value: &Timestamp) {
    message(out, field, |out| {
        int(out, 1, value.seconds);
        int(out, 2, i64::from(value.nanos));
    });
}

/// Appends a sub-message field whose body `write` appends. Its length is known only once it
/// is written: one byte is kept for it, and the body moved along in the case (128 bytes or
/// more) that the length needs more. Returns by how many bytes the body moved.
pub(super) fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) -> usize {
    encode_key(field, WireType::LengthDelimited, out);
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        0
    } else {
        let mut head = Vec::with_capacity(4);
        encode_varint(len as u64, &mut head);
        let moved = head.len() - 1;
        out.splice(at..=at, head);
        moved
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// A message of every kind of field written here, to compare with prost's encoding.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Sample {
        #[prost(string, tag = "1")]
        text: String,
        #[prost(int64, tag = "2")]
        number: i64,
        #[prost(double, tag = "3")]
        real: f64,
        #[prost(bool, optional, tag = "4")]
        flag: Option<bool>,
        #[prost(message, optional, tag = "5")]
        time: Option<Timestamp>,
        #[prost(message, optional, tag = "6")]
        inner: Option<Box<Sample>>,
        #[prost(int32, tag = "7")]
        small: i32,
    }

    fn write(sample: &Sample, out: &mut Vec<u8>) {
        string(out, 1, &sample.text);
        int(out, 2, sample.number);
        double(out, 3, sample.real);
        if let Some(flag) = sample.flag {
            bool_present(out, 4, flag);
        }
        if let Some(time) = &sample.time {
            timestamp(out, 5, time);
        }
        if let Some(inner) = &sample.inner {
            message(out, 6, |out| write(inner, out));
        }
        int(out, 7, i64::from(sample.small));
    }

    #[test]
    fn fields_are_written_as_prost_writes_them() {
        for text_len in [0, 1, 100, 127, 128, 200, 20_000] {
            let inner = Sample {
                text: "é".repeat(text_len / 2),
                number: -5,
                real: -0.5,
                flag: Some(false),
                time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 999,
                }),
                inner: None,
                small: -1,
            };
            let sample = Sample {
                text: "x".repeat(text_len),
                number: i64::MAX,
                real: 0.0,
                flag: None,
                time: Some(Timestamp::default()),
                inner: Some(Box::new(inner)),
                small: 0,
            };
            let mut ours = Vec::new();
            write(&sample, &mut ours);
            assert_eq!(ours, sample.encode_to_vec(), "text of {text_len} bytes");
            assert_eq!(Sample::decode(ours.as_slice()).unwrap(), sample);
        }
    }

    #[test]
    fn a_string_is_found_where_it_was_written_once_its_message_moves_it() {
        for padding in [0, 100, 200, 20_000] {
            let mut out = vec![0xAA];
            let mut at = 0..0;
            let moved = message(&mut out, 6, |out| {
                at = string_at(out, 1, "00uB");
                string(out, 4, &"p".repeat(padding));
            });
            let found = at.start + moved..at.end + moved;
            assert_eq!(&out[found], b"00uB", "{padding} bytes after it");
            assert_eq!(moved > 0, padding >= 120, "{padding} bytes after it");
        }
    }
}
