"""``cmschat serve`` with cProfile switched on by SIGUSR1 and off (stats written) by SIGUSR2.

Not run by hand: ``bench/ws_instructions.py --profile PATH`` starts the server through it
and profiles only the counted stretch (the event loop's thread: where the WebSocket layer
runs). Stats go to ``$BENCH_PROFILE_OUT`` (pstats format)::

    .venv/bin/python -c "import pstats; pstats.Stats('PATH').sort_stats('tottime').print_stats(40)"
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from types import FrameType

_profile = cProfile.Profile()


def _start(signum: int, frame: FrameType | None) -> None:
    _profile.enable()


def _stop(signum: int, frame: FrameType | None) -> None:
    _profile.disable()
    _profile.dump_stats(os.environ["BENCH_PROFILE_OUT"])


def main() -> None:
    """Run ``cmschat`` with the arguments given, the two signals installed."""
    from cmschat.cli import main as cmschat

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    sys.argv = ["cmschat", *sys.argv[1:]]
    sys.exit(cmschat())


if __name__ == "__main__":
    main()
