//! Compiles `proto/` without a system `protoc`: protox parses the files, tonic-prost-build
//! generates the code, and the encoded descriptor set is written for gRPC reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["okta/events/v1/events.proto"], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // `compile_fds` does not write the descriptor set itself; reflection needs it.
    fs::write(
        out_dir.join("okta_events_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Subscribe's response is encoded by hand so one encoding of an event is shared by
        // every subscriber (see `proto::SubscribeResponse`); wire-compatible with the proto.
        .extern_path(
            ".okta.events.v1.SubscribeResponse",
            "crate::proto::SubscribeResponse",
        )
        // `Struct` fields (`event_details` and the free-form sub-objects) are held as their
        // encoded bytes, written by the mapping straight from the JSON; wire-compatible.
        .extern_path(".google.protobuf.Struct", "crate::proto::EncodedStruct")
        .compile_fds(fds)?;
    Ok(())
}
