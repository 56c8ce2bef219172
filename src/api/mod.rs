//! The gRPC boundary: tonic services (ContextService, IntegrityService), proto ↔ model
//! conversion, and the one table that maps `LedgerError` to `tonic::Status`.

mod cluster_service;
mod context_service;
mod convert;
mod integrity_service;
mod router;
mod status;
mod watch_stream;

pub use cluster_service::ClusterApi;
pub use context_service::ContextApi;
pub use convert::{entry_from_proto, entry_to_proto, hash_from_bytes};
pub use integrity_service::IntegrityApi;
pub use router::router;
pub use status::to_status;
