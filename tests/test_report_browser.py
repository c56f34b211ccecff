"""The replay report in a real browser: Debian's headless Chromium (``make deps`` installs it).

Two ways in, each for what it does best. ``--screenshot`` (the command line, as ``make report-picture``
takes the README's picture) renders the example's report at a desktop's and a phone's width into PNGs.
The phone layout is measured through the DevTools protocol (over aiohttp's websocket client, already a
dependency): ``Emulation.setDeviceMetricsOverride`` gives a real 390 px viewport (a headless window is
never narrower than 500 px, so ``--window-size`` alone cannot), and ``Runtime.evaluate`` reads the layout
as the browser computed it. Playwright would do the same for a 40 MB package and its own browser build.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "chromium"
# without these, Chromium waits on the network it cannot reach (updates, sync, QUIC probes)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium is not installed (make deps, or apt-get install chromium)",
)

# The layout as the browser laid it out: the viewport, how wide the page is (wider: the body scrolls
# sideways), the elements outside the viewport that are not inside a box of their own that scrolls,
# which chart shows and the height of its smallest label.
LAYOUT = """(() => {
  const w = window.innerWidth, root = document.documentElement;
  const shown = e => getComputedStyle(e).display !== "none" && e.getClientRects().length > 0;
  const outside = [...document.querySelectorAll("body *")].filter(e => shown(e)
    && !e.closest(".scroll") && e.getBoundingClientRect().right > w + 0.5)
    .map(e => e.tagName.toLowerCase() + "." + e.getAttribute("class"));
  const chart = [...document.querySelectorAll("svg.chart")].filter(shown);
  const labels = chart.flatMap(c => [...c.querySelectorAll("text")])
    .map(t => t.getBoundingClientRect().height);
  return {width: w, page: root.scrollWidth, outside: outside.slice(0, 10),
          chart: chart.map(c => c.getAttribute("class")), smallest: Math.min(...labels),
          tables: document.querySelectorAll(".scroll table").length};
})()"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    page = tmp_path_factory.mktemp("report") / "report.html"
    subprocess.run(
        [sys.executable, "-m", "callgate.cli", "replay", "--html", str(page), "examples/Master.csv"],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return page


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", head
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.parametrize(("width", "height"), [(1280, 2000), (390, 2400)])
def test_a_screenshot_of_the_report(report: Path, tmp_path: Path, width: int, height: int) -> None:
    """Chromium renders the page into a PNG of the window's size, not a blank one."""
    shot = tmp_path / "shot.png"
    start = time.monotonic()
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         f"--window-size={width},{height}", report.as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert png_size(shot) == (width, height)
    assert shot.stat().st_size > 30_000  # text, tables and the chart; a blank page is 3 kB


class DevTools:
    """The few DevTools protocol commands the layout test needs, on one page (a flat session)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.n, self.session = ws, 0, ""

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        message: dict[str, Any] = {"id": self.n, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        await self.ws.send_json(message)
        while True:  # events come between the answers
            answer = await self.ws.receive_json()
            if answer.get("id") == self.n:
                assert "error" not in answer, answer
                return answer["result"]  # type: ignore[no-any-return]

    async def open(self, url: str, width: int) -> None:
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self.session = attached["sessionId"]
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=844,
                        deviceScaleFactor=1, mobile=width < 600)  # fmt: skip
        await self.call("Page.navigate", url=url)
        for _ in range(200):
            state = await self.evaluate("document.readyState")
            if state == "complete":
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the page did not load")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


async def layout(page: Path, profile: Path, widths: list[int]) -> list[dict[str, Any]]:
    browser = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        active = profile / "DevToolsActivePort"  # the port it chose, and the browser's path
        for _ in range(300):
            if active.exists() and len(active.read_text().split()) == 2:
                break
            await asyncio.sleep(0.05)
        port, path = active.read_text().split()
        found = []
        async with aiohttp.ClientSession() as http:
            for width in widths:
                async with http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as ws:
                    tools = DevTools(ws)
                    await tools.open(page.as_uri(), width)
                    found.append(await tools.evaluate(LAYOUT))
        return found
    finally:
        browser.terminate()
        browser.wait(timeout=30)


async def test_the_report_is_usable_at_phone_width(report: Path, tmp_path: Path) -> None:
    """At 390 px the page does not scroll sideways (only a wide table does, inside its own box), the
    chart drawn for phones shows with labels a person can read; at 1280 px, the wide chart."""
    phone, desktop = await asyncio.wait_for(layout(report, tmp_path, [390, 1280]), 60)
    assert phone["width"] == 390
    assert phone["page"] <= 390, phone
    assert phone["outside"] == [], phone
    assert phone["chart"] == ["chart narrow"], phone
    assert phone["smallest"] >= 10, phone
    assert phone["tables"] >= 7
    assert desktop["width"] == 1280
    assert desktop["page"] <= 1280
    assert desktop["outside"] == []
    assert desktop["chart"] == ["chart wide"], desktop
    assert desktop["smallest"] >= 12, desktop
