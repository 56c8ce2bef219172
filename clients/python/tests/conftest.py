"""Shared fixtures. Tests that need a server read its URL from CONVERGE_LEDGER_URL (set by
.ci/run, which starts a release server), or start one themselves from
CONVERGE_LEDGER_BIN (a built `converge-ledger`)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_binary() -> pathlib.Path:
    env = os.environ.get("CONVERGE_LEDGER_BIN")
    candidates = [pathlib.Path(env)] if env else []
    candidates += [REPO / "target/release/converge-ledger", REPO / "target/debug/converge-ledger"]
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail(
        "no converge-ledger binary: set CONVERGE_LEDGER_BIN or run cargo build --release "
        "--bin converge-ledger"
    )


class Server:
    """A `converge-ledger serve` process on a free 127.0.0.1 port with its own data dir,
    which tests may stop and restart on the same port and data."""

    def __init__(self, signing_key: pathlib.Path | None = None) -> None:
        self.bin = server_binary()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cl-py-")
        self.signing_key = signing_key
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            str(self.bin),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            self.dir,
            "--log",
            "warn",
        ]
        if self.signing_key:
            args += ["--signing-key", str(self.signing_key)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"converge-ledger exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("converge-ledger did not listen within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


def keygen(dir: str) -> tuple[pathlib.Path, str]:
    """A fresh signing key (`converge-ledger keygen`): its file and its verifier key."""
    key = pathlib.Path(dir) / "ledger.key"
    subprocess.run(
        [str(server_binary()), "keygen", "--out", str(key), "--name", "py-test"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return key, pathlib.Path(f"{key}.pub").read_text().strip()


@pytest.fixture(scope="session")
def shared_server() -> tuple[str, str]:
    """(URL, verifier key) of the server the tests share: the one .ci/run started
    (CONVERGE_LEDGER_URL, CONVERGE_LEDGER_PUBKEY), or one started here with a new key."""
    url = os.environ.get("CONVERGE_LEDGER_URL")
    if url:
        pub = os.environ.get("CONVERGE_LEDGER_PUBKEY", "")
        if os.path.isfile(pub):
            pub = pathlib.Path(pub).read_text().strip()
        yield url, pub
        return
    key, pub = keygen(tempfile.mkdtemp(prefix="cl-py-key-"))
    s = Server(signing_key=key)
    s.start()
    try:
        yield s.url, pub
    finally:
        s.stop()


@pytest.fixture(scope="session")
def server_url(shared_server: tuple[str, str]) -> str:
    return shared_server[0]


@pytest.fixture(scope="session")
def trusted_key(shared_server: tuple[str, str]) -> str:
    if not shared_server[1]:
        pytest.fail("the shared server's verifier key is unknown: set CONVERGE_LEDGER_PUBKEY")
    return shared_server[1]


@pytest.fixture
def own_server() -> Server:
    """A server of this test's own, which the test may stop and restart."""
    s = Server()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def ctx() -> str:
    return f"py-{uuid.uuid4()}"
