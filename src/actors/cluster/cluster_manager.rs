//! ClusterManager: this node's place in the cluster. Runs the ractor_cluster NodeServer on
//! `--cluster-listen` (cookie = the cluster secret), keeps a connection to every configured
//! peer (reconnecting with jittered exponential backoff), follows the NodeServer's session
//! events, and keeps the `RactorLink`'s membership and routes up to date.
//!
//! Why this file exists: the link object must outlive restarts (it sits in
//! `Shared::cluster_link`, set once), while the sockets, sessions and dial loops are what a
//! crash should reset. So this actor owns the latter and only *updates* the former; when it
//! stops, every peer goes down in the link and the restarted manager brings them back.
//!
//! Children: the NodeServer (which supervises its listener and sessions) and this node's
//! `PeerEndpoint`. Both are stopped in `post_stop`, so a restart can bind the port again.

use super::link::ClusterLink;
use super::ractor_link::{endpoint_base_name, find_endpoint, PeerEndpoint, RactorLink};
use crate::actors::Shared;
use crate::config::ClusterConfig;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The ClusterManager's registered base name.
pub const CLUSTER_MANAGER_NAME: &str = "cluster_manager";

/// First reconnect delay; doubles at every failed attempt up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often routes of ready sessions are (re)resolved and dead ones dropped.
const TICK: Duration = Duration::from_millis(200);
/// How long after a session closed unauthenticated we decide whether it was a refusal
/// (the peer still not up) or just the loser of a simultaneous connect.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);
/// How long one TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a dialer waits for its new connection to authenticate before retrying.
const AUTH_WAIT: Duration = Duration::from_secs(3);
/// How often a dialer checks a connected peer is still connected.
const CONNECTED_POLL: Duration = Duration::from_millis(100);

/// The delay before reconnect attempt `attempt` (1 = the first retry): `BACKOFF_BASE`
/// doubled per attempt, capped at `BACKOFF_MAX`, scaled into [50 %, 100 %] by `jitter`
/// (a number in [0, 1), random in use) so peers that lost each other do not retry in step.
pub fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_MAX);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    ceiling.mul_f64(0.5 + 0.5 * jitter)
}

pub struct ClusterManagerArgs {
    pub shared: Arc<Shared>,
    pub config: ClusterConfig,
    pub link: Arc<RactorLink>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    Opened,
    Authenticated,
    Ready,
    Disconnected,
}

pub enum ClusterManagerMsg {
    Session(SessionEvent, NodeServerSessionInformation),
    Tick,
    /// A session closed before authenticating: decide whether it was refused.
    CheckRefused {
        peer: Option<String>,
        /// The peer's advertised cluster address (else its socket address).
        address: String,
        /// The socket address of the connection.
        socket: String,
    },
}
impl ractor::Message for ClusterManagerMsg {}

/// Forwards the NodeServer's (synchronous) event callbacks to the manager's mailbox.
struct Subscription(ActorRef<ClusterManagerMsg>);

impl Subscription {
    fn forward(&self, e: SessionEvent, ses: NodeServerSessionInformation) {
        // The manager stopping is the only way this fails; its successor re-subscribes.
        let _ = self.0.cast(ClusterManagerMsg::Session(e, ses));
    }
}

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        self.forward(SessionEvent::Opened, ses);
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.forward(SessionEvent::Disconnected, ses);
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.forward(SessionEvent::Authenticated, ses);
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        self.forward(SessionEvent::Ready, ses);
    }
}

/// One NodeSession of our NodeServer, as its events described it.
struct SessionView {
    info: NodeServerSessionInformation,
    authenticated: bool,
    ready: bool,
}

impl SessionView {
    /// The peer's node name (ractor_cluster names are `NAME@HOST`).
    fn peer(&self) -> Option<String> {
        self.info
            .peer_name
            .as_ref()
            .map(|n| node_of(&n.name).to_string())
    }
    /// The peer's advertised cluster address.
    fn advertised(&self) -> Option<String> {
        self.info
            .peer_name
            .as_ref()
            .map(|n| n.connection_string.clone())
            .filter(|s| !s.is_empty())
    }
}

/// `NAME` of a ractor_cluster node name `NAME@HOST`.
fn node_of(full: &str) -> &str {
    full.rsplit_once('@').map_or(full, |(n, _)| n)
}

/// The host part of our ractor_cluster name and connection string.
fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

pub struct ClusterManagerState {
    link: Arc<RactorLink>,
    /// Our ractor_cluster connection string (`HOST:PORT` of --cluster-listen).
    self_address: String,
    node_server: ActorRef<NodeServerMessage>,
    sessions: HashMap<ActorId, SessionView>,
    dialers: Vec<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
}

pub struct ClusterManager;

const SUBSCRIPTION_ID: &str = "converge-ledger/cluster-manager";

impl Actor for ClusterManager {
    type Msg = ClusterManagerMsg;
    type State = ClusterManagerState;
    type Arguments = ClusterManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ClusterManagerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ClusterManagerArgs {
            shared,
            config,
            link,
        } = args;
        // Whatever the previous incarnation had is gone with its sessions.
        link.all_down();

        // No retries here: LedgerSupervisor retries a child that fails to start (a restarted
        // one may briefly find its old name registered or its port still bound).
        let endpoint_name = shared.actor_name(&endpoint_base_name(&config.node_name));
        let (endpoint, _) = myself
            .get_cell()
            .spawn_linked(Some(endpoint_name), PeerEndpoint, link.clone())
            .await?;
        let listen = config.listen;
        let server = NodeServer::new(
            listen.port(),
            config.secret.clone(),
            config.node_name.clone(),
            host_of(listen.ip()),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen.ip());
        let node_server = match myself.get_cell().spawn_linked(None, server, ()).await {
            Ok((s, _)) => s,
            Err(e) => {
                // pre_start failed, so post_stop will not run: free the endpoint's name now.
                let _ = endpoint.stop_and_wait(None, Some(TICK * 25)).await;
                return Err(format!("cannot listen for the cluster on {listen}: {e}").into());
            }
        };
        node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: SUBSCRIPTION_ID.to_string(),
            subscription: Box::new(Subscription(myself.clone())),
        })?;
        tracing::info!(
            node = %config.node_name,
            address = %listen,
            peers = ?config.peers,
            "cluster transport listening"
        );

        let dialers = config
            .peers
            .iter()
            .map(|peer| {
                tokio::spawn(dial_loop(
                    peer.clone(),
                    listen,
                    node_server.clone(),
                    link.clone(),
                ))
            })
            .collect();
        let ticker = myself.send_interval(TICK, || ClusterManagerMsg::Tick);
        Ok(ClusterManagerState {
            link,
            self_address: format!("{}:{}", host_of(listen.ip()), listen.port()),
            node_server,
            sessions: HashMap::new(),
            dialers,
            ticker: Some(ticker),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        teardown(&myself, state).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The NodeServer or the endpoint stopped: stop the rest and ourselves, so that
        // LedgerSupervisor restarts the whole cluster branch on a free port.
        let Some((cell, why)) = crate::actors::stopped_child(evt) else {
            return Ok(());
        };
        let reason = format!(
            "cluster child {} stopped: {why}",
            cell.get_name().unwrap_or_else(|| cell.get_id().to_string())
        );
        teardown(&myself, state).await;
        myself.stop(Some(reason));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterManagerMsg::Session(event, info) => on_session(&myself, state, event, info),
            ClusterManagerMsg::Tick => on_tick(state),
            ClusterManagerMsg::CheckRefused {
                peer,
                address,
                socket,
            } => {
                if peer.as_deref() == Some(state.link.node_name()) {
                    // ractor_cluster refuses a session with a node of our own name: it is
                    // either this very node (a --peer that points back here) or a namesake.
                    if address == state.self_address {
                        tracing::info!(
                            this = state.link.node_name(),
                            %socket,
                            "a --peer address is this node itself; not dialing it again"
                        );
                        state.link.note_self(vec![address, socket]);
                    } else {
                        state.link.note_refused();
                        tracing::warn!(
                            this = state.link.node_name(),
                            %address,
                            "cluster connection refused: that node has the same --node-name as this one"
                        );
                    }
                    return Ok(());
                }
                let up = peer.as_deref().is_some_and(|p| state.link.is_live(p))
                    || state.link.is_connected_to(std::slice::from_ref(&address));
                if up {
                    tracing::debug!(
                        node = peer.as_deref().unwrap_or("?"),
                        %address,
                        "an extra cluster connection closed during the handshake (the other one won)"
                    );
                } else {
                    state.link.note_refused();
                    tracing::warn!(
                        this = state.link.node_name(),
                        node = peer.as_deref().unwrap_or("(name not yet known)"),
                        %address,
                        "cluster connection refused: authentication failed — this node and \
                         that one do not share the same --cluster-secret"
                    );
                }
            }
        }
        Ok(())
    }
}

/// Stops the dialers, the NodeServer (its listener and sessions) and the endpoint, and
/// marks every peer down. Idempotent. (A `kill` skips this, but then ractor kills the
/// whole subtree, and the dialers notice their NodeServer is gone.)
async fn teardown(myself: &ActorRef<ClusterManagerMsg>, state: &mut ClusterManagerState) {
    for d in state.dialers.drain(..) {
        d.abort();
    }
    if let Some(t) = state.ticker.take() {
        t.abort();
    }
    let _ = state
        .node_server
        .cast(NodeServerMessage::UnsubscribeToEvents(
            SUBSCRIPTION_ID.to_string(),
        ));
    myself
        .stop_children_and_wait(Some("cluster manager stopped".into()), Some(TICK * 25))
        .await;
    state.sessions.clear();
    for name in state.link.all_down() {
        tracing::info!(
            this = state.link.node_name(),
            node = %name,
            "cluster node down (cluster transport stopped)"
        );
    }
}

fn on_session(
    myself: &ActorRef<ClusterManagerMsg>,
    state: &mut ClusterManagerState,
    event: SessionEvent,
    info: NodeServerSessionInformation,
) {
    let id = info.actor.get_id();
    tracing::debug!(
        ?event,
        session = %id,
        peer = ?info.peer_name.as_ref().map(|n| n.name.clone()),
        address = %info.peer_addr,
        "cluster session event"
    );
    match event {
        SessionEvent::Opened => {
            state.sessions.insert(
                id,
                SessionView {
                    info,
                    authenticated: false,
                    ready: false,
                },
            );
        }
        SessionEvent::Authenticated | SessionEvent::Ready => {
            let view = state.sessions.entry(id).or_insert(SessionView {
                info: info.clone(),
                authenticated: true,
                ready: false,
            });
            view.info = info;
            view.authenticated = true;
            if event == SessionEvent::Ready {
                view.ready = true;
            }
            if let Some(peer) = view.peer() {
                state.link.note_seen(&peer, view.advertised());
                if event == SessionEvent::Ready {
                    route(state, &peer);
                }
            }
            publish_connected(state);
        }
        SessionEvent::Disconnected => {
            let mut view = state.sessions.remove(&id).unwrap_or(SessionView {
                info: info.clone(),
                authenticated: false,
                ready: false,
            });
            // The event carries what the NodeServer learnt since (the peer's name).
            if info.peer_name.is_some() {
                view.info = info;
            }
            publish_connected(state);
            let peer = view.peer();
            if !view.authenticated {
                let address = view
                    .advertised()
                    .unwrap_or_else(|| view.info.peer_addr.clone());
                let socket = view.info.peer_addr.clone();
                myself.send_after(REFUSAL_GRACE, move || ClusterManagerMsg::CheckRefused {
                    peer,
                    address,
                    socket,
                });
                return;
            }
            if let Some(peer) = peer {
                if state.link.route_session(&peer) == Some(id) {
                    // Another ready session with the same peer takes over, if there is one.
                    if !route(state, &peer) && state.link.set_down(&peer) {
                        tracing::info!(
                            this = state.link.node_name(),
                            node = %peer,
                            address = view.advertised().unwrap_or(view.info.peer_addr).as_str(),
                            "cluster node down"
                        );
                    }
                }
            }
        }
    }
}

/// Routes `peer` through one of our ready sessions with it; false if none has its endpoint.
fn route(state: &ClusterManagerState, peer: &str) -> bool {
    let current = state.link.route_session(peer);
    let mut candidates: Vec<&SessionView> = state
        .sessions
        .values()
        .filter(|v| v.ready && v.peer().as_deref() == Some(peer))
        .collect();
    // Keep the current route if it is still a candidate; otherwise the newest session.
    candidates.sort_by_key(|v| {
        (
            Some(v.info.actor.get_id()) == current,
            v.info.node_id, // higher = opened later
        )
    });
    for view in candidates.into_iter().rev() {
        let cell = view.info.actor.get_cell();
        if let Some(endpoint) = find_endpoint(&cell, peer) {
            let address = view.advertised();
            if state
                .link
                .set_up(peer, address.clone(), cell.get_id(), endpoint)
            {
                tracing::info!(
                    this = state.link.node_name(),
                    node = %peer,
                    address = address.as_deref().unwrap_or(view.info.peer_addr.as_str()),
                    "cluster node up"
                );
            }
            return true;
        }
    }
    false
}

fn on_tick(state: &mut ClusterManagerState) {
    for peer in state.link.dead_routes() {
        if !route(state, &peer) && state.link.set_down(&peer) {
            tracing::info!(
                this = state.link.node_name(),
                node = %peer,
                "cluster node down (its endpoint stopped)"
            );
        }
    }
    let waiting: HashSet<String> = state
        .sessions
        .values()
        .filter(|v| v.ready)
        .filter_map(|v| v.peer())
        .filter(|p| {
            state
                .link
                .route_session(p)
                .is_none_or(|s| !state.sessions.contains_key(&s))
        })
        .collect();
    for peer in waiting {
        route(state, &peer);
    }
}

/// Tells the dialers which addresses (and names) have an authenticated session.
fn publish_connected(state: &ClusterManagerState) {
    let mut connected = Vec::new();
    for v in state.sessions.values().filter(|v| v.authenticated) {
        connected.push((v.info.peer_addr.clone(), v.peer()));
        if let Some(a) = v.advertised() {
            connected.push((a, v.peer()));
        }
    }
    state.link.set_connected(connected);
}

/// Keeps one configured peer connected: while no authenticated session reaches it, connect,
/// wait for the handshake, and back off (jittered, doubling to `BACKOFF_MAX`) on failure.
async fn dial_loop(
    peer: String,
    listen: SocketAddr,
    node_server: ActorRef<NodeServerMessage>,
    link: Arc<RactorLink>,
) {
    let mut failures = 0u32;
    loop {
        if node_server.get_status() >= ractor::ActorStatus::Stopping {
            return; // our ClusterManager is gone; its successor has its own dialers
        }
        let resolved: Vec<SocketAddr> = match tokio::net::lookup_host(peer.as_str()).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot resolve cluster peer");
                Vec::new()
            }
        };
        if resolved.contains(&listen) {
            tracing::debug!(%peer, "cluster peer is this node's own address; not dialing it");
            link.note_self(vec![peer.clone()]);
            return;
        }
        let mut keys: Vec<String> = resolved.iter().map(|a| a.to_string()).collect();
        keys.push(peer.clone());
        if link.is_self(&keys) {
            return; // found to be this node's own address (logged by the manager)
        }
        if link.is_connected_to(&keys) {
            failures = 0;
            tokio::time::sleep(CONNECTED_POLL).await;
            continue;
        }
        if failures > 0 {
            tracing::debug!(%peer, attempt = failures, "reconnecting to cluster peer");
        }
        let target = resolved.first().copied();
        let outcome = match target {
            None => Err("address did not resolve".to_string()),
            Some(addr) => {
                match tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    ractor_cluster::client_connect(&node_server, addr),
                )
                .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
                }
            }
        };
        match outcome {
            Ok(()) => {
                let deadline = tokio::time::Instant::now() + AUTH_WAIT;
                while tokio::time::Instant::now() < deadline && !link.is_connected_to(&keys) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if link.is_connected_to(&keys) {
                    failures = 0;
                    continue;
                }
                tracing::debug!(%peer, "connected, but the session did not authenticate");
            }
            Err(e) => tracing::debug!(%peer, error = %e, "cannot connect to cluster peer"),
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff_delay(failures, rand::random::<f64>())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_schedule() {
        let ms = |a, j| backoff_delay(a, j).as_millis();
        // Ceilings: 100, 200, 400, ... capped at 5 s.
        assert_eq!(ms(1, 1.0), 100);
        assert_eq!(ms(2, 1.0), 200);
        assert_eq!(ms(3, 1.0), 400);
        assert_eq!(ms(6, 1.0), 3200);
        assert_eq!(ms(7, 1.0), 5000);
        assert_eq!(ms(1000, 1.0), 5000);
        assert_eq!(ms(u32::MAX, 1.0), 5000);
        // Jitter keeps it within [50 %, 100 %] of the ceiling.
        assert_eq!(ms(1, 0.0), 50);
        assert_eq!(ms(7, 0.0), 2500);
        assert_eq!(ms(0, 0.5), 75);
        assert_eq!(ms(3, f64::NAN), 200);
        assert_eq!(ms(3, -3.0), 200);
        for a in 1..40 {
            assert!(backoff_delay(a, 0.999) <= BACKOFF_MAX);
            assert!(backoff_delay(a + 1, 1.0) >= backoff_delay(a, 1.0));
        }
    }

    #[test]
    fn names() {
        assert_eq!(node_of("a@127.0.0.1"), "a");
        assert_eq!(node_of("a@x@[::1]"), "a@x");
        assert_eq!(node_of("plain"), "plain");
        assert_eq!(host_of("::1".parse().unwrap()), "[::1]");
        assert_eq!(host_of("127.0.0.1".parse().unwrap()), "127.0.0.1");
    }
}
