"""``callgate doctor``: which trunk dials of the live dialplan can a call reach without the gate?

It reads the dialplan one of two ways and hands it to :func:`callgate.ops.doctor.paths.audit`:

- ``--dialplan FILE``: the output of ``asterisk -rx "dialplan show"`` (``-`` for standard input), for a
  box doctor cannot log in to, or a dump taken earlier. The CLI cuts a line at 1023 characters and hides
  the label of priority 1; doctor says so where it matters.
- ``--ami``: the AMI action ``ShowDialPlan``, whole lines and every label. Asterisk lets a manager user
  run it with ``write = reporting`` (or ``config``, which also lets it rewrite configuration files): the
  shipped ``callgate`` user has neither, and should not get it. Give doctor its own user
  (docs/operations.md). The host, port and user are the ``[ami]`` settings' (``--ami-host``,
  ``--ami-port``, ``--ami-user`` or their ``CALLGATE_AMI_*`` variables); the secret is read only from
  ``CALLGATE_AMI_SECRET``, never from the command line, where ``ps`` would show it.

One line per finding (``--json``: one document), then a summary. Exit status: 0 when no finding counts,
1 when one does (a ``high`` or ``unknown`` one; ``low`` findings are reported and do not count), 2 when
the dialplan could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from callgate.asterisk.ami import READ_LIMIT, TERMINATOR, action, parse_message
from callgate.errors import AmiUnavailable, CallgateError
from callgate.ops.doctor.dialplan import Dialplan, read_ami, read_show
from callgate.ops.doctor.paths import BUILT_IN_EMERGENCY, Options, Report, audit
from callgate.settings import setting

AMI_HOST, AMI_PORT = setting("ami", "host"), setting("ami", "port")
AMI_USER, AMI_SECRET = setting("ami", "user"), setting("ami", "secret")
ARI_APP = setting("ari", "app")
AMI_TIMEOUT = 30.0  # a FreePBX dialplan is tens of thousands of priorities


def read_file(path: str) -> Dialplan:
    """A ``dialplan show`` dump from a file, or from standard input for ``-``."""
    if path == "-":
        return read_show(sys.stdin.read(), "<stdin>")
    return read_show(Path(path).read_text(encoding="utf-8", errors="replace"), path)


async def read_live(
    host: str, port: int, user: str, secret: str, *, timeout: float = AMI_TIMEOUT
) -> Dialplan:
    """The live dialplan through AMI ``ShowDialPlan`` (a login without events, one action)."""
    where = f"AMI {host}:{port}"
    events: list[dict[str, str]] = []
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
            try:
                await reader.readline()  # "Asterisk Call Manager/x.y.z"
                writer.write(action("Login", "login", Username=user, Secret=secret, Events="off"))
                reply = parse_message(await reader.readuntil(TERMINATOR))
                if reply.get("Response") != "Success":
                    raise AmiUnavailable(
                        f"{where}: login as {user!r} refused: {reply.get('Message')}"
                    )
                writer.write(action("ShowDialPlan", "doctor"))
                while True:
                    message = parse_message(await reader.readuntil(TERMINATOR))
                    if message.get("ActionID") != "doctor":
                        continue
                    if message.get("Response") == "Error":
                        raise CallgateError(_refused(where, user, message.get("Message")))
                    if message.event == "ListDialplan":
                        events.append(message.headers)
                    elif message.event == "ShowDialPlanComplete":
                        break
                writer.write(action("Logoff", "bye"))
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise AmiUnavailable(f"{where}: {exc!r}") from exc
    return read_ami(events, where)


def _refused(where: str, user: str, message: str) -> str:
    if "permission" not in message.lower():
        return f"{where}: ShowDialPlan failed: {message}"
    return (
        f"{where}: the AMI user {user!r} may not run ShowDialPlan ({message}). Asterisk allows it "
        "to a manager.conf user with write = reporting: give doctor a user of its own "
        "(docs/operations.md, section 2), or use --dialplan FILE with the output of "
        'asterisk -rx "dialplan show"'
    )


def render_text(report: Report) -> str:
    lines = [f.text() for f in report.findings]
    counted = [f for f in report.findings if f.counts]
    by = ", ".join(
        f"{sum(1 for f in report.findings if f.severity == s)} {s}"
        for s in ("high", "unknown", "low")
        if any(f.severity == s for f in report.findings)
    )
    verdict = (
        f"{len(report.findings)} finding{'s' * (len(report.findings) != 1)} ({by})"
        if report.findings
        else "no trunk dial is reachable around the gate"
    )
    lines.append(
        f"callgate doctor: {report.source}: {report.contexts} contexts, {report.priorities} "
        f"priorities; calls start in {', '.join(report.entries) or 'no context'}"
        + (
            f" and may start in {len(report.assumed)} more that the dialplan jumps to"
            if report.assumed
            else ""
        )
        + f"; {verdict}"
        + ("" if counted or not report.findings else " (none counts)")
    )
    if report.missing:
        lines.append(f"callgate doctor: named but not in the dialplan: {', '.join(report.missing)}")
    if report.cut:
        lines.append(
            f"callgate doctor: {report.cut} lines cut short by the CLI at 1023 characters "
            "(--ami reads them whole)"
        )
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(
        {
            "source": report.source,
            "clean": report.clean,
            "contexts": report.contexts,
            "priorities": report.priorities,
            "entries": list(report.entries),
            "assumed": list(report.assumed),
            "missing": list(report.missing),
            "cut": report.cut,
            "findings": [f.as_json() for f in report.findings],
        },
        indent=2,
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    emergency = set(BUILT_IN_EMERGENCY)
    if args.policy:
        from callgate.core.policyfile import load_policy_file

        emergency |= set(load_policy_file(args.policy).emergency)
    env = os.environ
    if args.ami:
        host = args.ami_host or env.get(AMI_HOST.env) or str(AMI_HOST.default)
        port_text = str(args.ami_port or env.get(AMI_PORT.env) or AMI_PORT.default)
        if not port_text.isdigit():
            raise CallgateError(f"{AMI_PORT.env}: expected a port number")
        user = args.ami_user or env.get(AMI_USER.env)
        if not user:
            raise CallgateError(
                f"--ami: which AMI user? give --ami-user NAME or set {AMI_USER.env}"
            )
        secret = env.get(AMI_SECRET.env)
        if not secret:
            raise CallgateError(
                f"--ami: set {AMI_SECRET.env} to the secret of AMI user {user!r} (never on the "
                "command line)"
            )
        plan = asyncio.run(read_live(host, int(port_text), user, secret))
    else:
        plan = read_file(args.dialplan)
    options = Options(
        app=args.app or env.get(ARI_APP.env) or str(ARI_APP.default),
        trunks=frozenset(args.trunk or ()),
        entries=frozenset(args.entry or ()),
        internal=frozenset(args.internal or ()),
        emergency=frozenset(emergency),
    )
    report = audit(plan, options)
    print(render_json(report) if args.json else render_text(report))
    return 0 if report.clean else 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``callgate doctor`` on the top-level sub-parsers."""
    doc = sub.add_parser(
        "doctor",
        help="find the trunk dials of the live dialplan that a call can reach around the gate",
    )
    source = doc.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dialplan", metavar="FILE", help='the output of asterisk -rx "dialplan show" ("-": stdin)'
    )
    source.add_argument(
        "--ami",
        action="store_true",
        help=f"read it with AMI ShowDialPlan (a user with write = reporting; secret in ${AMI_SECRET.env})",
    )
    doc.add_argument("--ami-host", help=f"default ${AMI_HOST.env} or {AMI_HOST.default}")
    doc.add_argument("--ami-port", type=int, help=f"default ${AMI_PORT.env} or {AMI_PORT.default}")
    doc.add_argument("--ami-user", help=f"default ${AMI_USER.env}")
    doc.add_argument(
        "--trunk",
        action="append",
        metavar="NAME",
        help="an endpoint, peer or Local context that is a trunk, for dials doctor cannot tell "
        "from a phone's (PJSIP/NAME); repeatable",
    )
    doc.add_argument(
        "--entry",
        action="append",
        metavar="CONTEXT",
        help="a context calls start in (an endpoint's, a DISA's, an Originate's) besides those "
        "doctor finds; repeatable",
    )
    doc.add_argument(
        "--internal",
        action="append",
        metavar="CONTEXT",
        help="a context no call starts in (only jumped to from gated paths); repeatable",
    )
    doc.add_argument(
        "--app", help=f"the gate's Stasis app (default ${ARI_APP.env} or {ARI_APP.default})"
    )
    doc.add_argument(
        "--policy",
        help="a policy file: its emergency numbers are emergency extensions too (besides "
        + ", ".join(sorted(BUILT_IN_EMERGENCY))
        + ")",
    )
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.set_defaults(run=cmd_doctor)
