"""pytest plugins the test suite loads (see tests/conftest.py)."""
