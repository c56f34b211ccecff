"""A real Asterisk for the test suite, on 127.0.0.1 ports chosen here, stopped after.

    prefix = asterisk_prefix()                      # builds once (docker/build-asterisk.sh), then cached
    with asterisk(prefix, tmp_path, dialplan=EXTENSIONS) as ast:
        ast.ari("GET", "/asterisk/info")            # -> (200, {...})
        ast.rx("core show channels")                # the CLI, through the control socket

Every file Asterisk reads or writes lives in `workdir` (configuration, logs, CDR files, astdb,
spool, control socket); only the modules, the binary and the sounds come from the prefix. The
generated pjsip.conf ends with `#tryinclude pjsip_custom.conf`, so a test adds endpoints through
`configs={"pjsip_custom.conf": ...}`; any other name in `configs` replaces or adds a whole file.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "docker" / "build-asterisk.sh"

# Config files that modules log an ERROR about when missing; empty is enough. With these, all
# the modules the build script selects autoload quietly and none binds a port of its own.
QUIET_EMPTY_CONFIGS = (
    "acl.conf",
    "ccss.conf",
    "cel.conf",
    "features.conf",
    "geolocation.conf",
    "pjproject.conf",
    "pjsip_notify.conf",
    "pjsip_wizard.conf",
    "stasis.conf",
    "udptl.conf",
    "websocket_client.conf",
)

_SUN_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes; keep a margin


class AsteriskRigError(RuntimeError):
    """Asterisk could not be built, started or stopped; the message carries the log tail."""


def asterisk_prefix(*, timeout: float = 3600) -> Path:
    """The install prefix of the test Asterisk; builds it on first use (minutes), then instant.

    `CALLGATE_ASTERISK_PREFIX` names an existing prefix and skips the build script.
    """
    preset = os.environ.get("CALLGATE_ASTERISK_PREFIX")
    if preset:
        prefix = Path(preset)
    else:
        try:
            done = subprocess.run(
                ["bash", str(BUILD_SCRIPT)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AsteriskRigError(f"{BUILD_SCRIPT} took more than {timeout}s") from exc
        if done.returncode != 0:
            tail = "\n".join(done.stderr.splitlines()[-40:])
            raise AsteriskRigError(f"{BUILD_SCRIPT} failed ({done.returncode}):\n{tail}")
        lines = done.stdout.strip().splitlines()
        if not lines:
            raise AsteriskRigError(f"{BUILD_SCRIPT} printed no prefix")
        prefix = Path(lines[-1])
    if not (prefix / "sbin" / "asterisk").is_file():
        raise AsteriskRigError(f"no sbin/asterisk under {prefix}")
    return prefix


@dataclass(frozen=True, slots=True)
class AsteriskInstance:
    """A running Asterisk: where it listens, how to log in, where it writes."""

    prefix: Path
    workdir: Path
    config: Path  # asterisk.conf, for `asterisk -C`
    http_port: int
    ami_port: int
    sip_port: int  # PJSIP UDP transport "transport-udp"
    ari_user: str
    ari_password: str
    ami_user: str
    ami_secret: str
    cdr_csv: Path  # cdr_csv's Master.csv (appears with the first CDR)
    log_path: Path  # messages.log: notice, warning, error and verbose

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/ari"

    @property
    def ari_authorization(self) -> str:
        """The value of an `Authorization` header for ARI."""
        token = base64.b64encode(f"{self.ari_user}:{self.ari_password}".encode()).decode()
        return f"Basic {token}"

    def rx(self, command: str, *, timeout: float = 10) -> str:
        """Run one CLI command through the control socket (`asterisk -rx`); returns its output."""
        args = [str(self.prefix / "sbin" / "asterisk"), "-C", str(self.config), "-rx", command]
        try:
            done = subprocess.run(
                args,
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_env(self.prefix),
            )
        except subprocess.TimeoutExpired as exc:
            raise AsteriskRigError(f"asterisk -rx {command!r}: no answer in {timeout}s") from exc
        if done.returncode != 0:
            raise AsteriskRigError(f"asterisk -rx {command!r} failed: {done.stderr or done.stdout}")
        return done.stdout

    def ari(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        timeout: float = 5,
    ) -> tuple[int, object]:
        """One ARI request (path below /ari); returns the status and the decoded JSON body."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        request = urllib.request.Request(self.ari_url + path + query, method=method)
        request.add_header("Authorization", self.ari_authorization)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, body = int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        decoded: object = json.loads(body) if body.strip() else None
        return status, decoded

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines) + _tail(self.workdir / "console.out", lines)


@contextlib.contextmanager
def asterisk(
    prefix: Path,
    workdir: Path,
    *,
    dialplan: str | Sequence[Path],
    configs: Mapping[str, str] | Callable[[AsteriskInstance], Mapping[str, str]] | None = None,
    noload: Sequence[str] = (),
    start_timeout: float = 60,
    http: bool = True,
) -> Iterator[AsteriskInstance]:
    """Start Asterisk from `prefix` with its whole state in `workdir`; stop it on exit.

    `dialplan` is the text of extensions.conf, or files that extensions.conf includes.
    `configs` maps file names to texts that replace or add whole config files (or is a function of
    the instance that returns that map, for files that need its ports and secrets).
    `noload` names modules (e.g. "app_stasis.so") that modules.conf keeps out.
    `http=False`: Asterisk's HTTP server (and so ARI) is off, as on FreePBX by default; then
    Asterisk is ready once its control socket says it is fully booted.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "run"
    short_run: str | None = None
    if len(str(run_dir / "asterisk.ctl")) > _SUN_PATH_MAX:
        short_run = tempfile.mkdtemp(prefix="ast-run-")
        run_dir = Path(short_run)
    for sub in ("log", "log/cdr-csv", "lib", "spool", "cache", "run"):
        (workdir / sub).mkdir(exist_ok=True)  # cdr_csv does not create its directory

    config = workdir / "asterisk.conf"
    instance = AsteriskInstance(
        prefix=prefix,
        workdir=workdir,
        config=config,
        http_port=free_port(),
        ami_port=free_port(),
        sip_port=_free_udp_port(),
        ari_user="callgate",
        ari_password="callgate-test",
        ami_user="callgate",
        ami_secret="callgate-test",
        cdr_csv=workdir / "log" / "cdr-csv" / "Master.csv",
        log_path=workdir / "log" / "messages.log",
    )
    files = render_configs(instance, run_dir=run_dir, dialplan=dialplan, noload=noload)
    files.update((configs(instance) if callable(configs) else configs) or {})
    if not http:
        files["http.conf"] = "[general]\nenabled = no\n"
    for name, text in files.items():
        (workdir / name).write_text(text)

    console = (workdir / "console.out").open("wb")
    proc = subprocess.Popen(
        [str(prefix / "sbin" / "asterisk"), "-C", str(config), "-f", "-n"],
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        env=_env(prefix),
        cwd=workdir,  # core files and relative paths stay in the work tree
        start_new_session=True,  # a Ctrl-C in pytest must not reach Asterisk first
    )
    try:
        _wait_ready(instance, proc, start_timeout, http=http)
        yield instance
    finally:
        _stop(instance, proc)
        console.close()
        if short_run is not None:
            shutil.rmtree(short_run, ignore_errors=True)


def render_configs(
    ast: AsteriskInstance,
    *,
    run_dir: Path,
    dialplan: str | Sequence[Path],
    noload: Sequence[str] = (),
) -> dict[str, str]:
    """The config tree for one instance, as file name -> text."""
    w = ast.workdir
    data = ast.prefix / "var" / "lib" / "asterisk"
    if isinstance(dialplan, str):
        extensions = dialplan
    else:
        extensions = "".join(f'#include "{Path(p).resolve()}"\n' for p in dialplan)
    noloads = "".join(f"noload => {m}\n" for m in noload)
    return dict.fromkeys(QUIET_EMPTY_CONFIGS, "") | {
        "asterisk.conf": f"""\
[directories]
astetcdir => {w}
astmoddir => {ast.prefix / "lib" / "asterisk" / "modules"}
astvarlibdir => {w / "lib"}
astdbdir => {w / "lib"}
astkeydir => {w / "lib"}
astdatadir => {data}
astagidir => {data / "agi-bin"}
astspooldir => {w / "spool"}
astrundir => {run_dir}
astlogdir => {w / "log"}
astsbindir => {ast.prefix / "sbin"}
astcachedir => {w / "cache"}

[options]
verbose = 3
debug = 0
nocolor = yes
hideconnect = yes
defaultlanguage = en
""",
        "modules.conf": f"[modules]\nautoload = yes\n{noloads}",
        "logger.conf": """\
[general]
dateformat = %F %T.%3q

[logfiles]
messages.log => notice,warning,error,verbose
""",
        "http.conf": f"""\
[general]
enabled = yes
bindaddr = 127.0.0.1
bindport = {ast.http_port}
""",
        "ari.conf": f"""\
[general]
enabled = yes

[{ast.ari_user}]
type = user
read_only = no
password = {ast.ari_password}
password_format = plain
""",
        "manager.conf": f"""\
[general]
enabled = yes
webenabled = no
bindaddr = 127.0.0.1
port = {ast.ami_port}

[{ast.ami_user}]
secret = {ast.ami_secret}
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = call,cdr,system,reporting
write = originate,system,call
""",
        # unanswered = yes: refused calls leave a CDR too, which the tests look for.
        "cdr.conf": """\
[general]
enable = yes
unanswered = yes

[csv]
usegmtime = no
loguniqueid = yes
loguserfield = yes
accountlogs = no
newcdrcolumns = yes
""",
        "cdr_manager.conf": """\
[general]
enabled = yes

[mappings]
linkedid => LinkedID
""",
        "pjsip.conf": f"""\
[global]
type = global
user_agent = callgate-test-asterisk

[transport-udp]
type = transport
protocol = udp
bind = 127.0.0.1:{ast.sip_port}

#tryinclude pjsip_custom.conf
""",
        "rtp.conf": "[general]\nrtpstart = 20000\nrtpend = 29999\n",
        "indications.conf": """\
[general]
country = us

[us]
description = United States / North America
ringcadence = 2000,4000
dial = 350+440
busy = 480+620/500,0/500
ring = 440+480/2000,0/4000
congestion = 480+620/250,0/250
""",
        "extensions.conf": extensions,
    }


def sip_endpoint(name: str = "sipp", *, context: str = "test") -> str:
    """pjsip_custom.conf text: an endpoint for calls coming from 127.0.0.1 (identified by IP)."""
    return f"""\
[{name}]
type = endpoint
context = {context}
disallow = all
allow = ulaw,alaw
transport = transport-udp

[{name}]
type = identify
endpoint = {name}
match = 127.0.0.1
"""


def sipp_call(
    ast: AsteriskInstance, exten: str, *, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """One call from SIPp's built-in `uac` scenario (INVITE, ACK, BYE) to `exten`.

    Exit status 0 means the call was answered and ended as the scenario expects.
    """
    sipp = shutil.which("sipp")
    if sipp is None:
        raise AsteriskRigError(
            "sipp is not installed (docker/build-asterisk.sh installs sip-tester)"
        )
    args = [sipp, "-sn", "uac", "-s", exten, f"127.0.0.1:{ast.sip_port}", "-i", "127.0.0.1"]
    args += ["-p", str(_free_udp_port()), "-mp", str(_free_udp_port()), "-m", "1"]
    args += ["-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin"]
    try:
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            cwd=ast.workdir,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AsteriskRigError(f"sipp did not finish within {timeout}s") from exc


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(prefix: Path) -> dict[str, str]:
    """The build sets an RPATH; LD_LIBRARY_PATH covers a prefix copied elsewhere."""
    paths = [str(prefix / "lib"), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(paths)}


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:]) + "\n"


def _wait_ready(
    ast: AsteriskInstance, proc: subprocess.Popen[bytes], seconds: float, *, http: bool = True
) -> None:
    """Until ARI answers /asterisk/info with 200 (without HTTP: the control socket answers) and
    the core says it is fully booted."""
    deadline = time.monotonic() + seconds
    while not http:
        if proc.poll() is not None:
            raise AsteriskRigError(
                f"asterisk exited with status {proc.returncode} while starting\n{ast.log_tail()}"
            )
        with contextlib.suppress(AsteriskRigError):
            ast.rx("core show version", timeout=2)
            break
        if time.monotonic() > deadline:
            raise AsteriskRigError(f"no control socket within {seconds}s\n{ast.log_tail()}")
        time.sleep(0.1)
    while http:
        if proc.poll() is not None:
            raise AsteriskRigError(
                f"asterisk exited with status {proc.returncode} while starting\n{ast.log_tail()}"
            )
        with contextlib.suppress(OSError, ValueError):
            status, _ = ast.ari("GET", "/asterisk/info", timeout=1)
            if status == 200:
                break
        if time.monotonic() > deadline:
            raise AsteriskRigError(
                f"ARI on 127.0.0.1:{ast.http_port} did not answer 200 within {seconds}s\n"
                f"{ast.log_tail()}"
            )
        time.sleep(0.1)
    left = max(deadline - time.monotonic(), 1.0)
    try:
        ast.rx("core waitfullybooted", timeout=left)
    except AsteriskRigError as exc:
        raise AsteriskRigError(f"{exc}\n{ast.log_tail()}") from exc


def _stop(ast: AsteriskInstance, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(AsteriskRigError):
            ast.rx("core stop now", timeout=10)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
