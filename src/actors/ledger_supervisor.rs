//! LedgerSupervisor: the root. Starts StorageSupervisor, WatchRegistry, ClusterManager (when
//! clustered over ractor_cluster), the RaftGroupActor (cluster nodes only), ContextSupervisor and
//! GrpcServerSupervisor in that order (each depends only on those before it), restarts
//! any that fails (one-for-one, within a restart budget), and shuts them down in reverse
//! order so every acknowledged write is durable before the process exits.

use super::cluster::{ClusterManager, ClusterManagerArgs, RactorLink, CLUSTER_MANAGER_NAME};
use super::context::{ContextSupervisor, CONTEXT_SUPERVISOR_NAME};
use super::grpc::{GrpcServerArgs, GrpcServerSupervisor, GRPC_SERVER_NAME};
use super::raft::{RaftGroupActor, RAFT_GROUP_NAME};
use super::storage::{StorageSupervisor, STORAGE_SUPERVISOR_NAME};
use super::watch::{WatchRegistry, WATCH_REGISTRY_NAME};
use super::{RestartBudget, Shared};
use crate::config::ClusterConfig;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each branch gets to stop at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct LedgerSupervisorArgs {
    pub shared: Arc<Shared>,
    pub listener: Arc<std::net::TcpListener>,
    /// Set when this node is part of a cluster: its configuration and the link (already in
    /// `Shared::cluster_link`) the ClusterManager keeps up to date across its restarts.
    pub cluster: Option<ClusterArgs>,
}

#[derive(Clone)]
pub struct ClusterArgs {
    pub config: ClusterConfig,
    pub link: Arc<RactorLink>,
}

pub enum LedgerSupervisorMsg {
    /// Ordered shutdown: gRPC (drain), contexts, watch, storage (final commit and sync).
    Shutdown(RpcReplyPort<()>),
}
impl ractor::Message for LedgerSupervisorMsg {}

pub struct LedgerSupervisor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Child {
    Storage,
    Watch,
    Cluster,
    Raft,
    Contexts,
    Grpc,
}

impl Child {
    const START_ORDER: [Child; 6] = [
        Child::Storage,
        Child::Watch,
        Child::Cluster,
        Child::Raft,
        Child::Contexts,
        Child::Grpc,
    ];

    /// Whether this ledger runs the child: the ClusterManager when it has a ractor_cluster
    /// configuration, the Raft group whenever it has one (not on a transport-only node).
    fn wanted(self, shared: &Shared, cluster: Option<&ClusterArgs>) -> bool {
        match self {
            Child::Cluster => cluster.is_some(),
            Child::Raft => shared.raft().is_some(),
            _ => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Child::Storage => STORAGE_SUPERVISOR_NAME,
            Child::Watch => WATCH_REGISTRY_NAME,
            Child::Cluster => CLUSTER_MANAGER_NAME,
            Child::Raft => RAFT_GROUP_NAME,
            Child::Contexts => CONTEXT_SUPERVISOR_NAME,
            Child::Grpc => GRPC_SERVER_NAME,
        }
    }
}

pub struct LedgerState {
    shared: Arc<Shared>,
    listener: Arc<std::net::TcpListener>,
    cluster: Option<ClusterArgs>,
    children: Vec<(Child, ActorCell)>,
    budget: RestartBudget,
    stopping: bool,
}

async fn start_child(
    myself: &ActorRef<LedgerSupervisorMsg>,
    state_shared: &Arc<Shared>,
    listener: &Arc<std::net::TcpListener>,
    cluster: Option<&ClusterArgs>,
    child: Child,
) -> Result<ActorCell, ActorProcessingErr> {
    let cell = myself.get_cell();
    let name = Some(state_shared.actor_name(child.name()));
    // A restarted child may briefly find its old name still registered.
    let mut attempt = 0;
    loop {
        let spawned = match child {
            Child::Storage => cell
                .spawn_linked(name.clone(), StorageSupervisor, state_shared.clone())
                .await
                .map(|(a, _)| a.get_cell()),
            Child::Watch => cell
                .spawn_linked(name.clone(), WatchRegistry, state_shared.clone())
                .await
                .map(|(a, _)| a.get_cell()),
            Child::Raft => cell
                .spawn_linked(name.clone(), RaftGroupActor, state_shared.clone())
                .await
                .map(|(a, _)| a.get_cell()),
            Child::Cluster => match cluster {
                Some(c) => cell
                    .spawn_linked(
                        name.clone(),
                        ClusterManager,
                        ClusterManagerArgs {
                            shared: state_shared.clone(),
                            config: c.config.clone(),
                            link: c.link.clone(),
                        },
                    )
                    .await
                    .map(|(a, _)| a.get_cell()),
                None => return Err("no cluster configured".into()),
            },
            Child::Contexts => cell
                .spawn_linked(name.clone(), ContextSupervisor, state_shared.clone())
                .await
                .map(|(a, _)| a.get_cell()),
            Child::Grpc => cell
                .spawn_linked(
                    name.clone(),
                    GrpcServerSupervisor,
                    GrpcServerArgs {
                        shared: state_shared.clone(),
                        listener: listener.clone(),
                    },
                )
                .await
                .map(|(a, _)| a.get_cell()),
        };
        match spawned {
            Ok(c) => return Ok(c),
            Err(e) if attempt < 50 => {
                attempt += 1;
                tracing::debug!(child = child.name(), error = %e, "start failed; retrying");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(format!("cannot start {}: {e}", child.name()).into()),
        }
    }
}

impl Actor for LedgerSupervisor {
    type Msg = LedgerSupervisorMsg;
    type State = LedgerState;
    type Arguments = LedgerSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: LedgerSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::new();
        for child in Child::START_ORDER {
            if !child.wanted(&args.shared, args.cluster.as_ref()) {
                continue;
            }
            let cell = start_child(
                &myself,
                &args.shared,
                &args.listener,
                args.cluster.as_ref(),
                child,
            )
            .await?;
            children.push((child, cell));
        }
        Ok(LedgerState {
            shared: args.shared,
            listener: args.listener,
            cluster: args.cluster,
            children,
            budget: RestartBudget::new(20, Duration::from_secs(60)),
            stopping: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let LedgerSupervisorMsg::Shutdown(reply) = msg;
        state.stopping = true;
        for (child, cell) in state.children.iter().rev() {
            tracing::debug!(child = child.name(), "stopping");
            match cell
                .stop_and_wait(Some("shutdown".into()), Some(STOP_TIMEOUT))
                .await
            {
                Ok(()) => {}
                // It had already stopped by itself (the gRPC server ends its task when the
                // shutdown signal drains it): that is a clean stop, not a failure.
                Err(ractor::RactorErr::Messaging(ractor::MessagingErr::ChannelClosed)) => {
                    tracing::debug!(child = child.name(), "had already stopped");
                }
                Err(e) => {
                    tracing::warn!(child = child.name(), error = %e, "did not stop cleanly");
                }
            }
        }
        let _ = reply.send(());
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, reason)) = super::stopped_child(evt) else {
            return Ok(());
        };
        if state.stopping || state.shared.is_shutting_down() {
            return Ok(());
        }
        let Some(idx) = state
            .children
            .iter()
            .position(|(_, c)| c.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let child = state.children[idx].0;
        tracing::warn!(child = child.name(), %reason, "child stopped; restarting it");
        if !state.budget.allow(Instant::now()) {
            return Err(format!(
                "children keep failing (last: {} — {reason}); stopping the ledger",
                child.name()
            )
            .into());
        }
        let cell = start_child(
            &myself,
            &state.shared,
            &state.listener,
            state.cluster.as_ref(),
            child,
        )
        .await?;
        state.children[idx].1 = cell;
        Ok(())
    }
}
