//! Coffer's gRPC contract: the messages and services of `proto/coffer/v1`, generated at build
//! time (protox, no system `protoc`), plus the encoded descriptor set for reflection.

#![allow(missing_docs)]

/// Package `coffer.v1`.
pub mod v1 {
    tonic::include_proto!("coffer.v1");
}

/// The encoded `FileDescriptorSet` of every Coffer proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("coffer_descriptor");
