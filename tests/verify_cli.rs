//! The auditor end to end: the real `converge-ledger` binary (`verify`, `verify-snapshot`,
//! `keygen`) against in-process servers on free loopback ports — honest ones, and a small
//! lying proxy that forwards to an honest server and changes one thing in its answers.

mod common;

use common::*;
use converge_ledger::client::LedgerClient;
use converge_ledger::config::Config;
use converge_ledger::integrity::{checkpoint, NoteVerifier};
use converge_ledger::proto::{
    self, context_service_server::ContextService, context_service_server::ContextServiceServer,
    integrity_service_server::IntegrityService, integrity_service_server::IntegrityServiceServer,
};
use std::path::Path;
use std::process::Output;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// Runs the binary with `args` (off the async workers, which serve the in-process servers).
async fn cli(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_converge-ledger"))
            .args(&args)
            .env_remove("LEDGER_SERVER")
            .output()
            .expect("run converge-ledger")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

async fn fill(c: &LedgerClient, ctx: &str, from: u64, to: u64) {
    for i in from..=to {
        let mut req = append_req(ctx, "facts", &format!("payload-number-{i:05}"));
        if i % 5 == 0 {
            req.received_lamport_clock = 3 * i;
        }
        c.append(req).await.unwrap();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_server_verifies_and_the_checkpoint_rolls_forward() {
    let (ledger, c) = start_memory().await;
    let url = ledger.url();
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("audit.checkpoint");

    // More than two Get pages of 1000.
    fill(&c, "audited", 1, 2100).await;
    let o = cli(&[
        "verify",
        "--server",
        &url,
        "--context",
        "audited",
        "--save",
        s(&cp),
    ])
    .await;
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("verified converge-ledger/audited at tree size 2100"),
        "{out}"
    );
    assert!(out.contains("2100 replayed"), "{out}");
    let root = c.root("audited", 0).await.unwrap().merkle_root;
    assert!(out.contains(&hex::encode(&root)), "{out}");
    let (saved, _) = checkpoint::read(&std::fs::read(&cp).unwrap(), None).unwrap();
    assert_eq!((saved.tree_size, &saved.root[..]), (2100, &root[..]));

    // Later: more entries; --since proves the new tree extends the saved one, and the
    // checkpoint file moves forward.
    fill(&c, "audited", 2101, 2150).await;
    let o = cli(&[
        "verify",
        "--server",
        &url,
        "--context",
        "audited",
        "--since",
        s(&cp),
        "--json",
    ])
    .await;
    assert_exit(&o, 0);
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["tree_size"], 2150);
    assert_eq!(json["entries_checked"], 2150);
    assert_eq!(json["consistent_with"]["tree_size"], 2100);
    assert_eq!(json["saved"], s(&cp));
    let (saved, _) = checkpoint::read(&std::fs::read(&cp).unwrap(), None).unwrap();
    assert_eq!(saved.tree_size, 2150);

    // An empty context verifies too (the empty tree).
    let o = cli(&["verify", "--server", &url, "--context", "never-written"]).await;
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("at tree size 0"), "{}", stdout(&o));
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_checkpoints_verify_with_the_trusted_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ledger.key");
    let o = cli(&["keygen", "--out", s(&key), "--name", "ledger.test"]).await;
    assert_exit(&o, 0);
    let pub_text = std::fs::read_to_string(dir.path().join("ledger.key.pub")).unwrap();
    assert!(stdout(&o).contains(pub_text.trim()), "{}", stdout(&o));
    let o = cli(&["keygen", "--out", s(&key)]).await;
    assert_exit(&o, 2); // never overwrites a key by accident
    let other = dir.path().join("other.key");
    assert_exit(
        &cli(&["keygen", "--out", s(&other), "--name", "ledger.test"]).await,
        0,
    );
    let other_pub = std::fs::read_to_string(dir.path().join("other.key.pub")).unwrap();

    let (ledger, c) = start(Config {
        signing_key: Some(key.clone()),
        ..Config::for_test()
    })
    .await;
    let url = ledger.url();
    fill(&c, "signed", 1, 12).await;
    let cp = dir.path().join("signed.checkpoint");
    let pub_file = dir.path().join("ledger.key.pub");
    let o = cli(&[
        "verify",
        "--server",
        &url,
        "--context",
        "signed",
        "--trusted-key",
        s(&pub_file),
        "--save",
        s(&cp),
    ])
    .await;
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("signature:   verified by ledger.test+"),
        "{}",
        stdout(&o)
    );
    let verifier = NoteVerifier::parse(&pub_text).unwrap();
    let (saved, _) = checkpoint::read(&std::fs::read(&cp).unwrap(), Some(&verifier)).unwrap();
    assert_eq!(saved.tree_size, 12);

    // Another key of the same name: exit 3, naming who did sign.
    let o = cli(&[
        "verify",
        "--server",
        &url,
        "--context",
        "signed",
        "--trusted-key",
        other_pub.trim(),
    ])
    .await;
    assert_exit(&o, 3);
    let err = stderr(&o);
    assert!(
        err.contains("verification failed: the server's checkpoint"),
        "{err}"
    );
    assert!(err.contains("no signature by key ledger.test+"), "{err}");

    // Without a key, the signature is reported as not checked.
    let o = cli(&["verify", "--server", &url, "--context", "signed"]).await;
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("not checked: no --trusted-key"),
        "{}",
        stdout(&o)
    );

    // Rolling forward with a signed --since checkpoint.
    fill(&c, "signed", 13, 20).await;
    let o = cli(&[
        "verify",
        "--server",
        &url,
        "--context",
        "signed",
        "--trusted-key",
        s(&pub_file),
        "--since",
        s(&cp),
    ])
    .await;
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("extends"), "{}", stdout(&o));
    ledger.shutdown().await;

    // A server without a key cannot satisfy --trusted-key.
    let (plain, c) = start_memory().await;
    fill(&c, "signed", 1, 2).await;
    let o = cli(&[
        "verify",
        "--server",
        &plain.url(),
        "--context",
        "signed",
        "--trusted-key",
        pub_text.trim(),
    ])
    .await;
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains("requires a signed checkpoint"),
        "{}",
        stderr(&o)
    );
    plain.shutdown().await;
}

/// What the lying proxy changes.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Root answers a root with one flipped bit.
    WrongRoot,
    /// Get returns this entry with a changed payload (its content hash kept).
    ChangedPayload(u64),
    /// Get leaves this entry out.
    DroppedEntry(u64),
    /// ProveConsistency answers a proof with one flipped bit.
    BadConsistencyProof,
}

#[derive(Clone)]
struct Liar {
    honest: LedgerClient,
    lie: Lie,
}

#[tonic::async_trait]
impl ContextService for Liar {
    async fn append(
        &self,
        _: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        Err(Status::unimplemented("read-only fake"))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let mut page = self.honest.get(request.into_inner()).await?;
        match self.lie {
            Lie::ChangedPayload(seq) => {
                for e in page.entries.iter_mut().filter(|e| e.sequence == seq) {
                    e.payload = bytes::Bytes::from_static(b"what the server wishes it said");
                }
            }
            Lie::DroppedEntry(seq) => page.entries.retain(|e| e.sequence != seq),
            _ => {}
        }
        Ok(Response::new(page))
    }

    async fn snapshot(
        &self,
        _: Request<proto::SnapshotRequest>,
    ) -> Result<Response<proto::SnapshotResponse>, Status> {
        Err(Status::unimplemented("read-only fake"))
    }

    async fn load(
        &self,
        _: Request<proto::LoadRequest>,
    ) -> Result<Response<proto::LoadResponse>, Status> {
        Err(Status::unimplemented("read-only fake"))
    }

    type WatchStream = ReceiverStream<Result<proto::WatchEvent, Status>>;

    async fn watch(
        &self,
        _: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("read-only fake"))
    }
}

#[tonic::async_trait]
impl IntegrityService for Liar {
    async fn root(
        &self,
        request: Request<proto::RootRequest>,
    ) -> Result<Response<proto::RootResponse>, Status> {
        let r = request.into_inner();
        let mut resp = self.honest.root(r.context_id, r.tree_size).await?;
        if let Lie::WrongRoot = self.lie {
            let mut root = resp.merkle_root.to_vec();
            root[0] ^= 1;
            resp.merkle_root = root.into();
        }
        Ok(Response::new(resp))
    }

    async fn prove_inclusion(
        &self,
        request: Request<proto::InclusionRequest>,
    ) -> Result<Response<proto::InclusionResponse>, Status> {
        let r = request.into_inner();
        let resp = self
            .honest
            .prove_inclusion(r.context_id, r.sequence, r.tree_size)
            .await?;
        Ok(Response::new(resp))
    }

    async fn prove_consistency(
        &self,
        request: Request<proto::ConsistencyRequest>,
    ) -> Result<Response<proto::ConsistencyResponse>, Status> {
        let r = request.into_inner();
        let mut resp = self
            .honest
            .prove_consistency(r.context_id, r.first_size, r.second_size)
            .await?;
        if let (Lie::BadConsistencyProof, Some(first)) = (self.lie, resp.proof.first_mut()) {
            let mut h = first.to_vec();
            h[31] ^= 1;
            *first = h.into();
        }
        Ok(Response::new(resp))
    }
}

/// Starts a proxy that tells `lie` about the honest server at `honest`; returns its URL.
async fn start_liar(honest: &str, lie: Lie) -> String {
    let honest = LedgerClient::connect(honest).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let liar = Liar { honest, lie };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ContextServiceServer::new(liar.clone()))
            .add_service(IntegrityServiceServer::new(liar))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_server_is_caught_at_the_first_mismatch() {
    let (ledger, c) = start_memory().await;
    fill(&c, "ctx", 1, 8).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    assert_exit(
        &cli(&[
            "verify",
            "--server",
            &ledger.url(),
            "--context",
            "ctx",
            "--save",
            s(&cp),
        ])
        .await,
        0,
    );
    let before = std::fs::read(&cp).unwrap();
    fill(&c, "ctx", 9, 20).await;

    let cases = [
        (
            Lie::WrongRoot,
            "root mismatch at tree size 20: the entries give ",
        ),
        (
            Lie::ChangedPayload(3),
            "sequence 3: content hash mismatch: the entry's fields hash to ",
        ),
        (
            Lie::DroppedEntry(4),
            "expected entry 4, the server sent entry 5",
        ),
        (
            Lie::BadConsistencyProof,
            "the consistency proof from size 8",
        ),
    ];
    for (lie, needle) in cases {
        let url = start_liar(&ledger.url(), lie).await;
        let o = cli(&[
            "verify",
            "--server",
            &url,
            "--context",
            "ctx",
            "--since",
            s(&cp),
        ])
        .await;
        assert_exit(&o, 3);
        let err = stderr(&o);
        assert!(
            err.starts_with("error: verification failed: "),
            "{lie:?}: {err}"
        );
        assert!(err.contains(needle), "{lie:?}: {needle:?} not in {err}");
        assert_eq!(
            std::fs::read(&cp).unwrap(),
            before,
            "{lie:?}: a failed audit saves nothing"
        );
    }
    // --json: the report on stdout says what failed.
    let url = start_liar(&ledger.url(), Lie::WrongRoot).await;
    let o = cli(&["verify", "--server", &url, "--context", "ctx", "--json"]).await;
    assert_exit(&o, 3);
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["verified"], false);
    assert_eq!(json["entries_checked"], 20);
    assert!(
        json["failure"].as_str().unwrap().contains("root mismatch"),
        "{json}"
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_or_truncated_history_fails_against_the_old_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ca) = start_memory().await;
    let (b, cb) = start_memory().await;
    fill(&ca, "ctx", 1, 5).await;
    // Server B has the same context with other entries: a forked history.
    for i in 1..=7 {
        cb.append(append_req("ctx", "facts", &format!("rewritten-{i}")))
            .await
            .unwrap();
    }
    let cp = dir.path().join("cp");
    assert_exit(
        &cli(&[
            "verify",
            "--server",
            &a.url(),
            "--context",
            "ctx",
            "--save",
            s(&cp),
        ])
        .await,
        0,
    );
    let o = cli(&[
        "verify",
        "--server",
        &b.url(),
        "--context",
        "ctx",
        "--since",
        s(&cp),
    ])
    .await;
    assert_exit(&o, 3);
    let err = stderr(&o);
    assert!(err.contains("root mismatch at tree size 5"), "{err}");
    assert!(err.contains("the --since checkpoint"), "{err}");

    // A server with fewer entries than the checkpoint: truncated.
    let (short, cs) = start_memory().await;
    fill(&cs, "ctx", 1, 3).await;
    let o = cli(&[
        "verify",
        "--server",
        &short.url(),
        "--context",
        "ctx",
        "--since",
        s(&cp),
    ])
    .await;
    assert_exit(&o, 3);
    assert!(stderr(&o).contains("fewer than the 5"), "{}", stderr(&o));

    // A checkpoint of another context is a usage error.
    let o = cli(&[
        "verify",
        "--server",
        &a.url(),
        "--context",
        "other",
        "--since",
        s(&cp),
    ])
    .await;
    assert_exit(&o, 2);
    for l in [a, b, short] {
        l.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_snapshot_checks_files_offline() {
    let (ledger, c) = start_memory().await;
    fill(&c, "snap", 1, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.cbor");
    let snap = c.snapshot("snap").await.unwrap();
    std::fs::write(&file, &snap.snapshot).unwrap();
    let cp = dir.path().join("cp");
    assert_exit(
        &cli(&[
            "verify",
            "--server",
            &ledger.url(),
            "--context",
            "snap",
            "--save",
            s(&cp),
        ])
        .await,
        0,
    );
    ledger.shutdown().await;

    let o = cli(&["verify-snapshot", s(&file)]).await;
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("verified: context \"snap\", 10 entries"),
        "{out}"
    );
    assert!(
        out.contains(&hex::encode(
            snap.metadata.as_ref().unwrap().merkle_root.as_ref()
        )),
        "{out}"
    );
    let o = cli(&[
        "verify-snapshot",
        s(&file),
        "--checkpoint",
        s(&cp),
        "--json",
    ])
    .await;
    assert_exit(&o, 0);
    let json: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["entries"], 10);

    // One changed payload byte: exit 3, naming the entry.
    let mut bytes = snap.snapshot.to_vec();
    let at = bytes
        .windows(20)
        .position(|w| w == b"payload-number-00007")
        .expect("payload in the file");
    bytes[at + 19] = b'8';
    let tampered = dir.path().join("tampered.cbor");
    std::fs::write(&tampered, &bytes).unwrap();
    let o = cli(&["verify-snapshot", s(&tampered)]).await;
    assert_exit(&o, 3);
    let err = stderr(&o);
    assert!(err.contains("verification failed: snapshot "), "{err}");
    assert!(
        err.contains("sequence 7 does not match its content hash"),
        "{err}"
    );

    // Cut short: not even decodable.
    let cut = dir.path().join("cut.cbor");
    std::fs::write(&cut, &snap.snapshot[..snap.snapshot.len() / 2]).unwrap();
    assert_exit(&cli(&["verify-snapshot", s(&cut)]).await, 3);

    // A checkpoint of another size: exit 3.
    let mut other = c_checkpoint(&cp);
    other.tree_size = 9;
    let other_cp = dir.path().join("other-cp");
    std::fs::write(&other_cp, other.body()).unwrap();
    let o = cli(&["verify-snapshot", s(&file), "--checkpoint", s(&other_cp)]).await;
    assert_exit(&o, 3);
    assert!(stderr(&o).contains("at size 9"), "{}", stderr(&o));

    // A missing file is a local error.
    assert_exit(
        &cli(&["verify-snapshot", s(&dir.path().join("nope"))]).await,
        2,
    );
}

fn c_checkpoint(path: &Path) -> converge_ledger::integrity::Checkpoint {
    checkpoint::read(&std::fs::read(path).unwrap(), None)
        .unwrap()
        .0
}
