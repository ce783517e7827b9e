//! Every message type a node can be sent, as a `FileDescriptorSet`:
//! Envoy's API (as envoy-types ships it) and Gantry's own protos, compiled
//! by the build. What renders resources as proto3 JSON, in the field names
//! Envoy's tooling reads, decodes it on demand.

/// The encoded `google.protobuf.FileDescriptorSet`.
pub const SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
