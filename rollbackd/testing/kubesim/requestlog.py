"""A bounded log of the API requests kubesim received: who called what, and the answer.

Reliability tests ask "which calls did the client make, in what order" (to
inject a fault on each call in turn) and "did this replica write anything
after it lost the Lease" (the User-Agent tells replicas apart). A record is
taken when the request arrives, so a call answered by an injected fault, or
a watch still streaming, is in the log; its ``status`` is filled in when the
answer is known (0 while unknown or when the connection was dropped).

``GET /_kubesim/requests`` lists the records as JSON, ``DELETE`` clears them.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

DEFAULT_CAPACITY = 20_000
_ADMIN_PREFIX = "/_kubesim/"
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class RequestRecord:
    seq: int  # increasing, never reused: a mark for "requests since"
    at: float  # time.monotonic() at arrival
    method: str
    path: str
    query: str
    user_agent: str
    verb: str = ""  # the Kubernetes verb (get, list, watch, create, patch, ...)
    status: int = 0  # the HTTP answer; 0 while unknown or when no answer was sent
    accept: str = ""  # the Accept header: which representation the client asked for

    @property
    def is_write(self) -> bool:
        return self.method in _WRITE_METHODS


class RequestLog:
    """The newest ``capacity`` requests, oldest first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._last = 0

    def add(
        self, method: str, path: str, query: str, user_agent: str, verb: str = ""
    ) -> RequestRecord:
        seq = next(self._seq)
        self._last = seq
        record = RequestRecord(seq, time.monotonic(), method, path, query, user_agent, verb)
        self._records.append(record)
        return record

    def mark(self) -> int:
        """The newest sequence number: ``since(mark)`` lists what arrived after it."""
        return self._last

    def since(self, mark: int = 0) -> list[RequestRecord]:
        return [r for r in self._records if r.seq > mark]

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def clear(self) -> None:
        self._records.clear()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(log: RequestLog, verb_of: Callable[[web.Request], str] | None = None) -> Any:
    """An aiohttp middleware recording every API request (not the admin ones) in ``log``.

    ``verb_of`` names the Kubernetes verb of a request (the server knows its routes).
    """

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(_ADMIN_PREFIX):
            return await handler(request)
        entry = log.add(
            request.method,
            request.path,
            request.query_string,
            request.headers.get("User-Agent", ""),
            verb_of(request) if verb_of is not None else "",
        )
        entry.accept = request.headers.get("Accept", "")
        response = await handler(request)
        # A dropped connection (an injected reset) answered nobody.
        transport = request.transport
        entry.status = 0 if transport is None or transport.is_closing() else response.status
        return response

    return record


async def admin(log: RequestLog, request: web.Request) -> web.Response:
    """``GET``: the records (``?since=SEQ`` for the newer ones); ``DELETE``: clear."""
    if request.method == "DELETE":
        log.clear()
        return web.json_response({"requests": 0})
    if request.method != "GET":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "DELETE"])
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="since must be an integer") from None
    return web.json_response({"requests": [asdict(r) for r in log.since(since)]})
