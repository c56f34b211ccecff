"""Real servers for the test suite, started on 127.0.0.1 ports chosen here and stopped after; and
:func:`eventually`, the one way a test waits for something to happen."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

from redis.crc import key_slot

# How long a test waits for what it expects before it fails: generous, for a loaded shared machine.
# A deadline, never a measurement: how fast things happen is printed by `make bench`.
WAIT = 30.0


async def eventually(
    check: Callable[[], object], what: str | Callable[[], str] = "", seconds: float = WAIT
) -> Any:
    """Poll ``check`` (a function, or one that returns an awaitable) until what it returns is true,
    and return that; fail the test after ``seconds``, saying what was awaited (``what``: a string, or
    a function called only then, say for a log's tail)."""
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"still waiting after {seconds:g} s: {said or check}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], within: float = 15) -> None:
    """SIGTERM, then SIGKILL if it is still running ``within`` seconds later."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


@contextlib.contextmanager
def redis_server(workdir: Path, port: int | None = None) -> Iterator[str]:
    """A throw-away redis-server on a loopback port (free unless given); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run `make deps` (apt-get install redis-server)"
        )
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--protected-mode", "yes", "--loglevel", "warning"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, 10)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclasses.dataclass(frozen=True, slots=True)
class Cluster:
    """A running Redis Cluster: its masters' ports, and which one serves each hash slot."""

    ports: tuple[int, ...]
    slots: tuple[
        tuple[int, int, int], ...
    ]  # (first, last, the port of the master that serves them)

    def port_of(self, site: str) -> int:
        """The port of the master that holds every key of ``site`` (the slot of its hash tag)."""
        slot = key_slot(site.encode())
        return next(port for first, last, port in self.slots if first <= slot <= last)

    def sites(self, base: str) -> tuple[str, ...]:
        """One site name per master, in the order of :attr:`ports`: ``base`` itself on the master
        that holds it, else ``base-<n>`` with the first n that lands there."""
        found: dict[int, str] = {}
        for name in (base, *(f"{base}-{n}" for n in range(10_000))):
            found.setdefault(self.port_of(name), name)
            if len(found) == len(self.ports):
                return tuple(found[port] for port in self.ports)
        raise AssertionError(f"no site names {base}-<n> on every master: {found}")


def _cluster_state(cli: str, port: int) -> dict[str, str]:
    reply = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), "cluster", "info"],
        capture_output=True, text=True, timeout=5, check=False,
    )  # fmt: skip
    return dict(line.split(":", 1) for line in reply.stdout.split() if ":" in line)


def _cluster_slots(cli: str, port: int) -> tuple[tuple[int, int, int], ...]:
    reply = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), "--json", "cluster", "slots"],
        capture_output=True, text=True, timeout=5, check=True,
    )  # fmt: skip
    return tuple(
        sorted((int(a), int(b), int(master[1])) for a, b, master, *_ in json.loads(reply.stdout))
    )


@contextlib.contextmanager
def redis_cluster(workdir: Path, masters: int = 3, seconds: float = 60) -> Iterator[Cluster]:
    """A throw-away Redis Cluster of ``masters`` masters (no replicas) on loopback ports: one
    redis-server each in its own directory of ``workdir``, joined by ``redis-cli --cluster create``;
    yields once every node says ``cluster_state:ok`` and agrees on the slots. Every server is stopped
    on the way out, whatever happened."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError(
            "redis-server is not installed: run `make deps` (apt-get install redis-server)"
        )
    deadline = time.monotonic() + seconds
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    free: set[int] = set()
    while len(free) < 2 * masters:  # a port and a bus port each (port + 10000 may be taken)
        free.add(free_port())
    try:
        taken = sorted(free)
        for port, bus in zip(taken[:masters], taken[masters:], strict=True):
            home = workdir / str(port)
            home.mkdir(parents=True)
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--dir", str(home), "--protected-mode", "yes"]
            args += ["--loglevel", "warning", "--cluster-enabled", "yes"]
            args += ["--cluster-config-file", "nodes.conf", "--cluster-port", str(bus)]
            args += ["--cluster-node-timeout", "5000"]
            procs.append(Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            ports.append(port)
        for port, proc in zip(ports, procs, strict=True):
            _wait_for_port(port, proc, 10)
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        created = subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=seconds, check=False,
        )  # fmt: skip
        if created.returncode:
            raise RuntimeError(
                f"redis-cli --cluster create failed: {created.stdout}{created.stderr}"
            )
        while True:
            states = [_cluster_state(cli, port) for port in ports]
            if all(
                s.get("cluster_state") == "ok" and s.get("cluster_known_nodes") == str(masters)
                for s in states
            ):
                slots = {_cluster_slots(cli, port) for port in ports}
                if len(slots) == 1:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the cluster on {ports} is not ready after {seconds}s: {states}"
                )
            time.sleep(0.1)
        yield Cluster(tuple(ports), slots.pop())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def prometheus_server(
    binary: str, workdir: Path, config: str, seconds: float = WAIT
) -> Iterator[str]:
    """A throw-away Prometheus (``binary``) with the configuration ``config`` (YAML text), its data
    in ``workdir``, on a free loopback port; yields its URL once its /-/ready says so. Its log is
    ``workdir/prometheus.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(config, encoding="utf-8")
    port = free_port()
    args = [
        binary, f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]  # fmt: skip
    with (workdir / "prometheus.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_port(port, proc, seconds)
        deadline = time.monotonic() + seconds
        while not _answers(f"{url}/-/ready"):  # 503 while its storage opens
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prometheus is not ready; its log: {workdir / 'prometheus.log'}"
                )
            time.sleep(0.05)
        yield url
    finally:
        stop_process(proc)


def _answers(url: str) -> bool:
    """``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status) == 200
    except OSError:  # refused, or an HTTP error status
        return False
