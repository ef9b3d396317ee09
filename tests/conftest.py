"""Suite-wide ordering: the slow tests start first, so two xdist workers finish together."""

from __future__ import annotations


def pytest_collection_modifyitems(session, config, items):
    # A stable sort: slow tests (marked) first, everything else in its usual order after them.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
