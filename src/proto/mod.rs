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

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

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
