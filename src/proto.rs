//! The generated `okta.events.v1` types and the descriptor set that gRPC reflection serves.
//!
//! `SubscribeResponse` is not generated: it is hand-encoded in [`crate::grpc`] so that one
//! encoding of an event is shared by every subscriber.

#![allow(
    missing_docs,
    clippy::doc_overindented_list_items,
    clippy::large_enum_variant
)]

tonic::include_proto!("okta.events.v1");

/// Encoded `FileDescriptorSet` of `proto/okta/events/v1/events.proto` (with its imports).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("okta_events_v1_descriptor");

pub use crate::grpc::SubscribeResponse;
