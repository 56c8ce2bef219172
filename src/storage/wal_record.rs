//! The byte layout of a write-ahead-log record, and how a log is read back. Pure: no I/O.
//!
//! ```text
//! record  = u32be len ‖ u32be crc ‖ u64be batch ‖ payload[len]
//!           crc = CRC-32 (IEEE, crc32fast) of batch ‖ payload
//! payload = u32be ops ‖ op* ‖ [epochs]
//! op      = u32be len ‖ context ‖ u64be expect_prev ‖
//!           u32be entries ‖ (u32be len ‖ entry value (codec, no nodes))* ‖
//!           u32be nodes ‖ (u8 level ‖ u64be index ‖ hash[32])* ‖
//!           u32be pairs ‖ (u32be len ‖ idempotency key ‖ u64be sequence)*
//! epochs  = u32be count ‖ (u32be len ‖ context ‖ u64be epoch)*        (since layout 4)
//! ```
//!
//! An entry's sequence is not stored: the i-th entry of an op is `expect_prev + 1 + i`
//! (the writer refuses an op whose entries are not numbered that way before it logs it).
//!
//! **Epochs.** A batch may carry replication epochs (`ReplicaOp::SetEpoch`) as an optional
//! trailing section: absent when the batch has none, so a record without epochs is
//! byte-for-byte what layout 3 wrote, and a layout-3 record decodes as a batch with no
//! epochs. The epochs sit after all ops rather than interleaved with them because applying
//! them commutes with the ops: an epoch goes to CONTEXT_EPOCH as the max of the stored and
//! the logged value, independent of ENTRIES, and a batch is applied in one transaction, so
//! the order inside a record does not change the result. A layout-3 build would refuse a
//! record with the section (trailing bytes), hence the layout bump to 4. Like every other
//! byte of a payload, the section is guarded by the record's CRC alone: a payload cut
//! exactly after its ops would read as a batch without epochs, but a cut record fails its
//! CRC (or its length) first.
//!
//! **Reading a log back (`scan`).** Records are read from offset 0; each must carry the
//! batch number one past the previous one. The first record that is cut short, has a
//! length over `PAYLOAD_MAX`, a CRC that does not match, or a batch number out of order
//! ends the log. Why that is safe:
//! - A torn tail (a crash in the middle of a `write`) is never acknowledged: an ack waits
//!   for the fdatasync that covers the whole record and every record before it.
//! - The log file is reused from offset 0 after each checkpoint, so bytes of an older cycle
//!   follow the newest record. They carry batch numbers that the checkpoint already covers,
//!   never the next one, so the order check stops there even when their CRC is intact.
//! - An all-zero header ends the log cleanly (zero-filled space after the last record).

use super::codec::{decode_entry_in, encode_entry_into, CodecError, Reader};
use crate::integrity::merkle::NodePos;
use crate::model::{Entry, Hash};
use bytes::Bytes;

/// Bytes before a record's payload: length, CRC, batch number.
pub const HEADER_LEN: usize = 16;
/// The largest payload a record may have. A longer length in a header is damage (or an
/// op no client can send: gRPC messages are far smaller), so it ends the log.
pub const PAYLOAD_MAX: usize = 1 << 30;

/// One logged op, borrowed from the writer's `WriteOp`.
#[derive(Clone, Copy)]
pub struct OpRef<'a> {
    pub context_id: &'a str,
    pub expect_prev: u64,
    pub entries: &'a [Entry],
    pub nodes: &'a [(NodePos, Hash)],
    pub idempotency: &'a [(String, u64)],
}

/// One op read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedOp {
    pub context_id: String,
    pub expect_prev: u64,
    pub entries: Vec<Entry>,
    pub nodes: Vec<(NodePos, Hash)>,
    pub idempotency: Vec<(String, u64)>,
}

/// One logged epoch: a context's replication epoch, applied as max(stored, epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEpoch {
    pub context_id: String,
    pub epoch: u64,
}

/// A record's payload, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoggedBatch {
    pub ops: Vec<LoggedOp>,
    /// Empty for a record without the epochs section (every layout-3 record).
    pub epochs: Vec<LoggedEpoch>,
}

/// A batch that cannot be logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a write-ahead-log record of {0} bytes is over the limit of {PAYLOAD_MAX}")]
    TooLarge(usize),
    #[error("a string or list of {0} items or bytes does not fit a u32 length")]
    LengthOverflow(usize),
}

/// Encodes batch `batch` of `ops` and `epochs` ((context, epoch) pairs) as one record into
/// `out` (cleared first). With no epochs, the record has no epochs section.
pub fn encode_record<'a>(
    out: &mut Vec<u8>,
    batch: u64,
    ops: impl ExactSizeIterator<Item = OpRef<'a>>,
    epochs: impl ExactSizeIterator<Item = (&'a str, u64)>,
) -> Result<(), EncodeError> {
    out.clear();
    out.resize(HEADER_LEN, 0);
    put_len(out, ops.len())?;
    let mut value = Vec::with_capacity(256);
    for op in ops {
        put_bytes(out, op.context_id.as_bytes())?;
        out.extend_from_slice(&op.expect_prev.to_be_bytes());
        put_len(out, op.entries.len())?;
        for e in op.entries {
            encode_entry_into(&mut value, e);
            put_bytes(out, &value)?;
        }
        put_len(out, op.nodes.len())?;
        for (pos, hash) in op.nodes {
            out.push(pos.level);
            out.extend_from_slice(&pos.index.to_be_bytes());
            out.extend_from_slice(hash);
        }
        put_len(out, op.idempotency.len())?;
        for (key, seq) in op.idempotency {
            put_bytes(out, key.as_bytes())?;
            out.extend_from_slice(&seq.to_be_bytes());
        }
    }
    if epochs.len() > 0 {
        put_len(out, epochs.len())?;
        for (ctx, epoch) in epochs {
            put_bytes(out, ctx.as_bytes())?;
            out.extend_from_slice(&epoch.to_be_bytes());
        }
    }
    let len = out.len() - HEADER_LEN;
    if len > PAYLOAD_MAX {
        return Err(EncodeError::TooLarge(len));
    }
    out[8..16].copy_from_slice(&batch.to_be_bytes());
    let crc = crc32fast::hash(&out[8..]);
    out[0..4].copy_from_slice(&(len as u32).to_be_bytes());
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn put_len(out: &mut Vec<u8>, n: usize) -> Result<(), EncodeError> {
    let n = u32::try_from(n).map_err(|_| EncodeError::LengthOverflow(n))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), EncodeError> {
    put_len(out, b.len())?;
    out.extend_from_slice(b);
    Ok(())
}

/// Why reading a log stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// At the end of the bytes, or at a zero length: nothing was torn.
    End,
    /// At a record that is cut short or damaged: a write the crash interrupted.
    Torn(String),
    /// At an intact record whose batch number does not follow: an older cycle's bytes.
    Stale { expected: u64, found: u64 },
}

/// What a log holds: its records, in order, and where and why reading stopped.
#[derive(Debug)]
pub struct Scan<'a> {
    /// (batch number, payload), consecutive batch numbers.
    pub records: Vec<(u64, &'a [u8])>,
    /// The offset just past the last record.
    pub end: usize,
    pub stop: Stop,
}

/// Reads the records of a log from offset 0; see the module docs for where it stops.
pub fn scan(buf: &[u8]) -> Scan<'_> {
    let mut records: Vec<(u64, &[u8])> = Vec::new();
    let mut at = 0usize;
    let stop = loop {
        let rest = &buf[at..];
        if rest.is_empty() {
            break Stop::End;
        }
        if rest.len() < HEADER_LEN {
            break Stop::Torn(format!("{} bytes of a header at offset {at}", rest.len()));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let mut batch_bytes = [0u8; 8];
        batch_bytes.copy_from_slice(&rest[8..16]);
        let batch = u64::from_be_bytes(batch_bytes);
        if rest[..HEADER_LEN].iter().all(|b| *b == 0) {
            break Stop::End;
        }
        if len > PAYLOAD_MAX {
            break Stop::Torn(format!("length {len} at offset {at} is over the limit"));
        }
        if rest.len() - HEADER_LEN < len {
            break Stop::Torn(format!(
                "record at offset {at} needs {len} payload bytes, {} remain",
                rest.len() - HEADER_LEN
            ));
        }
        let covered = &rest[8..HEADER_LEN + len];
        let actual = crc32fast::hash(covered);
        if actual != crc {
            break Stop::Torn(format!(
                "CRC of the record at offset {at} is {actual:#010x}, its header says {crc:#010x}"
            ));
        }
        if let Some(&(prev, _)) = records.last() {
            if batch != prev.wrapping_add(1) {
                break Stop::Stale {
                    expected: prev.wrapping_add(1),
                    found: batch,
                };
            }
        }
        records.push((batch, &rest[HEADER_LEN..HEADER_LEN + len]));
        at += HEADER_LEN + len;
    };
    Scan {
        records,
        end: at,
        stop,
    }
}

/// Decodes a record's payload (which passed its CRC). The entries' payloads are slices of
/// `payload`. An error here is not a torn write but a record this build cannot read.
pub fn decode_payload(payload: &Bytes) -> Result<LoggedBatch, CodecError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let n = r.u32()? as usize;
    // Each op takes at least 24 bytes: never reserve more than the payload can hold.
    let mut ops = Vec::with_capacity(n.min(payload.len() / 24));
    for _ in 0..n {
        let context_id = r.string("context")?;
        let expect_prev = r.u64()?;
        let entries_n = r.u32()? as usize;
        let mut entries = Vec::with_capacity(entries_n.min(payload.len() / 4));
        for i in 0..entries_n as u64 {
            let seq = expect_prev
                .checked_add(i + 1)
                .ok_or_else(|| CodecError(format!("entry {i} after {expect_prev} overflows")))?;
            let value = r.bytes()?;
            entries.push(decode_entry_in(seq, payload, value)?);
        }
        let nodes_n = r.u32()? as usize;
        let mut nodes = Vec::with_capacity(nodes_n.min(payload.len() / 41));
        for _ in 0..nodes_n {
            let level = r.take(1)?[0];
            let index = r.u64()?;
            let mut hash = [0u8; 32];
            hash.copy_from_slice(r.take(32)?);
            nodes.push((NodePos { level, index }, hash));
        }
        let pairs = r.u32()? as usize;
        let mut idempotency = Vec::with_capacity(pairs.min(payload.len() / 12));
        for _ in 0..pairs {
            let key = r.string("idempotency key")?;
            idempotency.push((key, r.u64()?));
        }
        ops.push(LoggedOp {
            context_id,
            expect_prev,
            entries,
            nodes,
            idempotency,
        });
    }
    let mut epochs = Vec::new();
    if r.pos != payload.len() {
        let count = r.u32()? as usize;
        // Each epoch takes at least 12 bytes.
        epochs.reserve(count.min(payload.len() / 12));
        for _ in 0..count {
            let context_id = r.string("context")?;
            epochs.push(LoggedEpoch {
                context_id,
                epoch: r.u64()?,
            });
        }
    }
    if r.pos != payload.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after {n} logged ops and {} epochs",
            payload.len() - r.pos,
            epochs.len()
        )));
    }
    Ok(LoggedBatch { ops, epochs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(seq: u64, key: &str, payload: &[u8], meta: &[(&str, &str)]) -> Entry {
        let mut content_hash = [0u8; 32];
        content_hash[..8].copy_from_slice(&seq.to_be_bytes());
        content_hash[31] = payload.len() as u8;
        Entry {
            id: format!("id-{seq}"),
            key: key.into(),
            payload: Bytes::copy_from_slice(payload),
            sequence: seq,
            appended_at_ns: seq * 7,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            lamport_clock: seq + 3,
            content_hash,
        }
    }

    fn logged(ctx: &str, prev: u64, n: u64, payload_len: usize) -> LoggedOp {
        LoggedOp {
            context_id: ctx.into(),
            expect_prev: prev,
            entries: (prev + 1..=prev + n)
                .map(|s| entry(s, "k", &vec![s as u8; payload_len], &[("m", "v")]))
                .collect(),
            nodes: (0..n)
                .map(|i| {
                    (
                        NodePos {
                            level: 1 + (i % 3) as u8,
                            index: prev + i,
                        },
                        [i as u8; 32],
                    )
                })
                .collect(),
            idempotency: vec![(format!("idem-{prev}"), prev + 1)],
        }
    }

    fn refs(ops: &[LoggedOp]) -> impl ExactSizeIterator<Item = OpRef<'_>> {
        ops.iter().map(|o| OpRef {
            context_id: &o.context_id,
            expect_prev: o.expect_prev,
            entries: &o.entries,
            nodes: &o.nodes,
            idempotency: &o.idempotency,
        })
    }

    /// A log of `batches` records numbered from `first`, and each record's end offset.
    fn log(first: u64, batches: &[Vec<LoggedOp>]) -> (Vec<u8>, Vec<usize>) {
        let batches: Vec<LoggedBatch> = batches
            .iter()
            .map(|ops| LoggedBatch {
                ops: ops.clone(),
                epochs: Vec::new(),
            })
            .collect();
        log_batches(first, &batches)
    }

    /// `log`, with epochs.
    fn log_batches(first: u64, batches: &[LoggedBatch]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        let mut rec = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let epochs = b.epochs.iter().map(|e| (e.context_id.as_str(), e.epoch));
            encode_record(&mut rec, first + i as u64, refs(&b.ops), epochs).unwrap();
            out.extend_from_slice(&rec);
            ends.push(out.len());
        }
        (out, ends)
    }

    fn no_epochs() -> std::iter::Empty<(&'static str, u64)> {
        std::iter::empty()
    }

    fn epochs(pairs: &[(&str, u64)]) -> Vec<LoggedEpoch> {
        pairs
            .iter()
            .map(|(c, e)| LoggedEpoch {
                context_id: c.to_string(),
                epoch: *e,
            })
            .collect()
    }

    fn decoded(scan: &Scan<'_>) -> Vec<(u64, LoggedBatch)> {
        scan.records
            .iter()
            .map(|(b, p)| (*b, decode_payload(&Bytes::copy_from_slice(p)).unwrap()))
            .collect()
    }

    fn ops_of(d: Vec<(u64, LoggedBatch)>) -> Vec<(u64, Vec<LoggedOp>)> {
        d.into_iter()
            .map(|(b, l)| {
                assert!(l.epochs.is_empty());
                (b, l.ops)
            })
            .collect()
    }

    /// Records with epochs round trip; a record without them is exactly the layout-3
    /// bytes (no section), and it decodes with zero epochs.
    #[test]
    fn epochs_round_trip_and_a_record_without_them_is_the_old_format() {
        let batches = vec![
            LoggedBatch {
                ops: vec![logged("a", 0, 2, 5)],
                epochs: epochs(&[("a", 7), ("", u64::MAX)]),
            },
            LoggedBatch {
                ops: Vec::new(),
                epochs: epochs(&[("b", 1)]),
            },
            LoggedBatch {
                ops: vec![logged("b", 0, 1, 3)],
                epochs: Vec::new(),
            },
        ];
        let (buf, ends) = log_batches(3, &batches);
        let s = scan(&buf);
        assert_eq!((s.stop.clone(), s.end), (Stop::End, ends[2]));
        let got: Vec<LoggedBatch> = decoded(&s).into_iter().map(|(_, b)| b).collect();
        assert_eq!(got, batches);
        // The third record, built by hand in the layout-3 grammar (ops only), is the same
        // bytes, and a hand-built old record of ops decodes with zero epochs.
        let mut old = Vec::new();
        encode_record(&mut old, 5, refs(&batches[2].ops), no_epochs()).unwrap();
        assert_eq!(&buf[ends[1]..], old.as_slice());
        let payload = &old[HEADER_LEN..];
        let ops_end = payload.len();
        assert_eq!(
            decode_payload(&Bytes::copy_from_slice(payload)).unwrap(),
            LoggedBatch {
                ops: batches[2].ops.clone(),
                epochs: Vec::new()
            }
        );
        // With epochs, the section is exactly count ‖ (len ‖ context ‖ epoch)* after the ops.
        let mut with = Vec::new();
        let e = [("b", 9u64)];
        encode_record(
            &mut with,
            5,
            refs(&batches[2].ops),
            e.iter().map(|(c, n)| (*c, *n)),
        )
        .unwrap();
        let section = &with[HEADER_LEN + ops_end..];
        let mut want = 1u32.to_be_bytes().to_vec();
        want.extend_from_slice(&1u32.to_be_bytes());
        want.push(b'b');
        want.extend_from_slice(&9u64.to_be_bytes());
        assert_eq!(section, want.as_slice());
        assert_eq!(&with[HEADER_LEN..HEADER_LEN + ops_end], payload);
    }

    /// A record with epochs cut anywhere or with any bit flipped stops the scan there.
    #[test]
    fn a_torn_or_flipped_record_with_epochs_stops_the_scan() {
        let batches = vec![
            LoggedBatch {
                ops: vec![logged("a", 0, 1, 4)],
                epochs: epochs(&[("a", 2)]),
            },
            LoggedBatch {
                ops: vec![logged("a", 1, 1, 4)],
                epochs: epochs(&[("a", 3), ("bb", 4)]),
            },
        ];
        let (buf, ends) = log_batches(1, &batches);
        for cut in 0..=buf.len() {
            let s = scan(&buf[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(s.records.len(), whole, "cut at {cut}");
            assert_eq!(
                matches!(s.stop, Stop::Torn(_)),
                cut != s.end,
                "cut at {cut}"
            );
        }
        for bit in ends[0] * 8..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let s = scan(&bad);
            assert_eq!((s.records.len(), s.end), (1, ends[0]), "bit {bit}");
            assert_ne!(s.stop, Stop::End, "bit {bit}");
        }
        // A payload cut behind a valid CRC is a decode error, not a panic — except exactly
        // after the ops, which reads as the record without epochs (the optional section
        // is guarded by the CRC, like every other byte).
        let payload = &buf[ends[0] + HEADER_LEN..];
        let mut ops_only = Vec::new();
        encode_record(&mut ops_only, 2, refs(&batches[1].ops), no_epochs()).unwrap();
        let ops_end = ops_only.len() - HEADER_LEN;
        for cut in 0..payload.len() {
            let d = decode_payload(&Bytes::copy_from_slice(&payload[..cut]));
            if cut == ops_end {
                assert_eq!(d.unwrap().epochs, []);
            } else {
                assert!(d.is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn records_round_trip_in_order() {
        let batches = vec![
            vec![logged("a", 0, 3, 10), logged("b", 5, 1, 0)],
            vec![logged("a", 3, 1, 300)],
            vec![logged("", 0, 0, 0)],
        ];
        let (buf, ends) = log(41, &batches);
        let s = scan(&buf);
        assert_eq!(s.stop, Stop::End);
        assert_eq!(s.end, *ends.last().unwrap());
        let got = ops_of(decoded(&s));
        let want: Vec<_> = batches
            .into_iter()
            .enumerate()
            .map(|(i, b)| (41 + i as u64, b))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_or_zeroed_log_ends_cleanly() {
        for buf in [vec![], vec![0u8; 16], vec![0u8; 4096]] {
            let s = scan(&buf);
            assert!(s.records.is_empty());
            assert_eq!((s.end, s.stop), (0, Stop::End));
        }
        let s = scan(&[0u8; 5]);
        assert_eq!(s.end, 0);
        assert!(matches!(s.stop, Stop::Torn(_)));
    }

    #[test]
    fn truncation_at_every_byte_keeps_exactly_the_whole_records() {
        let batches = vec![
            vec![logged("a", 0, 2, 5)],
            vec![logged("b", 0, 1, 0), logged("a", 2, 3, 17)],
            vec![logged("c", 9, 1, 1)],
        ];
        let (buf, ends) = log(1, &batches);
        for cut in 0..=buf.len() {
            let s = scan(&buf[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(s.records.len(), whole, "cut at {cut}");
            assert_eq!(s.end, if whole == 0 { 0 } else { ends[whole - 1] });
            let torn = cut != s.end;
            assert_eq!(
                matches!(s.stop, Stop::Torn(_)),
                torn,
                "cut at {cut}: {:?}",
                s.stop
            );
            assert_eq!(decoded(&s).len(), whole);
        }
    }

    #[test]
    fn every_single_bit_flip_in_the_last_record_is_detected() {
        let batches = vec![vec![logged("a", 0, 2, 5)], vec![logged("b", 3, 2, 9)]];
        let (buf, ends) = log(7, &batches);
        for bit in ends[0] * 8..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let s = scan(&bad);
            assert_eq!(s.records.len(), 1, "bit {bit}");
            assert_eq!(s.end, ends[0]);
            assert_ne!(s.stop, Stop::End, "bit {bit}");
        }
    }

    #[test]
    fn an_older_cycle_after_the_tail_is_not_read() {
        // The log was reused from offset 0: records 10, 11 over the start of a cycle 3..6.
        let old: Vec<Vec<LoggedOp>> = (0..4).map(|i| vec![logged("o", i, 1, 40)]).collect();
        let (mut buf, old_ends) = log(3, &old);
        let new = vec![vec![logged("n", 0, 1, 40)], vec![logged("n", 1, 1, 40)]];
        let (fresh, ends) = log(10, &new);
        // Same sizes: the new records end exactly where old ones did, so an intact old
        // record follows.
        assert_eq!(ends[1], old_ends[1]);
        buf[..fresh.len()].copy_from_slice(&fresh);
        let s = scan(&buf);
        assert_eq!(s.records.len(), 2);
        assert_eq!(
            s.stop,
            Stop::Stale {
                expected: 12,
                found: 5
            }
        );
    }

    #[test]
    fn a_record_over_the_limit_is_refused_and_a_huge_length_is_torn() {
        let mut buf = vec![0u8; HEADER_LEN];
        buf[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(scan(&buf).stop, Stop::Torn(_)));
    }

    #[test]
    fn payload_damage_behind_a_valid_crc_is_an_error_not_a_panic() {
        let mut rec = Vec::new();
        encode_record(&mut rec, 1, refs(&[logged("a", 0, 2, 3)]), no_epochs()).unwrap();
        let payload = &rec[HEADER_LEN..];
        for cut in 0..payload.len() {
            assert!(decode_payload(&Bytes::copy_from_slice(&payload[..cut])).is_err());
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        assert!(decode_payload(&Bytes::from(longer)).is_err());
        // A sequence that would overflow.
        let mut rec = Vec::new();
        let mut op = logged("a", 0, 2, 3);
        op.expect_prev = u64::MAX - 1;
        encode_record(&mut rec, 1, refs(&[op]), no_epochs()).unwrap();
        assert!(decode_payload(&Bytes::copy_from_slice(&rec[HEADER_LEN..])).is_err());
    }

    fn arb_op() -> impl Strategy<Value = LoggedOp> {
        (
            ".{0,12}",
            0u64..1_000_000,
            proptest::collection::vec(
                (
                    ".{0,8}",
                    proptest::collection::vec(any::<u8>(), 0..64),
                    proptest::collection::btree_map(".{0,4}", ".{0,4}", 0..3),
                    any::<[u8; 32]>(),
                    any::<u64>(),
                    any::<u64>(),
                    ".{0,8}",
                ),
                0..5,
            ),
            proptest::collection::vec((any::<u8>(), any::<u64>(), any::<[u8; 32]>()), 0..5),
            proptest::collection::vec((".{0,10}", any::<u64>()), 0..4),
        )
            .prop_map(|(ctx, prev, es, nodes, idem)| LoggedOp {
                context_id: ctx,
                expect_prev: prev,
                entries: es
                    .into_iter()
                    .enumerate()
                    .map(
                        |(i, (key, payload, metadata, hash, at, lamport, id))| Entry {
                            id,
                            key,
                            payload: Bytes::from(payload),
                            sequence: prev + 1 + i as u64,
                            appended_at_ns: at,
                            metadata,
                            lamport_clock: lamport,
                            content_hash: hash,
                        },
                    )
                    .collect(),
                nodes: nodes
                    .into_iter()
                    .map(|(level, index, h)| (NodePos { level, index }, h))
                    .collect(),
                idempotency: idem,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_batches_round_trip_and_any_cut_stops_cleanly(
            batches in proptest::collection::vec(
                (
                    proptest::collection::vec(arb_op(), 0..4),
                    proptest::collection::vec((".{0,10}", any::<u64>()), 0..4),
                )
                    .prop_map(|(ops, es)| LoggedBatch {
                        ops,
                        epochs: es
                            .into_iter()
                            .map(|(context_id, epoch)| LoggedEpoch { context_id, epoch })
                            .collect(),
                    }),
                1..4,
            ),
            first in 1u64..u64::MAX / 2,
            cut_frac in 0usize..1000,
            flip_frac in 0usize..1000,
        ) {
            let (buf, ends) = log_batches(first, &batches);
            let s = scan(&buf);
            prop_assert_eq!(&s.stop, &Stop::End);
            let got = decoded(&s);
            prop_assert_eq!(got.len(), batches.len());
            for (i, (b, ops)) in got.into_iter().enumerate() {
                prop_assert_eq!(b, first + i as u64);
                prop_assert_eq!(&ops, &batches[i]);
            }
            // Cut anywhere: exactly the whole records before the cut.
            let cut = buf.len() * cut_frac / 1000;
            let s = scan(&buf[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(s.records.len(), whole);
            // Flip one bit anywhere: the records before it survive, its record does not.
            let bit = buf.len() * 8 * flip_frac / 1000;
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let hit = ends.iter().filter(|&&e| e <= bit / 8).count();
            let s = scan(&bad);
            prop_assert_eq!(s.records.len(), hit);
            prop_assert_ne!(&s.stop, &Stop::End);
        }

        #[test]
        fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..300)) {
            let s = scan(&v);
            for (_, p) in &s.records {
                let _ = decode_payload(&Bytes::copy_from_slice(p));
            }
            let _ = decode_payload(&Bytes::from(v));
        }
    }
}
