"""The checkpointer's logic is written once, as generators that yield ledger calls
(`Call`) and results to hand out (`Emit`); `run_sync`/`iter_sync` drive them with a
`LedgerClient`, `run_async`/`iter_async` with an `AsyncLedgerClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    method: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Emit:
    value: Any


Plan = Generator[Any, Any, Any]


def run_sync(client: Any, plan: Plan) -> Any:
    value = None
    while True:
        try:
            op = plan.send(value)
        except StopIteration as stop:
            return stop.value
        value = getattr(client, op.method)(*op.args, **op.kwargs)


def iter_sync(client: Any, plan: Plan) -> Iterator[Any]:
    value = None
    while True:
        try:
            op = plan.send(value)
        except StopIteration:
            return
        if isinstance(op, Emit):
            value = None
            yield op.value
        else:
            value = getattr(client, op.method)(*op.args, **op.kwargs)


async def run_async(client: Any, plan: Plan) -> Any:
    value = None
    while True:
        try:
            op = plan.send(value)
        except StopIteration as stop:
            return stop.value
        value = await getattr(client, op.method)(*op.args, **op.kwargs)


async def iter_async(client: Any, plan: Plan) -> AsyncIterator[Any]:
    value = None
    while True:
        try:
            op = plan.send(value)
        except StopIteration:
            return
        if isinstance(op, Emit):
            value = None
            yield op.value
        else:
            value = await getattr(client, op.method)(*op.args, **op.kwargs)
