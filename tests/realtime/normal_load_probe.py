"""What "normal load" is for the overload test: p99 send -> deliver at fractions of capacity.

Not collected (run it by naming this file, ``-s`` to see the figures). The same server,
members and generator as ``test_overload.py``; capacity C, a warm-up, then open-loop
phases at ``FRACTIONS`` of C, the first again at the end to see drift.
docs/performance.md, "Normal load for the overload test", has the figures and the choice
they led to.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realtime.crowd import percentile
from tests.realtime.overload_setup import ROOM_SIZE, p99_of, scenario

pytestmark = pytest.mark.slow

FRACTIONS = (0.05, 0.10, 0.20, 0.05)
PHASE_SECONDS = 8.0
WARM_UP = (0.05, 5.0)
"""Left out of the figures: the first phase after the capacity phase (its ~10,000 sends)
had a p99 several times the same rate's later on."""
SETTLE_SECONDS = 1.0
"""The first second of a phase is left out (the rate changes under sends still in flight)."""


async def test_p99_at_fractions_of_capacity(tmp_path: Path) -> None:
    async with scenario(tmp_path) as run:
        capacity = await run.capacity()
        run.progress.say(f"capacity {capacity:.0f} msg/s")
        await run.offer(WARM_UP[0] * capacity, WARM_UP[1])
        run.progress.say("warmed up")
        phases = []
        for fraction in FRACTIONS:
            phases.append((fraction, await run.offer(fraction * capacity, PHASE_SECONDS)))
            run.progress.say(f"{fraction:.0%} of C done")
        report = await run.report()
    for fraction, phase in phases:
        judged = phase.start + SETTLE_SECONDS
        latencies = [lat for sent, lat in report.deliveries if judged <= sent < phase.end]
        print(
            f"{fraction:.0%} of C = {fraction * capacity:.0f} msg/s: "
            f"{len(latencies) // ROOM_SIZE} sends, "
            f"p50 {percentile(latencies, 50) * 1000:.1f} ms, "
            f"p99 {p99_of(report.deliveries, judged, phase.end) * 1000:.1f} ms, "
            f"max {max(latencies, default=0.0) * 1000:.1f} ms, "
            f"generator lag {phase.lag * 1000:.0f} ms",
            flush=True,
        )
    print({k: (round(s, 2), round(g, 2)) for k, (s, g) in run.progress.shares.items()})
