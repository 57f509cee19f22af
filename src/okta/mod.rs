//! The Okta System Log side: pull every event from `GET /api/v1/logs`, gap-free and resumable.
//!
//! Hooks are fast but lossy by design; the System Log is the complete record (SPEC.md B). This
//! module is a stack, each file importing only those below it — org → settings/stats → auth →
//! client → poller (and hooks beside client):
//! - [`auth`]: credentials (SSWS API token, or an OAuth 2.0 service app with `private_key_jwt`
//!   and DPoP) turned into the headers of each request, with secrets kept redacted.
//! - [`client`]: one page of `/api/v1/logs`: the request, the `Link` parsing, the rate-limit
//!   headers and error kinds the poller can match on.
//! - [`hooks`]: the management API of Event Hooks (`/api/v1/eventHooks`): create and verify
//!   the hook with the same credentials, for `okta-stream hook register|verify`.
//! - [`org`]: the org URL, checked once, and the HTTP client every call uses (the floor).
//! - [`settings`]: the poller's settings and defaults, read by the client and the loop, and
//!   built by `serve` from [`crate::config`].
//! - [`split`]: a page's body split into its events' bytes, reading only the array's
//!   structure (each event is parsed strictly when it is mapped).
//! - [`stats`]: what the poller did, as metrics in the service's registry, and its health.
//! - [`poller`]: the loop: resume from the stored `next` URL, map, append the page and the new
//!   `next` URL in one journal transaction, pace within the rate limit, back off on failures.
//! - [`users`]: the Users API (`/api/v1/users`), the source of profile values (SPEC.md I).

pub mod auth;
pub mod client;
pub mod hooks;
pub mod org;
pub mod poller;
pub mod settings;
pub mod split;
pub mod stats;
pub mod users;

pub use auth::{Credentials, PrivateKey, Secret};
pub use client::{Client, ClientError, Page, RateLimit};
pub use org::{ConfigError, parse_org_url};
pub use poller::{NEXT_URL_STATE_KEY, Poller, PollerError};
pub use settings::{PollerConfig, StartFrom};
pub use stats::{PollerHealth, PollerSnapshot, PollerStats};
