//! The gRPC surface: `okta.events.v1.EventStream` (Subscribe, GetEvent, ListEvents).

mod response;

pub use response::{Kind, SubscribeResponse};
