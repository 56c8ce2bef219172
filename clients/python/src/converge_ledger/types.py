"""Typed results: frozen dataclasses built from the wire messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._proto import context_pb2 as pb


@dataclass(frozen=True)
class Entry:
    id: str
    key: str
    payload: bytes
    sequence: int
    appended_at_ns: int
    metadata: dict[str, str] = field(default_factory=dict)
    lamport_clock: int = 0
    content_hash: bytes = b""

    @classmethod
    def from_pb(cls, e: pb.Entry) -> Entry:
        return cls(
            id=e.id,
            key=e.key,
            payload=bytes(e.payload),
            sequence=e.sequence,
            appended_at_ns=e.appended_at_ns,
            metadata=dict(e.metadata),
            lamport_clock=e.lamport_clock,
            content_hash=bytes(e.content_hash),
        )


@dataclass(frozen=True)
class AppendResult:
    entry: Entry
    duplicate: bool
    # "MEMORY", "WRITTEN", "FSYNCED" (or "DURABILITY_UNSPECIFIED" from an old server).
    durability: str
    idempotency_key: str

    @classmethod
    def from_pb(cls, r: pb.AppendResponse, idempotency_key: str) -> AppendResult:
        return cls(
            entry=Entry.from_pb(r.entry),
            duplicate=r.duplicate,
            durability=pb.Durability.Name(r.durability),
            idempotency_key=idempotency_key,
        )


@dataclass(frozen=True)
class GetResult:
    entries: list[Entry]
    # The context's latest sequence and root, whatever the filter.
    latest_sequence: int
    merkle_root: bytes

    @classmethod
    def from_pb(cls, r: pb.GetResponse) -> GetResult:
        return cls(
            entries=[Entry.from_pb(e) for e in r.entries],
            latest_sequence=r.latest_sequence,
            merkle_root=bytes(r.merkle_root),
        )


@dataclass(frozen=True)
class WatchEvent:
    """One entry and the context's root at tree size = its sequence, or (entry None,
    caught_up True) the marker that ends the stored backlog."""

    entry: Entry | None
    merkle_root: bytes
    caught_up: bool = False


@dataclass(frozen=True)
class Root:
    tree_size: int
    merkle_root: bytes
    lamport_clock: int
    # A C2SP signed note, empty when the server has no signing key.
    checkpoint: bytes

    @classmethod
    def from_pb(cls, r: pb.RootResponse) -> Root:
        return cls(r.tree_size, bytes(r.merkle_root), r.lamport_clock, bytes(r.checkpoint))


@dataclass(frozen=True)
class InclusionProof:
    tree_size: int
    merkle_root: bytes
    audit_path: list[bytes]
    entry: Entry

    @classmethod
    def from_pb(cls, r: pb.InclusionResponse) -> InclusionProof:
        return cls(
            r.tree_size,
            bytes(r.merkle_root),
            [bytes(h) for h in r.audit_path],
            Entry.from_pb(r.entry),
        )


@dataclass(frozen=True)
class ConsistencyProof:
    first_size: int
    second_size: int
    first_root: bytes
    second_root: bytes
    proof: list[bytes]

    @classmethod
    def from_pb(cls, first_size: int, r: pb.ConsistencyResponse) -> ConsistencyProof:
        return cls(
            first_size,
            r.second_size,
            bytes(r.first_root),
            bytes(r.second_root),
            [bytes(h) for h in r.proof],
        )


@dataclass(frozen=True)
class Snapshot:
    snapshot: bytes
    sequence: int
    entry_count: int
    merkle_root: bytes


@dataclass(frozen=True)
class LoadResult:
    entries_restored: int
    latest_sequence: int
    merkle_root: bytes
