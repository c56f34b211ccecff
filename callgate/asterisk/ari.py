"""A thin, typed ARI client over aiohttp: the REST calls callgate needs and the events websocket.

Why not a library: ari-py (PyPI ``ari``) imports swaggerpy, which is Python 2 only; the other ARI packages
on PyPI were found broken or unmaintained (docs/ari-client.md). ARI is a small REST API, so this module
speaks it directly, following the rules measured in the project notes:

* ``Authorization: Basic`` on REST and on the websocket upgrade;
* keep-alive below Asterisk's ``session_keep_alive`` (15 s) and a bounded connection pool (Asterisk allows
  100 HTTP sessions in all); a request that meets a connection Asterisk just closed is retried once;
* a websocket heartbeat, so a frozen Asterisk is noticed and the caller can reconnect;
* 404 and 409 on a channel mean "that channel is gone or has left Stasis", which is not an error for the
  gate: the methods return ``False``.

Every aiohttp error leaves this module as :class:`~callgate.errors.AriUnavailable`, whose message says
what failed in words (:func:`_why`) and never quotes aiohttp's repr of the error: that repr carries the
request's headers, ``Authorization: Basic`` and so the password, with it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Self

import aiohttp

from callgate.errors import AriUnavailable

KEEPALIVE_SECONDS = 10.0  # under Asterisk's session_keep_alive of 15 s
POOL_LIMIT = 32  # Asterisk's sessionlimit is 100 for everyone
GONE = frozenset({404, 409})  # no such channel / channel not in Stasis

AriEvent = dict[str, Any]  # an ARI event (or REST object) as JSON; not an asterisk.events.Event


class AriClient:
    """REST + events for one Stasis application."""

    def __init__(
        self, url: str, user: str, password: str, app: str, *, timeout: float = 5.0
    ) -> None:
        self.base = url.rstrip("/")
        self.app = app
        token = aiohttp.encode_basic_auth(user, password)
        self._headers = {"Authorization": token}
        # never in a message, even if an error's text were to carry them
        self._secrets = tuple(s for s in (token.removeprefix("Basic "), password) if s)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

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

    async def _request(
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
        status, data = await self._request(method, path, params)
        if status in GONE:
            return False
        if status >= 300:
            raise AriUnavailable(f"ARI {method} {path}: HTTP {status} {data}")
        return True

    # -- channels ---------------------------------------------------------------------------------

    async def set_variable(self, channel_id: str, variable: str, value: str) -> bool:
        params = {"variable": variable, "value": value}
        return await self._channel_call("POST", f"/channels/{channel_id}/variable", params)

    async def continue_in_dialplan(
        self, channel_id: str, *, context: str = "", extension: str = "", label: str = ""
    ) -> bool:
        """Leave Stasis: at the next priority when nothing is given, else at context/extension/label."""
        params = {
            k: v for k, v in (("context", context), ("extension", extension), ("label", label)) if v
        }
        return await self._channel_call("POST", f"/channels/{channel_id}/continue", params)

    async def hangup(self, channel_id: str, *, cause: int) -> bool:
        """Hang up with a Q.850 cause (21: call rejected, which PJSIP sends as 403)."""
        params = {"reason_code": cause}
        return await self._channel_call("DELETE", f"/channels/{channel_id}", params)

    async def set_global(self, variable: str, value: str) -> None:
        """Set an Asterisk global variable."""
        status, _ = await self._request(
            "POST", "/asterisk/variable", {"variable": variable, "value": value}
        )
        if status >= 300:
            raise AriUnavailable(f"ARI POST /asterisk/variable: HTTP {status}")

    async def channels(self) -> list[AriEvent]:
        status, data = await self._request("GET", "/channels")
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
            ws = await self.session.ws_connect(
                f"{self.base}/events", params={"app": self.app}, heartbeat=heartbeat
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable("ARI events websocket", exc) from exc
        try:
            yield _read_events(ws)
        finally:
            await ws.close()


async def _read_events(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[AriEvent]:
    try:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                event = json.loads(message.data)
                if isinstance(event, dict):
                    yield event
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AriUnavailable(f"ARI events websocket: {_why(exc)}") from exc
    raise AriUnavailable(f"ARI events websocket closed ({ws.close_code})")


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
