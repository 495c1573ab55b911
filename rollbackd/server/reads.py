"""Health, readiness, metrics, the rollback list, one rollback, its report, the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rollbackd.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rollbackd.metrics import Metrics
from rollbackd.model import RecordKind, Rollback, Target
from rollbackd.redact import redact_value
from rollbackd.server.contracts import JournalReader
from rollbackd.server.responses import (
    dumps_json,
    error,
    openapi_document,
    rollback_json,
    timeline_json,
)

if TYPE_CHECKING:  # the report module loads only when a report is asked for
    from rollbackd.postmortem.source import ImpactSource
    from rollbackd.report import TimelineEntryLike


MAX_LIST_LIMIT = 1000


class ReadApi:
    """Read-only handlers: nothing here changes anything."""

    def __init__(
        self,
        journal: JournalReader,
        metrics: Metrics,
        readiness: Callable[[], tuple[bool, str]],
        impact_source: ImpactSource | None = None,
    ) -> None:
        self.journal = journal
        self.impact_source = impact_source
        self.metrics = metrics
        self.readiness = readiness

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reason = self.readiness()
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def list_rollbacks(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            return error(400, "limit must be an integer")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return error(400, f"limit must be between 1 and {MAX_LIST_LIMIT}")
        namespace, name = query.get("namespace"), query.get("name")
        if (namespace is None) != (name is None):
            return error(400, "namespace and name filter together: give both or neither")
        target = Target(namespace, name) if namespace and name else None
        if (namespace, name) != (None, None) and target is None:
            return error(400, "namespace and name must not be empty")
        kind = None
        if "kind" in query:
            try:
                kind = RecordKind(query["kind"])
            except ValueError:
                kinds = ", ".join(k.value for k in RecordKind)
                return error(400, f"kind must be one of {kinds}")
        rollbacks = await self.journal.list_rollbacks(limit=limit, target=target, kind=kind)
        listed = [redact_value(rollback_json(r)) for r in rollbacks]
        return web.json_response({"rollbacks": listed})

    async def get_rollback(self, request: web.Request) -> web.Response:
        found = await self._record(request.match_info["id"])
        if isinstance(found, web.Response):
            return found
        rollback, timeline, details = found
        body = rollback_json(rollback)
        body["timeline"] = [timeline_json(e) for e in timeline]
        body["details"] = details
        # Errors quoted in the timeline may hold a URL with credentials.
        return web.json_response(redact_value(body), dumps=dumps_json)

    async def report(self, request: web.Request) -> web.Response:
        """The postmortem draft: ``?format=markdown`` (default) or ``?format=json``."""
        # Imported late: the draft's modules load only when a report is asked for.
        from rollbackd.postmortem.service import FORMATS, ImpactSource, draft_for, render_draft

        fmt = request.query.get("format", "markdown")
        if fmt not in FORMATS:
            return error(400, f"format must be one of {', '.join(FORMATS)}")
        rollback_id = request.match_info["id"]
        source = self.impact_source or ImpactSource()
        draft = await draft_for(self.journal, rollback_id, source, now=datetime.now(UTC))
        if draft is None:
            return error(404, f"no rollback with id {rollback_id!r}")
        text = render_draft(draft, fmt)
        content_type = "application/json" if fmt == "json" else "text/markdown"
        return web.Response(text=text, content_type=content_type, charset="utf-8")

    async def _record(
        self, rollback_id: str
    ) -> tuple[Rollback, Sequence[TimelineEntryLike], dict[str, Any] | None] | web.Response:
        """The record, its timeline and details; or the 404 answer."""
        rollback = await self.journal.get_rollback(rollback_id)
        if rollback is None:
            return error(404, f"no rollback with id {rollback_id!r}")
        timeline = await self.journal.timeline(rollback_id)
        details = await self.journal.rollback_details(rollback_id)
        return rollback, timeline, details

    async def openapi_yaml(self, request: web.Request) -> web.Response:
        text, _ = openapi_document()
        return web.Response(text=text, content_type="application/yaml", charset="utf-8")

    async def openapi_json(self, request: web.Request) -> web.Response:
        _, document = openapi_document()
        return web.json_response(document)
