//! `okta.events.v1.SubscribeResponse`, encoded by hand.
//!
//! A committed event is encoded once, by the journal. Generated code would re-encode the
//! `Event` for every subscriber; this type writes the shared bytes as field 1 instead, which
//! is byte-for-byte what the generated encoder would produce. Decoding (for Rust clients)
//! keeps the event's bytes and decodes them on demand.

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{self, DecodeContext, WireType};

use crate::proto;

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
    Heartbeat(proto::Heartbeat),
}

const EVENT_TAG: u32 = 1;
const HEARTBEAT_TAG: u32 = 2;

impl SubscribeResponse {
    /// A response carrying an encoded event.
    pub fn event(encoded: Bytes) -> Self {
        Self {
            kind: Some(Kind::Event(encoded)),
        }
    }

    /// A response carrying a heartbeat.
    pub fn heartbeat(heartbeat: proto::Heartbeat) -> Self {
        Self {
            kind: Some(Kind::Heartbeat(heartbeat)),
        }
    }

    /// Decodes the carried event, if this response carries one.
    pub fn decode_event(&self) -> Option<Result<proto::Event, DecodeError>> {
        match &self.kind {
            Some(Kind::Event(bytes)) => {
                Some(<proto::Event as prost::Message>::decode(bytes.clone()))
            }
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
                    _ => proto::Heartbeat::default(),
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
