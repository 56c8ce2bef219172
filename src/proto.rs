//! The generated wire types of `converge.context.v1` (compiled by build.rs with protox).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("converge.context.v1");

/// The encoded file descriptor set, served by gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("converge_descriptor");
