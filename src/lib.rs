//! okta-stream: Okta events as a typed, replayable gRPC stream.
//!
//! # Data flow
//! ```text
//!  hook (POST /okta/hook) ─┐
//!                          ├─▶ ingest ─▶ journal ─▶ sink ─▶ hub ─▶ grpc (Subscribe, Get, List)
//!  okta (System Log poll) ─┘   map once,  group      (CommitSink,   replay from the journal,
//!                              quarantine commit,    the hub)      then live
//!                                         dedupe
//! ```
//! A stage is handed where its output goes and never looks for its consumer: the journal
//! hands commits to the [`journal::CommitSink`] it is opened with; [`app`] wires the hub in.
//!
//! # Layout
//! From the wiring at the top down to the wire types at the ground floor. Imports point down
//! the stack, never in a circle, neither between files nor between these modules (checked by
//! `tests/architecture.rs`).
//! - [`app`]: wires the parts, owns the listeners, the tasks and shutdown.
//! - [`cli`]: the client subcommands of the binary (tail, get, quarantine, hook, health,
//!   journal check).
//! - [`console`]: the browser console page, embedded, served at `GET /` on the gRPC listener.
//! - [`config`]: every setting declared once (flag > env > file > default), validated; plain
//!   values only: each part builds its own settings from them.
//! - [`hook`]: the Okta Event Hook endpoint (verification, auth, delivery → ingest).
//! - [`okta`]: Okta's APIs as a stack: org → settings/stats → auth → client → poller (→ ingest);
//!   the Users API client beside the System Log client.
//! - [`profile`]: old → new profile values: attribute rules, snapshots and their store.
//! - [`grpc`]: the `EventStream` service (Subscribe, GetEvent, ListEvents), filters, auth.
//! - [`ops`]: the admin routes: `/metrics`, `/healthz`, `/readyz`.
//! - [`listener`]: the accept loop of the hook, admin and gRPC listeners: connection cap,
//!   deadlines, HTTP/2 limits, reloadable (mutual) TLS.
//! - [`error`]: the one map from errors to HTTP and gRPC statuses.
//! - [`ingest`]: raw LogEvents (or a whole hook body, parsed once) → mapped or quarantined (off
//!   the async workers) → appended.
//! - [`hub`]: committed events → subscribers; replay from the journal, then live.
//! - [`journal`]: the durable, deduplicating, ordered store (embedded redb or NATS JetStream)
//!   and the [`journal::CommitSink`] it hands commits to.
//! - [`mapping`]: Okta LogEvent JSON (+ delivery context) → the typed record, `proto::Event`.
//! - [`telemetry`]: logging and the one Prometheus registry; knows no domain module.
//! - [`secret`]: the redacting newtype for secrets.
//! - [`data_dir`]: the private data dir (created 0700, files 0600); imports no other module.
//! - [`proto`]: the ground floor: generated `okta.events.v1` types, the reflection descriptor
//!   set, and the hand-written wire types the generated code uses (`SubscribeResponse`,
//!   `EncodedStruct`).

pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod data_dir;
pub mod error;
pub mod grpc;
pub mod hook;
pub mod hub;
pub mod ingest;
pub mod journal;
pub mod listener;
pub mod mapping;
pub mod okta;
pub mod ops;
pub mod profile;
pub mod proto;
pub mod secret;
pub mod telemetry;
