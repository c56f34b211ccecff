"""Where Asterisk's own CPU a call goes under callgate: do-nothing Stasis apps that each add one of
callgate's costs, in one Asterisk, alternated so that a drift of the shared machine hits all alike.

Run alone (not in ``make bench``: a few minutes): ``.venv/bin/python -m bench.asterisk_parts``.
Rows: the do-nothing app (continue only); the same with callgate's AMI user connected and reading
(``read=cdr,call,user,system`` and its two event filters, as the shipped manager.conf has it); with
that user's events chosen by name instead; with a user reading only ``cdr`` and ``user`` events; the
same app setting callgate's eight variables in one ``ARRAY()`` before it continues (both requests in
one go over the websocket, as callgate does). Each: a closed loop of ``CALLS`` calls, 32 in flight,
CPU ms a call of each process (bench.gate's measure)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from bench import gate as bg
from callgate.asterisk.ami import AmiConnection
from callgate.asterisk.ari import AriClient
from callgate.asterisk.gate import Then
from callgate.errors import AriUnavailable
from tests.e2e import CALLGATE_AMI_SECRET, app_registered, wait_until

CALLS = int(os.environ.get("CALLGATE_BENCH_CALLS", "2000"))
ROUNDS = 3
VARIABLES = (
    "ARRAY(CALLGATE_VERDICT,CALLGATE_REASON,CALLGATE_NUMBER,CALLGATE_MAX_SECONDS,CALLGATE_CALL,"
    "CDR(userfield),CDR(callgate),TIMEOUT(absolute))",
    "ALLOW,allowed,+12125550123,3600,bench:1732000000.1:ab,callgate:allowed,bench:1732000000.1:ab,3720",
)


def run_app(set_variables: bool) -> int:
    """``python -m bench.asterisk_parts --app [--set]``: the do-nothing app, until SIGTERM."""
    env = os.environ

    async def main() -> None:
        ari = AriClient(
            env["BENCH_ARI_URL"], env["BENCH_ARI_USER"], env["BENCH_ARI_PASSWORD"], bg.NULL_APP
        )
        tasks: set[asyncio.Task[None]] = set()

        async def go_on(channel_id: str) -> None:
            with contextlib.suppress(AriUnavailable):
                if set_variables:
                    await ari.apply(channel_id, *VARIABLES, Then())
                else:
                    await ari.continue_in_dialplan(channel_id)

        async def serve() -> None:
            async with ari.event_stream() as events:
                async for event in events:
                    if event.get("type") == "StasisStart":
                        task = asyncio.create_task(go_on(event["channel"]["id"]))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)

        app = asyncio.create_task(serve())
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, app.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await app
        await ari.aclose()

    asyncio.run(main())
    return 0


# Other forms of callgate's AMI user, to weigh its parts: the same events chosen by name (Asterisk
# 20.11/21.6/22.1 and later: no regular expression over every event), and one without the call class
# (then Asterisk builds no call event for it: the Cdr and the trunk's user event only).
USER = "secret=s\ndeny=0.0.0.0/0.0.0.0\npermit=127.0.0.1/255.255.255.255\nwrite=system\n"
MANAGERS = f"""
[by-name]
{USER}read=cdr,call,user,system
eventfilter(action(include),name(Cdr))=
eventfilter(action(include),name(DialEnd))=
eventfilter(action(include),name(Hangup))=
eventfilter(action(include),name(UserEvent),header(UserEvent),method(exact))=CallgateTrunk
[cdr-user]
{USER}read=cdr,user,system
eventfilter(action(include),name(Cdr))=
eventfilter(action(include),name(UserEvent),header(UserEvent),method(exact))=CallgateTrunk
"""


@contextlib.asynccontextmanager
async def callgate_ami(
    rig: bg.Rig, user: str = "callgate", secret: str = CALLGATE_AMI_SECRET
) -> AsyncIterator[None]:
    """callgate's AMI user (or ``user``), logged in and reading its events, as the spend feed does."""
    conn = await AmiConnection.open("127.0.0.1", rig.ast.ami_port, user, secret)

    async def drain() -> None:
        with contextlib.suppress(Exception):
            async for _ in conn.events():
                pass

    reader = asyncio.create_task(drain())
    try:
        yield
    finally:
        reader.cancel()
        await conn.close()


def row(rig: bg.Rig, name: str, *, set_variables: bool, ami: str) -> str:
    env = {**os.environ, "BENCH_ARI_URL": rig.ast.ari_url, "BENCH_ARI_USER": rig.ast.ari_user}
    env["BENCH_ARI_PASSWORD"] = rig.ast.ari_password
    args = [
        sys.executable,
        "-m",
        "bench.asterisk_parts",
        "--app",
        *(["--set"] if set_variables else []),
    ]
    proc = subprocess.Popen(args, env=env, cwd=bg.ROOT)
    try:
        if not wait_until(lambda: app_registered(rig.ast, bg.NULL_APP), 20):
            raise RuntimeError("the app did not register")

        async def loop() -> bg.Loop:
            reading = (
                callgate_ami(rig, ami, "s" if ami != "callgate" else CALLGATE_AMI_SECRET)
                if ami
                else contextlib.nullcontext()
            )
            async with reading:
                closed, _ = await bg.measure(rig, bg.NULL_APP, proc.pid, CALLS, 32, open_loop=False)
                return closed

        closed = asyncio.run(loop())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    cpu = "  ".join(f"{k} {v / CALLS * 1000:.2f}" for k, v in closed.cpu.items())
    return f"parts    {name:44s} {closed.rate:7,.0f} calls/s  CPU ms a call: {cpu}"


def main() -> int:
    with (
        tempfile.TemporaryDirectory() as tmp,
        bg.servers(Path(tmp), managers=MANAGERS) as (ast, url),
    ):
        rig = bg.Rig(ast, url, Path(tmp))
        rows = (
            ("do-nothing: continue", False, ""),
            ("+ callgate's AMI user reading", False, "callgate"),
            ("+ that user, events chosen by name", False, "by-name"),
            ("+ an AMI user reading cdr and user only", False, "cdr-user"),
            ("+ callgate's ARRAY() of 8 variables", True, ""),
        )
        for _ in range(ROUNDS):
            for name, set_variables, ami in rows:
                print(row(rig, name, set_variables=set_variables, ami=ami), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--app"]:
        sys.exit(run_app("--set" in sys.argv))
    sys.exit(main())
