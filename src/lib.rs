//! okta-stream: Okta events as a typed, replayable gRPC stream.
//!
//! # Layout
//! - [`mapping`]: Okta LogEvent JSON (+ delivery context) → the typed record, `proto::Event`.
//! - [`journal`]: the durable, deduplicating, ordered store (embedded redb or NATS JetStream).
//! - [`hub`]: committed events → subscribers; replay from the journal, then live.
//! - [`grpc`]: the `EventStream` service (Subscribe, GetEvent, ListEvents).
//! - [`okta`]: the System Log poller: client, auth (SSWS, private_key_jwt, DPoP), the loop.
//! - [`proto`]: generated `okta.events.v1` types and the reflection descriptor set.
//!
//! Data flow: hook or poller → `mapping` → `journal` (group commit) → `hub` → `grpc`.

pub mod grpc;
pub mod hub;
pub mod journal;
pub mod mapping;
pub mod okta;
pub mod proto;
