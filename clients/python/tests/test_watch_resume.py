"""A watch rides out a server restart: it reconnects from its last sequence, delivers
every entry once, in order, and keeps checking roots with its frontier."""

from __future__ import annotations

import asyncio
import threading
import time

from converge_ledger import AsyncLedgerClient, LedgerClient, RetryPolicy

PATIENT = RetryPolicy(attempts=60, initial_backoff=0.05, max_backoff=0.5)


def test_watch_resumes_after_a_restart(own_server, ctx):
    out: list = []
    errors: list = []
    with LedgerClient(own_server.url, retry=PATIENT) as c:
        for i in range(30):
            c.append(ctx, "k", f"before-{i}")
        w = c.watch(ctx)

        def run():
            try:
                for ev in w:
                    out.append(ev)
                    if len(out) == 60:
                        w.close()
            except Exception as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 20
        while len(out) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(out) == 30, "the backlog first"
        own_server.stop()  # SIGTERM: the stream ends with UNAVAILABLE
        time.sleep(0.3)
        own_server.start()
        for i in range(30):
            c.append(ctx, "k", f"after-{i}")
        t.join(timeout=60)
        assert not errors, errors
        assert [e.entry.sequence for e in out] == list(range(1, 61))
        assert w.reconnects >= 1
        assert out[-1].merkle_root == c.root(ctx).merkle_root


async def test_async_watch_resumes_after_a_restart(own_server, ctx):
    async with AsyncLedgerClient(own_server.url, retry=PATIENT) as c:
        for i in range(10):
            await c.append(ctx, "k", f"before-{i}")
        w = c.watch(ctx, from_sequence=3)
        seen: list[int] = []

        async def consume():
            async for ev in w:
                seen.append(ev.entry.sequence)
                if len(seen) == 17:
                    w.close()

        task = asyncio.create_task(consume())
        for _ in range(400):
            if len(seen) == 7:
                break
            await asyncio.sleep(0.02)
        assert len(seen) == 7
        await asyncio.to_thread(own_server.stop)
        await asyncio.to_thread(own_server.start)
        for i in range(10):
            await c.append(ctx, "k", f"after-{i}")
        await asyncio.wait_for(task, 60)
        assert seen == list(range(4, 21))
        assert w.reconnects >= 1
