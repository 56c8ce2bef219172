//! The ledger's vocabulary: entries, the limits every request is checked against, and the
//! validation that enforces them. Pure: no I/O, no async, no storage types.

mod entry;
mod limits;
mod validate;

#[cfg(test)]
pub use entry::arb_entry;
pub use entry::{Entry, EntryContent, Hash, Metadata};
pub use limits::Limits;
pub use validate::{
    validate_append, validate_context_id, validate_key_filter, validate_key_prefix, ValidationError,
};
