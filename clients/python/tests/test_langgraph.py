"""The LangGraph checkpointers: LangGraph's own conformance suite (every capability,
optional ones included), a 50 MiB state, proofs, what delete means, and a real graph."""

from __future__ import annotations

import os
import uuid
from typing import TypedDict

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

from converge_ledger import LedgerClient, VerificationError
from converge_ledger.langgraph import AsyncLedgerSaver, LedgerSaver

REQUIRED = {"put": 17, "put_writes": 10, "get_tuple": 10, "list": 16, "delete_thread": 5}
OPTIONAL = {"delete_for_runs": 7, "copy_thread": 8, "prune": 8}


def _prefix() -> str:
    return f"lg-{uuid.uuid4().hex[:12]}/"


def _check(report) -> None:
    summary = {
        cap: (r.tests_passed, r.tests_failed, r.failures) for cap, r in report.results.items()
    }
    for cap, want in {**REQUIRED, **OPTIONAL}.items():
        r = report.results[cap]
        assert r.detected, f"{cap} not detected"
        assert r.passed and r.tests_failed == 0 and r.tests_passed == want, summary
    print(f"conformance {report.checkpointer_name}: "
          f"{sum(r.tests_passed for r in report.results.values())} passed, "
          f"{sum(r.tests_failed for r in report.results.values())} failed")


async def test_conformance_async_saver(server_url):
    @checkpointer_test(name="AsyncLedgerSaver")
    async def factory():
        async with AsyncLedgerSaver.from_conn_string(server_url, context_prefix=_prefix()) as s:
            yield s

    _check(await validate(factory))


async def test_conformance_sync_saver(server_url):
    @checkpointer_test(name="LedgerSaver")
    async def factory():
        with LedgerSaver.from_conn_string(server_url, context_prefix=_prefix()) as s:
            yield s

    _check(await validate(factory))


def test_a_50_mib_checkpoint_round_trips_across_entries(server_url):
    prefix = _prefix()
    big = os.urandom(50 * 1024 * 1024)
    with LedgerSaver.from_conn_string(server_url, context_prefix=prefix) as saver:
        cp = generate_checkpoint(channel_values={"big": big, "small": "x"})
        cp["channel_versions"] = {"big": 1, "small": 1}
        stored = saver.put(generate_config("t"), cp, generate_metadata(), {"big": 1, "small": 1})
        saver.put_writes(stored, [("big", big[: 9 * 1024 * 1024])], "task-1")
        tup = saver.get_tuple(generate_config("t"))
        assert tup.checkpoint["channel_values"]["big"] == big
        assert tup.pending_writes[0][2] == big[: 9 * 1024 * 1024]
        parts = saver.client.get(f"{prefix}t", key_prefix="p/").entries
        assert len(parts) == 13 + 3  # 50 MiB in 4 MiB parts, then the write's 9 MiB
        assert all(len(e.payload) <= 4 * 1024 * 1024 for e in parts)
        # The header commits to the parts: its proof covers the whole state.
        saver.get_checkpoint_proof(stored).verify()


def test_checkpoint_proofs_verify_and_tampered_ones_do_not(server_url, trusted_key):
    with LedgerSaver.from_conn_string(server_url, context_prefix=_prefix()) as saver:
        configs = []
        parent = None
        for step in range(5):
            cfg = generate_config("t")
            if parent:
                cfg["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
            parent = saver.put(cfg, generate_checkpoint(), generate_metadata(step=step), {})
            configs.append(parent)
        proof = saver.get_checkpoint_proof(configs[1])
        assert proof.entry.key.endswith(configs[1]["configurable"]["checkpoint_id"])
        proof.verify(trusted_key)
        latest = saver.get_checkpoint_proof(generate_config("t"))
        assert latest.entry.key.endswith(configs[-1]["configurable"]["checkpoint_id"])
        latest.verify(trusted_key)
        path = list(proof.inclusion.audit_path)
        path[-1] = bytes(32)
        bad = type(proof)(
            proof.context_id, proof.entry, type(proof.inclusion)(
                proof.inclusion.tree_size, proof.inclusion.merkle_root, path, proof.inclusion.entry
            ), proof.root,
        )
        with pytest.raises(VerificationError):
            bad.verify(trusted_key)
        with pytest.raises(VerificationError, match="no signature"):
            proof.verify(_another_key_named_like(trusted_key))
        assert saver.get_checkpoint_proof(generate_config("nothing-here")) is None


def _another_key_named_like(key: str) -> str:
    """A valid verifier key with `key`'s name but a new Ed25519 key."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from converge_ledger.verify import VerifierKey

    name = key.split("+", 1)[0]
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    other = f"{name}+{VerifierKey.key_id_for(name, pub).hex()}+{base64.b64encode(bytes([1]) + pub).decode()}"
    assert VerifierKey.parse(other).name == name
    return other


def test_delete_hides_but_never_erases(server_url):
    prefix = _prefix()
    with LedgerSaver.from_conn_string(server_url, context_prefix=prefix) as saver:
        stored = saver.put(generate_config("t"), generate_checkpoint(), generate_metadata(), {})
        saver.put_writes(stored, [("ch", "v")], "task")
        before = saver.client.get(f"{prefix}t")
        saver.delete_thread("t")
        assert saver.get_tuple(generate_config("t")) is None
        assert list(saver.list(generate_config("t"))) == []
        after = saver.client.get(f"{prefix}t")
        assert after.entries[: len(before.entries)] == before.entries, "history kept"
        assert [e.key for e in after.entries[len(before.entries) :]] == ["x"], "one tombstone"
        # The thread can be used again; only what came after the tombstone is visible.
        again = saver.put(generate_config("t"), generate_checkpoint(), generate_metadata(), {})
        assert saver.get_tuple(generate_config("t")).config == again


class State(TypedDict):
    steps: list[str]


def _graph(saver):
    from langgraph.graph import END, START, StateGraph

    def node(name):
        return lambda s: {"steps": s["steps"] + [name]}

    g = StateGraph(State)
    for n in ("plan", "act", "report"):
        g.add_node(n, node(n))
    g.add_edge(START, "plan")
    g.add_edge("plan", "act")
    g.add_edge("act", "report")
    g.add_edge("report", END)
    return g.compile(checkpointer=saver, interrupt_before=["report"])


def test_a_graph_stopped_midway_resumes_from_the_ledger_in_a_new_saver(server_url):
    prefix = _prefix()
    config = {"configurable": {"thread_id": "run-1"}}
    with LedgerSaver.from_conn_string(server_url, context_prefix=prefix) as saver:
        out = _graph(saver).invoke({"steps": []}, config)
        assert out["steps"] == ["plan", "act"]
    with LedgerSaver.from_conn_string(server_url, context_prefix=prefix) as saver:
        g = _graph(saver)
        assert g.get_state(config).next == ("report",)
        assert g.invoke(None, config)["steps"] == ["plan", "act", "report"]
        history = list(g.get_state_history(config))
        assert len(history) >= 4
    with LedgerClient(server_url) as c:
        for e in c.read_all(f"{prefix}run-1"):
            from converge_ledger import verify

            verify.verify_entry(f"{prefix}run-1", e)


async def test_the_async_saver_runs_a_graph(server_url):
    async with AsyncLedgerSaver.from_conn_string(server_url, context_prefix=_prefix()) as saver:
        config = {"configurable": {"thread_id": "a"}}
        g = _graph(saver)
        assert (await g.ainvoke({"steps": []}, config))["steps"] == ["plan", "act"]
        assert (await g.ainvoke(None, config))["steps"] == ["plan", "act", "report"]


def test_the_example_resumes_a_killed_run(server_url):
    import subprocess
    import sys

    from .conftest import REPO

    example = REPO / "clients/python/examples/resume_graph.py"
    r = subprocess.run(
        [sys.executable, str(example), "demo", "--server", server_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "the first run ended with -9" in out, out
    assert "resuming at step3 with done=[1, 2]" in out, out
    assert "finished: done=[1, 2, 3, 4, 5]" in out, out
    assert out.count("step 1: done") == 1, "step 1 is not run again"
    assert "[watch] entry" in out and "done=[1, 2, 3, 4, 5] root=" in out, out


def test_reads_cost_what_they_return_not_the_thread_length(server_url):
    """get_tuple (latest and by id) and list(limit) read the same number of entries with
    3 checkpoints as with 300: they are range reads, never scans of the thread."""
    with LedgerSaver.from_conn_string(server_url, context_prefix=_prefix()) as saver:
        read: list[int] = []
        get = saver.client.get

        def counting_get(*args, **kwargs):
            r = get(*args, **kwargs)
            read.append(len(r.entries))
            return r

        saver.client.get = counting_get

        def cost(fn):
            read.clear()
            fn()
            return (len(read), sum(read))

        parent, first = None, None
        costs = {}
        for n in range(1, 301):
            cfg = generate_config("t")
            if parent:
                cfg["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
            parent = saver.put(cfg, generate_checkpoint(), generate_metadata(step=n), {})
            saver.put_writes(parent, [("ch", n)], "task")
            first = first or parent
            if n in (3, 300):
                costs[n] = (
                    cost(lambda: saver.get_tuple(generate_config("t"))),
                    cost(lambda: saver.get_tuple(first)),
                    cost(lambda: list(saver.list(generate_config("t"), limit=2))),
                )
        assert costs[3] == costs[300], costs
        (calls, entries), _, _ = costs[300]
        assert entries <= 2, costs  # the checkpoint and its one write
