"""Filled in by its owner; see the module docstring once written."""
