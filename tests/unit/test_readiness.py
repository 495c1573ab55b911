"""Readiness arithmetic: ready pods of the current template, endpoints of selecting Services."""

from __future__ import annotations

from typing import Any

from rollbackd.readiness import ReadinessReport, ServiceEndpoints, readiness_report

LABELS = {"app": "web"}


def template(image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": dict(LABELS)},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def deployment(image: str, replicas: int | None = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": template(image)}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": "web"}, "spec": spec}


def replicaset(image: str, pod_hash: str) -> dict[str, Any]:
    tpl = template(image)
    tpl["metadata"]["labels"]["pod-template-hash"] = pod_hash
    return {"spec": {"template": tpl}}


def pod(pod_hash: str, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {**LABELS, "pod-template-hash": pod_hash}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": selector}}


def endpoints(name: str, addresses: int) -> dict[str, Any]:
    return {"metadata": {"name": name}, "subsets": [{"addresses": [{}] * addresses}]}


REPLICASETS = [replicaset("web:1", "old"), replicaset("web:2", "new")]


def test_only_ready_pods_of_the_current_template_count() -> None:
    pods = [pod("new"), pod("new", ready=False), pod("new", deleting=True), pod("old")]
    report = readiness_report(deployment("web:2"), REPLICASETS, pods, [], [])
    assert (report.desired, report.ready) == (2, 1)
    assert not report.pods_ok


def test_absent_replicas_means_one_as_the_api_defaults() -> None:
    report = readiness_report(deployment("web:2", replicas=None), REPLICASETS, [pod("new")], [], [])
    assert report == ReadinessReport(desired=1, ready=1)
    assert report.ok


def test_services_selecting_the_pods_report_their_ready_endpoints() -> None:
    services = [
        service("web", {"app": "web"}),
        service("other", {"app": "api"}),
        service("headless", {}),
    ]
    report = readiness_report(
        deployment("web:2", replicas=1), REPLICASETS, [pod("new")], services, [endpoints("web", 0)]
    )
    assert report.services == (ServiceEndpoints("web", 0),)
    assert report.pods_ok and not report.endpoints_ok
    assert report.detail == "1/1 pods ready, service web: 0 ready endpoints"
