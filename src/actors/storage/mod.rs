//! The storage branch of the tree: StorageSupervisor owns the database for the life of the
//! process and supervises the StorageWriter, which owns the group-commit thread.

mod storage_supervisor;
mod storage_writer;

pub use storage_supervisor::{StorageSupervisor, STORAGE_SUPERVISOR_NAME};
pub use storage_writer::{StorageWriter, StorageWriterMsg, STORAGE_WRITER_NAME};
