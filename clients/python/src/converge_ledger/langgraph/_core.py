"""The mapping of LangGraph checkpoints onto ledger entries, as plans (`_plan`).

One thread is one context, `context_prefix + thread_id`. Its entries' keys:

    c/<ns>/<checkpoint id>   a checkpoint (checkpoint, metadata, parent id)
    w/<ns>/<checkpoint id>   the writes of one put_writes call for that checkpoint
    p/<key>                  a part of a record too large for one entry (see below)
    d/<ns>/<checkpoint id>   a tombstone hiding that checkpoint and its writes
    x                        a deletion marker: "cut" hides every entry before it
                             (delete_thread, prune "delete"); "hide" says tombstones exist

<ns> is the checkpoint namespace with "%" and "/" percent-encoded (or "#" and a SHA-256 of
it when long), so a namespace's checkpoints are exactly the keys under "c/<ns>/".
Checkpoint ids are time-ordered (uuid6), so key order within a namespace is id order:
the latest checkpoint is one newest-first read under that prefix, a checkpoint by id is an
exact-key read, and neither depends on the thread's length.

A record larger than `max_payload_bytes` is appended as parts under "p/<key>" and then a
header entry under <key> naming the parts' sequences, their total size and SHA-256; the
header's content hash therefore commits to the whole record.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)

from ..types import Entry, InclusionProof, Root
from ..verify import VerificationError, leaf_hash, verify_checkpoint, verify_entry, verify_inclusion
from ._plan import Call, Emit, Plan

PAGE = 256
INLINE = b"I1"
SPLIT = b"S1"
NS_MAX = 150
DEFAULT_MAX_PAYLOAD = 4 * 1024 * 1024


def _pack(fields: Iterable[bytes | str]) -> bytes:
    out = []
    for f in fields:
        b = f.encode() if isinstance(f, str) else bytes(f)
        out.append(struct.pack(">I", len(b)))
        out.append(b)
    return b"".join(out)


def _unpack(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            raise ValueError("truncated record")
        (n,) = struct.unpack_from(">I", data, at)
        at += 4
        if at + n > len(data):
            raise ValueError("truncated record")
        out.append(data[at : at + n])
        at += n
    return out


def encode_ns(ns: str) -> str:
    enc = ns.replace("%", "%25").replace("/", "%2F")
    if len(enc.encode()) > NS_MAX:
        return "#" + hashlib.sha256(ns.encode()).hexdigest()
    return enc


@dataclass
class View:
    """What deletions hide in a thread: everything up to `cut`, and, when `hides`, the
    checkpoints that have a tombstone after it."""

    cut: int = 0
    hides: bool = False


@dataclass(frozen=True)
class CheckpointProof:
    """The ledger entry of a checkpoint, its RFC 9162 inclusion proof, and the root (with
    the server's signed checkpoint, when it signs) of the same tree size."""

    context_id: str
    entry: Entry
    inclusion: InclusionProof
    root: Root

    def verify(self, trusted_key: str | None = None) -> None:
        """Checks the entry's content hash, the inclusion proof against the root, and with
        `trusted_key` that the root is signed by it. Raises VerificationError."""
        verify_entry(self.context_id, self.entry)
        if self.inclusion.entry.content_hash != self.entry.content_hash:
            raise VerificationError("the proof is for another entry")
        if self.inclusion.merkle_root != self.root.merkle_root or (
            self.inclusion.tree_size != self.root.tree_size
        ):
            raise VerificationError("the proof and the root are of different trees")
        verify_inclusion(
            leaf_hash(self.entry.content_hash),
            self.entry.sequence - 1,
            self.inclusion.tree_size,
            self.inclusion.audit_path,
            self.root.merkle_root,
        )
        if trusted_key is not None:
            if not self.root.checkpoint:
                raise VerificationError("the server sent no signed checkpoint")
            cp = verify_checkpoint(self.root.checkpoint, trusted_key, self.context_id)
            if (cp.tree_size, cp.root) != (self.root.tree_size, self.root.merkle_root):
                raise VerificationError("the signed checkpoint is of another tree")


class Mapping:
    """The plans. Subclasses supply `serde`, `context_prefix` and `max_payload_bytes`."""

    serde: Any
    context_prefix: str
    max_payload_bytes: int

    # --- helpers ---------------------------------------------------------------------

    def _ctx(self, thread_id: Any) -> str:
        return f"{self.context_prefix}{thread_id}"

    @staticmethod
    def _ids(config: dict) -> tuple[str, str, str | None]:
        c = config["configurable"]
        return str(c["thread_id"]), c.get("checkpoint_ns", ""), get_checkpoint_id(config)

    def _view(self, ctx: str) -> Plan:
        view, before = View(), 0
        while True:
            r = yield Call(
                "get", (ctx,), dict(key="x", newest_first=True, before_sequence=before, limit=PAGE)
            )
            for e in r.entries:
                if json.loads(e.payload)["kind"] == "cut":
                    view.cut = e.sequence
                    return view
                view.hides = True
            if len(r.entries) < PAGE:
                return view
            before = r.entries[-1].sequence

    def _hidden(self, ctx: str, view: View, ns_enc: str, cid: str) -> Plan:
        if not view.hides:
            return False
        r = yield Call(
            "get", (ctx,), dict(key=f"d/{ns_enc}/{cid}", after_sequence=view.cut, limit=1)
        )
        return bool(r.entries)

    def _write_record(self, ctx: str, key: str, data: bytes) -> Plan:
        """Appends a record under `key` (split into parts when large); returns the entry."""
        if len(data) + len(INLINE) <= self.max_payload_bytes:
            r = yield Call("append", (ctx, key, INLINE + data))
            return r.entry
        seqs = []
        step = self.max_payload_bytes
        for at in range(0, len(data), step):
            r = yield Call("append", (ctx, f"p/{key}", data[at : at + step]))
            seqs.append(r.entry.sequence)
        header = json.dumps(
            {"parts": seqs, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        ).encode()
        r = yield Call("append", (ctx, key, SPLIT + header))
        return r.entry

    def _read_record(self, ctx: str, entry: Entry) -> Plan:
        p = entry.payload
        if p[:2] == INLINE:
            return p[2:]
        if p[:2] != SPLIT:
            raise ValueError(f"entry {entry.sequence} of {ctx!r} is not a checkpointer record")
        h = json.loads(p[2:])
        seqs = h["parts"]
        got: dict[int, bytes] = {}
        after = seqs[0] - 1
        while len(got) < len(seqs):
            r = yield Call(
                "get",
                (ctx,),
                dict(key=f"p/{entry.key}", after_sequence=after, before_sequence=seqs[-1] + 1, limit=16),
            )
            if not r.entries:
                break
            for e in r.entries:
                got[e.sequence] = e.payload
            after = r.entries[-1].sequence
        if any(s not in got for s in seqs):
            raise ValueError(f"entry {entry.sequence} of {ctx!r}: a part is missing")
        data = b"".join(got[s] for s in seqs)
        if len(data) != h["size"] or hashlib.sha256(data).hexdigest() != h["sha256"]:
            raise ValueError(f"entry {entry.sequence} of {ctx!r}: the parts do not match the header")
        return data

    def _writes(self, ctx: str, view: View, ns_enc: str, cid: str) -> Plan:
        """The pending writes of a checkpoint, as LangGraph's savers return them: one per
        (task, index) — the first for regular writes, the last for special channels —
        sorted by (task_path, task_id, index)."""
        found: dict[tuple[str, int], tuple[str, str, str, Any]] = {}
        after = view.cut
        while True:
            r = yield Call(
                "get", (ctx,), dict(key=f"w/{ns_enc}/{cid}", after_sequence=after, limit=PAGE)
            )
            for e in r.entries:
                f = _unpack((yield from self._read_record(ctx, e)))
                task_id, task_path = f[0].decode(), f[1].decode()
                for i in range(2, len(f), 4):
                    idx = int(f[i])
                    channel, typ, blob = f[i + 1].decode(), f[i + 2].decode(), f[i + 3]
                    if idx >= 0 and (task_id, idx) in found:
                        continue
                    found[(task_id, idx)] = (task_path, task_id, channel, (typ, blob))
            if len(r.entries) < PAGE:
                break
            after = r.entries[-1].sequence
        ordered = sorted(found.items(), key=lambda kv: (kv[1][0], kv[0][0], kv[0][1]))
        return [(t, ch, self.serde.loads_typed(v)) for (t, _), (_, _, ch, v) in ordered]

    def _tuple(
        self, ctx: str, thread_id: str, view: View, entry: Entry, filter: dict | None = None
    ) -> Plan:
        """The checkpoint tuple of a checkpoint entry, or None when its metadata does not
        match `filter` (checked before its writes are read)."""
        f = _unpack((yield from self._read_record(ctx, entry)))
        ns, cid, parent = f[0].decode(), f[1].decode(), f[2].decode()
        metadata = self.serde.loads_typed((f[5].decode(), f[6]))
        if filter and not all(metadata.get(k) == v for k, v in filter.items()):
            return None
        checkpoint = self.serde.loads_typed((f[3].decode(), f[4]))
        writes = yield from self._writes(ctx, view, encode_ns(ns), cid)
        conf = {"thread_id": thread_id, "checkpoint_ns": ns}
        return CheckpointTuple(
            config={"configurable": {**conf, "checkpoint_id": cid}},
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config={"configurable": {**conf, "checkpoint_id": parent}} if parent else None,
            pending_writes=writes,
        )

    def _visible(
        self, ctx: str, view: View, prefix: str, before_seq: int = 0, first_limit: int = 1
    ) -> Plan:
        """Emits the visible checkpoint entries under `prefix`, greatest key first (one
        per key: its latest), reading pages of growing size: the first read returns
        `first_limit` entries, enough unless some are hidden or repeated."""
        limit, done = first_limit, set()
        while True:
            r = yield Call(
                "get",
                (ctx,),
                dict(
                    key_prefix=prefix,
                    newest_first=True,
                    after_sequence=view.cut,
                    before_sequence=before_seq,
                    limit=limit,
                ),
            )
            for e in r.entries:
                if e.key in done:
                    continue
                done.add(e.key)
                _, ns_enc, cid = e.key.split("/", 2)
                if (yield from self._hidden(ctx, view, ns_enc, cid)):
                    continue
                yield Emit(e)
            if limit == 0 or len(r.entries) < limit:
                return
            # A key-ordered read has no cursor: read again with a larger limit (finally
            # without one) and skip the keys already seen.
            limit = limit * 4 if limit * 4 <= 1 << 16 else 0

    # --- the saver's operations --------------------------------------------------------

    def _checkpoint_entry(self, ctx: str, view: View, ns: str, cid: str | None) -> Plan:
        """The visible entry of checkpoint `cid` (the latest of the namespace when None)."""
        ns_enc = encode_ns(ns)
        if not cid:
            return (yield from _first(self._visible(ctx, view, f"c/{ns_enc}/")))
        r = yield Call(
            "get",
            (ctx,),
            dict(key=f"c/{ns_enc}/{cid}", after_sequence=view.cut, newest_first=True, limit=1),
        )
        if not r.entries or (yield from self._hidden(ctx, view, ns_enc, cid)):
            return None
        return r.entries[0]

    def plan_get_tuple(self, config: dict) -> Plan:
        thread_id, ns, cid = self._ids(config)
        ctx = self._ctx(thread_id)
        view = yield from self._view(ctx)
        entry = yield from self._checkpoint_entry(ctx, view, ns, cid)
        if entry is None:
            return None
        return (yield from self._tuple(ctx, thread_id, view, entry))

    def plan_list(
        self,
        config: dict | None,
        filter: dict[str, Any] | None,
        before: dict | None,
        limit: int | None,
    ) -> Plan:
        if config is None:
            threads = yield from self._threads()
        else:
            threads = [str(config["configurable"]["thread_id"])]
        ns = config["configurable"].get("checkpoint_ns") if config else None
        cfg_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        remaining = limit
        for thread_id in threads:
            ctx = self._ctx(thread_id)
            view = yield from self._view(ctx)
            prefix = "c/" if ns is None else f"c/{encode_ns(ns)}/"
            before_seq = 0
            if before_id is not None and ns is not None:
                # Ids grow with append order: read only below the `before` checkpoint's
                # entry (and, exactly, only smaller ids: filtered below).
                hit = yield Call(
                    "get", (ctx,), dict(key=f"{prefix}{before_id}", after_sequence=view.cut, limit=1)
                )
                if hit.entries:
                    before_seq = hit.entries[0].sequence
            inner = self._visible(ctx, view, prefix, before_seq, limit or PAGE)
            value = None
            while True:
                try:
                    op = inner.send(value)
                except StopIteration:
                    break
                if not isinstance(op, Emit):
                    value = yield op
                    continue
                value = None
                e = op.value
                cid = e.key.split("/", 2)[2]
                if cfg_id is not None and cid != cfg_id:
                    continue
                if before_id is not None and cid >= before_id:
                    continue
                tup = yield from self._tuple(ctx, thread_id, view, e, filter)
                if tup is None:
                    continue
                yield Emit(tup)
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    def plan_put(self, config: dict, checkpoint: dict, metadata: dict) -> Plan:
        thread_id, ns, parent = self._ids(config)
        ctx = self._ctx(thread_id)
        cp_type, cp_bytes = self.serde.dumps_typed(checkpoint)
        md_type, md_bytes = self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))
        cid = checkpoint["id"]
        data = _pack([ns, cid, parent or "", cp_type, cp_bytes, md_type, md_bytes])
        yield from self._write_record(ctx, f"c/{encode_ns(ns)}/{cid}", data)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}}

    def plan_put_writes(
        self, config: dict, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Plan:
        thread_id, ns, cid = self._ids(config)
        fields: list[bytes | str] = [task_id, task_path]
        for idx, (channel, value) in enumerate(writes):
            typ, blob = self.serde.dumps_typed(value)
            fields += [str(WRITES_IDX_MAP.get(channel, idx)), channel, typ, blob]
        yield from self._write_record(self._ctx(thread_id), f"w/{encode_ns(ns)}/{cid}", _pack(fields))

    def _marker(self, ctx: str, kind: str) -> Call:
        return Call("append", (ctx, "x", json.dumps({"kind": kind}).encode()))

    def plan_delete_thread(self, thread_id: str) -> Plan:
        yield self._marker(self._ctx(thread_id), "cut")

    def _tombstone(self, ctx: str, keys: list[str]) -> Plan:
        if not keys:
            return
        for key in keys:
            _, ns_enc, cid = key.split("/", 2)
            yield Call("append", (ctx, f"d/{ns_enc}/{cid}", b""))
        yield self._marker(ctx, "hide")

    def _all_visible(self, ctx: str, view: View) -> Plan:
        out = []
        inner = self._visible(ctx, view, "c/")
        value = None
        while True:
            try:
                op = inner.send(value)
            except StopIteration:
                return out
            if isinstance(op, Emit):
                value = None
                out.append(op.value)
            else:
                value = yield op

    def plan_prune(self, thread_ids: Sequence[str], strategy: str) -> Plan:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
        for thread_id in thread_ids:
            ctx = self._ctx(str(thread_id))
            if strategy == "delete":
                yield self._marker(ctx, "cut")
                continue
            view = yield from self._view(ctx)
            entries = yield from self._all_visible(ctx, view)
            kept: set[str] = set()
            drop = []
            for e in entries:  # greatest id first within each namespace
                ns_key = "/".join(e.key.split("/", 2)[:2])
                if ns_key in kept:
                    drop.append(e.key)
                else:
                    kept.add(ns_key)
            yield from self._tombstone(ctx, drop)

    def _threads(self) -> Plan:
        """Every thread under `context_prefix`, from ClusterService/Status's paged list of
        contexts (which is in id order)."""
        out, after = [], self.context_prefix
        while True:
            r = yield Call("status", (), dict(after_context_id=after, limit=1000))
            for c in r.contexts:
                if not c.context_id.startswith(self.context_prefix):
                    return out
                out.append(c.context_id[len(self.context_prefix) :])
            if not r.next_after_context_id:
                return out
            after = r.next_after_context_id

    def plan_delete_for_runs(self, run_ids: Sequence[str]) -> Plan:
        runs = set(run_ids)
        if not runs:
            return
        for thread_id in (yield from self._threads()):
            ctx = self._ctx(thread_id)
            view = yield from self._view(ctx)
            drop = []
            for e in (yield from self._all_visible(ctx, view)):
                f = _unpack((yield from self._read_record(ctx, e)))
                md = self.serde.loads_typed((f[5].decode(), f[6]))
                if md.get("run_id") in runs:
                    drop.append(e.key)
            yield from self._tombstone(ctx, drop)

    def plan_copy_thread(self, source: str, target: str) -> Plan:
        src, dst = self._ctx(source), self._ctx(target)
        view = yield from self._view(src)
        live = {e.key for e in (yield from self._all_visible(src, view))}
        after = view.cut
        while True:
            r = yield Call("get", (src,), dict(after_sequence=after, limit=PAGE))
            for e in r.entries:
                kind, _, rest = e.key.partition("/")
                if kind not in ("c", "w") or f"c/{rest}" not in live:
                    continue
                data = yield from self._read_record(src, e)
                yield from self._write_record(dst, e.key, data)
            if len(r.entries) < PAGE:
                return
            after = r.entries[-1].sequence

    def plan_proof(self, config: dict) -> Plan:
        thread_id, ns, cid = self._ids(config)
        ctx = self._ctx(thread_id)
        view = yield from self._view(ctx)
        entry = yield from self._checkpoint_entry(ctx, view, ns, cid)
        if entry is None:
            return None
        inclusion = yield Call("prove_inclusion", (ctx, entry.sequence, 0))
        root = yield Call("root", (ctx, inclusion.tree_size))
        return CheckpointProof(ctx, entry, inclusion, root)


def _first(plan: Plan) -> Plan:
    """The first value `plan` emits (None if none), forwarding its calls."""
    value = None
    while True:
        try:
            op = plan.send(value)
        except StopIteration:
            return None
        if isinstance(op, Emit):
            plan.close()
            return op.value
        value = yield op
