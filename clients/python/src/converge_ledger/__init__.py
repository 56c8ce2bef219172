"""Python client for Converge Ledger: sync and asyncio gRPC clients with retries across
nodes and resumable, root-checking watches; pure-Python verification of content hashes,
RFC 9162 proofs and signed checkpoints (`converge_ledger.verify`); and a LangGraph
checkpointer (`converge_ledger.langgraph`, with the `langgraph` extra)."""

from ._common import RetryPolicy, parse_server, parse_servers
from .aio import AsyncLedgerClient, AsyncWatch
from .client import LedgerClient, Watch
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
from .verify import VerificationError

__all__ = [
    "AppendResult",
    "AsyncLedgerClient",
    "AsyncWatch",
    "ConsistencyProof",
    "Entry",
    "GetResult",
    "InclusionProof",
    "LedgerClient",
    "LoadResult",
    "RetryPolicy",
    "Root",
    "Snapshot",
    "VerificationError",
    "Watch",
    "WatchEvent",
    "parse_server",
    "parse_servers",
]
