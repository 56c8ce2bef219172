//! Running the real `converge-ledger` binary as a child process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    pub child: Child,
    pub url: String,
}

/// Starts `converge-ledger serve` on a free port with extra args; returns once its ready
/// line names the address.
pub fn spawn_server(data_dir: Option<&Path>, extra: &[&str], cwd: Option<&Path>) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_converge-ledger"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--log")
        .arg("info");
    if let Some(d) = data_dir {
        cmd.arg("--data-dir").arg(d);
    }
    cmd.args(extra);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    for var in [
        "LEDGER_LISTEN",
        "LEDGER_DATA_DIR",
        "GRPC_PORT",
        "LEDGER_MEMORY",
        "LEDGER_DURABILITY",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn converge-ledger");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.contains("converge-ledger ready") {
                if let Some(addr) = line
                    .split("listen=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    let _ = tx.send(addr.to_string());
                    sent = true;
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("server printed its ready line");
    ServerProcess {
        child,
        url: format!("http://{addr}"),
    }
}

impl ServerProcess {
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on unix
        let _ = self.child.wait();
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc_kill(pid, 15);
        }
        self.child.wait().unwrap()
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
