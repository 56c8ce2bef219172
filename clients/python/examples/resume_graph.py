"""A LangGraph graph killed mid-run resumes from the ledger; another process watches it.

Against a running server (`converge-ledger serve`), from the repository root:

    python clients/python/examples/resume_graph.py demo --server http://127.0.0.1:50051

`demo` runs the three parts below as separate processes: a watcher, a run that is killed
(SIGKILL, no cleanup) inside step 3, and a second run that resumes from the last
checkpoint the ledger holds — steps 1 and 2 are not run again. They can also be run by
hand, each in its own terminal:

    python resume_graph.py watch --thread T      # prints each checkpoint as it lands
    python resume_graph.py run --thread T --crash-in 3
    python resume_graph.py run --thread T        # resumes at step 3
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from converge_ledger import LedgerClient
from converge_ledger.langgraph import LedgerSaver

STEPS = 5
PREFIX = "lg-example/"


class State(TypedDict):
    done: list[int]


def build(saver: LedgerSaver, crash_in: int | None):
    def step(n: int):
        def run(state: State) -> State:
            if n == crash_in:
                print(f"[run {os.getpid()}] step {n}: killed", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.2)  # the work
            print(f"[run {os.getpid()}] step {n}: done", flush=True)
            return {"done": state["done"] + [n]}

        return run

    g = StateGraph(State)
    for n in range(1, STEPS + 1):
        g.add_node(f"step{n}", step(n))
        g.add_edge(START if n == 1 else f"step{n - 1}", f"step{n}")
    g.add_edge(f"step{STEPS}", END)
    return g.compile(checkpointer=saver)


def run(server: str, thread: str, crash_in: int | None) -> None:
    config = {"configurable": {"thread_id": thread}}
    with LedgerSaver.from_conn_string(server, context_prefix=PREFIX) as saver:
        graph = build(saver, crash_in)
        state = graph.get_state(config)
        if state.next:
            print(f"[run {os.getpid()}] resuming at {state.next[0]} with done={state.values['done']}",
                  flush=True)
            result = graph.invoke(None, config, durability="sync")
        else:
            # durability="sync": each step's checkpoint is in the ledger before the next
            # step starts (LangGraph's default, "async", writes it while the next runs).
            result = graph.invoke({"done": []}, config, durability="sync")
        print(f"[run {os.getpid()}] finished: done={result['done']}", flush=True)


def watch(server: str, thread: str, until_done: bool) -> None:
    ctx = PREFIX + thread
    with LedgerSaver.from_conn_string(server, context_prefix=PREFIX) as saver:
        client: LedgerClient = saver.client
        # verify_roots: every event's Merkle root is recomputed from the entries.
        for event in client.watch(ctx):
            key = event.entry.key
            if not key.startswith("c/"):
                continue
            _, ns, cid = key.split("/", 2)
            tup = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_id": cid}})
            if tup is None:
                continue
            done = tup.checkpoint["channel_values"].get("done", [])
            print(f"[watch] entry {event.entry.sequence}: checkpoint step={tup.metadata['step']} "
                  f"done={done} root={event.merkle_root.hex()[:16]}", flush=True)
            if until_done and len(done) == STEPS:
                return


def demo(server: str) -> None:
    thread = f"demo-{uuid.uuid4().hex[:8]}"
    me = [sys.executable, __file__]
    common = ["--server", server, "--thread", thread]
    watcher = subprocess.Popen(me + ["watch", "--until-done"] + common)
    first = subprocess.run(me + ["run", "--crash-in", "3"] + common)
    print(f"[demo] the first run ended with {first.returncode} (-9 = SIGKILL)", flush=True)
    second = subprocess.run(me + ["run"] + common)
    if second.returncode != 0:
        sys.exit(f"the resumed run failed: {second.returncode}")
    watcher.wait(timeout=60)
    print("[demo] done", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["demo", "run", "watch"])
    p.add_argument("--server", default=os.environ.get("LEDGER_SERVER", "http://127.0.0.1:50051"))
    p.add_argument("--thread", default="example")
    p.add_argument("--crash-in", type=int, default=None, help="run: SIGKILL itself in this step")
    p.add_argument("--until-done", action="store_true", help="watch: stop after the last step")
    a = p.parse_args()
    if a.mode == "demo":
        demo(a.server)
    elif a.mode == "run":
        run(a.server, a.thread, a.crash_in)
    else:
        watch(a.server, a.thread, a.until_done)


if __name__ == "__main__":
    main()
