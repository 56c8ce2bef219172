//! Raft messages between nodes: the frames the Raft actor sends over the cluster link
//! (ractor_cluster in production, the in-memory link in tests). Pure.
//!
//! The messages of one `Ready` for one peer travel together, so a heartbeat round or an
//! append burst costs one frame per peer, not one per message; a frame is cut at
//! [`FRAME_BYTES_MAX`] (a single larger message travels alone).
//!
//! ```text
//! frame := u8 version (=1) ‖ u64be group ‖ u32be n ‖ (u32be len ‖ raft-rs Message, protobuf) × n
//! ```
//!
//! A frame of another version is refused, naming both versions, so a rolling upgrade fails
//! loudly instead of misreading; Raft treats a refused frame as lost messages.

use crate::storage::codec::Reader;
use protobuf::Message as _;
use raft::prelude::Message;

pub const WIRE_VERSION: u8 = 1;
/// Target size of one frame.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("raft frame version {0}, this node reads version {WIRE_VERSION}")]
    Version(u8),
    #[error("undecodable raft frame: {0}")]
    Corrupt(String),
}

/// The frames carrying `messages` (all for one peer) of `group`.
pub fn encode(group: u64, messages: &[Message]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut current: Option<(Vec<u8>, u32)> = None;
    for m in messages {
        let bytes = m.write_to_bytes().expect("a raft message encodes");
        let fits = current
            .as_ref()
            .is_some_and(|(f, _)| f.len() + 4 + bytes.len() <= FRAME_BYTES_MAX);
        if !fits {
            if let Some(done) = current.take() {
                frames.push(finish(done));
            }
            let mut f = Vec::with_capacity(13 + 4 + bytes.len());
            f.push(WIRE_VERSION);
            f.extend_from_slice(&group.to_be_bytes());
            f.extend_from_slice(&0u32.to_be_bytes());
            current = Some((f, 0));
        }
        let (f, n) = current.as_mut().expect("set above");
        f.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        f.extend_from_slice(&bytes);
        *n += 1;
    }
    if let Some(done) = current {
        frames.push(finish(done));
    }
    frames
}

fn finish((mut f, n): (Vec<u8>, u32)) -> Vec<u8> {
    f[9..13].copy_from_slice(&n.to_be_bytes());
    f
}

/// The group and messages of one frame.
pub fn decode(frame: &[u8]) -> Result<(u64, Vec<Message>), WireError> {
    let corrupt = |e: crate::storage::CodecError| WireError::Corrupt(e.0);
    let mut r = Reader { buf: frame, pos: 0 };
    let version = r.take(1).map_err(corrupt)?[0];
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let group = r.u64().map_err(corrupt)?;
    let n = r.u32().map_err(corrupt)? as usize;
    // Every message takes at least its 4-byte length: a larger count is corrupt.
    if n > frame.len() / 4 {
        return Err(WireError::Corrupt(format!(
            "{n} messages cannot fit in {} bytes",
            frame.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let bytes = r.bytes().map_err(corrupt)?;
        out.push(
            Message::parse_from_bytes(bytes)
                .map_err(|e| WireError::Corrupt(format!("message {i}: {e}")))?,
        );
    }
    if r.pos != frame.len() {
        return Err(WireError::Corrupt(format!(
            "{} trailing bytes",
            frame.len() - r.pos
        )));
    }
    Ok((group, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use raft::prelude::{Entry, MessageType};

    fn message(to: u64, payload: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = to;
        m.from = 1;
        m.term = 7;
        let e = Entry {
            index: 9,
            term: 7,
            data: vec![0xab; payload].into(),
            ..Default::default()
        };
        m.set_entries(vec![e].into());
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn messages_round_trip_in_order_across_frames(
            group in any::<u64>(),
            sizes in proptest::collection::vec(0usize..400_000, 0..8),
        ) {
            let msgs: Vec<Message> = sizes.iter().map(|&s| message(2, s)).collect();
            let frames = encode(group, &msgs);
            let mut back = Vec::new();
            for f in &frames {
                prop_assert!(f.len() <= FRAME_BYTES_MAX || decode(f).unwrap().1.len() == 1);
                let (g, m) = decode(f).unwrap();
                prop_assert_eq!(g, group);
                back.extend(m);
            }
            prop_assert_eq!(back, msgs);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn a_message_larger_than_a_frame_travels_alone() {
        let msgs = vec![
            message(2, 10),
            message(2, FRAME_BYTES_MAX + 5),
            message(2, 10),
        ];
        let frames = encode(3, &msgs);
        assert_eq!(frames.len(), 3);
        assert_eq!(decode(&frames[1]).unwrap().1, vec![msgs[1].clone()]);
    }

    #[test]
    fn another_version_and_trailing_bytes_are_refused() {
        let mut f = encode(1, &[message(2, 3)]).remove(0);
        f.push(0);
        assert!(matches!(decode(&f), Err(WireError::Corrupt(m)) if m.contains("trailing")));
        f[0] = 2;
        let err = decode(&f).unwrap_err();
        assert_eq!(err, WireError::Version(2));
        assert!(err.to_string().contains("version 2") && err.to_string().contains("version 1"));
    }
}
