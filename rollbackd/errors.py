"""Error types shared across layers, in a module of their own.

Each layer raises these and the HTTP layer maps them to status codes, so no
layer imports another just for an exception class.
"""

from __future__ import annotations

__all__ = ["AcceptError"]


class AcceptError(Exception):
    """Nothing was recorded, so nothing may be acknowledged: the sender should retry (503)."""
