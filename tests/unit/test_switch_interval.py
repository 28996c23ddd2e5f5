"""``cmschat serve`` sets the process's GIL switch interval, and says so only when it is not
Python's own (CMSCHAT_GIL_SWITCH_INTERVAL_MS, docs/operations.md)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from cmschat.cli_server import PYTHON_SWITCH_INTERVAL_MS, apply_switch_interval


@pytest.fixture(autouse=True)
def restored_interval() -> Iterator[None]:
    """The test process keeps the interval it had."""
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_pythons_default_is_what_the_interpreter_starts_with() -> None:
    # A fresh interpreter's value; the test runner has not changed it.
    assert sys.getswitchinterval() * 1000 == pytest.approx(PYTHON_SWITCH_INTERVAL_MS)


def test_the_default_is_applied_without_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    sys.setswitchinterval(0.001)
    with caplog.at_level(logging.INFO, logger="cmschat.server"):
        apply_switch_interval(PYTHON_SWITCH_INTERVAL_MS)
    assert sys.getswitchinterval() == pytest.approx(0.005)
    assert caplog.records == []


def test_another_value_is_applied_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cmschat.server"):
        apply_switch_interval(0.25)
    assert sys.getswitchinterval() == pytest.approx(0.00025)
    assert [record.getMessage() for record in caplog.records] == [
        "GIL switch interval: 0.25 ms (Python's default: 5 ms)"
    ]
