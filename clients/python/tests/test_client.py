"""The sync and asyncio clients against a real server."""

from __future__ import annotations

import threading

import grpc
import pytest

from converge_ledger import (
    AsyncLedgerClient,
    LedgerClient,
    RetryPolicy,
    VerificationError,
    parse_server,
    parse_servers,
    verify,
)
from converge_ledger._common import WatchState
from converge_ledger._proto import context_pb2 as pb

from .conftest import free_port


def test_server_urls():
    assert parse_server("http://127.0.0.1:50051") == "127.0.0.1:50051"
    assert parse_server("localhost:7") == "localhost:7"
    assert parse_servers("http://a:1, b:2") == ["a:1", "b:2"]
    for bad, says in [
        ("http://127.0.0.1", "port"),
        ("127.0.0.1", "port"),
        ("https://h:1", "unsupported scheme 'https'"),
        ("grpc://h:1", "unsupported scheme"),
        ("h:99999", "port"),
        ("http://h:1/x", "expected http://HOST:PORT"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_server(bad)
    with pytest.raises(ValueError, match="no server"):
        parse_servers("")


def test_append_get_and_the_new_read_options(server_url, ctx):
    with LedgerClient(server_url) as c:
        keys = ["c/a/1", "c/b/1", "w/a", "c/a/2", "c/a/3"]
        acks = [c.append(ctx, k, f"p{i}", {"i": str(i)}) for i, k in enumerate(keys)]
        assert [a.entry.sequence for a in acks] == [1, 2, 3, 4, 5]
        assert all(a.durability == "FSYNCED" and not a.duplicate for a in acks)
        for a in acks:
            verify.verify_entry(ctx, a.entry)
        r = c.get(ctx)
        assert [e.key for e in r.entries] == keys and r.latest_sequence == 5
        r = c.get(ctx, newest_first=True, limit=2)
        assert [e.sequence for e in r.entries] == [5, 4]
        r = c.get(ctx, newest_first=True, before_sequence=4, after_sequence=1)
        assert [e.sequence for e in r.entries] == [3, 2]
        r = c.get(ctx, key_prefix="c/a/", newest_first=True)
        assert [e.key for e in r.entries] == ["c/a/3", "c/a/2", "c/a/1"]
        assert r.latest_sequence == 5 and r.merkle_root == c.root(ctx).merkle_root
        r = c.get(ctx, key_prefix="c/")
        assert [e.key for e in r.entries] == ["c/a/1", "c/a/2", "c/a/3", "c/b/1"]
        with pytest.raises(grpc.RpcError) as err:
            c.get(ctx, key="c/a/1", key_prefix="c/")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "key_prefix" in err.value.details()
        assert [e.sequence for e in c.read_all(ctx, page=2)] == [1, 2, 3, 4, 5]


def test_an_append_retried_with_its_idempotency_key_is_not_duplicated(server_url, ctx):
    with LedgerClient(server_url) as c:
        first = c.append(ctx, "k", "x", idempotency_key="step-1")
        again = c.append(ctx, "k", "x", idempotency_key="step-1")
        assert again.duplicate and again.entry == first.entry
        generated = c.append(ctx, "k", "y")
        assert len(generated.idempotency_key) == 36  # a UUID, generated


def test_calls_move_to_the_next_server_when_one_is_down(server_url, ctx):
    dead = f"http://127.0.0.1:{free_port()}"
    with LedgerClient([dead, server_url], retry=RetryPolicy(attempts=4, initial_backoff=0.01)) as c:
        a = c.append(ctx, "k", "via the second node")
        assert a.entry.sequence == 1
        assert c.get(ctx).latest_sequence == 1
    with LedgerClient([dead], retry=RetryPolicy(attempts=2, initial_backoff=0.01)) as c:
        with pytest.raises(grpc.RpcError) as err:
            c.append(ctx, "k", "nowhere")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_async_client(server_url, ctx):
    dead = f"http://127.0.0.1:{free_port()}"
    async with AsyncLedgerClient(
        [dead, server_url], retry=RetryPolicy(attempts=4, initial_backoff=0.01)
    ) as c:
        for i in range(5):
            await c.append(ctx, "k" if i % 2 else "j", f"p{i}")
        r = await c.get(ctx, key="k", newest_first=True)
        assert [e.sequence for e in r.entries] == [4, 2]
        assert [e.sequence async for e in c.read_all(ctx, page=2)] == [1, 2, 3, 4, 5]
        events = []
        w = c.watch(ctx, from_sequence=2)
        async for ev in w:
            events.append(ev.entry.sequence)
            if len(events) == 3:
                w.close()
        assert events == [3, 4, 5]
        p = await c.prove_consistency(ctx, 2)
        assert p.second_size == 5
        verify.verify_consistency(2, 5, (await c.root(ctx, 2)).merkle_root, p.second_root, p.proof)


def _collect(watch, n, out, errors):
    try:
        for ev in watch:
            out.append(ev)
            if len(out) == n:
                watch.close()
    except Exception as e:  # reported by the test
        errors.append(e)


def test_watch_verifies_roots_from_zero_and_from_the_middle(server_url, ctx):
    with LedgerClient(server_url) as c:
        for i in range(10):
            c.append(ctx, "even" if i % 2 == 0 else "odd", f"p{i}")
        for start in (0, 1, 7):
            out: list = []
            w = c.watch(ctx, from_sequence=start, signal_caught_up=True)
            _collect(w, 10 - start + 1, out, [])
            assert out[-1].caught_up and out[-1].entry is None
            assert [e.entry.sequence for e in out[:-1]] == list(range(start + 1, 11))
            assert out[-2].merkle_root == c.root(ctx).merkle_root
        # Key-filtered: each event checked with an inclusion proof against its root.
        out = []
        _collect(c.watch(ctx, key="odd"), 5, out, [])
        assert [e.entry.sequence for e in out] == [2, 4, 6, 8, 10]


def test_live_watch_sees_appends(server_url, ctx):
    with LedgerClient(server_url) as c:
        out: list = []
        errors: list = []
        t = threading.Thread(target=_collect, args=(c.watch(ctx), 20, out, errors))
        t.start()
        for i in range(20):
            c.append(ctx, "k", f"p{i}")
        t.join(timeout=30)
        assert not errors and [e.entry.sequence for e in out] == list(range(1, 21))


def _event(entry: pb.Entry, root: bytes) -> pb.WatchEvent:
    return pb.WatchEvent(entry=entry, merkle_root=root)


def test_a_watch_refuses_tampered_events(server_url, ctx):
    with LedgerClient(server_url) as c:
        for i in range(3):
            c.append(ctx, "k", f"p{i}")
        events = [c.prove_inclusion(ctx, s, s) for s in (1, 2, 3)]
    pbs = []
    for p in events:
        e = p.entry
        pbs.append(
            pb.Entry(
                id=e.id,
                key=e.key,
                payload=e.payload,
                sequence=e.sequence,
                appended_at_ns=e.appended_at_ns,
                metadata=e.metadata,
                lamport_clock=e.lamport_clock,
                content_hash=e.content_hash,
            )
        )
    roots = [p.merkle_root for p in events]
    state = WatchState(ctx, "", 0, True, None)
    for e, r in zip(pbs, roots, strict=True):
        assert state.accept(_event(e, r))[0].entry.sequence == e.sequence
    # A changed payload, a wrong root, a gap: each refused.
    bad = pb.Entry()
    bad.CopyFrom(pbs[0])
    bad.payload = b"changed"
    with pytest.raises(VerificationError, match="content hash"):
        WatchState(ctx, "", 0, True, None).accept(_event(bad, roots[0]))
    with pytest.raises(VerificationError, match="root mismatch"):
        WatchState(ctx, "", 0, True, None).accept(_event(pbs[0], roots[1]))
    with pytest.raises(VerificationError, match="expected entry 1"):
        WatchState(ctx, "", 0, True, None).accept(_event(pbs[1], roots[1]))
    # Without verification the same events pass (the check is what refuses them).
    assert WatchState(ctx, "", 0, False, None).accept(_event(bad, roots[1]))[0] is not None


def test_proofs_from_the_server_verify_and_tampered_ones_do_not(server_url, trusted_key, ctx):
    with LedgerClient(server_url) as c:
        for i in range(13):
            c.append(ctx, "k", f"p{i}", {"n": str(i)})
        root = c.root(ctx)
        assert root.tree_size == 13
        cp = verify.verify_checkpoint(root.checkpoint, trusted_key, ctx)
        assert (cp.tree_size, cp.root) == (13, root.merkle_root)
        for seq in (1, 5, 13):
            p = c.prove_inclusion(ctx, seq)
            verify.verify_entry(ctx, p.entry)
            leaf = verify.leaf_hash(p.entry.content_hash)
            verify.verify_inclusion(leaf, seq - 1, p.tree_size, p.audit_path, root.merkle_root)
            tampered = list(p.audit_path)
            tampered[0] = bytes(b ^ 1 for b in tampered[0])
            with pytest.raises(VerificationError):
                verify.verify_inclusion(leaf, seq - 1, p.tree_size, tampered, root.merkle_root)
        for first in (1, 4, 7, 13):
            p = c.prove_consistency(ctx, first)
            old = c.root(ctx, first)
            verify.verify_checkpoint(old.checkpoint, trusted_key, ctx)
            verify.verify_consistency(first, p.second_size, old.merkle_root, root.merkle_root, p.proof)
            if p.proof:
                with pytest.raises(VerificationError):
                    verify.verify_consistency(
                        first, 13, old.merkle_root, root.merkle_root, p.proof[::-1] + [bytes(32)]
                    )
        with pytest.raises(VerificationError):
            verify.verify_checkpoint(root.checkpoint, trusted_key, ctx + "-other")
        forged = root.checkpoint.replace(b"\n13\n", b"\n12\n")
        with pytest.raises(VerificationError):
            verify.verify_checkpoint(forged, trusted_key, ctx)
