"""Guarded writes: JSON patches of a Deployment or a Service, and the rollback state.

Every write starts from a fresh GET and carries a resourceVersion
precondition, so a human's concurrent deploy surfaces as ConflictError
instead of being overwritten; state from a later leader's term is never
replaced (fencing by term).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from rollbackd.kube.client import KubeClient, deployment_path, httproute_path
from rollbackd.kube.errors import ConflictError, InvalidError
from rollbackd.kube.fencing import check_state_term
from rollbackd.kube.patch import annotation_ops, precondition, precondition_of
from rollbackd.model import ANNOTATION_ROLLBACK, FIELD_MANAGER, Target
from rollbackd.state import RollbackState, encode_state, recorded_state


def _conflict(target: object, resource_version: str) -> ConflictError:
    return ConflictError(
        f"{target} changed since resourceVersion {resource_version}", 409, reason="Conflict"
    )


def state_ops(
    obj: Mapping[str, Any],
    state: RollbackState | None,
    *,
    extra: Mapping[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """The JSON patch setting (None: removing) the state annotation on ``obj``, as read.

    Guarded by ``obj``'s resourceVersion; ``extra`` sets or removes (None)
    further annotations in the same write. A Deployment's and an Argo
    Rollout's phase are written the same way.
    """
    meta = obj.get("metadata") or {}
    changes: dict[str, str | None] = {ANNOTATION_ROLLBACK: encode_state(state) if state else None}
    changes.update(extra or {})
    return [
        precondition(meta.get("resourceVersion")),
        *annotation_ops(meta.get("annotations"), changes),
    ]


class DeploymentWrites(KubeClient):
    """Patches and state writes, each guarded by a resourceVersion."""

    async def patch_deployment(self, target: Target, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch; a failed resourceVersion ``test`` raises ConflictError."""
        return await self._guarded_patch(deployment_path(target), ops, target)

    async def patch_service(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """JSON-patch a Service as field manager ``rollbackd``; a failed ``test`` is a conflict.

        managedFields then name rollbackd as the owner of a selector it
        switched, which is how a later decision knows the switch was its own.
        """
        path = f"/api/v1/namespaces/{quote(namespace)}/services/{quote(name)}"
        return await self._guarded_patch(
            path,
            ops,
            f"service {namespace}/{name}",
            query=[("fieldManager", FIELD_MANAGER)],
        )

    async def patch_httproute(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """JSON-patch a Gateway API HTTPRoute (a canary's weights); a failed ``test`` is a conflict."""
        path = f"{httproute_path(namespace)}/{quote(name)}"
        return await self._guarded_patch(
            path, ops, f"httproute {namespace}/{name}", query=[("fieldManager", FIELD_MANAGER)]
        )

    async def _guarded_patch(
        self,
        path: str,
        ops: list[dict[str, Any]],
        what: object,
        *,
        query: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        try:
            return await self.request(
                "PATCH", path, query=query, body=ops, content_type="application/json-patch+json"
            )
        except InvalidError as exc:
            tested = precondition_of(ops)
            if tested is None:
                raise
            # 422 is any op that cannot apply; it is a conflict when our
            # resourceVersion test is what failed, i.e. the object moved on.
            current = await self.request("GET", path)
            if current.get("metadata", {}).get("resourceVersion") != tested:
                raise _conflict(what, tested) from exc
            raise

    def check_state_term(self, deployment: Mapping[str, Any], what: str) -> None:
        """Raise StaleTermError when ``deployment`` carries state from a later term than ours.

        Call it on the fresh read a guarded write is based on: the
        resourceVersion precondition then makes the check hold at the write.
        """
        recorded = recorded_state(deployment)
        if recorded is not None:
            check_state_term(self.fence, recorded.holder, recorded.term, what)

    async def write_state(
        self,
        target: Target,
        state: RollbackState | None,
        *,
        resource_version: str,
        extra: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """Set (or, with None, remove) the rollbackd.io/rollback annotation.

        ``extra`` sets or removes (None) further annotations in the same write.
        Guarded by ``resource_version`` like every write.
        """
        deployment = await self.read_deployment(target)
        if deployment.get("metadata", {}).get("resourceVersion") != resource_version:
            raise _conflict(target, resource_version)
        self.check_state_term(deployment, f"state write on {target}")
        return await self.patch_deployment(target, state_ops(deployment, state, extra=extra))
