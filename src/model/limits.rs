//! The bounds every request is checked against. Each is a named field with its reason, so
//! an error can name the limit it hit.

/// Request limits. Built from the configuration; `Limits::default_for_payload` gives the
/// fixed limits of the contract around a configurable payload maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Context ids are storage keys and appear in every log line: 256 bytes keeps both sane.
    pub context_id_bytes_max: usize,
    /// Entry keys are categories ("facts", "intents"), not data.
    pub key_bytes_max: usize,
    /// Metadata is for small annotations; payloads carry data.
    pub metadata_pairs_max: usize,
    /// Per metadata key and per metadata value.
    pub metadata_field_bytes_max: usize,
    /// Idempotency keys are stored for the life of the context.
    pub idempotency_key_bytes_max: usize,
    /// Inclusive: a payload of exactly this size is accepted. Configurable (--max-payload-bytes).
    pub payload_bytes_max: usize,
}

impl Limits {
    /// The contract's limits with the given payload maximum.
    pub const fn with_payload_max(payload_bytes_max: usize) -> Self {
        Limits {
            context_id_bytes_max: 256,
            key_bytes_max: 256,
            metadata_pairs_max: 64,
            metadata_field_bytes_max: 1024,
            idempotency_key_bytes_max: 256,
            payload_bytes_max,
        }
    }
}
