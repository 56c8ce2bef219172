//! StorageWriter: owns the group-commit writer thread (`storage::writer`) and publishes a
//! weak sender to it in `Shared::writer`.
//!
//! It holds the only strong sender. When it stops — cleanly or killed — that sender is
//! dropped, the thread drains what was already queued (those appends are committed and
//! acknowledged), makes it durable and exits. A restart starts a new thread. An op
//! submitted in between gets UNAVAILABLE and was never acknowledged.

use crate::actors::Shared;
use crate::storage::{spawn_writer, WriterMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use tokio::sync::mpsc;

pub const STORAGE_WRITER_NAME: &str = "storage_writer";

pub enum StorageWriterMsg {
    /// The writer thread ended on its own: a panic inside it. The actor fails, so its
    /// supervisor restarts it with a new thread.
    ThreadExited(Result<(), String>),
    /// Make unsynced commits durable (`--durability none` background sync), or checkpoint
    /// the write-ahead log (fsync mode).
    Sync,
}
impl ractor::Message for StorageWriterMsg {}

pub struct StorageWriter;

pub struct StorageWriterState {
    shared: Arc<Shared>,
    /// The only strong sender: dropping it lets the writer thread drain and exit.
    tx: Option<mpsc::Sender<WriterMsg>>,
    /// What this incarnation published in `Shared::writer`; retracted only if still there,
    /// so a late drop of a killed incarnation cannot hide its successor.
    published: Arc<mpsc::WeakSender<WriterMsg>>,
    /// Joined on a clean stop, so shutdown waits for the final drain and sync.
    join: Option<std::thread::JoinHandle<()>>,
}

impl Actor for StorageWriter {
    type Msg = StorageWriterMsg;
    type State = StorageWriterState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let me = myself.clone();
        let (tx, join) = spawn_writer(shared.store.clone(), move |outcome| {
            let _ = me.cast(StorageWriterMsg::ThreadExited(outcome));
        })?;
        let published = Arc::new(tx.downgrade());
        shared.writer.store(Some(published.clone()));
        // `--durability none`: makes the unsynced commits durable. Fsync mode: checkpoints
        // the write-ahead log when appends stopped before the writer's own timer fired.
        if shared.store.mode() != crate::storage::DurabilityMode::Memory {
            myself.send_interval(crate::storage::writer::BACKGROUND_SYNC_INTERVAL, || {
                StorageWriterMsg::Sync
            });
        }
        tracing::debug!("storage writer started");
        Ok(StorageWriterState {
            shared,
            tx: Some(tx),
            published,
            join: Some(join),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StorageWriterMsg::ThreadExited(Ok(())) => {
                Err("storage writer thread exited while its actor was running".into())
            }
            StorageWriterMsg::ThreadExited(Err(panic)) => {
                Err(format!("storage writer thread panicked: {panic}").into())
            }
            StorageWriterMsg::Sync => {
                if let Some(tx) = &state.tx {
                    // Full queue: the writer is busy and will sync soon enough anyway.
                    let _ = tx.try_send(WriterMsg::Sync);
                }
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.retract();
        state.tx.take();
        if let Some(join) = state.join.take() {
            // Every queued op is committed (and made durable) before this returns.
            let _ = tokio::task::spawn_blocking(move || join.join()).await;
        }
        Ok(())
    }
}

impl StorageWriterState {
    fn retract(&self) {
        let current = self.shared.writer.load();
        if current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &self.published))
        {
            self.shared
                .writer
                .compare_and_swap(&current, None::<Arc<mpsc::WeakSender<WriterMsg>>>);
        }
    }
}

impl Drop for StorageWriterState {
    fn drop(&mut self) {
        // Also on a kill, when post_stop does not run: retract the handle so callers get
        // UNAVAILABLE rather than a sender to a draining thread.
        if self.tx.take().is_some() {
            self.retract();
        }
    }
}
