"""``cmschat serve`` whose admission is always full: every send is refused ``busy``.

Not run by hand: ``refusal_cost.py`` starts its second server through it, to measure what
a refusal costs the server.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    """``full_admission.py serve --host H --port P``."""
    import cmschat.admission
    import cmschat.cli

    real_init = cmschat.admission.Admission.__init__

    def full(self: cmschat.admission.Admission, limit: int, **kwargs: Any) -> None:
        real_init(self, limit, **kwargs)
        self.in_flight = limit  # as if ``limit`` sends were being stored, for ever

    cmschat.admission.Admission.__init__ = full  # type: ignore[method-assign]
    sys.argv = ["cmschat", *sys.argv[1:], "--workers", "1"]
    cmschat.cli.main()


if __name__ == "__main__":
    main()
