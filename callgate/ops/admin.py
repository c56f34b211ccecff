"""The admin commands that change or read a site's shared state in Redis.

``policy push / show / history / diff / rollback``, ``lock / unlock / locks``, ``panic / calm``. Each
needs the Redis URL (``--redis``, else ``CALLGATE_REDIS_URL``, else the default of ``[redis] url``) and
the site (``--site``, else ``CALLGATE_POLICY_SITE``; ``policy push`` reads it from the policy itself):
the same variables ``serve`` reads, named and defaulted by the settings table.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

from callgate.core.policy import EXTENSION_MAX, LockScope, Policy, is_extension
from callgate.errors import CallgateError, PolicyError, Problem
from callgate.ops.policystore import PolicyStore, diff, read_for_push
from callgate.settings import setting
from callgate.store.redis import RedisStore

T = TypeVar("T")
REDIS_URL = setting("redis", "url")  # --redis: else its environment variable, else its default
# Seconds a Redis connect or reply may take: an admin at a shell would rather wait for the answer (a
# policy push of megabytes of lists, the SCAN of `status`) than be told Redis is down. `serve` waits far
# less (callgate.serve.REDIS_TIMEOUT), so that a dead Redis never holds a call past its deadline.
REDIS_TIMEOUT = 5.0
SITE = setting("policy", "site")  # --site: else its environment variable
# status --health: the /health of a gate serving on the default [metrics] host and port
HEALTH = f"http://{setting('metrics', 'host').default}:{setting('metrics', 'port').default}/health"


def add_common(p: argparse.ArgumentParser, *, site: bool = True) -> None:
    p.add_argument("--redis", help=f"Redis URL (default: ${REDIS_URL.env} or {REDIS_URL.default})")
    if site:
        p.add_argument("--site", help=f"site name (default: ${SITE.env})")


def redis_url(given: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The Redis URL a command uses and where it comes from: ``--redis`` (``given``) when given,
    else ``CALLGATE_REDIS_URL`` when set and not empty, else the default of ``[redis] url``."""
    if given is not None:
        return given, "--redis"
    from_env = environ.get(REDIS_URL.env)
    if from_env:
        return from_env, REDIS_URL.env
    return str(REDIS_URL.default), f"the default of [{REDIS_URL.section}] {REDIS_URL.key}"


def _site(args: argparse.Namespace) -> str:
    site = getattr(args, "site", None) or os.environ.get(SITE.env)
    if not site:
        raise CallgateError(f"which site? give --site NAME or set {SITE.env}")
    return str(site)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _with_store(args: argparse.Namespace, work: Callable[[RedisStore], Awaitable[T]]) -> T:
    async def run() -> T:
        url, _ = redis_url(args.redis, os.environ)
        store = RedisStore.from_url(url, timeout=REDIS_TIMEOUT)
        try:
            return await work(store)
        finally:
            await store.aclose()

    return asyncio.run(run())


# --- policy versions ----------------------------------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    """Push one policy file, or many (a provider's sites): every file is read and validated first,
    and if any is refused nothing is pushed; then each goes to its own ``site.name``."""
    files: list[str] = list(args.file)
    if args.site and len(files) > 1:
        raise CallgateError(
            "--site names one site: push one file with it, or leave it out and each file goes to "
            "the site its site.name names"
        )
    read: list[tuple[str, str, Policy, dict[str, str]]] = []
    problems: list[Problem] = []
    for path in files:
        try:
            text, policy, lists = read_for_push(path)
        except PolicyError as exc:
            problems += exc.problems
            continue
        read.append((path, text, policy, lists))
    if problems:
        raise PolicyError(problems)  # every problem of every file; nothing was pushed
    sites = Counter(args.site or policy.site.name for _, _, policy, _ in read)
    twice = sorted(site for site, n in sites.items() if n > 1)
    if twice:
        raise CallgateError(f"two files name the same site: {', '.join(twice)}; nothing pushed")

    async def work(store: RedisStore) -> int:
        by, at = args.by or _who(), datetime.now(UTC)
        for path, text, policy, lists in read:
            site = args.site or policy.site.name
            result = await PolicyStore(store.client, site).push(text, path, lists, by=by, at=at)
            s = result.stored
            if result.created:
                print(
                    f"{site}: version {s.version} active (sha256:{s.digest[:12]}, "
                    f"{len(lists)} lists)"
                )
            else:
                print(f"{site}: unchanged, version {s.version} is already this policy")
        return 0

    return _with_store(args, work)


def cmd_show(args: argparse.Namespace) -> int:
    async def work(store: RedisStore) -> int:
        stored = await PolicyStore(store.client, _site(args)).get(args.version)
        if stored is None:
            print("no such version" if args.version else "no policy pushed yet", file=sys.stderr)
            return 1
        print(f"# version {stored.version}, sha256:{stored.digest[:12]}, pushed by "
              f"{stored.pushed_by} at {stored.pushed_at} from {stored.source}")  # fmt: skip
        sys.stdout.write(stored.text if stored.text.endswith("\n") else stored.text + "\n")
        return 0

    return _with_store(args, work)


def cmd_history(args: argparse.Namespace) -> int:
    async def work(store: RedisStore) -> int:
        ps = PolicyStore(store.client, _site(args))
        active = await ps.active_version()
        for s in await ps.versions():
            mark = "*" if s.version == active else " "
            print(f"{mark} v{s.version:<4} {s.pushed_at}  sha256:{s.digest[:12]}  "
                  f"{s.pushed_by}  {s.source}")  # fmt: skip
        activations = await ps.activations(args.last)
        if activations:
            print("activations (newest first):")
            for a in activations:
                print(f"  {a.at}  {a.action:<8} v{a.version}  by {a.by}")
        return 0

    return _with_store(args, work)


def cmd_diff(args: argparse.Namespace) -> int:
    async def work(store: RedisStore) -> int:
        ps = PolicyStore(store.client, _site(args))
        a, b = await ps.get(args.a), await ps.get(args.b)
        missing = [v for v, s in ((args.a, a), (args.b, b)) if s is None]
        if a is None or b is None:
            print(f"no such version: {', '.join(map(str, missing))}", file=sys.stderr)
            return 1
        sys.stdout.write(diff(a, b))
        return 0

    return _with_store(args, work)


def cmd_rollback(args: argparse.Namespace) -> int:
    async def work(store: RedisStore) -> int:
        site = _site(args)
        try:
            stored = await PolicyStore(store.client, site).rollback(
                args.version, by=args.by or _who(), at=datetime.now(UTC)
            )
        except KeyError:
            print(f"no such version: {args.version}", file=sys.stderr)
            return 1
        print(f"{site}: version {stored.version} active again (sha256:{stored.digest[:12]})")
        return 0

    return _with_store(args, work)


# --- locks and panic ----------------------------------------------------------------------------


def _extension(args: argparse.Namespace) -> str:
    """The extension to lock or unlock, refused unless it is one a policy can name (ASCII)."""
    extension = str(args.extension)
    if not is_extension(extension):
        raise CallgateError(
            f"{extension!a} is not an extension: an extension is ASCII letters, digits and "
            f"_ . @ # + -, 1 to {EXTENSION_MAX} characters (the gate refuses every other caller as "
            "unknown_extension; 1005 written in other digits is not 1005)"
        )
    return extension


def cmd_lock(args: argparse.Namespace) -> int:
    scope = LockScope.ALL if args.all else LockScope.INTERNATIONAL
    extension = _extension(args)

    async def work(store: RedisStore) -> int:
        await store.set_lock(_site(args), extension, scope)
        print(f"extension {extension} locked ({scope}) until `callgate unlock {extension}`")
        return 0

    return _with_store(args, work)


def cmd_unlock(args: argparse.Namespace) -> int:
    extension = _extension(args)

    async def work(store: RedisStore) -> int:
        site = _site(args)
        held = (await store.locks(site)).get(extension)
        await store.set_lock(site, extension, None)
        print(f"extension {extension} unlocked" if held else
              f"extension {extension} was not locked")  # fmt: skip
        return 0

    return _with_store(args, work)


def cmd_locks(args: argparse.Namespace) -> int:
    async def work(store: RedisStore) -> int:
        site = _site(args)
        locks = await store.locks(site)
        if await store.panic(site):
            print(
                "PANIC: every international call of the site is refused (`callgate calm` ends it)"
            )
        for ext in sorted(locks):
            print(f"{ext}\t{locks[ext]}")
        if not locks:
            print("no extension is locked")
        return 0

    return _with_store(args, work)


def cmd_panic(args: argparse.Namespace) -> int:
    async def work(store: RedisStore) -> int:
        site = _site(args)
        await store.set_panic(site, True)
        print(
            f"{site}: PANIC. International calls are refused; those in progress are being hung up."
        )
        return 0

    return _with_store(args, work)


def cmd_calm(args: argparse.Namespace) -> int:
    async def work(store: RedisStore) -> int:
        site = _site(args)
        await store.set_panic(site, False)
        print(f"{site}: panic over; the policy decides again")
        return 0

    return _with_store(args, work)


def _countries(given: Sequence[str]) -> list[str]:
    """ISO 3166 alpha-2 codes libphonenumber knows; anything else is refused, with the fix."""
    import phonenumbers

    for code in given:
        if code not in phonenumbers.SUPPORTED_REGIONS:
            fix = (
                f"; write {code.upper()!r}"
                if code.upper() in phonenumbers.SUPPORTED_REGIONS
                else ""
            )
            raise CallgateError(
                f"unknown country {code!a}: expected an ISO 3166 alpha-2 code such as GB{fix}"
            )
    return sorted(set(given))


def cmd_countries(args: argparse.Namespace) -> int:
    """The countries a leg no phone dialled may reach beyond the policy's own (rule new_country)."""
    learn, forget = _countries(args.learn or ()), _countries(args.forget or ())

    async def work(store: RedisStore) -> int:
        site = _site(args)
        if learn:
            await store.set_countries(site, learn, int(time.time()))
            print(f"{site}: learned {', '.join(learn)} (as if a call to each was answered now)")
        if forget:
            await store.set_countries(site, forget, None)
            print(f"{site}: forgot {', '.join(forget)}")
        if learn or forget:
            return 0
        learned = await store.countries(site)
        for code, at in sorted(learned.items()):
            print(f"{code}\tlast answered {datetime.fromtimestamp(at, UTC).isoformat()}")
        if not learned:
            print(f"{site}: no country learned yet (no answered call has settled)")
        print("(the site's own country and the policy's site.known_countries always count too)")
        return 0

    return _with_store(args, work)


def _status_all(args: argparse.Namespace) -> int:
    from callgate.ops.statusall import read_all
    from callgate.ops.statustext import all_json, render_all

    if args.policy or args.site:
        raise CallgateError(
            "--all reads every site with its own active policy: no --policy, --site"
        )

    async def work(store: RedisStore) -> int:
        found = await read_all(store.client, datetime.now(UTC))
        print(all_json(found) if args.json else render_all(found))
        return 0

    return _with_store(args, work)


def cmd_status(args: argparse.Namespace) -> int:
    from callgate.core.policyfile import load_policy_file
    from callgate.ops.status import fetch_health, read_status
    from callgate.ops.statustext import as_json, render_text

    if args.all:
        return _status_all(args)

    async def work(store: RedisStore) -> int:
        if args.policy:
            policy = load_policy_file(args.policy)
        else:
            stored = await PolicyStore(store.client, _site(args)).get()
            if stored is None:
                raise CallgateError("no policy in Redis for this site: give --policy FILE")
            policy = stored.load()
        status = await read_status(store.client, policy, datetime.now(UTC))
        health = await fetch_health(args.health) if args.health else None
        status = replace(status, health=health)
        print(as_json(status) if args.json else render_text(status))
        return 0

    return _with_store(args, work)


def _add_countries(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    co = sub.add_parser(
        "countries",
        help="countries the site has called, which forwards and other legs no phone dialled may reach",
    )
    add_common(co)
    co.add_argument("--learn", nargs="+", metavar="CC", help="add countries (ISO codes)")
    co.add_argument("--forget", nargs="+", metavar="CC", help="remove learned countries")
    co.set_defaults(run=cmd_countries)


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    pol: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register the admin commands on the top-level and ``policy`` sub-parsers."""
    push = pol.add_parser(
        "push", help="validate policy files and make each the active version of its site"
    )
    push.add_argument(
        "file", nargs="+", help="policy files; each goes to the site its site.name names"
    )
    push.add_argument("--by", help="who pushes (default: user@host)")
    add_common(push)
    push.set_defaults(run=cmd_push)

    show = pol.add_parser("show", help="print a stored version (default: the active one)")
    show.add_argument("version", nargs="?", type=int)
    add_common(show)
    show.set_defaults(run=cmd_show)

    hist = pol.add_parser("history", help="every stored version and the latest activations")
    hist.add_argument("--last", type=int, default=20, help="activations to list (default 20)")
    add_common(hist)
    hist.set_defaults(run=cmd_history)

    dif = pol.add_parser("diff", help="unified diff of two stored versions")
    dif.add_argument("a", type=int)
    dif.add_argument("b", type=int)
    add_common(dif)
    dif.set_defaults(run=cmd_diff)

    rb = pol.add_parser("rollback", help="make an earlier version active again")
    rb.add_argument("version", type=int)
    rb.add_argument("--by", help="who rolls back (default: user@host)")
    add_common(rb)
    rb.set_defaults(run=cmd_rollback)

    lock = sub.add_parser("lock", help="lock an extension (international calls; --all: every call)")
    lock.add_argument("extension")
    lock.add_argument(
        "--all", action="store_true", help="refuse every outbound call, not only abroad"
    )
    add_common(lock)
    lock.set_defaults(run=cmd_lock)

    unlock = sub.add_parser("unlock", help="lift an extension's lock")
    unlock.add_argument("extension")
    add_common(unlock)
    unlock.set_defaults(run=cmd_unlock)

    locks = sub.add_parser("locks", help="list locked extensions and the panic state")
    add_common(locks)
    locks.set_defaults(run=cmd_locks)

    panic = sub.add_parser(
        "panic", help="refuse every international call site-wide, hang up those up"
    )
    add_common(panic)
    panic.set_defaults(run=cmd_panic)

    st = sub.add_parser("status", help="live spend against caps, calls in flight, counters, locks")
    st.add_argument("--policy", help="the policy's caps (default: the active version in Redis)")
    st.add_argument(
        "--health",
        default=HEALTH,
        help="a running gate's /health URL ('' to skip; default %(default)s)",
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument(
        "--all",
        action="store_true",
        help="every site in this Redis, riskiest first, one line each (caps of each active policy)",
    )
    add_common(st)
    st.set_defaults(run=cmd_status)

    calm = sub.add_parser("calm", help="end a panic")
    add_common(calm)
    calm.set_defaults(run=cmd_calm)
    _add_countries(sub)
