//! `google.protobuf.Struct` held as its encoded bytes.
//!
//! The record keeps the whole LogEvent (`event_details`) and several free-form sub-objects as
//! `Struct`s. Building them as `prost_types::Struct` trees and encoding those trees was most of
//! the mapping's cost (BENCHMARKS.md "Mapping"), while the service only ever stores and sends
//! them encoded. So `build.rs` maps the type `.google.protobuf.Struct` to [`EncodedStruct`]:
//! the mapping writes the `Struct` wire bytes straight from the JSON into the record, a decoded
//! `Event` keeps them as bytes, and encoding one copies them. The wire format is unchanged; code that wants the tree calls
//! [`EncodedStruct::to_struct`].

use std::collections::BTreeMap;
use std::fmt;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// A `google.protobuf.Struct` as its encoded message body (the bytes of its `fields` entries).
///
/// Equality compares the bytes. The mapping writes them canonically — entries sorted by key,
/// one entry per key, exactly as prost encodes a `prost_types::Struct` — so two mapped values
/// are equal when their trees are (except `-0.0` against `0.0`, which the bytes tell apart).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct EncodedStruct {
    bytes: Vec<u8>,
}

impl EncodedStruct {
    /// The encoded message body.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Encodes a `Struct` tree, for code and tests that build one by hand.
    pub fn from_struct(tree: &prost_types::Struct) -> Self {
        Self {
            bytes: tree.encode_to_vec(),
        }
    }

    /// Decodes the tree.
    pub fn to_struct(&self) -> Result<prost_types::Struct, DecodeError> {
        prost_types::Struct::decode(self.bytes.as_slice())
    }
}

impl From<prost_types::Struct> for EncodedStruct {
    fn from(tree: prost_types::Struct) -> Self {
        Self::from_struct(&tree)
    }
}

impl fmt::Debug for EncodedStruct {
    /// Shows the tree, as the generated `Debug` of a `Struct` field did.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_struct() {
            Ok(tree) => tree.fmt(f),
            Err(_) => f
                .debug_struct("EncodedStruct")
                .field("undecodable_bytes", &self.bytes)
                .finish(),
        }
    }
}

/// Field number of `Struct.fields`.
const FIELDS: u32 = 1;

impl Message for EncodedStruct {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    /// Keeps each `fields` entry as it arrives, after checking it decodes as a `Struct` entry
    /// would (so invalid bytes are rejected as before). Unknown fields are skipped, as
    /// `prost_types::Struct` does.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != FIELDS {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut entry: Vec<u8> = Vec::new();
        encoding::bytes::merge(wire_type, &mut entry, buf, ctx.clone())?;
        let start = self.bytes.len();
        encoding::encode_key(FIELDS, WireType::LengthDelimited, &mut self.bytes);
        let len_at = self.bytes.len();
        encoding::encode_varint(entry.len() as u64, &mut self.bytes);
        self.bytes.extend_from_slice(&entry);
        let mut check: BTreeMap<String, prost_types::Value> = BTreeMap::new();
        let mut rest = &self.bytes[len_at..];
        if let Err(e) = encoding::btree_map::merge(
            encoding::string::merge,
            encoding::message::merge,
            &mut check,
            &mut rest,
            ctx,
        ) {
            self.bytes.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::value::Kind;
    use prost_types::{ListValue, Struct, Value};

    fn sample() -> Struct {
        let v = |kind| Value { kind: Some(kind) };
        let inner = Struct {
            fields: [("n".to_owned(), v(Kind::NumberValue(1.5)))]
                .into_iter()
                .collect(),
        };
        Struct {
            fields: [
                ("a".to_owned(), v(Kind::StringValue("x".to_owned()))),
                ("b".to_owned(), v(Kind::StructValue(inner))),
                (
                    "c".to_owned(),
                    v(Kind::ListValue(ListValue {
                        values: vec![v(Kind::BoolValue(true)), v(Kind::NullValue(0))],
                    })),
                ),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// Encoded, then decoded as a message, an `EncodedStruct` has the bytes prost writes for
    /// the tree, and gives the tree back.
    #[test]
    fn round_trips_through_the_wire_as_a_struct() {
        let tree = sample();
        let held = EncodedStruct::from_struct(&tree);
        assert_eq!(held.encode_to_vec(), tree.encode_to_vec());
        let decoded = EncodedStruct::decode(tree.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, held);
        assert_eq!(decoded.to_struct().unwrap(), tree);
        assert_eq!(format!("{decoded:?}"), format!("{tree:?}"));
    }

    /// Bytes that are not a `Struct` are rejected on decode, as with `prost_types::Struct`.
    #[test]
    fn rejects_what_a_struct_decoder_rejects() {
        // Entry with a key that is not UTF-8.
        let bad_key = [0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
        assert!(prost_types::Struct::decode(&bad_key[..]).is_err());
        assert!(EncodedStruct::decode(&bad_key[..]).is_err());
        // Entry longer than the input.
        let short = [0x0a, 0x09, 0x0a, 0x01];
        assert!(EncodedStruct::decode(&short[..]).is_err());
        // Unknown fields are dropped, as prost_types does.
        let unknown = [0x10, 0x01];
        assert_eq!(
            EncodedStruct::decode(&unknown[..]).unwrap(),
            EncodedStruct::default()
        );
    }
}
