"""kubernetes-asyncio's watch stream, without the ApiClient it builds for nothing.

``Watch()`` builds its own ``ApiClient`` only to turn events into model
objects. The cache keeps events as the decoded dicts (no return type), so that
client is never used, yet building it creates an SSL context from the
system's CA store: about 60 ms of CPU, on the event loop, every time a watch
is opened. A watch is reopened after every server timeout, every expired
resourceVersion and every dropped connection, for each kind it follows, so in
an incident with a flaky API server that is a loop stall per reconnect.

:class:`RawWatch` keeps the library's stream, line decoding, ERROR and 410
handling and bookmark tracking, and only skips that client.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import watch


class RawWatch(watch.Watch):
    """A ``Watch`` whose events stay dicts, built without an ``ApiClient``."""

    def __init__(self) -> None:
        # Not super().__init__(): that is where the unused ApiClient is built.
        # These are the attributes it sets besides the client.
        self._raw_return_type: str | None = None
        self._stop = False
        self.resource_version: Any = None
        self.resp: Any = None

    def get_return_type(self, func: object) -> str:
        """No model type: ``unmarshal_event`` leaves the object a dict."""
        return ""

    async def close(self) -> None:
        """Release the response; there is no client of its own to close."""
        if self.resp is not None:
            self.resp.release()
            self.resp = None
