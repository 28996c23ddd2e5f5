"""The readiness log: one line when a dependency goes down, reminders, one when it is back."""

from __future__ import annotations

import logging

import pytest

from cmschat.observability.health import ReadinessLog


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == "cmschat.observability.health"
    ]


def test_a_probe_every_5_s_during_a_12_minute_outage_writes_four_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cmschat.observability.health")
    ticks = Ticks()
    readiness = ReadinessLog(remind_every=300, now=ticks)
    for _ in range(12 * 60 // 5):
        readiness.down("redis", "unreachable (ConnectionError)")
        readiness.up("database")  # healthy checks say nothing
        ticks.now += 5
    readiness.up("redis")
    said = lines(caplog)
    assert [level for level, _ in said] == [
        logging.WARNING,
        logging.WARNING,
        logging.WARNING,
        logging.INFO,
    ]
    assert said[0][1] == "readiness: redis unreachable (ConnectionError)"
    assert "still unreachable (ConnectionError) after 300 s (60 failed probes" in said[1][1]
    assert said[3][1] == "readiness: redis is back after 720 s"


def test_each_dependency_is_reported_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    readiness = ReadinessLog(now=Ticks())
    readiness.down("database", "unreachable (OSError)")
    readiness.down("storage", "unreachable (PermissionError)")
    readiness.down("database", "unreachable (OSError)")
    assert [text for _, text in lines(caplog)] == [
        "readiness: database unreachable (OSError)",
        "readiness: storage unreachable (PermissionError)",
    ]


def test_a_dependency_that_comes_back_and_fails_again_is_reported_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    readiness = ReadinessLog(now=Ticks())
    readiness.down("database", "unreachable (OSError)")
    readiness.up("database")
    readiness.down("database", "unreachable (OSError)")
    warnings = [text for level, text in lines(caplog) if level == logging.WARNING]
    assert len(warnings) == 2
