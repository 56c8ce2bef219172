//! Running the real `converge-ledger` binary as a child process.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many of a child's last stderr lines are kept for assertions and failure reports.
const TAIL_LINES: usize = 400;

pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    /// The gRPC address the server printed in its ready line.
    pub addr: String,
    /// The last stderr lines (at most `TAIL_LINES`).
    pub tail: Arc<Mutex<VecDeque<String>>>,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    running: bool,
}

/// Starts `converge-ledger serve` on a free port with extra args; returns once its ready
/// line names the address.
pub fn spawn_server(data_dir: Option<&Path>, extra: &[&str], cwd: Option<&Path>) -> ServerProcess {
    let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--log", "info"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(d) = data_dir {
        args.push("--data-dir".into());
        args.push(d.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_args(args, cwd.map(Path::to_path_buf))
}

/// A free 127.0.0.1 port for a server that must keep it across restarts: picked at random
/// below the kernel's ephemeral range (32768+ on Linux), so neither `bind(0)` in parallel
/// tests nor outgoing connections can take it while its server is down, checked free by
/// binding it, and never handed out twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SALT: AtomicU64 = AtomicU64::new(0);
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ ((std::process::id() as u64) << 32)
        ^ SALT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// `free_port` as a 127.0.0.1 address.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// What a server started with `--fault-injection` logs for each actor it kills.
pub const FAULT_INJECTION_MARKER: &str = "fault injection: killing an actor";

/// The kind of actor a fault-injection log line names: its registered name without the
/// ledger's namespace, or "context actor" for any ContextActor.
pub fn killed_actor_kind(line: &str) -> Option<String> {
    let name = line.split("actor=").nth(1)?.split_whitespace().next()?;
    let base = name.split('/').nth(1)?;
    Some(if base.starts_with("ctx:") {
        "context actor".to_string()
    } else {
        base.to_string()
    })
}

/// The binary to run: `CONVERGE_LEDGER_BIN` when set (e.g. a release build, or when
/// several worktrees share one CARGO_TARGET_DIR and overwrite each other's
/// `target/debug/converge-ledger`), else the one cargo built for this test.
pub fn server_binary() -> String {
    std::env::var("CONVERGE_LEDGER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_converge-ledger").to_string())
}

/// Starts `converge-ledger serve ARGS` (ARGS must include --listen) and waits for its
/// ready line.
///
/// For debugging a failing multi-process test: `LEDGER_TEST_LOG=FILTER` replaces the
/// `--log` filter of every child, and `LEDGER_TEST_LOG_DIR=DIR` writes each child's whole
/// stderr to `DIR/<port>-<pid>.log` (the kept tail is only the last lines).
pub fn spawn_args(mut args: Vec<String>, cwd: Option<PathBuf>) -> ServerProcess {
    let kept_args = args.clone();
    if let Ok(filter) = std::env::var("LEDGER_TEST_LOG") {
        match args.iter().position(|a| a == "--log") {
            Some(i) if i + 1 < args.len() => args[i + 1] = filter,
            _ => args.extend(["--log".to_string(), filter]),
        }
    }
    let mut cmd = Command::new(server_binary());
    cmd.arg("serve").args(&args);
    if let Some(cwd) = &cwd {
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
    let mut log_file = std::env::var_os("LEDGER_TEST_LOG_DIR").and_then(|dir| {
        let port = args
            .iter()
            .position(|a| a == "--listen")
            .and_then(|i| args.get(i + 1))
            .and_then(|l| l.rsplit(':').next())
            .unwrap_or("0")
            .to_string();
        std::fs::File::create(Path::new(&dir).join(format!("{port}-{}.log", child.id()))).ok()
    });
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let tail = tail.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = log_file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
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
                let mut t = tail.lock().unwrap();
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = None;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(addr) => {
                ready = Some(addr);
                break;
            }
            Err(_) if matches!(child.try_wait(), Ok(Some(_))) => break,
            Err(_) => {}
        }
    }
    let addr = match ready {
        Some(addr) => addr,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            let t = tail.lock().unwrap();
            panic!(
                "server did not print its ready line; stderr:\n{}",
                t.iter().cloned().collect::<Vec<_>>().join("\n")
            );
        }
    };
    ServerProcess {
        child,
        url: format!("http://{addr}"),
        addr,
        tail,
        args: kept_args,
        cwd,
        running: true,
    }
}

impl ServerProcess {
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on unix
        let _ = self.child.wait();
        self.running = false;
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc_kill(pid, 15);
        }
        self.running = false;
        self.child.wait().unwrap()
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Sends SIGUSR1 (a server started with `--fault-injection` kills one actor).
    pub fn sigusr1(&self) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc_kill(self.child.id() as i32, 10);
        }
    }

    /// `kill -STOP`: the process freezes with every socket open.
    pub fn freeze(&self) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc_kill(self.child.id() as i32, 19);
        }
    }

    /// `kill -CONT`: a frozen process runs again.
    pub fn thaw(&self) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc_kill(self.child.id() as i32, 18);
        }
    }

    /// The exit status if the process ended on its own (it was not killed by the test).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if !self.running {
            return None;
        }
        self.child.try_wait().ok().flatten()
    }

    /// Starts the server again (killing it first if it runs) with the same arguments, on
    /// the same gRPC address, so clients keep their URL.
    pub fn restart(&mut self) {
        self.kill9();
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args[i + 1] = self.addr.clone();
        }
        let next = spawn_args(args, self.cwd.clone());
        assert_eq!(next.addr, self.addr, "restarted on the same address");
        let old = std::mem::replace(self, next);
        drop(old);
    }

    /// The kept stderr lines that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.tail
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// The last `n` kept stderr lines, for failure messages.
    pub fn last_lines(&self, n: usize) -> String {
        let t = self.tail.lock().unwrap();
        let skip = t.len().saturating_sub(n);
        t.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
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
