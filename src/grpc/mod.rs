//! The gRPC surface: `okta.events.v1.EventStream` (Subscribe, GetEvent, ListEvents), with
//! server reflection (v1 and v1alpha), `grpc.health.v1`, gRPC-Web, optional TLS and bearer
//! tokens.

pub mod auth;
pub mod filter;
pub mod service;
pub mod subscribe;

pub use crate::proto::{Kind, SubscribeResponse};
pub use service::{EventStreamService, StreamSettings};
