"""``callgate``: the command line. Parses arguments, builds what a command needs, prints the result."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources

from callgate.core.origins import Origin
from callgate.core.policy import Policy
from callgate.errors import CallgateError, PolicyError


def _load(path: str | None) -> Policy:
    from callgate.core.policyfile import load_policy, load_policy_file

    if path:
        return load_policy_file(path)
    text = (
        resources.files("callgate").joinpath("data/default-policy.yaml").read_text(encoding="utf-8")
    )
    return load_policy(text, "<embedded default policy>")


def _when(text: str | None, policy: Policy) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SystemExit(
            f"callgate: --at {text!r} is not an ISO time such as 2026-11-20T23:30"
        ) from exc
    return at if at.tzinfo else at.replace(tzinfo=policy.site.timezone)


def cmd_policy_check(args: argparse.Namespace) -> int:
    from callgate.core.policysummary import describe

    policy = _load(args.file)
    print(f"{args.file}: ok (sha256:{policy.digest[:12]})")
    for line in describe(policy):
        print(f"  {line}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from callgate.core.engine import peeked
    from callgate.core.memo import Memo
    from callgate.core.plan import prepare
    from callgate.core.rules import CallAttempt
    from callgate.offline.report import explain_json, explain_text

    policy = _load(args.policy)
    at = _when(args.at, policy)
    attempt = CallAttempt(
        args.call_id, args.extension, args.number, origin=Origin(args.origin), via=args.via
    )
    prepared = prepare(Memo(policy), attempt, at)

    async def look() -> object:
        if prepared.admission is None:
            return None
        if args.redis:
            from callgate.store.redis import connect

            async with connect(args.redis) as store:
                return await store.peek(prepared.admission)
        from callgate.store.memory import MemoryStore

        return MemoryStore().read_now(prepared.admission)

    outcome = asyncio.run(look())
    decision = peeked(prepared, outcome)  # type: ignore[arg-type]
    print(explain_json(decision) if args.json else explain_text(decision, policy))
    return 0 if decision.allowed else 1


def cmd_replay(args: argparse.Namespace) -> int:
    import io
    import os

    from callgate.offline.cdr import CdrError, in_start_order, read_cdr
    from callgate.offline.replay import (
        INBOUND_CONTEXTS,
        TRANSFER_CONTEXTS,
        Filter,
        fewer_collections,
        replay,
    )
    from callgate.offline.report import replay_table
    from callgate.offline.summary import Summary

    policy = _load(args.policy)
    via = []
    for pair in args.via or ():
        key, equals, extension = pair.partition("=")
        if not (equals and key and extension):
            raise SystemExit(f"callgate: --via {pair!r} is not DID=EXT or TRUNK=EXT")
        via.append((key, extension))
    only = Filter(
        contexts=frozenset(args.context or ()),
        inbound=INBOUND_CONTEXTS | frozenset(args.inbound_context or ()),
        internal_digits=args.internal_digits,
        transfer=TRANSFER_CONTEXTS | frozenset(args.transfer_context or ()),
        forward=frozenset(args.forward_context or ()),
        trunks=frozenset(args.trunk or ()),
        via=tuple(via),
    )
    bad = 0

    def skip(error: CdrError) -> None:
        nonlocal bad
        bad += 1
        if bad <= 10:
            print(f"callgate: skipped {error}", file=sys.stderr)

    summary = Summary.of(policy)
    with (
        open(args.cdr, "rb") as raw,  # its tell(): the bytes read, for the progress line
        io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as f,
        fewer_collections(),
    ):
        rows = in_start_order(
            read_cdr(f, tz=policy.site.timezone, source=args.cdr, on_error=skip), source=args.cdr
        )
        results = replay(policy, rows, only=only)
        if sys.stderr.isatty():
            from callgate.offline.progress import Progress

            size = os.fstat(raw.fileno()).st_size
            shown = Progress(sys.stderr, size, raw.tell, every=args.progress_every)
            results = shown.wrap(results)
        if args.format == "jsonl":
            write, add = sys.stdout.write, summary.add
            if args.html:
                for r in results:
                    write(json.dumps(r.as_json(), separators=(",", ":")) + "\n")
                    add(r)
            else:
                for r in results:
                    write(json.dumps(r.as_json(), separators=(",", ":")) + "\n")
        else:
            replay_table(
                results, sys.stdout, summary, calls=args.calls, every=args.all, source=args.cdr
            )
    if args.html:
        from callgate.offline.html import report_html

        with open(args.html, "w", encoding="utf-8") as page:
            page.write(report_html(summary, policy, args.cdr))
        print(f"callgate: the report is in {args.html}", file=sys.stderr)
    if bad:
        print(f"callgate: {bad} unreadable rows skipped", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from callgate.ops.logs import setup_logging
    from callgate.serve import serve
    from callgate.settings import load_settings

    settings = load_settings(args.config, os.environ)
    setup_logging(settings)
    asyncio.run(serve(settings))
    return 0


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, read from its metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings, argparse.SUPPRESS, nargs=0, help="print callgate's version and exit"
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("callgate")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "unknown (not installed)"
        print(f"callgate {found}")  # on stdout, as argparse's own "version" action does
        parser.exit()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="callgate", description="A toll-fraud gate for Asterisk and FreePBX."
    )
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True)

    pol = sub.add_parser(
        "policy", help="policy files and the versions pushed to Redis"
    ).add_subparsers(dest="action", required=True)
    check = pol.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    check.set_defaults(run=cmd_policy_check)

    ex = sub.add_parser("explain", help="the decision for one call and every rule that took part")
    ex.add_argument("number", help="the dialled string, as the extension dialled it")
    ex.add_argument(
        "--from", dest="extension", required=True, help="the calling (or causing) extension"
    )
    ex.add_argument(
        "--origin",
        default="dialled",
        choices=[origin.value for origin in Origin],
        help="who caused the leg: the extension's phone (dialled, the default) or its forward, a "
        "transfer, DISA, voicemail, an IVR, an originate (judged by the policy's origins too)",
    )
    ex.add_argument("--via", default="", help="the inbound DID or trunk (recorded only)")
    ex.add_argument("--at", help="ISO time; without a zone, the site's time zone (default: now)")
    ex.add_argument("--policy", help="policy file (default: the embedded example policy)")
    ex.add_argument("--redis", help="read live counters from this Redis URL (never changes them)")
    ex.add_argument("--call-id", default="explain", help=argparse.SUPPRESS)
    ex.add_argument("--json", action="store_true", help="machine-readable output")
    ex.set_defaults(run=cmd_explain)

    rp = sub.add_parser("replay", help="replay an Asterisk Master.csv through a policy")
    rp.add_argument("cdr", help="cdr_csv Master.csv")
    rp.add_argument("--policy", help="policy file (default: the embedded example policy)")
    rp.add_argument("--format", choices=("table", "jsonl"), default="table")
    rp.add_argument(
        "--calls", action="store_true",
        help="table: after the summary, one line per denied or cut call",
    )  # fmt: skip
    rp.add_argument(
        "--all", action="store_true", help="table: after the summary, one line per call, every one"
    )
    rp.add_argument(
        "--html", metavar="FILE",
        help="also write the report as one self-contained HTML page (charts, top lists, tuning list)",
    )  # fmt: skip
    rp.add_argument("--progress-every", type=float, default=0.5, help=argparse.SUPPRESS)
    rp.add_argument("--context", action="append", help="only rows with this dcontext (repeatable)")
    rp.add_argument(
        "--internal-digits", type=int, default=5, help="dialled strings this short are internal"
    )
    rp.add_argument(
        "--via",
        action="append",
        metavar="DID=EXT",
        help="a call that came in on this DID (the inbound row's dst), or on this trunk, is for EXT: "
        "its forwards the CDR cannot tie to an extension are charged to EXT (repeatable)",
    )
    rp.add_argument(
        "--trunk", action="append", metavar="ENDPOINT", help="a trunk endpoint (repeatable; "
        "endpoints that bring calls into an inbound context are found without it)",
    )  # fmt: skip
    rp.add_argument(
        "--inbound-context", action="append", metavar="CONTEXT",
        help="one more dcontext of calls coming in from a trunk (repeatable)",
    )  # fmt: skip
    rp.add_argument(
        "--transfer-context", action="append", metavar="CONTEXT",
        help="one more dcontext of a transferred caller's leg, besides from-internal-xfer "
        "(plain Asterisk: your TRANSFER_CONTEXT; repeatable)",
    )  # fmt: skip
    rp.add_argument(
        "--forward-context", action="append", metavar="CONTEXT",
        help="a dcontext whose outbound legs are forwards (repeatable)",
    )  # fmt: skip
    rp.set_defaults(run=cmd_replay)

    from callgate.ops.admin import add_parsers

    add_parsers(sub, pol)

    from callgate.ops.doctor.command import add_parser as add_doctor

    add_doctor(sub)

    sv = sub.add_parser("serve", help="run the Stasis app and the AMI spend feed")
    sv.add_argument(
        "--config", help="TOML settings file; CALLGATE_<SECTION>_<KEY> variables override it"
    )
    sv.set_defaults(run=cmd_serve)
    return p


def _redis_problem(args: argparse.Namespace) -> str | None:
    """A Redis URL the command would use that cannot be used: one line naming where it came from
    (``--redis`` or ``CALLGATE_REDIS_URL``), never quoting the URL's password."""
    import os

    from callgate.ops.admin import redis_url
    from callgate.settings import redact_url, redis_url_problem

    if not hasattr(args, "redis"):
        return None
    if args.redis is None and args.run is cmd_explain:  # explain without --redis uses no Redis
        return None
    url, source = redis_url(args.redis, os.environ)
    problem = redis_url_problem(url)
    return f"{source}: {problem}; got {redact_url(url)!r}" if problem else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    bad_redis = _redis_problem(args)
    if bad_redis:
        print(f"callgate: {bad_redis}", file=sys.stderr)
        return 2
    try:
        return int(args.run(args))
    except PolicyError as exc:
        print(
            f"callgate: the policy cannot be used ({len(exc.problems)} problem{'s' * (len(exc.problems) != 1)}):",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except CallgateError as exc:
        print(f"callgate: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as exc:
        print(f"callgate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
