//! okta-stream: Okta events as a typed, replayable gRPC stream.
//!
//! # Layout
//! - [`config`]: every setting declared once (flag > env > file > default), validated; plain
//!   values only: each part builds its own settings from them.
//! - [`hook`]: the Okta Event Hook endpoint (verification, auth, delivery → journal).
//! - [`mapping`]: Okta LogEvent JSON (+ delivery context) → the typed record, `proto::Event`.
//! - [`journal`]: the durable, deduplicating, ordered store (embedded redb or NATS JetStream).
//! - [`hub`]: committed events → subscribers; replay from the journal, then live.
//! - [`grpc`]: the `EventStream` service (Subscribe, GetEvent, ListEvents), filters, auth.
//! - [`cli`]: the client subcommands of the binary (tail, get, quarantine, hook, health).
//! - [`console`]: the browser console page, embedded, served at `GET /` on the gRPC listener.
//! - [`listener`]: the accept loop of the three listeners: connection cap, deadlines, TLS.
//! - [`app`]: wires the parts, owns the listeners, the tasks and shutdown.
//! - [`error`]: the one map from errors to HTTP and gRPC statuses.
//! - [`telemetry`]: logging and Prometheus metrics.
//! - [`secret`]: the redacting newtype for secrets.
//! - [`okta`]: the System Log poller: client, auth (SSWS, private_key_jwt, DPoP), the loop.
//! - [`proto`]: generated `okta.events.v1` types and the reflection descriptor set.
//!
//! Data flow: hook or poller → `mapping` → `journal` (group commit) → `hub` → `grpc`.

pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod error;
pub mod grpc;
pub mod hook;
pub mod hub;
pub mod journal;
pub mod listener;
pub mod mapping;
pub mod okta;
pub mod ops;
pub mod proto;
pub mod secret;
pub mod telemetry;
