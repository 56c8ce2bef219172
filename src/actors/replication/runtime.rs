//! [`Replication`]: the clustered node's replication state, shared by the request path,
//! the ContextActors' commit hooks (on the writer thread) and the Replicator.
//!
//! Memory is bounded: pending requests time out; the outbound queue (shipments and applied
//! reports from the writer thread) is bounded and a full queue drops — replicas then catch
//! up by fetching (the lag-repair tick notices); per-context progress is dropped once every
//! replica caught up.

use crate::actors::cluster::{ClusterLink, Members};
use crate::actors::Shared;
use crate::config::ReplicationAcks;
use crate::error::{LedgerError, LedgerResult};
use crate::model::{Entry, Hash};
use crate::replication::owner_of;
use crate::replication::wire::{self, Head, Msg, Request, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, OnceCell};

/// Shipments and applied reports waiting for the shipper.
pub const OUTBOUND_QUEUE_MAX: usize = 8192;
/// Concurrent syncs (claims and catch-ups).
pub const SYNC_CONCURRENCY: usize = 4;
/// Per-context sync locks kept before idle ones are pruned.
const SYNC_LOCKS_PRUNE_AT: usize = 1024;

pub(super) enum Outbound {
    Ship {
        ctx: Arc<str>,
        epoch: u64,
        entries: Vec<Entry>,
        roots: Vec<Hash>,
        idempotency: Vec<(String, u64)>,
    },
    Applied {
        to: String,
        ctx: Arc<str>,
        sequence: u64,
        epoch: u64,
    },
}

/// A claim of ownership for one membership version.
pub(super) struct ClaimSlot {
    pub version: u64,
    pub cell: Arc<OnceCell<u64>>,
}

/// Owner-side view of one context's replicas.
pub(super) struct Progress {
    pub latest: u64,
    pub root: Hash,
    pub epoch: u64,
    pub changed: Instant,
    /// node → (applied sequence, when it last changed or was nudged)
    pub applied: HashMap<String, (u64, Instant)>,
}

pub struct Replication {
    pub(super) link: Arc<dyn ClusterLink>,
    pub(super) node: String,
    pub(super) acks: ReplicationAcks,
    pub(super) members: watch::Receiver<Members>,
    next_id: AtomicU64,
    pub(super) pending: Mutex<HashMap<u64, (String, oneshot::Sender<Response>)>>,
    pub(super) claims: Mutex<HashMap<Arc<str>, ClaimSlot>>,
    /// One lock per context, held by a claim or a catch-up while it runs, so two of them
    /// never interleave their reads, quarantines and applies on this node.
    sync_locks: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    /// Contexts with a replica-side catch-up scheduled → whether another was asked for
    /// meanwhile (it then runs again when this one ends, rather than being dropped).
    pub(super) syncing: Mutex<HashMap<Arc<str>, bool>>,
    pub(super) progress: Mutex<HashMap<Arc<str>, Progress>>,
    pub(super) progress_changed: watch::Sender<u64>,
    pub(super) outbound: mpsc::Sender<Outbound>,
    pub(super) outbound_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Outbound>>>,
    pub(super) sync_permits: Arc<tokio::sync::Semaphore>,
    pub(super) quarantined: AtomicU64,
    pub(super) dropped: AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replication {
    pub fn new(link: Arc<dyn ClusterLink>, acks: ReplicationAcks) -> Arc<Self> {
        let (outbound, rx) = mpsc::channel(OUTBOUND_QUEUE_MAX);
        Arc::new(Replication {
            node: link.node_name().to_string(),
            members: link.members(),
            link,
            acks,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
            sync_locks: Mutex::new(HashMap::new()),
            syncing: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            progress_changed: watch::channel(0).0,
            outbound,
            outbound_rx: Arc::new(tokio::sync::Mutex::new(rx)),
            sync_permits: Arc::new(tokio::sync::Semaphore::new(SYNC_CONCURRENCY)),
            quarantined: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    pub fn link(&self) -> &Arc<dyn ClusterLink> {
        &self.link
    }

    /// The live members now.
    pub fn members_now(&self) -> Members {
        self.members.borrow().clone()
    }

    /// The owner of a context among the live members.
    pub fn owner(&self, ctx: &str) -> Option<String> {
        owner_of(&self.members.borrow().live, ctx).map(str::to_string)
    }

    /// Live members other than this node.
    pub fn peers(&self) -> Vec<String> {
        self.members
            .borrow()
            .live
            .iter()
            .filter(|n| **n != self.node)
            .cloned()
            .collect()
    }

    /// Entries quarantined by this node since it started.
    pub fn quarantined_count(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    pub(crate) fn count_quarantined(&self, n: u64) {
        self.quarantined.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn send(&self, to: &str, msg: Msg) -> LedgerResult<()> {
        self.link
            .send(to, wire::encode(msg))
            .map_err(|e| LedgerError::Unavailable(format!("cannot reach node {to:?}: {e}; retry")))
    }

    /// Sends a request and waits for its answer.
    pub(super) async fn call(
        &self,
        to: &str,
        body: Request,
        timeout: Duration,
    ) -> LedgerResult<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, (to.to_string(), tx));
        if let Err(e) = self.send(to, Msg::Request { id, body }) {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        lock(&self.pending).remove(&id);
        match answer {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(LedgerError::Unavailable(format!(
                "node {to:?} left the cluster before answering; retry"
            ))),
            Err(_) => Err(LedgerError::Unavailable(format!(
                "node {to:?} did not answer within {timeout:?}; retry"
            ))),
        }
    }

    /// Routes a response to its waiting caller.
    pub(super) fn answer(&self, from: &str, id: u64, body: Response) {
        let waiting = {
            let mut pending = lock(&self.pending);
            match pending.get(&id) {
                Some((to, _)) if to == from => pending.remove(&id),
                _ => None,
            }
        };
        if let Some((_, tx)) = waiting {
            let _ = tx.send(body);
        }
    }

    /// Fails every request waiting on a node that is no longer live.
    pub(super) fn fail_departed(&self, live: &std::collections::BTreeSet<String>) {
        lock(&self.pending).retain(|_, (to, _)| live.contains(to));
    }

    /// The current membership version.
    pub(super) fn version(&self) -> u64 {
        self.members.borrow().version
    }

    /// Whether `node` is a live member as this node sees it.
    pub(super) fn is_live(&self, node: &str) -> bool {
        self.members.borrow().live.contains(node)
    }

    /// Waits for the sync lock of a context (see `sync_locks`).
    pub(super) async fn sync_lock(&self, ctx: &Arc<str>) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = lock(&self.sync_locks);
            if locks.len() >= SYNC_LOCKS_PRUNE_AT {
                locks.retain(|_, m| Arc::strong_count(m) > 1);
            }
            locks.entry(ctx.clone()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// The claim slot of a context for the current membership version, with that version.
    pub(super) fn claim_slot(&self, ctx: &Arc<str>) -> (u64, Arc<OnceCell<u64>>) {
        let version = self.version();
        let mut claims = lock(&self.claims);
        let cell = match claims.get(ctx) {
            Some(slot) if slot.version == version => slot.cell.clone(),
            _ => {
                let cell = Arc::new(OnceCell::new());
                claims.insert(
                    ctx.clone(),
                    ClaimSlot {
                        version,
                        cell: cell.clone(),
                    },
                );
                cell
            }
        };
        (version, cell)
    }

    /// Drops a finished claim of `ctx` for `version`, so the next append or digest claims
    /// again (a peer turned out to hold a history superseding the one claimed).
    pub(super) fn reset_claim(&self, ctx: &Arc<str>, version: u64) {
        let mut claims = lock(&self.claims);
        if claims
            .get(ctx)
            .is_some_and(|slot| slot.version == version && slot.cell.initialized())
        {
            claims.remove(ctx);
        }
    }

    /// Owner side, after a claim: track the replicas against the head it holds, counting
    /// `holders` (peers that answered with this very head) as holding it. Lag repair then
    /// nudges the ones that stay behind even if no append follows, and an acknowledgement
    /// waiting on an entry the replicas already held before the claim (an idempotent retry
    /// of an append the previous owner committed) is counted at once.
    ///
    /// A claim's head is authoritative (read under the sync lock, after any quarantine, so
    /// it may be shorter than what was tracked before); any other caller's head only raises
    /// what is tracked, since a commit may have landed since it was read.
    pub(super) fn track(&self, head: &Head, holders: &[String], authoritative: bool) {
        let ctx: Arc<str> = Arc::from(head.context.as_str());
        let now = Instant::now();
        let mut progress = lock(&self.progress);
        let p = progress.entry(ctx).or_insert_with(|| Progress {
            latest: head.size,
            root: head.root,
            epoch: head.epoch,
            changed: now,
            applied: HashMap::new(),
        });
        if authoritative || head.size >= p.latest {
            p.latest = head.size;
            p.root = head.root;
            p.epoch = head.epoch;
        }
        p.changed = now;
        for node in holders {
            let slot = p.applied.entry(node.clone()).or_insert((0, now));
            if head.size > slot.0 {
                *slot = (head.size, now);
            }
        }
        drop(progress);
        self.progress_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Drops claims of older membership versions (called on every membership change).
    pub(super) fn forget_claims(&self, version: u64) {
        lock(&self.claims).retain(|_, slot| slot.version == version);
    }

    /// Writer-thread hook: this node (as owner) committed `entries` of `ctx`. Never blocks.
    pub(crate) fn committed(
        &self,
        ctx: &Arc<str>,
        epoch: u64,
        entries: &[Entry],
        roots: &[Hash],
        idempotency: Vec<(String, u64)>,
    ) {
        if let (Some(last), Some(root)) = (entries.last(), roots.last()) {
            let mut progress = lock(&self.progress);
            let p = progress.entry(ctx.clone()).or_insert_with(|| Progress {
                latest: 0,
                root: *root,
                epoch,
                changed: Instant::now(),
                applied: HashMap::new(),
            });
            p.latest = p.latest.max(last.sequence);
            p.root = *root;
            p.epoch = epoch;
            p.changed = Instant::now();
        }
        let out = Outbound::Ship {
            ctx: ctx.clone(),
            epoch,
            entries: entries.to_vec(),
            roots: roots.to_vec(),
            idempotency,
        };
        if self.outbound.try_send(out).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writer-thread hook: entries from `from` were applied here through `sequence`.
    pub(crate) fn applied_locally(
        &self,
        ctx: &Arc<str>,
        from: Option<String>,
        sequence: u64,
        _root: Hash,
        epoch: u64,
    ) {
        if let Some(to) = from {
            self.report_applied(&to, ctx, sequence, epoch);
        }
    }

    /// Tells `to` that this replica holds `ctx` through `sequence` (never blocks).
    pub(crate) fn report_applied(&self, to: &str, ctx: &Arc<str>, sequence: u64, epoch: u64) {
        let out = Outbound::Applied {
            to: to.to_string(),
            ctx: ctx.clone(),
            sequence,
            epoch,
        };
        if self.outbound.try_send(out).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A replica reported its applied sequence.
    pub(super) fn on_applied(&self, from: &str, ctx: &str, sequence: u64) {
        let mut progress = lock(&self.progress);
        if let Some(p) = progress.get_mut(ctx) {
            let slot = p
                .applied
                .entry(from.to_string())
                .or_insert((0, Instant::now()));
            if sequence > slot.0 {
                *slot = (sequence, Instant::now());
            }
        }
        drop(progress);
        self.progress_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many live replicas hold `ctx` through `sequence`.
    fn replicas_holding(&self, ctx: &str, sequence: u64, live: &[String]) -> usize {
        let progress = lock(&self.progress);
        progress.get(ctx).map_or(0, |p| {
            live.iter()
                .filter(|n| p.applied.get(*n).is_some_and(|(s, _)| *s >= sequence))
                .count()
        })
    }

    /// Refuses an append before anything is claimed or committed when too few replicas are
    /// live for the acks setting: N needs N, `all` needs at least one. Without this, a node
    /// that has just (re)started and not yet reached its peers owns every context alone,
    /// acknowledges under `all` with no replica, and the entry is quarantined once it
    /// joins (found by the chaos run of issue 5).
    pub(super) fn check_replicas_live(&self, ctx: &str) -> LedgerResult<()> {
        let need = match self.acks {
            ReplicationAcks::Count(n) => n,
            ReplicationAcks::All => 1,
        };
        let live = self.peers().len();
        if live < need {
            return Err(LedgerError::Unavailable(format!(
                "--replication-acks {} needs {need} live replica(s) of {ctx:?} and this node \
                 sees {live}; nothing was written; retry",
                self.acks
            )));
        }
        Ok(())
    }

    /// Owner side: waits until `--replication-acks` replicas hold `ctx` through `sequence`.
    /// When no replica is known to hold it — the progress was pruned, or the entry was
    /// committed before this node's claim (a duplicate answered from the idempotency
    /// index) — the replicas are tracked and sent this node's head, which they answer
    /// with an applied report (or a catch-up), instead of waiting for a shipment that
    /// will never come.
    pub(super) async fn wait_acks(
        &self,
        shared: &Shared,
        ctx: &str,
        sequence: u64,
    ) -> LedgerResult<()> {
        let want = match self.acks {
            ReplicationAcks::Count(0) => return Ok(()),
            ReplicationAcks::Count(n) => Some(n),
            ReplicationAcks::All => None,
        };
        let deadline = Instant::now() + super::append::ACK_TIMEOUT;
        let mut changed = self.progress_changed.subscribe();
        let mut asked = false;
        loop {
            let live = self.peers();
            let need = want.unwrap_or(live.len());
            if let Some(n) = want {
                if live.len() < n {
                    return Err(LedgerError::Unavailable(format!(
                        "entry {sequence} of {ctx:?} is committed on the owner, but \
                         --replication-acks {n} needs {n} replicas and {} are live; retry \
                         (an idempotency key makes the retry safe)",
                        live.len()
                    )));
                }
            }
            if self.replicas_holding(ctx, sequence, &live) >= need {
                return Ok(());
            }
            if !asked {
                asked = true;
                self.ask_replicas(shared, ctx, sequence, &live);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LedgerError::Unavailable(format!(
                    "entry {sequence} of {ctx:?} is committed on the owner, but fewer than \
                     {need} replicas confirmed it within {:?}; retry (an idempotency key makes \
                     the retry safe)",
                    super::append::ACK_TIMEOUT
                )));
            }
            // Membership changes are noticed by the short poll.
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(50)), changed.changed()).await;
        }
    }

    /// If the owner's progress for `ctx` does not cover `sequence` (none, or pruned and
    /// re-created below it), tracks the local head and sends it to the live replicas, which
    /// answer with what they hold.
    fn ask_replicas(&self, shared: &Shared, ctx: &str, sequence: u64, live: &[String]) {
        {
            let progress = lock(&self.progress);
            if progress.get(ctx).is_some_and(|p| p.latest >= sequence) {
                // Shipped by this owner after it tracked the context: the replicas
                // report it as they apply it (lag repair nudges the slow ones).
                return;
            }
        }
        let head = match self.local_head(shared, ctx) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(context = %ctx, error = %e, "cannot read the local head to ask replicas");
                return;
            }
        };
        self.track(&head, &[], false);
        tracing::debug!(context = %ctx, sequence, replicas = ?live,
            "waiting for acks of an entry no replica is known to hold; sending them the head");
        for n in live {
            let _ = self.send(n, Msg::Head(head.clone()));
        }
    }

    /// The local head of a context: (epoch, size, root).
    pub(super) fn local_head(&self, shared: &Shared, ctx: &str) -> LedgerResult<Head> {
        let reader = shared.store.reader()?;
        let head = reader.head(ctx)?;
        Ok(Head {
            context: ctx.to_string(),
            epoch: reader.epoch(ctx)?,
            size: head.sequence,
            root: head.frontier.root(),
        })
    }

    /// Schedules a catch-up of `ctx` from `from` (at most one per context at a time; one
    /// asked for while another runs runs after it, from the owner of then). Only the owner
    /// (as this node sees it) is synced from.
    pub(crate) fn request_sync(self: &Arc<Self>, shared: &Arc<Shared>, ctx: &Arc<str>, from: &str) {
        if self.owner(ctx).as_deref() != Some(from) {
            return;
        }
        {
            let mut syncing = lock(&self.syncing);
            if let Some(again) = syncing.get_mut(ctx) {
                *again = true;
                return;
            }
            syncing.insert(ctx.clone(), false);
        }
        let (me, shared, ctx, mut from) =
            (self.clone(), shared.clone(), ctx.clone(), from.to_string());
        tokio::spawn(async move {
            loop {
                let permit = me.sync_permits.clone().acquire_owned().await;
                let r = super::sync::catch_up(&me, &shared, &ctx, &from).await;
                drop(permit);
                if let Err(e) = r {
                    tracing::info!(context = %ctx, from = %from, error = %e,
                        "catch-up did not finish; the next head from the owner retries it");
                }
                let mut syncing = lock(&me.syncing);
                let owner = me.owner(&ctx).filter(|o| *o != me.node);
                match (syncing.get_mut(&ctx), owner) {
                    (Some(again), Some(owner)) if *again => {
                        *again = false;
                        from = owner;
                    }
                    _ => {
                        syncing.remove(&ctx);
                        return;
                    }
                }
            }
        });
    }
}
