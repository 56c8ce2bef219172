//! Request validation against `Limits`. Every error names the field, the offending size and
//! the limit, so a client can fix its request without reading our source.

use super::{Limits, Metadata};

/// A request that breaks a limit. `PayloadTooLarge` is separate because the contract maps it
/// to RESOURCE_EXHAUSTED while every other violation is INVALID_ARGUMENT.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{0}")]
    Invalid(String),
    #[error("payload is {size} bytes, over the limit of {max} bytes (--max-payload-bytes)")]
    PayloadTooLarge { size: usize, max: usize },
}

fn too_long(field: &str, size: usize, max: usize) -> ValidationError {
    ValidationError::Invalid(format!(
        "{field} is {size} bytes, over the limit of {max} bytes"
    ))
}

/// A context id must be non-empty and at most `context_id_bytes_max` bytes.
pub fn validate_context_id(limits: &Limits, context_id: &str) -> Result<(), ValidationError> {
    if context_id.is_empty() {
        return Err(ValidationError::Invalid(
            "context_id is empty; every request names a context".into(),
        ));
    }
    if context_id.len() > limits.context_id_bytes_max {
        return Err(too_long(
            "context_id",
            context_id.len(),
            limits.context_id_bytes_max,
        ));
    }
    Ok(())
}

/// A key filter (Get, Watch) obeys the entry key limit.
pub fn validate_key_filter(limits: &Limits, key: &str) -> Result<(), ValidationError> {
    if key.len() > limits.key_bytes_max {
        return Err(too_long("key", key.len(), limits.key_bytes_max));
    }
    Ok(())
}

/// A Get's key prefix obeys the entry key limit too.
pub fn validate_key_prefix(limits: &Limits, prefix: &str) -> Result<(), ValidationError> {
    if prefix.len() > limits.key_bytes_max {
        return Err(too_long("key_prefix", prefix.len(), limits.key_bytes_max));
    }
    Ok(())
}

/// Checks every limit an append (or a restored entry) must respect.
pub fn validate_append(
    limits: &Limits,
    context_id: &str,
    key: &str,
    payload_len: usize,
    metadata: &Metadata,
    idempotency_key: &str,
) -> Result<(), ValidationError> {
    validate_context_id(limits, context_id)?;
    validate_key_filter(limits, key)?;
    if metadata.len() > limits.metadata_pairs_max {
        return Err(ValidationError::Invalid(format!(
            "metadata has {} pairs, over the limit of {} pairs",
            metadata.len(),
            limits.metadata_pairs_max
        )));
    }
    for (k, v) in metadata {
        if k.len() > limits.metadata_field_bytes_max {
            return Err(too_long(
                &format!("metadata key {:?}", truncate(k)),
                k.len(),
                limits.metadata_field_bytes_max,
            ));
        }
        if v.len() > limits.metadata_field_bytes_max {
            return Err(too_long(
                &format!("metadata value of {k:?}"),
                v.len(),
                limits.metadata_field_bytes_max,
            ));
        }
    }
    if idempotency_key.len() > limits.idempotency_key_bytes_max {
        return Err(too_long(
            "idempotency_key",
            idempotency_key.len(),
            limits.idempotency_key_bytes_max,
        ));
    }
    if payload_len > limits.payload_bytes_max {
        return Err(ValidationError::PayloadTooLarge {
            size: payload_len,
            max: limits.payload_bytes_max,
        });
    }
    Ok(())
}

/// The first 32 characters of an over-long name, for an error message that stays readable.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(32).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits::with_payload_max(100);

    fn meta(pairs: &[(&str, &str)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(ctx: &str, key: &str, payload: usize, m: &Metadata, idem: &str) -> bool {
        validate_append(&L, ctx, key, payload, m, idem).is_ok()
    }

    #[test]
    fn context_id_bounds() {
        let e = validate_context_id(&L, "").unwrap_err();
        assert!(e.to_string().contains("context_id is empty"));
        assert!(validate_context_id(&L, &"c".repeat(256)).is_ok());
        let e = validate_context_id(&L, &"c".repeat(257)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "context_id is 257 bytes, over the limit of 256 bytes"
        );
    }

    #[test]
    fn key_bounds_count_bytes_not_chars() {
        let m = Metadata::new();
        assert!(ok("c", &"k".repeat(256), 0, &m, ""));
        assert!(ok("c", "", 0, &m, ""), "the empty key is allowed");
        // 129 two-byte characters are 258 bytes.
        let e = validate_append(&L, "c", &"é".repeat(129), 0, &m, "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "key is 258 bytes, over the limit of 256 bytes"
        );
    }

    #[test]
    fn metadata_pair_count() {
        let m: Metadata = (0..64).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(ok("c", "k", 0, &m, ""));
        let m: Metadata = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        let e = validate_append(&L, "c", "k", 0, &m, "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata has 65 pairs, over the limit of 64 pairs"
        );
    }

    #[test]
    fn metadata_field_sizes() {
        let k = "a".repeat(1024);
        assert!(ok("c", "k", 0, &meta(&[(&k, &k)]), ""));
        assert!(ok("c", "k", 0, &meta(&[("", "v")]), ""), "empty key ok");
        let big = "a".repeat(1025);
        let e = validate_append(&L, "c", "k", 0, &meta(&[(&big, "v")]), "").unwrap_err();
        assert!(e.to_string().starts_with("metadata key \"aaaa"), "{e}");
        assert!(e
            .to_string()
            .ends_with("is 1025 bytes, over the limit of 1024 bytes"));
        let e = validate_append(&L, "c", "k", 0, &meta(&[("x", &big)]), "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata value of \"x\" is 1025 bytes, over the limit of 1024 bytes"
        );
    }

    #[test]
    fn idempotency_key_size() {
        let m = Metadata::new();
        assert!(ok("c", "k", 0, &m, &"i".repeat(256)));
        assert!(!ok("c", "k", 0, &m, &"i".repeat(257)));
    }

    #[test]
    fn payload_limit_is_inclusive_and_resource_exhausted() {
        let m = Metadata::new();
        assert!(ok("c", "k", 100, &m, ""));
        assert_eq!(
            validate_append(&L, "c", "k", 101, &m, "").unwrap_err(),
            ValidationError::PayloadTooLarge {
                size: 101,
                max: 100
            }
        );
    }

    #[test]
    fn key_filter() {
        assert!(validate_key_filter(&L, "").is_ok());
        assert!(validate_key_filter(&L, &"k".repeat(257)).is_err());
    }
}
