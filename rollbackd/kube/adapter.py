"""The Kubernetes adapter: the only object that talks to the API server.

:class:`Kube` puts the concerns of :mod:`rollbackd.kube` together: typed,
retried calls (:mod:`~rollbackd.kube.client`), the watch cache
(:mod:`~rollbackd.kube.cache`), guarded writes (:mod:`~rollbackd.kube.writes`),
Events (:mod:`~rollbackd.kube.events`), waits (:mod:`~rollbackd.kube.rollout`)
and leader election (:mod:`~rollbackd.kube.election`). The facts it reports
are computed by pure functions (:mod:`rollbackd.revisions`,
:mod:`rollbackd.readiness`).

Objects are handled as plain Kubernetes JSON (camelCase dicts): pod templates
are compared and restored byte-for-byte, which typed models would obscure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio.client import ApiClient

from rollbackd.guard import templates_equal
from rollbackd.kube.cache import WatchCache
from rollbackd.kube.client import selector_query
from rollbackd.kube.election import LeaderElection
from rollbackd.kube.events import DeploymentEvents
from rollbackd.kube.pager import PAGE_SIZE
from rollbackd.kube.rollout import RolloutWaits
from rollbackd.kube.rollouts import API_GROUP_VERSION, RolloutWrites
from rollbackd.kube.transforms import PODS
from rollbackd.model import ClusterFacts, Rollback, Target
from rollbackd.readiness import ReadinessReport, readiness_report
from rollbackd.revisions import cluster_facts, parse_time


class Kube(RolloutWrites, DeploymentEvents, RolloutWaits, LeaderElection):
    """kubernetes-asyncio adapter with a watch cache; create with :meth:`connect`."""

    def __init__(
        self,
        api: ApiClient,
        *,
        request_timeout: float = 30.0,
        watch_timeout: int = 300,
        identity: str | None = None,
        retry_budget: float = 0.0,
        list_page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__(
            api, request_timeout=request_timeout, identity=identity, retry_budget=retry_budget
        )
        self.cache = WatchCache(
            lambda path, query, accept: self.request("GET", path, query=query, accept=accept),
            self.open_watch,
            watch_timeout=watch_timeout,
            page_size=list_page_size,
        )

    async def close(self) -> None:
        """Stop the watches (awaiting them) and close the HTTP session."""
        await self.cache.stop()
        await super().close()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --------------------------------------------------------------- watches

    async def start_watches(self, namespaces: Sequence[str] | None = None) -> None:
        """Start list+watch loops (all namespaces when None), Rollouts too when served."""
        self.cache.start(namespaces, rollouts=await self.rollouts_served())

    @property
    def synced(self) -> bool:
        """True once every watched resource has been listed at least once."""
        return self.cache.synced

    # The contract names the deadline `timeout`; it is a plain bound, not a cancel scope.
    async def wait_synced(self, timeout: float) -> bool:
        return await self.cache.wait_synced(timeout)

    # ------------------------------------------------------------ cache reads

    def targets(self) -> list[Target]:
        return self.cache.targets()

    def cached_deployments(self) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """Every cached Deployment by (namespace, name), unsorted."""
        return self.cache.deployment_items()

    def annotated_rollback(self, rollback_id: str, *, now: datetime) -> Rollback | None:
        """Rollback ``rollback_id`` as a cached Deployment's or Rollout's state annotation has it.

        What a new leader answers a verdict from before its resume has
        journaled a proposal another leader made. Full facts only for the
        targets whose metadata names the id (a cheap scan of the cache).
        """
        from rollbackd.records import annotated_rollback_by_id  # records -> reasons -> this package

        rollouts = ((t, self.cache.rollout(t)) for t in self.cache.rollout_targets())
        cached = [
            *self.cache.deployment_items(),
            *(((t.namespace, t.name), r) for t, r in rollouts),
        ]
        named = (Target(*key) for key, obj in cached if obj and rollback_id in str(obj["metadata"]))
        return annotated_rollback_by_id((self.facts(t, now=now) for t in named), rollback_id)

    def rollout_targets(self) -> list[Target]:
        """Every cached Argo Rollout (none when Rollouts are not served)."""
        return self.cache.rollout_targets()

    def resumable_targets(self) -> list[Target]:
        """Deployments carrying a rollback state annotation, and every cached Argo Rollout."""
        from rollbackd.records import annotated_targets  # records -> reasons -> this package

        return [*annotated_targets(self.cache.deployment_items()), *self.cache.rollout_targets()]

    def cached_deployment(self, target: Target) -> dict[str, Any] | None:
        return self.cache.deployment(target)

    async def deployment(self, target: Target) -> dict[str, Any]:
        """From the watch cache, or a fresh read when it is not there (yet).

        A target that is an Argo Rollout gets the Rollout, read fresh (the cache
        trims its template): verification's checks read its annotations and labels.
        """
        cached = self.cached_deployment(target)
        if cached is not None:
            return cached
        if self.cache.rollout(target) is not None:
            return await self.read_rollout(target)
        return await self.read_deployment(target)

    def involved_object(
        self, target: Target, uid: str | None
    ) -> tuple[tuple[str, str], str | None]:
        """An Event on a Rollout target names the Rollout (its kind, group and uid).

        So ``kubectl describe rollout`` and ``--field-selector
        involvedObject.kind=Rollout`` show it. Read from the watch cache, as
        the executor tells a Rollout apart; a Deployment stays a Deployment.
        """
        rollout = self.cache.rollout(target) if self.cache.deployment(target) is None else None
        if rollout is None:
            return super().involved_object(target, uid)
        rollout_uid = (rollout.get("metadata") or {}).get("uid")
        return (API_GROUP_VERSION, "Rollout"), str(rollout_uid) if rollout_uid else uid

    def resolve_pod(self, namespace: str, pod: str) -> Target | None:
        """Pod -> ReplicaSet -> Deployment through controller ownerReferences, from the cache."""
        return self.cache.resolve_pod(namespace, pod)

    def facts(self, target: Target, *, now: datetime) -> ClusterFacts:
        """What the watch cache says about ``target`` (no API call)."""
        deployment = self.cache.deployment(target)
        uid = (deployment or {}).get("metadata", {}).get("uid", "")
        replicasets = self.cache.owned_replicasets(uid, target.namespace) if deployment else []
        facts = cluster_facts(target, deployment, replicasets, now=now)
        if deployment is None:
            return self._with_rollout(facts)
        # Imported here: rollbackd.bluegreen needs reasons, which imports this package.
        from rollbackd import bluegreen, canary

        if canary.canary_of(deployment) is not None:
            found = canary.canary_facts(
                deployment, self.cache.namespace_deployments(target.namespace)
            )
            return replace(facts, canary=found)

        services = self.cache.declaring_services(target.namespace)
        if not services:
            return facts  # the common case: no Service declares a strategy here
        colours = bluegreen.bluegreen_facts(
            deployment,
            services,
            self.cache.namespace_deployments(target.namespace),
            running_since=self._running_since,
        )
        return replace(facts, bluegreen=colours) if colours is not None else facts

    def _with_rollout(self, facts: ClusterFacts) -> ClusterFacts:
        """A target that is no Deployment but an Argo Rollout: its facts, from the cache."""
        rollout = self.cache.rollout(facts.target)
        if rollout is None:
            return facts
        from rollbackd.argo import rollout_facts  # imports reasons, which imports this package

        meta = rollout.get("metadata") or {}
        owned = self.cache.owned_replicasets(str(meta.get("uid", "")), facts.target.namespace)
        # Its annotations are the target's: opt-out and dry-run read them as a Deployment's.
        annotations = meta.get("annotations") or {}
        return replace(facts, annotations=annotations, rollout=rollout_facts(rollout, owned))

    def _running_since(self, deployment: Mapping[str, Any]) -> datetime | None:
        """When a Deployment's running version was created: its current ReplicaSet's creation."""
        meta = deployment.get("metadata", {})
        template = deployment.get("spec", {}).get("template") or {}
        for rs in self.cache.owned_replicasets(meta.get("uid", ""), meta.get("namespace", "")):
            if templates_equal(rs.get("spec", {}).get("template") or {}, template):
                return parse_time(rs.get("metadata", {}).get("creationTimestamp"))
        return None

    # ---------------------------------------------------------- fresh reads

    async def pod_images(self, target: Target) -> dict[str, list[str]]:
        """Container name -> distinct image IDs (digests) the target's pods run now."""
        _, pods = await self.target_pods(target)
        images: dict[str, set[str]] = {}
        for pod in pods:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                image_id = status.get("imageID") or status.get("image")
                if image_id:
                    images.setdefault(status.get("name", "?"), set()).add(str(image_id))
        return {name: sorted(ids) for name, ids in sorted(images.items())}

    def pods_watched(self) -> bool:
        """True while the pod watch is current (see :meth:`WatchCache.current`)."""
        return self.cache.current(PODS)

    async def replicaset_pods(
        self, wanted: set[tuple[str, str]]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The watched pods of each (namespace, ReplicaSet), as pod JSON (no API call)."""
        return await self.cache.replicaset_pods(wanted)

    async def current_pods(self, target: Target) -> list[dict[str, Any]]:
        """The pods the cached Deployment's selector matches, listed now (whole objects);
        a Rollout's canary and stable pods.

        What pod health reads while the pod watch is not current (see
        :mod:`rollbackd.sources.kubernetes`).
        """
        deployment = self.cache.deployment(target)
        if deployment is not None:
            query = selector_query(deployment)
        else:  # an Argo Rollout: its canary's and stable version's pods, by their hash label
            status = (self.cache.rollout(target) or {}).get("status") or {}
            hashes = sorted(
                {str(h) for h in (status.get("currentPodHash"), status.get("stableRS")) if h}
            )
            if not hashes:
                return []
            query = [("labelSelector", f"rollouts-pod-template-hash in ({','.join(hashes)})")]
        listing = await self.request(
            "GET", f"/api/v1/namespaces/{quote(target.namespace)}/pods", query=query
        )
        return list(listing.get("items") or [])

    async def readiness(self, target: Target) -> ReadinessReport:
        """Ready pods of the current template vs desired; endpoints of selecting Services."""
        if self.cache.deployment(target) is None and self.cache.rollout(target) is not None:
            return await self.rollout_readiness(target)
        deployment, pods = await self.target_pods(target)
        replicasets = await self.list_replicasets(target)
        ns = quote(target.namespace)
        services = await self.list_items(f"/api/v1/namespaces/{ns}/services")
        endpoints = await self.list_items(f"/api/v1/namespaces/{ns}/endpoints")
        return readiness_report(deployment, replicasets, pods, services, endpoints)
