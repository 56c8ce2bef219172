//! The durable Raft log of a node's groups, in its own redb database (`DATA_DIR/raft.redb`),
//! and raft-rs's `Storage` over it.
//!
//! Why a database of its own: the Raft log is written with one fsync per `Ready` (an entry
//! counts toward a commit only once it is durable on the member), while the ledger's own
//! tables are made durable by the write-ahead log and lazy redb commits. Sharing one redb
//! file would make every Raft fsync also flush the ledger's dirty pages.
//!
//! Tables (keys start with the group id, so each group's rows are one range):
//! - `raft_entries`: (group, index) → a raft-rs `Entry` (protobuf bytes);
//! - `raft_state`: group → hard state, configuration, and the snapshot the log starts after
//!   (index, term and configuration of the last entry compacted away; layout below).
//!
//! ```text
//! state := u8 version (=1) ‖ u32be len ‖ HardState ‖ u32be len ‖ ConfState ‖
//!          u64be compacted_index ‖ u64be compacted_term ‖ u32be len ‖ ConfState (compacted)
//! ```
//!
//! Every member's log starts after the group's bootstrap snapshot
//! (`raft_config::bootstrap_snapshot`).
//!
//! Invariant: the entries of a group are exactly `compacted_index + 1 ..= last_index`, with
//! no gap; `last_index` and the state are cached, so `first_index`, `last_index`,
//! `initial_state` and `term` of the compaction point read no table.

use super::codec::Reader;
use crate::consensus::raft_config::{bootstrap_snapshot, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{Arc, RwLock};

const ENTRIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("raft_entries");
const STATE: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_state");
const STATE_VERSION: u8 = 1;

/// A failure of the Raft log's storage. The member cannot go on without its log: the shell
/// stops the group and logs this.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaftLogError {
    #[error("raft log {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("raft log of group {group} is corrupt: {reason}")]
    Corrupt { group: u64, reason: String },
}

#[derive(Clone, Debug, Default)]
struct Cached {
    hard_state: HardState,
    conf_state: ConfState,
    compacted_index: u64,
    compacted_term: u64,
    /// The configuration as of `compacted_index`.
    compacted_conf: ConfState,
    last_index: u64,
}

/// How a group's log starts on this node when it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitialMembership {
    /// A founding member of a group founded by these voters.
    Founding(Vec<u64>),
    /// Member `me` joins a group founded by `founders`, as a learner, by a membership change
    /// the leader makes.
    Joining { founders: Vec<u64>, me: u64 },
}

impl InitialMembership {
    /// The bootstrap snapshot this member's log starts after.
    pub fn bootstrap(&self) -> Snapshot {
        match self {
            InitialMembership::Founding(voters) => bootstrap_snapshot(voters, &[]),
            InitialMembership::Joining { founders, me } => bootstrap_snapshot(founders, &[*me]),
        }
    }
}

/// One group's Raft log. Cheap to clone: clones share the database and the cache.
#[derive(Clone)]
pub struct RaftLogStore {
    db: Arc<Database>,
    path: Arc<str>,
    group: u64,
    cached: Arc<RwLock<Cached>>,
    /// Whether [`RaftDisk`](crate::consensus::member::RaftDisk) writes are fsynced
    /// (`--durability fsync`, the default) or not (`none`).
    fsync: bool,
}

/// Opens (or creates) `DATA_DIR/raft.redb`.
pub fn open_database(dir: &Path) -> Result<Arc<Database>, RaftLogError> {
    let path = dir.join("raft.redb");
    Database::create(&path)
        .map(Arc::new)
        .map_err(|e| RaftLogError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// A database in memory, for `--memory` nodes and tests.
pub fn memory_database() -> Result<Arc<Database>, RaftLogError> {
    Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map(Arc::new)
        .map_err(|e| RaftLogError::Io {
            path: "(memory)".into(),
            reason: e.to_string(),
        })
}

fn encode_state(c: &Cached) -> Vec<u8> {
    let hs = c.hard_state.write_to_bytes().expect("HardState encodes");
    let cs = c.conf_state.write_to_bytes().expect("ConfState encodes");
    let mut out = Vec::with_capacity(25 + hs.len() + cs.len());
    out.push(STATE_VERSION);
    out.extend_from_slice(&(hs.len() as u32).to_be_bytes());
    out.extend_from_slice(&hs);
    out.extend_from_slice(&(cs.len() as u32).to_be_bytes());
    out.extend_from_slice(&cs);
    out.extend_from_slice(&c.compacted_index.to_be_bytes());
    out.extend_from_slice(&c.compacted_term.to_be_bytes());
    let ccs = c
        .compacted_conf
        .write_to_bytes()
        .expect("ConfState encodes");
    out.extend_from_slice(&(ccs.len() as u32).to_be_bytes());
    out.extend_from_slice(&ccs);
    out
}

fn decode_state(group: u64, b: &[u8]) -> Result<Cached, RaftLogError> {
    let corrupt = |reason: String| RaftLogError::Corrupt { group, reason };
    let mut r = Reader { buf: b, pos: 0 };
    let version = r.take(1).map_err(|e| corrupt(e.0))?[0];
    if version != STATE_VERSION {
        return Err(corrupt(format!(
            "state version {version}, this build reads {STATE_VERSION}"
        )));
    }
    let hs = HardState::parse_from_bytes(r.bytes().map_err(|e| corrupt(e.0))?)
        .map_err(|e| corrupt(format!("hard state: {e}")))?;
    let cs = ConfState::parse_from_bytes(r.bytes().map_err(|e| corrupt(e.0))?)
        .map_err(|e| corrupt(format!("configuration: {e}")))?;
    let compacted_index = r.u64().map_err(|e| corrupt(e.0))?;
    let compacted_term = r.u64().map_err(|e| corrupt(e.0))?;
    let compacted_conf = ConfState::parse_from_bytes(r.bytes().map_err(|e| corrupt(e.0))?)
        .map_err(|e| corrupt(format!("compacted configuration: {e}")))?;
    Ok(Cached {
        hard_state: hs,
        conf_state: cs,
        compacted_index,
        compacted_term,
        compacted_conf,
        last_index: 0,
    })
}

impl RaftLogStore {
    /// Opens group `group`'s log; a group never seen starts empty with `voters` as its
    /// first configuration (the `--peer` seeds).
    pub fn open(
        db: Arc<Database>,
        path: &str,
        group: u64,
        initial: &InitialMembership,
    ) -> Result<Self, RaftLogError> {
        let io = |e: &dyn std::fmt::Display| RaftLogError::Io {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let txn = db.begin_write().map_err(|e| io(&e))?;
        let cached = {
            let mut state = txn.open_table(STATE).map_err(|e| io(&e))?;
            let entries = txn.open_table(ENTRIES).map_err(|e| io(&e))?;
            let stored = state
                .get(group)
                .map_err(|e| io(&e))?
                .map(|v| v.value().to_vec());
            match stored {
                Some(bytes) => {
                    let mut c = decode_state(group, &bytes)?;
                    c.last_index = entries
                        .range((group, 0)..=(group, u64::MAX))
                        .map_err(|e| io(&e))?
                        .next_back()
                        .transpose()
                        .map_err(|e| io(&e))?
                        .map_or(c.compacted_index, |(k, _)| k.value().1);
                    c
                }
                None => {
                    let boot = initial.bootstrap();
                    let meta = boot.get_metadata();
                    let c = Cached {
                        hard_state: HardState {
                            term: meta.term,
                            commit: meta.index,
                            ..Default::default()
                        },
                        conf_state: meta.get_conf_state().clone(),
                        compacted_index: meta.index,
                        compacted_term: meta.term,
                        compacted_conf: meta.get_conf_state().clone(),
                        last_index: meta.index,
                    };
                    state
                        .insert(group, encode_state(&c).as_slice())
                        .map_err(|e| io(&e))?;
                    c
                }
            }
        };
        txn.commit().map_err(|e| io(&e))?;
        Ok(RaftLogStore {
            db,
            path: path.into(),
            group,
            cached: Arc::new(RwLock::new(cached)),
            fsync: true,
        })
    }

    /// Whether group `group` has a log in `db` (a node that was part of it before).
    pub fn exists(db: &Database, group: u64) -> Result<bool, RaftLogError> {
        let io = |e: &dyn std::fmt::Display| RaftLogError::Io {
            path: "raft.redb".into(),
            reason: e.to_string(),
        };
        let txn = db.begin_read().map_err(|e| io(&e))?;
        let state = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(io(&e)),
        };
        Ok(state.get(group).map_err(|e| io(&e))?.is_some())
    }

    /// Whether the member's writes are fsynced (default: yes).
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    fn io(&self, e: impl std::fmt::Display) -> RaftLogError {
        RaftLogError::Io {
            path: self.path.to_string(),
            reason: e.to_string(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        self.cached.read().unwrap_or_else(|p| p.into_inner())
    }

    /// One write transaction: `change` edits the group's entries and the state; the state
    /// row is written with them and, once committed, becomes the cached state. Fsynced when
    /// `fsync`.
    fn write(
        &self,
        fsync: bool,
        change: impl FnOnce(
            &mut redb::Table<(u64, u64), &[u8]>,
            &mut Cached,
        ) -> Result<(), RaftLogError>,
    ) -> Result<(), RaftLogError> {
        let mut next = self.read().clone();
        let mut txn = self.db.begin_write().map_err(|e| self.io(e))?;
        txn.set_durability(if fsync {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| self.io(e))?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.io(e))?;
            change(&mut table, &mut next)?;
            let mut state = txn.open_table(STATE).map_err(|e| self.io(e))?;
            state
                .insert(self.group, encode_state(&next).as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))?;
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Removes the group's entries `from..=to`.
    fn remove(
        &self,
        table: &mut redb::Table<(u64, u64), &[u8]>,
        from: u64,
        to: u64,
    ) -> Result<(), RaftLogError> {
        for i in from..=to {
            table.remove((self.group, i)).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Makes a `Ready`'s entries and hard state durable in one transaction (fsynced when
    /// `fsync`). Entries from `entries[0].index` on replace whatever the log held there
    /// (a new leader's log wins over an uncommitted suffix).
    pub fn persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        fsync: bool,
    ) -> Result<(), RaftLogError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        self.write(fsync, |table, next| {
            if let Some(first) = entries.first() {
                assert!(
                    first.index > next.compacted_index && first.index <= next.last_index + 1,
                    "raft-rs appends {} to a log holding {}..={}",
                    first.index,
                    next.compacted_index + 1,
                    next.last_index
                );
                self.remove(table, first.index, next.last_index)?;
                for e in entries {
                    let bytes = e.write_to_bytes().map_err(|e| self.io(e))?;
                    table
                        .insert((self.group, e.index), bytes.as_slice())
                        .map_err(|e| self.io(e))?;
                }
                next.last_index = entries.last().expect("not empty").index;
            }
            if let Some(hs) = hard_state {
                next.hard_state = hs.clone();
            }
            Ok(())
        })
    }

    /// Records a commit index learnt after the `Ready` was persisted (`LightReady`).
    pub fn set_commit(&self, commit: u64, fsync: bool) -> Result<(), RaftLogError> {
        self.write(fsync, |_, next| {
            next.hard_state.commit = commit;
            Ok(())
        })
    }

    /// Records the configuration after an applied membership change.
    pub fn set_conf_state(&self, cs: &ConfState, fsync: bool) -> Result<(), RaftLogError> {
        self.write(fsync, |_, next| {
            next.conf_state = cs.clone();
            Ok(())
        })
    }

    /// Replaces the whole log by `snap` (sent by the leader): the log starts after it.
    pub fn apply_snapshot(&self, snap: &Snapshot, fsync: bool) -> Result<(), RaftLogError> {
        let meta = snap.get_metadata();
        self.write(fsync, |table, next| {
            self.remove(table, next.compacted_index + 1, next.last_index)?;
            next.compacted_index = meta.index;
            next.compacted_term = meta.term;
            next.compacted_conf = meta.get_conf_state().clone();
            next.conf_state = meta.get_conf_state().clone();
            next.hard_state.term = next.hard_state.term.max(meta.term);
            next.hard_state.commit = meta.index;
            next.last_index = meta.index;
            Ok(())
        })
    }

    /// Drops every entry up to and including `through` (applied, and part of a snapshot).
    /// Not used by the server until group snapshots with data exist (see `snapshot`).
    pub fn compact(&self, through: u64) -> Result<(), RaftLogError> {
        let current = self.read().clone();
        if through <= current.compacted_index {
            return Ok(());
        }
        assert!(
            through <= current.hard_state.commit,
            "compacting through {through}, beyond the commit index {}",
            current.hard_state.commit
        );
        let term = raft::Storage::term(self, through).map_err(|e| self.io(e))?;
        self.write(true, |table, next| {
            self.remove(table, next.compacted_index + 1, through)?;
            next.compacted_index = through;
            next.compacted_term = term;
            next.compacted_conf = next.conf_state.clone();
            Ok(())
        })
    }

    pub fn hard_state(&self) -> HardState {
        self.read().hard_state.clone()
    }
}

impl crate::consensus::member::RaftDisk for RaftLogStore {
    type Error = RaftLogError;
    fn persist(&self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), RaftLogError> {
        RaftLogStore::persist(self, entries, hs, self.fsync)
    }
    fn set_commit(&self, commit: u64) -> Result<(), RaftLogError> {
        RaftLogStore::set_commit(self, commit, self.fsync)
    }
    fn set_conf_state(&self, cs: &ConfState) -> Result<(), RaftLogError> {
        RaftLogStore::set_conf_state(self, cs, self.fsync)
    }
    fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), RaftLogError> {
        RaftLogStore::apply_snapshot(self, snap, self.fsync)
    }
}

fn store_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(RaftStorageError::Other(e.to_string().into()))
}

impl raft::Storage for RaftLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.read();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        {
            let c = self.read();
            if low <= c.compacted_index {
                return Err(raft::Error::Store(RaftStorageError::Compacted));
            }
            if high > c.last_index + 1 {
                return Err(raft::Error::Store(RaftStorageError::Unavailable));
            }
        }
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(ENTRIES).map_err(store_err)?;
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for row in table
            .range((self.group, low)..(self.group, high))
            .map_err(store_err)?
        {
            let (k, v) = row.map_err(store_err)?;
            let e = Entry::parse_from_bytes(v.value()).map_err(store_err)?;
            if e.index != k.value().1 || e.index != low + out.len() as u64 {
                return Err(store_err(format!(
                    "group {}: row {} holds entry {} (expected {})",
                    self.group,
                    k.value().1,
                    e.index,
                    low + out.len() as u64
                )));
            }
            size += u64::from(protobuf::Message::compute_size(&e));
            // raft-rs's rule: at least one entry, then stop before exceeding the limit.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
        }
        if out.is_empty() && low < high {
            return Err(store_err(format!(
                "group {}: entries {low}..{high} missing",
                self.group
            )));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        {
            let c = self.read();
            if idx == c.compacted_index {
                return Ok(c.compacted_term);
            }
            if idx < c.compacted_index {
                return Err(raft::Error::Store(RaftStorageError::Compacted));
            }
            if idx > c.last_index {
                return Err(raft::Error::Store(RaftStorageError::Unavailable));
            }
        }
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(ENTRIES).map_err(store_err)?;
        let v = table
            .get((self.group, idx))
            .map_err(store_err)?
            .ok_or_else(|| store_err(format!("group {}: entry {idx} missing", self.group)))?;
        Ok(Entry::parse_from_bytes(v.value()).map_err(store_err)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().compacted_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The bootstrap snapshot is empty, so it can be sent as it is. Snapshots of a
        // group's contexts (streamed, Merkle-verified), which a log compacted further would
        // need, are the compaction step of the issue, not built yet.
        let c = self.read();
        if (c.compacted_index, c.compacted_term) == (BOOTSTRAP_INDEX, BOOTSTRAP_TERM) {
            let mut snap = bootstrap_snapshot(&[], &[]);
            snap.mut_metadata().set_conf_state(c.compacted_conf.clone());
            return Ok(snap);
        }
        Err(raft::Error::Store(
            RaftStorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests;
