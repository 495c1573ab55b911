"""Fixtures for real servers on loopback, shared by every test package.

They live in a plugin of the tests, not in ``rollbackd.testing``: the runtime
package (and the demo built on it) imports no test framework.
"""

import pytest

pytest_plugins = ["tests.plugins.rollbackd_fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A benchmark smoke run lives in tests/bench: scripts/test.sh collects only there for them."""
    strays = [
        i.nodeid
        for i in items
        if i.get_closest_marker("bench") and not i.nodeid.startswith("tests/bench/")
    ]
    if strays:
        raise pytest.UsageError(
            f"marked bench outside tests/bench (scripts/test.sh would miss them): {strays}"
        )
