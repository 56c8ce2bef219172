"""Checkpointer benchmark: AsyncLedgerSaver beside langgraph-checkpoint-postgres and
langgraph-checkpoint-sqlite, one run, the same graph-shaped workload.

    python bench/checkpointer_bench.py --ledger http://127.0.0.1:PORT \
        --postgres postgresql://postgres@127.0.0.1:PORT/postgres --sqlite /tmp/bench.sqlite

Needs `pip install langgraph-checkpoint-postgres 'psycopg[binary]' psycopg-pool
langgraph-checkpoint-sqlite` besides this package. Workload, per concurrency level C
(1 and 16; C threads, one asyncio task each, all in one process):

- put: each task appends K checkpoints to its own thread, each the child of the last
  (channel values ~0.7 KB: three 200-byte messages and a step counter);
- put_writes: two writes for each of those checkpoints;
- get_tuple latest / get_tuple by id (a random one of the thread) / list(limit=10):
  R calls per task.

Throughput is calls per second over all tasks. Then latency: one thread grown to 100 and
to 10,000 checkpoints, p50/p99 of get_tuple (latest, and by a random id) at each size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import uuid

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6


def _checkpoint(step: int) -> dict:
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=step))
    cp["channel_values"] = {"messages": ["m" * 200] * 3, "step": step}
    cp["channel_versions"] = {"messages": step, "step": step}
    return cp


def _cfg(thread: str, cid: str | None = None) -> dict:
    c = {"thread_id": thread, "checkpoint_ns": ""}
    if cid:
        c["checkpoint_id"] = cid
    return {"configurable": c}


async def _put_chain(saver, thread: str, n: int, parent: dict | None = None) -> list[dict]:
    out = []
    for step in range(n):
        cfg = _cfg(thread, parent["configurable"]["checkpoint_id"] if parent else None)
        parent = await saver.aput(cfg, _checkpoint(step), {"source": "loop", "step": step}, {"messages": step, "step": step})
        out.append(parent)
    return out


async def _timed(tasks) -> float:
    t = time.perf_counter()
    await asyncio.gather(*tasks)
    return time.perf_counter() - t


async def throughput(saver, name: str, c: int, k: int, r: int) -> dict:
    run = uuid.uuid4().hex[:8]
    threads = [f"{name}-{run}-{i}" for i in range(c)]
    chains: dict[str, list[dict]] = {}

    async def puts(t):
        chains[t] = await _put_chain(saver, t, k)

    res = {}
    res["put"] = c * k / await _timed([puts(t) for t in threads])

    async def writes(t):
        for cfg in chains[t]:
            await saver.aput_writes(cfg, [("messages", "w" * 100), ("step", 1)], "task-1")

    res["put_writes"] = c * k / await _timed([writes(t) for t in threads])

    async def latest(t):
        for _ in range(r):
            assert await saver.aget_tuple(_cfg(t)) is not None

    async def by_id(t):
        for _ in range(r):
            assert await saver.aget_tuple(random.choice(chains[t])) is not None

    async def listing(t):
        for _ in range(r):
            assert len([x async for x in saver.alist(_cfg(t), limit=10)]) == 10

    res["get_tuple_latest"] = c * r / await _timed([latest(t) for t in threads])
    res["get_tuple_by_id"] = c * r / await _timed([by_id(t) for t in threads])
    res["list_10"] = c * r / await _timed([listing(t) for t in threads])
    return res


async def latency(saver, name: str, samples: int) -> dict:
    thread = f"{name}-lat-{uuid.uuid4().hex[:8]}"
    chain: list[dict] = []
    out = {}
    for size in (100, 10_000):
        chain += await _put_chain(saver, thread, size - len(chain), chain[-1] if chain else None)
        for what in ("latest", "by_id"):
            ts = []
            for _ in range(samples):
                cfg = _cfg(thread) if what == "latest" else random.choice(chain)
                t = time.perf_counter()
                assert await saver.aget_tuple(cfg) is not None
                ts.append((time.perf_counter() - t) * 1e6)
            ts.sort()
            out[f"{what}@{size}"] = (ts[len(ts) // 2], ts[int(len(ts) * 0.99)])
    return out


@contextlib.asynccontextmanager
async def open_saver(kind: str, target: str):
    if kind == "ledger":
        from converge_ledger.langgraph import AsyncLedgerSaver

        async with AsyncLedgerSaver.from_conn_string(target, context_prefix=f"bench-{uuid.uuid4().hex[:6]}/") as s:
            yield s
    elif kind == "postgres":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        async with AsyncConnectionPool(target, max_size=16, kwargs=kwargs, open=False) as pool:
            s = AsyncPostgresSaver(pool)
            await s.setup()
            yield s
    else:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(target) as s:
            yield s


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ledger")
    p.add_argument("--postgres")
    p.add_argument("--sqlite")
    p.add_argument("--k", type=int, default=200, help="checkpoints per task")
    p.add_argument("--r", type=int, default=200, help="reads per task")
    p.add_argument("--samples", type=int, default=300)
    a = p.parse_args()
    results = {}
    for kind, target in (("ledger", a.ledger), ("postgres", a.postgres), ("sqlite", a.sqlite)):
        if not target:
            continue
        async with open_saver(kind, target) as saver:
            r = {f"c{c}": await throughput(saver, kind, c, a.k, a.r) for c in (1, 16)}
            r["latency_us"] = await latency(saver, kind, a.samples)
        results[kind] = r
        print(json.dumps({kind: r}), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
