//! Fault injection for chaos tests of real processes: kills one actor of this node's
//! supervision tree per request, rotating through every kind, so a test that cannot reach
//! into another process's actor registry (the cluster chaos run sends `SIGUSR1`) still
//! exercises every restart path: a ContextActor, the StorageWriter, the WatchRegistry, the
//! RaftGroupActor, the ClusterManager, the ContextSupervisor, the StorageSupervisor and the
//! GrpcServerSupervisor.
//!
//! Off unless `serve --fault-injection` (hidden; testing only) turns it on. A kill is what
//! a panic inside the actor would do: its supervisor sees it fail and restarts it within
//! its restart budget. Each kill is logged at warn with the actor's name, so the test can
//! count them and a reader of the log sees why the restarts that follow happened.

use super::cluster::CLUSTER_MANAGER_NAME;
use super::context::CONTEXT_SUPERVISOR_NAME;
use super::grpc::GRPC_SERVER_NAME;
use super::raft::RAFT_GROUP_NAME;
use super::storage::{STORAGE_SUPERVISOR_NAME, STORAGE_WRITER_NAME};
use super::watch::WATCH_REGISTRY_NAME;
use super::Shared;

/// The kinds of actor killed, in rotation order. `None` = a random live ContextActor.
const ROTATION: [Option<&str>; 9] = [
    None,
    Some(STORAGE_WRITER_NAME),
    Some(WATCH_REGISTRY_NAME),
    Some(RAFT_GROUP_NAME),
    Some(GRPC_SERVER_NAME),
    None,
    Some(CLUSTER_MANAGER_NAME),
    Some(CONTEXT_SUPERVISOR_NAME),
    Some(STORAGE_SUPERVISOR_NAME),
];

/// Picks and kills actors; owns the rotation and a small deterministic random source.
pub struct FaultInjector {
    kills: u64,
    rng: u64,
}

impl FaultInjector {
    /// `seed` also picks where in the rotation the first kill starts, so a process
    /// restarted between kills does not always hit the same kind first.
    pub fn new(seed: u64) -> Self {
        FaultInjector {
            kills: seed % ROTATION.len() as u64,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Kills the next actor in the rotation that is running (skipping kinds this node does
    /// not run, such as the RaftGroupActor of a single node) and returns its registered name;
    /// None if no candidate is running (the tree is restarting).
    pub fn kill_next(&mut self, shared: &Shared) -> Option<String> {
        self.kills += 1;
        let start = (self.kills as usize) % ROTATION.len();
        for i in 0..ROTATION.len() {
            let victim = match ROTATION[(start + i) % ROTATION.len()] {
                Some(base) => kill_named(&shared.actor_name(base)),
                None => self.kill_a_context_actor(shared),
            };
            if victim.is_some() {
                return victim;
            }
        }
        None
    }

    fn kill_a_context_actor(&mut self, shared: &Shared) -> Option<String> {
        let prefix = shared.actor_name("ctx:");
        let live: Vec<String> = ractor::registry::registered()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if live.is_empty() {
            return None;
        }
        let pick = (self.next_random() % live.len() as u64) as usize;
        kill_named(&live[pick])
    }
}

fn kill_named(name: &str) -> Option<String> {
    let cell = ractor::registry::where_is(name)?;
    tracing::warn!(actor = %name, "fault injection: killing an actor (its supervisor restarts it)");
    cell.kill();
    Some(name.to_string())
}
