"""A thin, typed ARI client over aiohttp: the REST calls callgate needs and the events websocket.

Why not a library: ari-py (PyPI ``ari``) imports swaggerpy, which is Python 2 only; the other ARI packages
on PyPI were found broken or unmaintained (docs/ari-client.md). ARI is a small REST API, so this module
speaks it directly, following the rules measured in the project notes:

* ``Authorization: Basic`` on REST and on the websocket upgrade;
* keep-alive below Asterisk's ``session_keep_alive`` (15 s) and a bounded connection pool (Asterisk allows
  100 HTTP sessions in all); a request that meets a connection Asterisk just closed is retried once;
* a websocket heartbeat, so a frozen Asterisk is noticed and the caller can reconnect;
* 404 and 409 on a channel mean "that channel is gone or has left Stasis", which is not an error for the
  gate: the methods return ``False``;
* REST over the events websocket: Asterisk 20.14, 21.9, 22.4 and later take ARI requests as
  ``RESTRequest`` messages on the websocket and answer each with a ``RESTResponse`` carrying its
  ``request_id``. While the events websocket is up on such an Asterisk (its version read with
  ``GET /asterisk/info``, then one ``asterisk/ping`` over the websocket), every request goes that way:
  no HTTP request to build, send and parse on either side (``make bench``: the HTTP path was most of the
  gate's own CPU). Otherwise, and while the websocket is down, requests go over HTTP as before.

Every aiohttp error leaves this module as :class:`~callgate.errors.AriUnavailable`, whose message says
what failed in words (:func:`_why`) and never quotes aiohttp's repr of the error: that repr carries the
request's headers, ``Authorization: Basic`` and so the password, with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, Self

import aiohttp

from callgate.asterisk.gate import Then
from callgate.errors import AriUnavailable

KEEPALIVE_SECONDS = 10.0  # under Asterisk's session_keep_alive of 15 s
POOL_LIMIT = 32  # Asterisk's sessionlimit is 100 for everyone
GONE = frozenset({404, 409})  # no such channel / channel not in Stasis

AriEvent = dict[str, Any]  # an ARI event (or REST object) as JSON; not an asterisk.events.Event
_Request = tuple[str, str, Mapping[str, str | int] | None]  # method, path, query parameters


# The first versions that take REST requests over the events websocket, per major version (later
# majors all do). Asterisk's version string is "22.10.1", "certified-20.7-cert5", "GIT-master-...".
REST_OVER_WEBSOCKET = {20: (20, 14), 21: (21, 9), 22: (22, 4)}
PROBE_SECONDS = 2.0  # how long the first request over a new websocket may take before HTTP is used
_VERSION = re.compile(r"(\d+)\.(\d+)")


def takes_rest_over_websocket(version: str) -> bool:
    """Whether an Asterisk of ``version`` (its ``system.version``) takes REST over the websocket."""
    found = _VERSION.search(version)
    if found is None:
        return False
    major, minor = int(found[1]), int(found[2])
    first = REST_OVER_WEBSOCKET.get(major)
    return (major, minor) >= first if first is not None else major > max(REST_OVER_WEBSOCKET)


class AriClient:
    """REST + events for one Stasis application."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        app: str,
        *,
        timeout: float = 5.0,
        rest_over_websocket: bool = True,
    ) -> None:
        self.base = url.rstrip("/")
        self.app = app
        token = aiohttp.encode_basic_auth(user, password)
        self._headers = {"Authorization": token}
        # never in a message, even if an error's text were to carry them
        self._secrets = tuple(s for s in (token.removeprefix("Basic "), password) if s)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._seconds = timeout
        self._session: aiohttp.ClientSession | None = None
        # REST over the events websocket (module docstring): the websocket while it takes requests,
        # and the requests sent over it that await their response, by request id
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._waiting: dict[str, asyncio.Future[tuple[int, Any]]] = {}
        self._ids = itertools.count(1)
        self.rest_over_websocket = rest_over_websocket  # False: always HTTP (the bench compares)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=POOL_LIMIT, keepalive_timeout=KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
        return self._session

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def over_websocket(self) -> bool:
        """Whether requests go over the events websocket now (else over HTTP)."""
        return self._ws is not None

    async def _request(
        self, method: str, path: str, params: Mapping[str, str | int] | None = None
    ) -> tuple[int, Any]:
        ws = self._ws
        if ws is not None:
            return await self._over(ws, method, path, params)
        return await self._http(method, path, params)

    async def _over(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None,
        *,
        seconds: float | None = None,
    ) -> tuple[int, Any]:
        """One request as a ``RESTRequest`` on the events websocket; its ``RESTResponse`` is handed
        over by the websocket's reader (:meth:`_read`)."""
        (answer,) = await self._pipelined(ws, [(method, path, params)], seconds=seconds)
        return answer

    async def _pipelined(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        requests: list[_Request],
        *,
        seconds: float | None = None,
    ) -> list[tuple[int, Any]]:
        """Requests sent one after the other without waiting, then their answers, in order. Asterisk
        carries out the requests of one websocket one at a time, in the order they came (the
        session's reader runs each to its end before it reads the next: res/ari/ari_websockets.c),
        so a later request sees what an earlier one did."""
        loop = asyncio.get_running_loop()
        sent: list[tuple[str, asyncio.Future[tuple[int, Any]]]] = []
        what = " then ".join(f"{method} {path}" for method, path, _ in requests)
        try:
            async with asyncio.timeout(self._seconds if seconds is None else seconds):
                for method, path, params in requests:
                    request_id = str(next(self._ids))
                    answer: asyncio.Future[tuple[int, Any]] = loop.create_future()
                    self._waiting[request_id] = answer
                    sent.append((request_id, answer))
                    message: dict[str, object] = {
                        "type": "RESTRequest",
                        "transaction_id": request_id,
                        "request_id": request_id,
                        "method": method,
                        "uri": path.lstrip("/"),
                    }
                    if params:
                        message["query_strings"] = [
                            {"name": k, "value": str(v)} for k, v in params.items()
                        ]
                    await ws.send_str(json.dumps(message))
                return [await answer for _, answer in sent]
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            raise self._unavailable(f"ARI {what} (websocket)", exc) from exc
        finally:
            for request_id, _ in sent:
                self._waiting.pop(request_id, None)

    def _answer(self, message: Mapping[str, Any]) -> None:
        answer = self._waiting.pop(str(message.get("request_id")), None)
        if answer is None or answer.done():
            return
        body = message.get("message_body")
        data = None
        if body and str(message.get("content_type", "")).startswith("application/json"):
            with contextlib.suppress(ValueError):
                data = json.loads(body)
        status = message.get("status_code")
        answer.set_result((status if isinstance(status, int) else 500, data))

    def _drop_waiting(self, why: str) -> None:
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(AriUnavailable(why))
        self._waiting.clear()

    async def _http(
        self, method: str, path: str, params: Mapping[str, str | int] | None = None
    ) -> tuple[int, Any]:
        url = f"{self.base}{path}"
        for attempt in (1, 2):
            try:
                async with self.session.request(method, url, params=params) as response:
                    body = await response.read()
                    data = (
                        json.loads(body)
                        if body and response.content_type == "application/json"
                        else None
                    )
                    return response.status, data
            except aiohttp.ServerDisconnectedError as exc:
                if attempt == 2:
                    raise self._unavailable(f"ARI {method} {path}", exc) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._unavailable(f"ARI {method} {path}", exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, what: str, exc: BaseException) -> AriUnavailable:
        text = f"{what}: {_why(exc)}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return AriUnavailable(text)

    async def _channel_call(
        self, method: str, path: str, params: Mapping[str, str | int] | None = None
    ) -> bool:
        return _applied((method, path, params), await self._request(method, path, params))

    # -- channels ---------------------------------------------------------------------------------

    async def apply(self, channel_id: str, variable: str, value: str, then: Then) -> bool:
        """Set the variable, then continue or hang up as ``then`` says: both requests in one go over
        the websocket (no wait for the first answer; Asterisk keeps their order), one after the other
        over HTTP. False when the channel had gone before the variable was set."""
        ws = self._ws
        if ws is None:
            if not await self.set_variable(channel_id, variable, value):
                return False
            await self._then(channel_id, then)
            return True
        requests = [self._set(channel_id, variable, value), self._next(channel_id, then)]
        answers = await self._pipelined(ws, requests)
        applied, _ = (_applied(r, a) for r, a in zip(requests, answers, strict=True))
        return applied

    @staticmethod
    def _set(channel_id: str, variable: str, value: str) -> _Request:
        return "POST", f"/channels/{channel_id}/variable", {"variable": variable, "value": value}

    @staticmethod
    def _next(channel_id: str, then: Then) -> _Request:
        if then.cause:
            return "DELETE", f"/channels/{channel_id}", {"reason_code": then.cause}
        where = (("context", then.context), ("extension", then.extension), ("label", then.label))
        return "POST", f"/channels/{channel_id}/continue", {k: v for k, v in where if v}

    async def _then(self, channel_id: str, then: Then) -> bool:
        method, path, params = self._next(channel_id, then)
        return await self._channel_call(method, path, params)

    async def set_variable(self, channel_id: str, variable: str, value: str) -> bool:
        return await self._channel_call(*self._set(channel_id, variable, value))

    async def continue_in_dialplan(
        self, channel_id: str, *, context: str = "", extension: str = "", label: str = ""
    ) -> bool:
        """Leave Stasis: at the next priority when nothing is given, else at context/extension/label."""
        return await self._then(channel_id, Then(context, extension, label))

    async def hangup(self, channel_id: str, *, cause: int) -> bool:
        """Hang up with a Q.850 cause (21: call rejected, which PJSIP sends as 403)."""
        return await self._then(channel_id, Then(cause=cause))

    async def set_global(self, variable: str, value: str) -> None:
        """Set an Asterisk global variable."""
        status, _ = await self._request(
            "POST", "/asterisk/variable", {"variable": variable, "value": value}
        )
        if status >= 300:
            raise AriUnavailable(f"ARI POST /asterisk/variable: HTTP {status}")

    async def version(self) -> str:
        """Asterisk's version (``GET /asterisk/info``), "" if it does not say."""
        status, data = await self._http("GET", "/asterisk/info", {"only": "system"})
        if status != 200 or not isinstance(data, dict):
            return ""
        system = data.get("system")
        return str(system.get("version", "")) if isinstance(system, dict) else ""

    async def channels(self) -> list[AriEvent]:
        """Every channel (reconcile). Over HTTP always: on a busy PBX the answer can be larger than
        a websocket message may be."""
        status, data = await self._http("GET", "/channels")
        if status != 200 or not isinstance(data, list):
            raise AriUnavailable(f"ARI GET /channels: HTTP {status}")
        return data

    # -- events -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def event_stream(
        self, *, heartbeat: float = 5.0
    ) -> AsyncIterator[AsyncIterator[AriEvent]]:
        """Connect the events websocket (the app is registered once this returns), then read events.

        The iterator ends by raising :class:`AriUnavailable` when the websocket closes or stops answering
        its heartbeat pings.
        """
        try:
            takes = self.rest_over_websocket and takes_rest_over_websocket(await self.version())
            ws = await self.session.ws_connect(
                f"{self.base}/events", params={"app": self.app}, heartbeat=heartbeat
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable("ARI events websocket", exc) from exc
        events: asyncio.Queue[AriEvent | AriUnavailable] = asyncio.Queue()
        reader = asyncio.create_task(self._read(ws, events), name="ARI websocket reader")
        try:
            if takes and await self._probe(ws):
                self._ws = ws
            yield _events(events)
        finally:
            self._ws = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._drop_waiting("ARI events websocket closed")
            await ws.close()

    async def _probe(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """One ``asterisk/ping`` over the new websocket: does this Asterisk answer REST there?"""
        try:
            status, _ = await self._over(ws, "GET", "/asterisk/ping", None, seconds=PROBE_SECONDS)
        except AriUnavailable:
            return False
        return status == 200

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, events: asyncio.Queue[AriEvent | AriUnavailable]
    ) -> None:
        """Read the websocket until it closes: hand each REST response to its request, queue each
        event, and last the reason it ended."""
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    try:
                        event = json.loads(message.data)
                    except ValueError:
                        continue  # never from Asterisk; not worth the reader
                    if not isinstance(event, dict):
                        continue
                    if event.get("type") == "RESTResponse":
                        self._answer(event)
                    else:
                        events.put_nowait(event)
            ended = AriUnavailable(f"ARI events websocket closed ({ws.close_code})")
        except (aiohttp.ClientError, TimeoutError) as exc:
            ended = AriUnavailable(f"ARI events websocket: {_why(exc)}")
        self._ws = None  # requests go over HTTP until the next websocket
        self._drop_waiting(str(ended))
        events.put_nowait(ended)


def _applied(request: _Request, answer: tuple[int, Any]) -> bool:
    """A channel request's answer: True done, False the channel is gone (or left Stasis); any other
    failure raises AriUnavailable."""
    (method, path, _), (status, data) = request, answer
    if status in GONE:
        return False
    if status >= 300:
        raise AriUnavailable(f"ARI {method} {path}: HTTP {status} {data}")
    return True


async def _events(events: asyncio.Queue[AriEvent | AriUnavailable]) -> AsyncIterator[AriEvent]:
    while True:
        event = await events.get()
        if isinstance(event, AriUnavailable):
            raise event
        yield event


def _why(exc: BaseException) -> str:
    """An aiohttp error in words, without its request (whose headers hold the password)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        hint = {
            401: "; check [ari] user and password",
            403: "; check the user's rights in ari.conf",
        }
        return f"HTTP {exc.status} {exc.message}{hint.get(exc.status, '')}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.strerror or type(exc).__name__})"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"{type(exc).__name__} ({exc.strerror or exc.errno})"
    return type(exc).__name__  # never str() or repr(): some carry the request
