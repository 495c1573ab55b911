"""Error types shared across layers, in a module of their own.

Each layer raises these and the HTTP layer maps them to status codes, so no
layer imports another just for an exception class.
"""

from __future__ import annotations

__all__ = ["AcceptError", "NotLeaderError"]


class AcceptError(Exception):
    """Nothing was recorded, so nothing may be acknowledged: the sender should retry (503)."""


class NotLeaderError(Exception):
    """This replica does not hold the Lease, so it may not act: ask the leader (503)."""
