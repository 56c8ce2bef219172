//! GrpcServerSupervisor: runs the tonic server on the bound listener and turns its
//! unexpected end into an actor failure, so the LedgerSupervisor restarts it on a clone of
//! the same listening socket (clients see refused connections for a moment, nothing else).
//!
//! On shutdown the server stops accepting, lets in-flight calls finish and watch streams
//! end (they see the shutdown signal and close with UNAVAILABLE); stopping this actor waits
//! for that drain.

use crate::actors::Shared;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub const GRPC_SERVER_NAME: &str = "grpc_server";
/// How long shutdown waits for in-flight calls before cutting them off.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct GrpcServerArgs {
    pub shared: Arc<Shared>,
    /// The listening socket, bound once by the shell; each incarnation serves a clone.
    pub listener: Arc<std::net::TcpListener>,
}

pub enum GrpcServerMsg {
    Exited(Result<(), String>),
}
impl ractor::Message for GrpcServerMsg {}

pub struct GrpcServerSupervisor;

pub struct GrpcServerState {
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl Actor for GrpcServerSupervisor {
    type Msg = GrpcServerMsg;
    type State = GrpcServerState;
    type Arguments = GrpcServerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: GrpcServerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let std_listener = args.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let router = crate::api::router(args.shared.clone());
        let mut shutdown = args.shared.shutdown.clone();
        let me = myself.clone();
        let server = tokio::spawn(async move {
            // Our own listener, so tonic's tcp_nodelay setting does not reach these
            // sockets: set it per connection, or Nagle adds ~40 ms to small replies.
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |conn| {
                    conn.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                },
            );
            let result = router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(|e| e.to_string());
            let _ = me.cast(GrpcServerMsg::Exited(result));
        });
        Ok(GrpcServerState {
            shared: args.shared,
            server: Some(server),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let GrpcServerMsg::Exited(result) = msg;
        state.server = None;
        if state.shared.is_shutting_down() {
            myself.stop(Some("shutdown".into()));
            return Ok(());
        }
        Err(format!("gRPC server ended unexpectedly: {result:?}").into())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(mut server) = state.server.take() {
            if tokio::time::timeout(DRAIN_TIMEOUT, &mut server)
                .await
                .is_err()
            {
                tracing::warn!(
                    "in-flight calls did not finish within {DRAIN_TIMEOUT:?}; cutting them off"
                );
                server.abort();
            }
        }
        Ok(())
    }
}

impl Drop for GrpcServerState {
    fn drop(&mut self) {
        // Killed: stop serving on this incarnation so a restart can take over the socket.
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
