"""The asyncio client: the same calls as `LedgerClient`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

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
        self.channel = grpc.aio.insecure_channel(target, options=c.CHANNEL_OPTIONS)
        self.context = rpc.ContextServiceStub(self.channel)
        self.integrity = rpc.IntegrityServiceStub(self.channel)
        self.cluster = rpc.ClusterServiceStub(self.channel)


class AsyncLedgerClient:
    """See `converge_ledger.LedgerClient`: the same servers, retries and idempotency."""

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

    async def close(self) -> None:
        for n in self._nodes:
            await n.channel.close()

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, service: str, method: str, request: Any, *, retry: bool = True) -> Any:
        attempt = 0
        while True:
            node = self._nodes[self._current]
            try:
                return await getattr(getattr(node, service), method)(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as e:
                attempt += 1
                if not retry or not c.retryable(e) or attempt >= self.retry.attempts:
                    raise
                self._current = (self._current + 1) % len(self._nodes)
                await asyncio.sleep(self.retry.delay(attempt - 1))

    async def append(
        self,
        context_id: str,
        key: str,
        payload: bytes | str,
        metadata: Mapping[str, str] | None = None,
        *,
        received_lamport_clock: int = 0,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        req = c.append_request(
            context_id, key, payload, metadata, received_lamport_clock, idempotency_key
        )
        r = await self._call("context", "Append", req)
        return AppendResult.from_pb(r, req.idempotency_key)

    async def get(
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
        return GetResult.from_pb(await self._call("context", "Get", req))

    async def read_all(
        self, context_id: str, *, key: str = "", page: int = 1000
    ) -> AsyncIterator[Entry]:
        after = 0
        while True:
            r = await self.get(context_id, key=key, after_sequence=after, limit=page)
            for e in r.entries:
                yield e
            if len(r.entries) < page:
                return
            after = r.entries[-1].sequence

    async def snapshot(self, context_id: str) -> Snapshot:
        r = await self._call("context", "Snapshot", pb.SnapshotRequest(context_id=context_id))
        return Snapshot(
            bytes(r.snapshot), r.sequence, r.metadata.entry_count, bytes(r.metadata.merkle_root)
        )

    async def load(
        self, context_id: str, snapshot: bytes, *, fail_if_exists: bool = False
    ) -> LoadResult:
        req = pb.LoadRequest(
            context_id=context_id, snapshot=snapshot, fail_if_exists=fail_if_exists
        )
        r = await self._call("context", "Load", req, retry=False)
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
    ) -> AsyncWatch:
        state = c.WatchState(context_id, key, from_sequence, verify_roots, from_root)
        return AsyncWatch(self, state, signal_caught_up, resume)

    async def root(self, context_id: str, tree_size: int = 0) -> Root:
        req = pb.RootRequest(context_id=context_id, tree_size=tree_size)
        return Root.from_pb(await self._call("integrity", "Root", req))

    async def prove_inclusion(
        self, context_id: str, sequence: int, tree_size: int = 0
    ) -> InclusionProof:
        req = pb.InclusionRequest(context_id=context_id, sequence=sequence, tree_size=tree_size)
        return InclusionProof.from_pb(await self._call("integrity", "ProveInclusion", req))

    async def prove_consistency(
        self, context_id: str, first_size: int, second_size: int = 0
    ) -> ConsistencyProof:
        req = pb.ConsistencyRequest(
            context_id=context_id, first_size=first_size, second_size=second_size
        )
        r = await self._call("integrity", "ProveConsistency", req)
        return ConsistencyProof.from_pb(first_size, r)

    async def status(self, **fields: Any) -> pb.StatusResponse:
        return await self._call("cluster", "Status", pb.StatusRequest(**fields))


class AsyncWatch:
    """The asyncio `Watch`: `async for event in client.watch(...)`; same resumption and
    verification."""

    def __init__(
        self,
        client: AsyncLedgerClient,
        state: c.WatchState,
        signal_caught_up: bool,
        resume: bool,
    ) -> None:
        self._client = client
        self._state = state
        self._signal = signal_caught_up
        self._resume = resume
        self._call: Any = None
        self._closed = False
        self.reconnects = 0

    @property
    def last_sequence(self) -> int:
        return self._state.last_sequence

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[WatchEvent]:
        failures = 0
        client, state = self._client, self._state
        while not self._closed:
            node = client._nodes[client._current]
            try:
                if state.needs_frontier():
                    n = state.last_sequence
                    state.start_frontier(await client.prove_inclusion(state.context_id, n, n))
                self._call = node.context.Watch(state.request(self._signal))
                async for ev in self._call:
                    failures = 0
                    event, needs_proof = state.accept(ev)
                    if event is None:
                        continue
                    if needs_proof:
                        assert event.entry is not None
                        seq = event.entry.sequence
                        proof = await client.prove_inclusion(state.context_id, seq, seq)
                        state.check_inclusion(event, proof)
                    yield event
                return
            except asyncio.CancelledError:
                if self._closed:
                    return
                raise
            except grpc.aio.AioRpcError as e:
                if self._closed and e.code() == grpc.StatusCode.CANCELLED:
                    return
                failures += 1
                if not self._resume or not c.retryable(e) or failures >= client.retry.attempts:
                    raise
                client._current = (client._current + 1) % len(client._nodes)
                self.reconnects += 1
                await asyncio.sleep(client.retry.delay(failures - 1))
