//! StorageSupervisor: holds the database (opened by the shell before the tree starts, so a
//! locked or unreadable data dir fails start-up with a clear message) and restarts the
//! StorageWriter whenever it fails or is killed.
//!
//! Read paths never depend on the writer: Get, Snapshot and Watch catch-up keep working
//! while it restarts.

use super::storage_writer::{StorageWriter, STORAGE_WRITER_NAME};
use crate::actors::{RestartBudget, Shared};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const STORAGE_SUPERVISOR_NAME: &str = "storage_supervisor";

pub struct StorageSupervisor;

pub struct StorageSupervisorState {
    shared: Arc<Shared>,
    budget: RestartBudget,
}

pub enum StorageSupervisorMsg {}
impl ractor::Message for StorageSupervisorMsg {}

async fn start_writer(
    myself: &ActorRef<StorageSupervisorMsg>,
    shared: &Arc<Shared>,
) -> Result<(), ActorProcessingErr> {
    // The dying writer's name may take a moment to be released after its exit event.
    let mut last_err = None;
    for _ in 0..50 {
        match myself
            .get_cell()
            .spawn_linked(
                Some(shared.actor_name(STORAGE_WRITER_NAME)),
                StorageWriter,
                shared.clone(),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Err(format!("cannot start the storage writer: {last_err:?}").into())
}

impl Actor for StorageSupervisor {
    type Msg = StorageSupervisorMsg;
    type State = StorageSupervisorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        start_writer(&myself, &shared).await?;
        Ok(StorageSupervisorState {
            shared,
            // A disk that fails every commit should stop the node, not spin.
            budget: RestartBudget::new(10, Duration::from_secs(30)),
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let reason = match evt {
            SupervisionEvent::ActorFailed(_, err) => err.to_string(),
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                reason.unwrap_or_else(|| "killed".into())
            }
            _ => return Ok(()),
        };
        if state.shared.is_shutting_down() {
            return Ok(());
        }
        tracing::warn!(%reason, "storage writer stopped; restarting it");
        if !state.budget.allow(Instant::now()) {
            return Err(format!("storage writer keeps failing (last: {reason}); giving up").into());
        }
        start_writer(&myself, &state.shared).await
    }
}
