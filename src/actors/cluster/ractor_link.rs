//! `RactorLink`: the `ClusterLink` over ractor_cluster, and `PeerEndpoint`, the actor each
//! node exposes to its peers so frames can reach it.
//!
//! Why this file exists: replication talks to a `ClusterLink` (bytes to a node name, a
//! membership watch). This is the one implementation on the real network. It is an `Arc`'d
//! object created once at start-up and stored in `Shared::cluster_link`; the ClusterManager
//! (which may be restarted) only updates its routing table, so every holder of the link keeps
//! working across restarts.
//!
//! # Routing
//! Every node runs one `PeerEndpoint` named `<namespace>/cluster_endpoint@<node name>`,
//! joined to the process group [`PG_GROUP`] in scope [`PG_SCOPE`]. ractor_cluster advertises
//! it to every peer session, which creates a remote proxy for it. To reach peer X, the
//! ClusterManager looks among the children of *its own* ready NodeSession with X for the
//! proxy whose name is X's endpoint name (preferring members of the endpoint group), and
//! records that proxy here. Membership and routes never come from "whatever is in the
//! group": ractor's registry and pg are process-global, so with several ledgers in one
//! process (tests) the group also holds the other ledgers' local endpoints and proxies
//! created by their sessions (whose `ActorId`s can even collide, since every NodeServer
//! numbers its sessions from 0).
//!
//! # Delivery facts (for the replication layer)
//! - Order: frames from one node to another arrive in `send` order while the session stays
//!   up (one mailbox → one TCP connection → one mailbox).
//! - `send` never blocks. Outbound frames queue in ractor's (unbounded) mailboxes and the
//!   session's TCP writer; callers must bound what they have in flight themselves.
//! - A frame larger than [`FRAME_BYTES_MAX`] is not sent (ractor_cluster would close the
//!   whole session on the receiving side): it is dropped, counted and logged at error.
//! - Inbound frames are handed to the registered `set_inbound` sender with `try_send`; with
//!   no sender, or a full one, the frame is dropped and counted.
//! - `members()` is a tokio `watch`: never hold its `borrow()` (or the `Ref` that
//!   `wait_for` returns) while borrowing again or awaiting — a publish waiting for the write
//!   lock blocks new readers, and the ClusterManager with it (seen in a test).
//! - `from` is the sending node's name as its endpoint stated it; only nodes that proved the
//!   cluster secret can reach an endpoint.

use super::link::{ClusterLink, Inbound, LinkError, MemberState, MemberStatus, Members};
use bytes::Bytes;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};

/// The pg scope every ledger's endpoint joins.
pub const PG_SCOPE: &str = "converge-ledger";
/// The pg group of cluster endpoints.
pub const PG_GROUP: &str = "cluster-endpoints";

/// The largest frame `send` accepts, in bytes.
///
/// Measured (tests/cluster_transport.rs, 127.0.0.1, debug build): ractor_cluster's inbound
/// limit is 16 MiB per network frame (`DEFAULT_MAX_INBOUND_FRAME_SIZE`), and our envelope
/// (variant tag, sender name, actor id, protobuf framing) adds 38 bytes + the sender's name.
/// A frame of 16 MiB − 64 bytes went through; one of 16 MiB + 1 made the *receiver* close the
/// whole session (`cluster frame length … exceeds configured limit`), so the peer went down
/// and reconnected, losing whatever else was in flight. 8 MiB leaves a wide margin and keeps
/// one frame from holding the connection (and its pings) for long: three 8 MiB frames took
/// ~0.2 s. Replication should aim for batches of ~1 MiB and never exceed this.
pub const FRAME_BYTES_MAX: usize = 8 << 20;

/// The registered base name of a node's endpoint (before `Shared::actor_name`).
pub fn endpoint_base_name(node: &str) -> String {
    format!("cluster_endpoint@{node}")
}

/// Whether `registered` (a full, namespaced name) is the endpoint of node `node`.
pub fn is_endpoint_of(registered: &str, node: &str) -> bool {
    registered
        .split_once('/')
        .is_some_and(|(_, base)| base == endpoint_base_name(node))
}

/// The one message an endpoint takes: a frame from a peer. Serializable, so it can cross
/// a ractor_cluster session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFrame {
    pub from: String,
    pub frame: Bytes,
}

const PEER_FRAME_VARIANT: &str = "converge.frame.v1";

impl PeerFrame {
    /// `[u16 BE length of from][from][frame]`.
    fn encode(&self) -> Result<Vec<u8>, BoxedDowncastErr> {
        let from = self.from.as_bytes();
        let len = u16::try_from(from.len()).map_err(|_| BoxedDowncastErr)?;
        let mut out = Vec::with_capacity(2 + from.len() + self.frame.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(from);
        out.extend_from_slice(&self.frame);
        Ok(out)
    }

    fn decode(mut args: Vec<u8>) -> Result<PeerFrame, BoxedDowncastErr> {
        let len = match args.get(..2) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err(BoxedDowncastErr),
        };
        let from = args.get(2..2 + len).ok_or(BoxedDowncastErr)?;
        let from = std::str::from_utf8(from)
            .map_err(|_| BoxedDowncastErr)?
            .to_string();
        let frame = Bytes::from(args.split_off(2 + len));
        Ok(PeerFrame { from, frame })
    }
}

impl ractor::Message for PeerFrame {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        Ok(SerializedMessage::Cast {
            variant: PEER_FRAME_VARIANT.to_string(),
            args: self.encode()?,
            metadata: None,
        })
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Cast { variant, args, .. } if variant == PEER_FRAME_VARIANT => {
                PeerFrame::decode(args)
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// The route to one live peer: the proxy of its endpoint inside our session with it.
struct Route {
    /// Our NodeSession with the peer (a new session = a new incarnation of the link).
    session: ActorId,
    endpoint: ActorRef<PeerFrame>,
}

struct Known {
    address: Option<String>,
    status: MemberStatus,
    since: SystemTime,
}

#[derive(Default)]
struct LinkState {
    routes: BTreeMap<String, Route>,
    /// Every peer ever configured or seen, by name (a configured peer not yet seen is keyed
    /// by its address until its name is known).
    known: BTreeMap<String, Known>,
    /// Peer addresses (advertised listen address and socket address) of authenticated
    /// sessions, and their names, so the dialers know which configured peers are connected.
    connected_addrs: HashSet<String>,
    connected_names: HashSet<String>,
    /// Every address an authenticated session was seen at → that peer's name (so a peer
    /// that advertises 0.0.0.0 is still recognised once it was reached by its address).
    addr_names: HashMap<String, String>,
    /// Addresses found to be this node's own (a --peer pointing back here).
    self_addrs: HashSet<String>,
}

impl LinkState {
    /// The entry of peer `name` (created Down at `now` if new). A configured peer listed
    /// under its `address` until its name was known is folded into it, unless that entry is
    /// up.
    fn known_by_name(
        &mut self,
        name: &str,
        address: Option<String>,
        now: SystemTime,
    ) -> &mut Known {
        if let Some(addr) = &address {
            if self
                .known
                .get(addr)
                .is_some_and(|k| k.status != MemberStatus::Up)
            {
                self.known.remove(addr);
            }
        }
        self.known.entry(name.to_string()).or_insert(Known {
            address,
            status: MemberStatus::Down,
            since: now,
        })
    }
}

/// The ractor_cluster implementation of [`ClusterLink`].
pub struct RactorLink {
    node_name: String,
    address: String,
    started: SystemTime,
    members: watch::Sender<Members>,
    state: Mutex<LinkState>,
    inbound: Mutex<Option<mpsc::Sender<Inbound>>>,
    closed: AtomicBool,
    dropped_inbound: AtomicU64,
    dropped_outbound: AtomicU64,
    delivered: AtomicU64,
    refused: AtomicU64,
}

impl RactorLink {
    /// A link for node `node_name` listening on `address`, with `peers` configured.
    pub fn new(node_name: &str, address: &str, peers: &[String]) -> Arc<RactorLink> {
        let now = SystemTime::now();
        let known = peers
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    Known {
                        address: Some(p.clone()),
                        status: MemberStatus::Down,
                        since: now,
                    },
                )
            })
            .collect();
        let members = Members {
            live: BTreeSet::from([node_name.to_string()]),
            version: 1,
        };
        Arc::new(RactorLink {
            node_name: node_name.to_string(),
            address: address.to_string(),
            started: now,
            members: watch::Sender::new(members),
            state: Mutex::new(LinkState {
                known,
                ..LinkState::default()
            }),
            inbound: Mutex::new(None),
            closed: AtomicBool::new(false),
            dropped_inbound: AtomicU64::new(0),
            dropped_outbound: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, state: &LinkState) {
        let mut live: BTreeSet<String> = state.routes.keys().cloned().collect();
        live.insert(self.node_name.clone());
        self.members.send_if_modified(|m| {
            if m.live == live {
                return false;
            }
            m.live = live;
            m.version += 1;
            true
        });
    }

    /// Bumps the version with `live` unchanged minus `name` — used when a peer's route
    /// moves to a new session, so watchers see it went away and came back.
    fn publish_without(&self, state: &LinkState, name: &str) {
        let mut live: BTreeSet<String> = state.routes.keys().cloned().collect();
        live.insert(self.node_name.clone());
        live.remove(name);
        self.members.send_modify(|m| {
            m.live = live;
            m.version += 1;
        });
    }

    /// Peer `name` is reachable through `endpoint` in our session `session`. Returns
    /// whether it was not live before (so the caller logs "node up").
    pub(crate) fn set_up(
        &self,
        name: &str,
        address: Option<String>,
        session: ActorId,
        endpoint: ActorRef<PeerFrame>,
    ) -> bool {
        let mut state = self.lock();
        let was = state
            .routes
            .insert(name.to_string(), Route { session, endpoint });
        let new_session = was.as_ref().is_some_and(|r| r.session != session);
        let now = SystemTime::now();
        let entry = state.known_by_name(name, address.clone(), now);
        if address.is_some() {
            entry.address = address;
        }
        if entry.status != MemberStatus::Up || new_session {
            entry.status = MemberStatus::Up;
            entry.since = now;
        }
        if new_session {
            self.publish_without(&state, name);
        }
        self.publish(&state);
        was.is_none() || new_session
    }

    /// Peer `name` is no longer reachable. Returns whether it was live.
    pub(crate) fn set_down(&self, name: &str) -> bool {
        let mut state = self.lock();
        let was = state.routes.remove(name).is_some();
        if let Some(k) = state.known.get_mut(name) {
            if k.status == MemberStatus::Up {
                k.status = MemberStatus::Down;
                k.since = SystemTime::now();
            }
        }
        self.publish(&state);
        was
    }

    /// Every peer down (the ClusterManager stopped: its sessions died with it).
    pub(crate) fn all_down(&self) -> Vec<String> {
        let names: Vec<String> = {
            let mut state = self.lock();
            state.connected_addrs.clear();
            state.connected_names.clear();
            state.routes.keys().cloned().collect()
        };
        for n in &names {
            self.set_down(n);
        }
        names
    }

    /// The session currently routing to `name`.
    pub(crate) fn route_session(&self, name: &str) -> Option<ActorId> {
        self.lock().routes.get(name).map(|r| r.session)
    }

    /// Peers whose route goes through a stopped proxy.
    pub(crate) fn dead_routes(&self) -> Vec<String> {
        self.lock()
            .routes
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.endpoint.get_status(),
                    ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
                )
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The authenticated sessions now, as (address, peer name) pairs.
    pub(crate) fn set_connected(&self, sessions: Vec<(String, Option<String>)>) {
        let mut state = self.lock();
        state.connected_addrs.clear();
        state.connected_names.clear();
        for (addr, name) in sessions {
            if let Some(name) = name {
                state.addr_names.insert(addr.clone(), name.clone());
                state.connected_names.insert(name);
            }
            state.connected_addrs.insert(addr);
        }
    }

    /// Whether an authenticated session reaches any of `addrs`.
    pub(crate) fn is_connected_to(&self, addrs: &[String]) -> bool {
        let state = self.lock();
        addrs.iter().any(|a| {
            state.connected_addrs.contains(a)
                || state
                    .addr_names
                    .get(a)
                    .is_some_and(|n| state.connected_names.contains(n))
        })
    }

    pub(crate) fn note_self(&self, addrs: Vec<String>) {
        let mut state = self.lock();
        for a in &addrs {
            // A configured "peer" that is this node is not a member to report.
            if state
                .known
                .get(a)
                .is_some_and(|k| k.status != MemberStatus::Up)
            {
                state.known.remove(a);
            }
        }
        state.self_addrs.extend(addrs);
    }

    pub(crate) fn is_self(&self, addrs: &[String]) -> bool {
        let state = self.lock();
        addrs.iter().any(|a| state.self_addrs.contains(a))
    }

    pub(crate) fn note_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused so far because authentication failed (a different secret).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Records a peer seen on the network (even if never up), for `member_states`.
    pub(crate) fn note_seen(&self, name: &str, address: Option<String>) {
        let mut state = self.lock();
        let entry = state.known_by_name(name, address.clone(), SystemTime::now());
        if entry.address.is_none() {
            entry.address = address;
        }
    }

    /// Whether `name` is live now.
    pub fn is_live(&self, name: &str) -> bool {
        self.lock().routes.contains_key(name)
    }

    /// Called by this node's endpoint for each frame it receives.
    fn deliver(&self, msg: PeerFrame) {
        let tx = self
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let inbound = Inbound {
            from: msg.from,
            frame: msg.frame,
        };
        match tx.map(|tx| tx.try_send(inbound)) {
            Some(Ok(())) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(_)) | None => {
                let n = self.dropped_inbound.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "cluster frames dropped: no inbound consumer or its queue is full"
                    );
                }
            }
        }
    }

    /// Inbound frames dropped so far (no consumer registered, or its queue was full).
    pub fn dropped_inbound(&self) -> u64 {
        self.dropped_inbound.load(Ordering::Relaxed)
    }

    /// Outbound frames dropped so far (larger than [`FRAME_BYTES_MAX`]).
    pub fn dropped_outbound(&self) -> u64 {
        self.dropped_outbound.load(Ordering::Relaxed)
    }

    /// Inbound frames handed to the consumer so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Marks the link shut down: later sends fail with `Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl ClusterLink for RactorLink {
    fn node_name(&self) -> &str {
        &self.node_name
    }

    fn members(&self) -> watch::Receiver<Members> {
        self.members.subscribe()
    }

    fn send(&self, to: &str, frame: Bytes) -> Result<(), LinkError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(LinkError::Closed);
        }
        let endpoint = self
            .lock()
            .routes
            .get(to)
            .map(|r| r.endpoint.clone())
            .ok_or_else(|| LinkError::NotConnected(to.to_string()))?;
        if frame.len() > FRAME_BYTES_MAX {
            let n = self.dropped_outbound.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(
                to,
                bytes = frame.len(),
                max = FRAME_BYTES_MAX,
                dropped = n,
                "cluster frame too large; dropped (split it)"
            );
            return Ok(());
        }
        let msg = PeerFrame {
            from: self.node_name.clone(),
            frame,
        };
        endpoint
            .cast(msg)
            .map_err(|_| LinkError::NotConnected(to.to_string()))
    }

    fn set_inbound(&self, tx: mpsc::Sender<Inbound>) {
        *self.inbound.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    fn member_states(&self) -> Vec<MemberState> {
        let state = self.lock();
        let mut out = vec![MemberState {
            name: self.node_name.clone(),
            address: Some(self.address.clone()),
            status: MemberStatus::This,
            since: self.started,
        }];
        out.extend(state.known.iter().map(|(name, k)| MemberState {
            name: name.clone(),
            address: k.address.clone(),
            status: k.status,
            since: k.since,
        }));
        out
    }
}

/// The actor peers send frames to. Its only job is to hand them to the link.
pub struct PeerEndpoint;

impl Actor for PeerEndpoint {
    type Msg = PeerFrame;
    type State = Arc<RactorLink>;
    type Arguments = Arc<RactorLink>;

    async fn pre_start(
        &self,
        myself: ActorRef<PeerFrame>,
        link: Arc<RactorLink>,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join_scoped(
            PG_SCOPE.to_string(),
            PG_GROUP.to_string(),
            vec![myself.get_cell()],
        );
        Ok(link)
    }

    async fn handle(
        &self,
        _myself: ActorRef<PeerFrame>,
        msg: PeerFrame,
        link: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        link.deliver(msg);
        Ok(())
    }
}

/// The proxy of `peer`'s endpoint inside our NodeSession `session` with it, if that session
/// has received it. A proxy that is also a member of the endpoint group is preferred; one
/// found by name alone is accepted too, because in a process with several ledgers the
/// group is keyed by `ActorId` and another NodeServer's proxy with the same id (every
/// NodeServer numbers sessions from 0) can replace or remove ours there. Either way it is a
/// child of *our* session with `peer`, so it reaches `peer`.
pub(crate) fn find_endpoint(session: &ActorCell, peer: &str) -> Option<ActorRef<PeerFrame>> {
    let group: HashSet<ActorId> =
        ractor::pg::get_scoped_members(&PG_SCOPE.to_string(), &PG_GROUP.to_string())
            .iter()
            .map(|c| c.get_id())
            .collect();
    let mut found: Vec<ActorCell> = session
        .get_children()
        .into_iter()
        .filter(|c| {
            !c.get_id().is_local()
                && c.get_name().is_some_and(|n| is_endpoint_of(&n, peer))
                && matches!(
                    c.get_status(),
                    ractor::ActorStatus::Running | ractor::ActorStatus::Starting
                )
        })
        .collect();
    // In the group first, then the newest (highest pid: a restarted endpoint's successor).
    found.sort_by_key(|c| (group.contains(&c.get_id()), c.get_id().pid()));
    found.pop().map(ActorRef::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let f = PeerFrame {
            from: "node-a@x".into(),
            frame: Bytes::from_static(b"\x00\x01hello"),
        };
        let SerializedMessage::Cast { variant, args, .. } =
            ractor::Message::serialize(f.clone()).unwrap()
        else {
            panic!("not a cast")
        };
        let back = <PeerFrame as ractor::Message>::deserialize(SerializedMessage::Cast {
            variant,
            args,
            metadata: None,
        })
        .unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn garbage_does_not_decode() {
        for args in [vec![], vec![0], vec![0, 5, b'a']] {
            assert!(PeerFrame::decode(args).is_err());
        }
        let wrong = SerializedMessage::Cast {
            variant: "other".into(),
            args: vec![0, 0],
            metadata: None,
        };
        assert!(<PeerFrame as ractor::Message>::deserialize(wrong).is_err());
    }

    #[test]
    fn endpoint_names() {
        assert!(is_endpoint_of("ledger3/cluster_endpoint@b", "b"));
        assert!(!is_endpoint_of("ledger3/cluster_endpoint@a@b", "b"));
        assert!(!is_endpoint_of("ledger3/cluster_endpoint@bb", "b"));
        assert!(!is_endpoint_of("cluster_endpoint@b", "b"));
    }

    #[test]
    fn membership_versions() {
        let link = RactorLink::new("a", "127.0.0.1:1", &["127.0.0.1:2".into()]);
        let rx = link.members();
        assert_eq!(rx.borrow().live, BTreeSet::from(["a".to_string()]));
        assert!(!link.set_down("b"));
        assert_eq!(rx.borrow().version, 1);
        let states = link.member_states();
        assert_eq!(states[0].status, MemberStatus::This);
        assert_eq!(states[1].name, "127.0.0.1:2");
        assert_eq!(states[1].status, MemberStatus::Down);
        assert_eq!(
            link.send("b", Bytes::new()),
            Err(LinkError::NotConnected("b".into()))
        );
    }
}
