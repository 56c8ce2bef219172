//! A TCP proxy a test controls, to partition cluster nodes: `cut()` closes every
//! connection through it and refuses new ones until `heal()`; `stall()` is the silent
//! kind — connections stay open but no byte passes either way (a lost network path, which
//! closes nothing) until `resume()`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    /// Bytes from the dialling side to the target are held.
    stalled_up: Arc<watch::Sender<bool>>,
    /// Bytes from the target back to the dialling side are held.
    stalled_down: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free 127.0.0.1 port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let stalled_up = Arc::new(watch::channel(false).0);
        let stalled_down = Arc::new(watch::channel(false).0);
        let task = {
            let cut = cut.clone();
            let (up, down) = (stalled_up.clone(), stalled_down.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if *cut.borrow() {
                        drop(inbound);
                        continue;
                    }
                    let mut rx = cut.subscribe();
                    let (s1, s2) = (up.subscribe(), down.subscribe());
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let (mut ri, mut wi) = inbound.into_split();
                        let (mut ro, mut wo) = outbound.into_split();
                        tokio::select! {
                            _ = pump(&mut ri, &mut wo, s1) => {}
                            _ = pump(&mut ro, &mut wi, s2) => {}
                            _ = rx.wait_for(|c| *c) => {}
                        }
                    });
                }
            })
        };
        Proxy {
            addr,
            cut,
            stalled_up,
            stalled_down,
            task,
        }
    }

    /// Stops every byte, both ways, without closing anything.
    pub fn stall(&self) {
        self.stalled_up.send_replace(true);
        self.stalled_down.send_replace(true);
    }

    /// Stops the bytes one way only: from the dialling side to the target (`up`), or back.
    pub fn stall_one_way(&self, up: bool) {
        if up {
            self.stalled_up.send_replace(true);
        } else {
            self.stalled_down.send_replace(true);
        }
    }

    /// Lets the held bytes through again, both ways.
    pub fn resume(&self) {
        self.stalled_up.send_replace(false);
        self.stalled_down.send_replace(false);
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

/// Copies `from` to `to`, holding the bytes (neither reading nor writing) while stalled.
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
