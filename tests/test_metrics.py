"""/metrics in Prometheus' text format and /health for the supervisor, from a real HTTP server."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from zoneinfo import ZoneInfo

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from callgate.engine import decide
from callgate.memstore import MemoryStore
from callgate.metrics import Metrics, MetricsServer
from callgate.policyfile import load_policy
from callgate.rules import CallAttempt
from tests.servers import free_port

POLICY = load_policy(
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8"), "p"
)
TUE = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))


async def test_metrics_and_health() -> None:
    """Decisions show up by verdict and reason; health is 503 until ARI and Redis are up."""
    metrics, port = Metrics(), free_port()
    store = MemoryStore()
    for number in ["2125550123", "011537123456"]:
        d = decide(POLICY, CallAttempt(number, "1001", number), store.admit_now, TUE)
        metrics.observe_decision(d, 0.002)
    server = MetricsServer(metrics, "127.0.0.1", port, lambda: {"policy_version": 3})
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as reply:
                text = await reply.text()
            async with http.get(f"http://127.0.0.1:{port}/health") as reply:
                down = (reply.status, await reply.json())
            metrics.set_link("ari", True)
            metrics.set_link("redis", True)
            async with http.get(f"http://127.0.0.1:{port}/health") as reply:
                up = (reply.status, await reply.json())
    finally:
        await server.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("callgate_decisions_total", (("reason", "allowed"), ("verdict", "ALLOW")))] == 1
    deny = (("reason", "country_not_allowed"), ("verdict", "DENY"))
    assert samples[("callgate_decisions_total", deny)] == 1
    assert samples[("callgate_decision_seconds_count", ())] == 2
    assert down[0] == 503
    assert down[1]["links"] == {"ari": "down", "ami": "down", "redis": "down"}
    assert up[0] == 200
    assert (up[1]["status"], up[1]["policy_version"]) == ("ok", 3)
