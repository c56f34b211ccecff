"""``make bench``, the FastAGI door: in the same run and on the same Asterisk as bench/gate.py's Stasis
rows, three AGI rows, each with the same calls, closed loop and open loop:

* ``do-nothing FastAGI``: a FastAGI server that reads the environment and ends the session (the
  dialplan goes on), in a process of its own (``python -m bench.agi --null``): the floor of the door;
* ``callgate FastAGI``: ``callgate serve`` with ``[ari] url`` empty and ``[agi] listen`` set, as an
  Asterisk without ARI runs it (the emergency globals through AMI), on the same Redis and policy as
  its ARI row;
* ``AGI script``: the peer a user would write instead, ``AGI(/path/bench-agi.sh)``, one process per
  call: a ``/bin/sh`` script that runs ``redis-cli INCR`` once and sets CALLGATE_VERDICT. Shell and
  redis-cli because that is the cheapest such script one would write: a Python one would first pay
  its interpreter's start (about 20 ms on this machine) and measure Python rather than AGI. Its CPU
  is counted in Asterisk's (the children Asterisk reaped: /proc/<pid>/stat cutime and cstime).

The dialplan is bench/gate.py's, ``AGI()`` in the place of ``Stasis()``: *in the app* is then the
time in ``AGI()``, from the channel's clock right before it to right after it returns (or to the
``h`` extension when callgate hung the channel up).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.asterisk_rig import AsteriskInstance
from tests.e2e import Callgate, callgate_env, wait_until
from tests.servers import stop_process

ROOT = Path(__file__).resolve().parent.parent
NULL, GATE, SCRIPT = "agi-null", "agi-gate", "agi-script"

# bench/gate.py's context, with AGI() for Stasis() (the same arguments) and AGISTATUS for STASISSTATUS
CONTEXT = """\
[bench-{name}]
exten => _X.,1,Set(BENCH_T0=${{STRFTIME(,,%s.%6q)}})
 same => n,Set(CALLGATE_VERDICT=)
 same => n,AGI({target},${{EXTEN}},ext=${{CALLERID(num)}},call=${{CHANNEL(linkedid)}})
 same => n,Set(BENCH_T1=${{STRFTIME(,,%s.%6q)}})
 same => n,UserEvent(BenchCall,Id: ${{BENCH_ID}},Chan: ${{UNIQUEID}},T0: ${{BENCH_T0}},T1: ${{BENCH_T1}},End: ${{AGISTATUS}})
 same => n,Hangup()
exten => h,1,GotoIf($["${{BENCH_T1}}" != ""]?done)
 same => n,UserEvent(BenchCall,Id: ${{BENCH_ID}},Chan: ${{UNIQUEID}},T0: ${{BENCH_T0}},T1: ${{STRFTIME(,,%s.%6q)}},End: hangup/${{HANGUPCAUSE}})
 same => n(done),NoOp()

"""

# The per-call script: read the environment (up to its blank line), count the call, answer.
SCRIPT_TEXT = """\
#!/bin/sh
while read -r line && [ -n "$line" ]; do :; done
redis-cli -p {port} INCR bench:agi-script >/dev/null
echo "SET VARIABLE CALLGATE_VERDICT ALLOW"
read -r reply
"""


def extensions(gate_port: int, null_port: int, script: Path) -> str:
    return (
        CONTEXT.format(name=NULL, target=f"agi://127.0.0.1:{null_port}/callgate")
        + CONTEXT.format(name=GATE, target=f"agi://127.0.0.1:{gate_port}/callgate")
        + CONTEXT.format(name=SCRIPT, target=str(script))
    )


def write_script(path: Path, redis_url: str) -> Path:
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    path.write_text(SCRIPT_TEXT.format(port=port))
    path.chmod(0o755)
    return path


# -- the do-nothing FastAGI server ----------------------------------------------------------------


async def null_server(port: int) -> None:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while (await reader.readuntil(b"\n")) != b"\n":
                pass
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def run_null(port: int) -> int:
    """``python -m bench.agi --null PORT``: serve until SIGTERM."""

    async def main() -> None:
        task = asyncio.create_task(null_server(port))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0


class NullAgi:
    """The do-nothing FastAGI server as a child process."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.agi", "--null", str(port)], cwd=ROOT, env=os.environ
        )

    def stop(self) -> None:
        stop_process(self.proc)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def gate_agi(ast: AsteriskInstance, redis_url: str, policy: Path, port: int, log: Path) -> Callgate:
    """``callgate serve`` with the FastAGI door only (no ARI)."""
    env = callgate_env(
        ast,
        redis_url,
        policy,
        CALLGATE_ARI_URL="",
        CALLGATE_ARI_USER="",
        CALLGATE_ARI_PASSWORD="",
        CALLGATE_AGI_LISTEN=f"127.0.0.1:{port}",
    )
    gate = Callgate(env, log)
    gate.start()
    if not wait_until(lambda: listening(port), 20):
        gate.stop()
        raise RuntimeError(f"callgate's FastAGI door did not listen\n{gate.tail()}")
    return gate


if __name__ == "__main__":
    if sys.argv[1:2] == ["--null"]:
        sys.exit(run_null(int(sys.argv[2])))
