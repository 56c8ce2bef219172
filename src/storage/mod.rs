//! The redb schema and the only code that touches redb. `Store` reads (on any thread, in
//! read transactions); `writer` is the single group-commit writer, which in fsync mode
//! runs `pipeline`: durability from the write-ahead log (`wal`, records in `wal_record`),
//! redb committed without fsync and checkpointed about once a second.

pub(crate) mod codec;
mod pipeline;
pub mod raft_apply;
pub mod raft_log;
mod schema;
mod store;
pub mod wal;
pub mod wal_record;
pub mod writer;

pub use codec::{
    decode_entry, decode_entry_in, encode_entry, encode_entry_into, encode_entry_with_nodes_into,
    CodecError,
};
pub use store::{
    ContextNodes, DurabilityMode, Head, KeyFilter, Quarantined, StorageError, Store, StoreReader,
};
pub use writer::{commit_batch, spawn_writer, CommitResult, OnDone, ReplicaOp, WriteOp, WriterMsg};
