"""Fixtures for real servers on loopback, shared by every test package."""

pytest_plugins = [
    "rollbackd.testing.kubesim.fixture",
    "rollbackd.testing.promstack",
    "rollbackd.testing.sink",
]
