"""``callgate explain`` for people: money as money, each spend cap as what is left of it in words;
``--json`` keeps the engine's exact details (issue 13, part 4)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from callgate.cli import main
from callgate.offline.report import _in_words, money

AT = ["--at", "2026-11-30T10:00:00-05:00"]  # a Monday in office hours, New York


def test_explain_says_what_is_left_of_each_cap(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--from", "1001", "2125550123", *AT]) == 0
    out = capsys.readouterr().out
    assert "reserving 1.20 USD" in out
    assert "40.00 USD left today of 40.00 (0.00 committed)" in out
    assert "15.00 USD left this hour of 15.00 (0.00 committed)" in out
    assert "400.00 USD left this month of 400.00 (0.00 committed)" in out
    assert ".000000" not in out  # no six-decimal money where a person reads it


def test_explain_json_keeps_the_exact_details(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--from", "1001", "2125550123", *AT, "--json"]) == 0
    rules = {r["rule"]: r["detail"] for r in json.loads(capsys.readouterr().out)["rules"]}
    assert rules["limits.spend.day"] == "0.000000 of 40.000000 committed"
    assert json.loads(json.dumps(rules))  # plain strings


@pytest.mark.parametrize(
    ("rule", "detail", "words"),
    [
        ("limits.spend.day", "12.300000 of 40.000000 committed", "27.70 USD left today of 40.00 (12.30 committed)"),
        ("limits.spend.hour", "15.500000 of 15.000000 committed", "0.00 USD left this hour of 15.00 (15.50 committed)"),
        ("site_limits.spend.month", "0.001234 of 3000.000000 committed (provider acme, all its tenants)",
         "2999.998766 USD left this month of 3000.00 (0.001234 committed) (provider acme, all its tenants)"),
        ("limits.spend.day", "1.000000 of 2.000000 committed (mode: report)",
         "1.00 USD left today of 2.00 (1.00 committed) (mode: report)"),
        ("limits.calls_per_hour", "3 of 60", "3 of 60"),
        ("limits.spend.day", "not counted", "not counted"),
    ],
)  # fmt: skip
def test_spend_details_in_words(rule: str, detail: str, words: str) -> None:
    assert _in_words(rule, detail, "USD") == words


def test_money_reads_as_money() -> None:
    assert money(Decimal("12.3"), "USD") == "12.30 USD"
    assert money(Decimal("0.001234")) == "0.001234"
    assert money(Decimal("3000.000000")) == "3000.00"
