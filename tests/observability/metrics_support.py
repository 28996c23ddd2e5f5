"""Reading the process's metrics in tests: values and series, before and after."""

from __future__ import annotations

from prometheus_client import REGISTRY


def value(name: str, **labels: str) -> float:
    """A sample's current value (0 if the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def series(prefix: str = "cmschat_") -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every series (name and labels) whose name starts with ``prefix``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name.startswith(prefix)
    }
