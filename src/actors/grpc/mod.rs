//! The gRPC branch of the tree.

mod grpc_server_supervisor;

pub use grpc_server_supervisor::{GrpcServerArgs, GrpcServerSupervisor, GRPC_SERVER_NAME};
