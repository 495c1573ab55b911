"""Fixtures for real servers on loopback, shared by every test package.

They live in a plugin of the tests, not in ``rollbackd.testing``: the runtime
package (and the demo built on it) imports no test framework.
"""

pytest_plugins = ["tests.plugins.rollbackd_fixtures"]
