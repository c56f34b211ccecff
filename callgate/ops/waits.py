"""Waiting for the first of several things, the two ways ``serve``'s loops need it.

* :func:`first_done`: wake up when any of some waits is over (a queue's wake-up or the stop; a delivery
  or the stop); the others are cancelled, and nothing is raised (the audit writer and the alerter).
* :func:`until_stopped`: run one piece of work until it ends or the stop comes; a stop cancels it and
  waits for it to unwind, and what the work raised is raised (the ARI and AMI link loops).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any


async def first_done(*waits: Awaitable[Any]) -> None:
    """Return once the first of ``waits`` is done; cancel the others (also when cancelled itself)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def until_stopped(work: Awaitable[None], stop: asyncio.Event) -> None:
    """Run ``work`` until it ends or ``stop`` is set; a stop (or a cancel) cancels it and waits for
    it. Raises what ``work`` raised."""
    task = asyncio.ensure_future(work)
    try:
        await first_done(task, stop.wait())
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()
