//! The wire layer, the ground floor of the crate: the generated `okta.events.v1` types, the
//! descriptor set that gRPC reflection serves, and the two hand-written types the generated
//! code uses in place of its own (`extern_path` in `build.rs`). Nothing here imports a module
//! above it.
//!
//! - [`SubscribeResponse`] is encoded by hand (below) so that one encoding of an event is shared
//!   by every subscriber. It lives in this file because it and the generated code name each
//!   other (it carries a generated [`Heartbeat`]; the generated service streams it).
//! - [`EncodedStruct`] holds a `google.protobuf.Struct` as its encoded bytes.

#![allow(
    missing_docs,
    clippy::doc_overindented_list_items,
    clippy::large_enum_variant
)]

tonic::include_proto!("okta.events.v1");

/// Encoded `FileDescriptorSet` of `proto/okta/events/v1/events.proto` (with its imports).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("okta_events_v1_descriptor");

mod encoded_struct;

pub use encoded_struct::EncodedStruct;

// `okta.events.v1.SubscribeResponse`, encoded by hand.
//
// A committed event is encoded once, by the journal. Generated code would re-encode the
// `Event` for every subscriber; this type writes the shared bytes as field 1 instead, which
// is byte-for-byte what the generated encoder would produce. Decoding (for Rust clients)
// keeps the event's bytes and decodes them on demand.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::DecodeError;
use prost::encoding::{self, DecodeContext, WireType};

/// One message of a Subscribe stream (see `events.proto`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscribeResponse {
    /// What this message carries.
    pub kind: Option<Kind>,
}

/// The payload of a [`SubscribeResponse`].
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// An `okta.events.v1.Event`, already encoded.
    Event(Bytes),
    /// A heartbeat.
    Heartbeat(Heartbeat),
}

const EVENT_TAG: u32 = 1;
const HEARTBEAT_TAG: u32 = 2;

/// Length of the prefix of a gRPC message on the wire: a compression flag and a big-endian
/// `u32` length.
pub const GRPC_PREFIX_LEN: usize = 5;

impl SubscribeResponse {
    /// A response carrying an encoded event.
    pub fn event(encoded: Bytes) -> Self {
        Self {
            kind: Some(Kind::Event(encoded)),
        }
    }

    /// A response carrying a heartbeat.
    pub fn heartbeat(heartbeat: Heartbeat) -> Self {
        Self {
            kind: Some(Kind::Heartbeat(heartbeat)),
        }
    }

    /// This message as one uncompressed gRPC length-prefixed message, ready to be sent as
    /// the body of an HTTP/2 DATA frame: built once per live event and shared by every
    /// subscriber, so no stream copies the event into a buffer of its own.
    pub fn grpc_frame(&self) -> Bytes {
        let len = prost::Message::encoded_len(self);
        let mut buf = BytesMut::with_capacity(GRPC_PREFIX_LEN + len);
        buf.put_u8(0);
        // Records are bounded far below 4 GiB (`OKTA_STREAM_MAX_EVENT_BYTES`).
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        prost::Message::encode_raw(self, &mut buf);
        buf.freeze()
    }

    /// Decodes the carried event, if this response carries one.
    pub fn decode_event(&self) -> Option<Result<Event, DecodeError>> {
        match &self.kind {
            Some(Kind::Event(bytes)) => Some(<Event as prost::Message>::decode(bytes.clone())),
            _ => None,
        }
    }
}

impl prost::Message for SubscribeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.kind {
            Some(Kind::Event(bytes)) => {
                encoding::encode_key(EVENT_TAG, WireType::LengthDelimited, buf);
                encoding::encode_varint(bytes.len() as u64, buf);
                buf.put_slice(bytes);
            }
            Some(Kind::Heartbeat(heartbeat)) => {
                encoding::message::encode(HEARTBEAT_TAG, heartbeat, buf)
            }
            None => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            EVENT_TAG => {
                let mut bytes = Bytes::new();
                encoding::bytes::merge(wire_type, &mut bytes, buf, ctx)?;
                self.kind = Some(Kind::Event(bytes));
                Ok(())
            }
            HEARTBEAT_TAG => {
                let mut heartbeat = match self.kind.take() {
                    Some(Kind::Heartbeat(heartbeat)) => heartbeat,
                    _ => Heartbeat::default(),
                };
                encoding::message::merge(wire_type, &mut heartbeat, buf, ctx)?;
                self.kind = Some(Kind::Heartbeat(heartbeat));
                Ok(())
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        match &self.kind {
            Some(Kind::Event(bytes)) => {
                encoding::key_len(EVENT_TAG)
                    + encoding::encoded_len_varint(bytes.len() as u64)
                    + bytes.len()
            }
            Some(Kind::Heartbeat(heartbeat)) => {
                encoding::message::encoded_len(HEARTBEAT_TAG, heartbeat)
            }
            None => 0,
        }
    }

    fn clear(&mut self) {
        self.kind = None;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::{Heartbeat, SubscribeResponse};

    /// A Subscribe message framed once for the wire is exactly what tonic's encoder writes:
    /// no compression flag, the big-endian length, then the message; it decodes back.
    #[test]
    fn a_framed_message_is_the_grpc_wire_format() {
        for message in [
            SubscribeResponse::event(Bytes::from(vec![7u8; 300])),
            SubscribeResponse::heartbeat(Heartbeat {
                head_cursor: 42,
                time: None,
            }),
        ] {
            let frame = message.grpc_frame();
            let body = message.encode_to_vec();
            assert_eq!(frame[0], 0, "not compressed");
            assert_eq!(
                u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
                body.len()
            );
            assert_eq!(&frame[5..], &body[..]);
            assert_eq!(SubscribeResponse::decode(&frame[5..]).unwrap(), message);
        }
    }

    /// The descriptor set that gRPC reflection serves describes the contract clients rely on:
    /// service `okta.events.v1.EventStream` with its three methods, and the record's fields.
    #[test]
    fn the_reflection_descriptor_set_describes_the_contract() {
        let set = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).expect("decodes");
        let file = set
            .file
            .iter()
            .find(|f| f.package() == "okta.events.v1")
            .expect("okta.events.v1 is in the set");
        for import in [
            "google/protobuf/struct.proto",
            "google/protobuf/timestamp.proto",
        ] {
            assert!(
                set.file.iter().any(|f| f.name() == import),
                "{import} is served too, so clients can resolve it"
            );
        }

        let service = file
            .service
            .iter()
            .find(|s| s.name() == "EventStream")
            .expect("service EventStream");
        let methods: Vec<(&str, &str, bool)> = service
            .method
            .iter()
            .map(|m| (m.name(), m.input_type(), m.server_streaming()))
            .collect();
        assert_eq!(
            methods,
            [
                ("Subscribe", ".okta.events.v1.EventFilter", true),
                ("GetEvent", ".okta.events.v1.GetEventRequest", false),
                ("ListEvents", ".okta.events.v1.ListEventsRequest", false),
                (
                    "ListQuarantined",
                    ".okta.events.v1.ListQuarantinedRequest",
                    false
                ),
            ]
        );

        let message = |name: &str| {
            file.message_type
                .iter()
                .find(|m| m.name() == name)
                .unwrap_or_else(|| panic!("message {name}"))
        };
        let get_event = message("GetEventRequest");
        assert!(get_event.field.iter().any(|f| f.name() == "uuid"));

        let event: Vec<&str> = message("Event").field.iter().map(|f| f.name()).collect();
        for card_field in [
            "published",
            "message",
            "event_id",
            "event_type",
            "legacy_event_type",
            "event_time",
            "version",
            "uuid",
            "severity",
            "severity_raw",
            "result",
            "result_raw",
            "changed_attributes",
            "changed_attributes_raw",
            "actor",
            "okta_user",
            "client",
            "transaction",
            "debug_context",
            "authentication_context",
            "security_context",
            "event_details",
            "headers",
            "source",
            "cursor",
            "ingest_source",
            "targets",
        ] {
            assert!(event.contains(&card_field), "Event.{card_field}");
        }
        for (name, fields) in [
            ("Actor", ["id", "alternate_id", "display_name", "type"]),
            ("OktaUser", ["id", "alternate_id", "display_name", "type"]),
        ] {
            let got: Vec<&str> = message(name).field.iter().map(|f| f.name()).collect();
            for field in fields {
                assert!(got.contains(&field), "{name}.{field}");
            }
        }
    }
}
