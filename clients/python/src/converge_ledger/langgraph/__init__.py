"""LangGraph checkpointers on Converge Ledger: `LedgerSaver` (sync) and `AsyncLedgerSaver`.

    from converge_ledger.langgraph import AsyncLedgerSaver

    async with AsyncLedgerSaver.from_conn_string("http://127.0.0.1:50051") as saver:
        graph = builder.compile(checkpointer=saver)

Every checkpoint and every write is an entry of the thread's context: hashed, in the
context's Merkle tree, provable (`get_checkpoint_proof`). Deleting appends tombstones that
hide entries from the saver's reads; the ledger never erases anything. See
clients/python/README.md for the mapping and the limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from ..aio import AsyncLedgerClient
from ..client import LedgerClient
from ._core import DEFAULT_MAX_PAYLOAD, CheckpointProof, Mapping
from ._plan import iter_async, iter_sync, run_async, run_sync

__all__ = ["AsyncLedgerSaver", "CheckpointProof", "LedgerSaver"]


class LedgerSaver(Mapping, BaseCheckpointSaver[int]):
    """A synchronous checkpointer over a `LedgerClient`. Its async methods run the sync
    ones in a thread; use `AsyncLedgerSaver` in asyncio code.

    `context_prefix`: thread T is stored in context `context_prefix + T`.
    `max_payload_bytes`: the server's `--max-payload-bytes` (4 MiB by default); larger
    records are split across entries.
    """

    def __init__(
        self,
        client: LedgerClient,
        *,
        context_prefix: str = "lg/",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.client = client
        self.context_prefix = context_prefix
        self.max_payload_bytes = max_payload_bytes

    @classmethod
    @contextmanager
    def from_conn_string(cls, servers: str | Sequence[str], **kwargs: Any) -> Iterator[LedgerSaver]:
        """`servers`: one URL (`http://127.0.0.1:50051`) or several, comma-separated."""
        with LedgerClient(servers) as client:
            yield cls(client, **kwargs)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return run_sync(self.client, self.plan_get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return iter_sync(self.client, self.plan_list(config, filter, before, limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return run_sync(self.client, self.plan_put(config, checkpoint, metadata))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        run_sync(self.client, self.plan_put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        run_sync(self.client, self.plan_delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        run_sync(self.client, self.plan_delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        run_sync(self.client, self.plan_copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        run_sync(self.client, self.plan_prune(thread_ids, strategy))

    def get_checkpoint_proof(self, config: RunnableConfig) -> CheckpointProof | None:
        """The inclusion proof of the checkpoint `config` names (the latest of its
        namespace without a checkpoint_id) and the root — signed, when the server has a
        signing key — of the same tree. `.verify(trusted_key)` checks it all locally."""
        return run_sync(self.client, self.plan_proof(config))

    # The async API, for code that mixes: each call runs the sync one in a thread.
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


class AsyncLedgerSaver(Mapping, BaseCheckpointSaver[int]):
    """An asyncio checkpointer over an `AsyncLedgerClient`. Its sync methods may be called
    from other threads while the event loop runs (as LangGraph's own async savers allow)."""

    def __init__(
        self,
        client: AsyncLedgerClient,
        *,
        context_prefix: str = "lg/",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.client = client
        self.context_prefix = context_prefix
        self.max_payload_bytes = max_payload_bytes
        self.loop = asyncio.get_running_loop()

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls, servers: str | Sequence[str], **kwargs: Any
    ) -> AsyncIterator[AsyncLedgerSaver]:
        """`servers`: one URL (`http://127.0.0.1:50051`) or several, comma-separated."""
        async with AsyncLedgerClient(servers) as client:
            yield cls(client, **kwargs)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await run_async(self.client, self.plan_get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in iter_async(self.client, self.plan_list(config, filter, before, limit)):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await run_async(self.client, self.plan_put(config, checkpoint, metadata))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await run_async(self.client, self.plan_put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await run_async(self.client, self.plan_delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await run_async(self.client, self.plan_delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await run_async(self.client, self.plan_copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await run_async(self.client, self.plan_prune(thread_ids, strategy))

    async def aget_checkpoint_proof(self, config: RunnableConfig) -> CheckpointProof | None:
        """See `LedgerSaver.get_checkpoint_proof`."""
        return await run_async(self.client, self.plan_proof(config))

    # The sync API, from threads other than the event loop's.
    def _sync(self, coro: Any) -> Any:
        try:
            if asyncio.get_running_loop() is self.loop:
                coro.close()
                raise asyncio.InvalidStateError(
                    "synchronous calls to AsyncLedgerSaver are only allowed from a thread "
                    "other than its event loop's; use the async methods (or LedgerSaver)"
                )
        except RuntimeError:
            pass
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._sync(collect())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy))

    def get_checkpoint_proof(self, config: RunnableConfig) -> CheckpointProof | None:
        return self._sync(self.aget_checkpoint_proof(config))
