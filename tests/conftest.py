"""Fixtures for real servers on loopback, shared by every test package.

They live in a plugin of the tests, not in ``rollbackd.testing``: the runtime
package (and the demo built on it) imports no test framework.
"""

import gc
import os

import pytest
from hypothesis import settings

# Property tests share two cores with the daemons and servers of other tests:
# a wall-clock deadline per example would measure the machine's load, not the
# code (one example took 323 ms once under load, 0.1 ms on replay).
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

# kubernetes-asyncio builds a TLS context for every API client, even for
# kubesim's plain http, and without a cluster CA in the kubeconfig that loads
# the system's CA bundle: 40 ms of CPU per client, two or more clients per
# kubesim test, in this process and in every daemon it starts. The tests
# speak TLS only to servers whose CA they name, so the bundle is never
# consulted; OpenSSL's own setting points it at an empty file (the CA
# directory, read lazily per lookup, stays as it was).
os.environ["SSL_CERT_FILE"] = os.devnull

pytest_plugins = ["tests.plugins.rollbackd_fixtures"]


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A test worker's heap dies with it: nothing left to walk at its end.

    pytest ends each session with full garbage collections (for late
    unraisable exceptions), and so does the interpreter's exit. After some
    sixty server tests a worker's collection took 0.5 to 1 s of CPU, and the
    dozen workers all end within the same seconds, on two cores: the last
    seconds of the run. Frozen objects are skipped by every collection, so
    only that last sweep is lost: an unraisable exception raised while a
    test runs is still reported with that test.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _refuse_stray_benchmarks(items)
    _long_files_first(items)


def _refuse_stray_benchmarks(items: list[pytest.Item]) -> None:
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


# Names a module imports, or fixtures a test asks for, when it runs the loopback
# stack, a daemon or Prometheus: such tests take 5 to 35 s each.
_SERVER_STARTERS = ("Stack", "DaemonProcess", "prometheus_factory")


def _long_files_first(items: list[pytest.Item]) -> None:
    """Modules whose tests start real servers or daemons run first, each kept in one piece.

    scripts/test.sh hands tests to workers one at a time in this order; a
    30 s test that starts last would hold the run open after every other
    worker is done. Only the order of whole modules changes.
    """

    def starts_servers(item: pytest.Item) -> bool:
        module = getattr(item, "module", None)
        return any(hasattr(module, name) for name in _SERVER_STARTERS) or any(
            name in _SERVER_STARTERS for name in getattr(item, "fixturenames", ())
        )

    modules: dict[object, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)
    groups = sorted(modules.values(), key=lambda group: not any(map(starts_servers, group)))
    items[:] = [item for group in groups for item in group]
