"""What the sync and asyncio clients share: server URLs, the retry policy, request
building, and the watch's verification state (no I/O here)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from . import verify
from ._proto import context_pb2 as pb
from .types import Entry, InclusionProof, WatchEvent

# The largest message sent or accepted (as the Rust client): whole snapshots and big pages.
MAX_MESSAGE_BYTES = 1 << 30
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# Codes after which the same request may succeed on another attempt or another node.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def parse_server(url: str) -> str:
    """`http://HOST:PORT` or `HOST:PORT` → the gRPC target `HOST:PORT`. Anything else (no
    port, another scheme, a path) is a ValueError saying what is expected."""
    expected = "expected http://HOST:PORT or HOST:PORT (TLS is not supported)"
    rest = url.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme.lower() != "http":
            raise ValueError(f"server {url!r}: unsupported scheme {scheme!r}; {expected}")
    rest = rest.rstrip("/")
    if "/" in rest or not rest:
        raise ValueError(f"server {url!r}: {expected}")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server {url!r}: no valid port; {expected}")
    return rest


def parse_servers(servers: str | Sequence[str]) -> list[str]:
    """One URL, a comma-separated list, or a sequence of URLs."""
    if isinstance(servers, str):
        servers = [s for s in servers.split(",") if s.strip()]
    targets = [parse_server(s) for s in servers]
    if not targets:
        raise ValueError("no server given; expected at least one http://HOST:PORT")
    return targets


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` tries per call, rotating through the servers, sleeping an
    exponentially growing, jittered delay between tries."""

    attempts: int = 10
    initial_backoff: float = 0.05
    max_backoff: float = 2.0

    def delay(self, attempt: int) -> float:
        d = min(self.max_backoff, self.initial_backoff * (2**attempt))
        return d * (0.5 + random.random() / 2)


def retryable(e: grpc.RpcError) -> bool:
    code = e.code() if hasattr(e, "code") else None
    return code in RETRYABLE


def append_request(
    context_id: str,
    key: str,
    payload: bytes | str,
    metadata: Mapping[str, str] | None,
    received_lamport_clock: int,
    idempotency_key: str | None,
) -> pb.AppendRequest:
    if isinstance(payload, str):
        payload = payload.encode()
    return pb.AppendRequest(
        context_id=context_id,
        key=key,
        payload=payload,
        metadata=dict(metadata or {}),
        received_lamport_clock=received_lamport_clock,
        idempotency_key=idempotency_key or str(uuid.uuid4()),
    )


def get_request(
    context_id: str,
    key: str,
    after_sequence: int,
    limit: int,
    newest_first: bool,
    before_sequence: int,
    key_prefix: str,
) -> pb.GetRequest:
    return pb.GetRequest(
        context_id=context_id,
        key=key,
        after_sequence=after_sequence,
        limit=limit,
        newest_first=newest_first,
        before_sequence=before_sequence,
        key_prefix=key_prefix,
    )


class WatchState:
    """What a resumable watch remembers: the last sequence delivered and, when verifying
    an unfiltered watch, the frontier of the tree up to it, so every event's root is
    recomputed locally — also across reconnections to other nodes."""

    def __init__(
        self,
        context_id: str,
        key: str,
        from_sequence: int,
        verify_roots: bool,
        from_root: bytes | None,
    ) -> None:
        self.context_id = context_id
        self.key = key
        self.last_sequence = from_sequence
        self.verify_roots = verify_roots
        self.from_root = from_root
        self.frontier: verify.Frontier | None = (
            verify.Frontier() if verify_roots and not key and from_sequence == 0 else None
        )
        self.caught_up_sent = False

    def needs_frontier(self) -> bool:
        return self.verify_roots and not self.key and self.frontier is None

    def start_frontier(self, proof: InclusionProof) -> None:
        """From the inclusion proof of entry `last_sequence` in the tree of that size."""
        n = self.last_sequence
        if proof.tree_size != n or proof.entry.sequence != n:
            raise verify.VerificationError(
                f"asked for the proof of entry {n} in the tree of {n}, got entry "
                f"{proof.entry.sequence} in the tree of {proof.tree_size}"
            )
        verify.verify_entry(self.context_id, proof.entry)
        f = verify.Frontier.from_last_leaf_proof(
            n, verify.leaf_hash(proof.entry.content_hash), proof.audit_path
        )
        if f.root() != proof.merkle_root:
            raise verify.VerificationError(
                f"the audit path of entry {n} gives root {f.root().hex()}, the server says "
                f"{proof.merkle_root.hex()}"
            )
        if self.from_root is not None and f.root() != self.from_root:
            raise verify.VerificationError(
                f"root at tree size {n} is {f.root().hex()}, expected {self.from_root.hex()}"
            )
        self.frontier = f

    def request(self, signal_caught_up: bool) -> pb.WatchRequest:
        return pb.WatchRequest(
            context_id=self.context_id,
            key=self.key,
            from_sequence=self.last_sequence,
            signal_caught_up=signal_caught_up and not self.caught_up_sent,
        )

    def accept(self, ev: pb.WatchEvent) -> tuple[WatchEvent | None, bool]:
        """The event to deliver (None: a duplicate after a resume, or a repeated marker)
        and whether it still needs an inclusion proof (a verified, key-filtered watch)."""
        if ev.caught_up and not ev.HasField("entry"):
            if self.caught_up_sent:
                return None, False
            self.caught_up_sent = True
            return WatchEvent(None, bytes(ev.merkle_root), True), False
        entry = Entry.from_pb(ev.entry)
        if entry.sequence <= self.last_sequence:
            return None, False
        root = bytes(ev.merkle_root)
        needs_proof = False
        if self.verify_roots:
            verify.verify_entry(self.context_id, entry)
            if self.key:
                needs_proof = True
            else:
                assert self.frontier is not None
                if entry.sequence != self.frontier.size + 1:
                    raise verify.VerificationError(
                        f"expected entry {self.frontier.size + 1}, got {entry.sequence}"
                    )
                self.frontier.push(verify.leaf_hash(entry.content_hash))
                mine = self.frontier.root()
                if mine != root:
                    raise verify.VerificationError(
                        f"root mismatch at tree size {entry.sequence}: the entries give "
                        f"{mine.hex()}, the event says {root.hex()}"
                    )
        self.last_sequence = entry.sequence
        return WatchEvent(entry, root, False), needs_proof

    def check_inclusion(self, event: WatchEvent, proof: InclusionProof) -> None:
        """A filtered watch's event: the entry is in the tree whose root the event carries."""
        assert event.entry is not None
        e = event.entry
        if proof.tree_size != e.sequence or proof.merkle_root != event.merkle_root:
            raise verify.VerificationError(
                f"entry {e.sequence}: the proof is for tree size {proof.tree_size} with root "
                f"{proof.merkle_root.hex()}, the event says {event.merkle_root.hex()}"
            )
        verify.verify_inclusion(
            verify.leaf_hash(e.content_hash),
            e.sequence - 1,
            e.sequence,
            proof.audit_path,
            event.merkle_root,
        )
