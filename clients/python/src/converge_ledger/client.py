"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc

from . import _common as c
from ._proto import context_pb2 as pb
from ._proto import context_pb2_grpc as rpc
from .types import (
    AppendResult,
    ConsistencyProof,
    Entry,
    GetResult,
    InclusionProof,
    LoadResult,
    Root,
    Snapshot,
    WatchEvent,
)


class _Node:
    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target, options=c.CHANNEL_OPTIONS)
        self.context = rpc.ContextServiceStub(self.channel)
        self.integrity = rpc.IntegrityServiceStub(self.channel)
        self.cluster = rpc.ClusterServiceStub(self.channel)


class LedgerClient:
    """A client of one or several Converge Ledger nodes.

    `servers`: `"http://127.0.0.1:50051"`, `"host:port"`, a comma-separated list or a
    sequence of them. Calls go to the current node; on UNAVAILABLE or DEADLINE_EXCEEDED the
    call moves to the next node and is retried (`retry`), with backoff. Appends always
    carry an idempotency key (a UUID when the caller gives none), so a retried append that
    had in fact been committed returns the first entry instead of appending twice.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        timeout: float = 30.0,
        retry: c.RetryPolicy | None = None,
    ) -> None:
        self._nodes = [_Node(t) for t in c.parse_servers(servers)]
        self._current = 0
        self.timeout = timeout
        self.retry = retry or c.RetryPolicy()

    @property
    def targets(self) -> list[str]:
        return [n.target for n in self._nodes]

    def close(self) -> None:
        for n in self._nodes:
            n.channel.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, service: str, method: str, request: Any, *, retry: bool = True) -> Any:
        attempt = 0
        while True:
            node = self._nodes[self._current]
            try:
                return getattr(getattr(node, service), method)(request, timeout=self.timeout)
            except grpc.RpcError as e:
                attempt += 1
                if not retry or not c.retryable(e) or attempt >= self.retry.attempts:
                    raise
                self._current = (self._current + 1) % len(self._nodes)
                time.sleep(self.retry.delay(attempt - 1))

    # --- ContextService ------------------------------------------------------------------

    def append(
        self,
        context_id: str,
        key: str,
        payload: bytes | str,
        metadata: Mapping[str, str] | None = None,
        *,
        received_lamport_clock: int = 0,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Appends one entry, retried across nodes with one idempotency key."""
        req = c.append_request(
            context_id, key, payload, metadata, received_lamport_clock, idempotency_key
        )
        return AppendResult.from_pb(self._call("context", "Append", req), req.idempotency_key)

    def get(
        self,
        context_id: str,
        *,
        key: str = "",
        after_sequence: int = 0,
        limit: int = 0,
        newest_first: bool = False,
        before_sequence: int = 0,
        key_prefix: str = "",
    ) -> GetResult:
        req = c.get_request(
            context_id, key, after_sequence, limit, newest_first, before_sequence, key_prefix
        )
        return GetResult.from_pb(self._call("context", "Get", req))

    def read_all(self, context_id: str, *, key: str = "", page: int = 1000) -> Iterator[Entry]:
        """Every entry (of `key`, "" = all), oldest first, read in pages."""
        after = 0
        while True:
            r = self.get(context_id, key=key, after_sequence=after, limit=page)
            yield from r.entries
            if len(r.entries) < page:
                return
            after = r.entries[-1].sequence

    def snapshot(self, context_id: str) -> Snapshot:
        r = self._call("context", "Snapshot", pb.SnapshotRequest(context_id=context_id))
        return Snapshot(
            bytes(r.snapshot), r.sequence, r.metadata.entry_count, bytes(r.metadata.merkle_root)
        )

    def load(self, context_id: str, snapshot: bytes, *, fail_if_exists: bool = False) -> LoadResult:
        req = pb.LoadRequest(
            context_id=context_id, snapshot=snapshot, fail_if_exists=fail_if_exists
        )
        r = self._call("context", "Load", req, retry=False)
        return LoadResult(r.entries_restored, r.latest_sequence, bytes(r.merkle_root))

    def watch(
        self,
        context_id: str,
        *,
        key: str = "",
        from_sequence: int = 0,
        verify_roots: bool = True,
        from_root: bytes | None = None,
        signal_caught_up: bool = False,
        resume: bool = True,
    ) -> Watch:
        """Entries after `from_sequence`, then live ones, as `WatchEvent`s. See `Watch`."""
        state = c.WatchState(context_id, key, from_sequence, verify_roots, from_root)
        return Watch(self, state, signal_caught_up, resume)

    # --- IntegrityService ----------------------------------------------------------------

    def root(self, context_id: str, tree_size: int = 0) -> Root:
        req = pb.RootRequest(context_id=context_id, tree_size=tree_size)
        return Root.from_pb(self._call("integrity", "Root", req))

    def prove_inclusion(self, context_id: str, sequence: int, tree_size: int = 0) -> InclusionProof:
        req = pb.InclusionRequest(context_id=context_id, sequence=sequence, tree_size=tree_size)
        return InclusionProof.from_pb(self._call("integrity", "ProveInclusion", req))

    def prove_consistency(
        self, context_id: str, first_size: int, second_size: int = 0
    ) -> ConsistencyProof:
        req = pb.ConsistencyRequest(
            context_id=context_id, first_size=first_size, second_size=second_size
        )
        return ConsistencyProof.from_pb(first_size, self._call("integrity", "ProveConsistency", req))

    def status(self, **fields: Any) -> pb.StatusResponse:
        """ClusterService/Status, as the raw message."""
        return self._call("cluster", "Status", pb.StatusRequest(**fields))


class Watch:
    """An iterator of `WatchEvent`s that survives its node: after UNAVAILABLE (the node
    stopped or restarted) or DEADLINE_EXCEEDED it reconnects — to the next node — from the
    last sequence it delivered, so nothing is skipped or repeated. With `verify_roots`
    (the default) every entry's content hash is recomputed and, unfiltered, every event's
    root is recomputed from a local frontier (key-filtered: checked with an inclusion
    proof per event); a mismatch raises `VerificationError`. `last_sequence` says where
    it is; `close()` ends it."""

    def __init__(
        self, client: LedgerClient, state: c.WatchState, signal_caught_up: bool, resume: bool
    ) -> None:
        self._client = client
        self._state = state
        self._signal = signal_caught_up
        self._resume = resume
        self._stream: Any = None
        self._closed = False
        self.reconnects = 0

    @property
    def last_sequence(self) -> int:
        return self._state.last_sequence

    def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchEvent]:
        return self._events()

    def _events(self) -> Iterator[WatchEvent]:
        failures = 0
        client, state = self._client, self._state
        while not self._closed:
            node = client._nodes[client._current]
            try:
                if state.needs_frontier():
                    state.start_frontier(
                        client.prove_inclusion(state.context_id, state.last_sequence, state.last_sequence)
                    )
                self._stream = node.context.Watch(state.request(self._signal))
                for ev in self._stream:
                    failures = 0
                    event, needs_proof = state.accept(ev)
                    if event is None:
                        continue
                    if needs_proof:
                        assert event.entry is not None
                        seq = event.entry.sequence
                        state.check_inclusion(event, client.prove_inclusion(state.context_id, seq, seq))
                    yield event
                return  # the server ended the stream
            except grpc.RpcError as e:
                if self._closed and e.code() == grpc.StatusCode.CANCELLED:
                    return
                failures += 1
                if not self._resume or not c.retryable(e) or failures >= client.retry.attempts:
                    raise
                client._current = (client._current + 1) % len(client._nodes)
                self.reconnects += 1
                time.sleep(client.retry.delay(failures - 1))
