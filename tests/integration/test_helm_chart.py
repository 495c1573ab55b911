"""The Helm chart, rendered by the real helm and read back as Kubernetes objects.

What is pinned here is what an operator relies on when installing rollbackd:
RBAC is exactly the least privilege the daemon needs, the pods run locked
down, the probes hit the daemon's health routes, the rendered config is one
rollbackd itself accepts, and bad values fail at install time with a message
that names the problem.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.kubesim.kubectl_helpers import GO_SHORT_LIVED

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rollbackd"
HELM = REPO / ".tools" / "bin" / "helm"
RECEIVER = REPO / "config" / "alertmanager-receiver.yaml"
RELEASE = "rollbackd"
NAMESPACE = "rollbackd"
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)

FEATURES: dict[str, Any] = {
    "replicaCount": 1,
    "image": {"digest": "sha256:" + "ab" * 32},
    "persistence": {"enabled": True, "storageClass": "fast", "size": "5Gi"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True},
    "secrets": {
        "webhookBearerToken": {"existingSecret": "rollbackd-webhook", "key": "token"},
        "pagerdutyRoutingKey": {"existingSecret": "rollbackd-pager", "key": "routing-key"},
    },
    "config": {
        "prometheus": {"url": "http://prometheus.monitoring.svc:9090"},
        "cluster": {"namespaces": ["shop", "search"]},
        "policy": {"dry_run": True, "cooldown": "1h"},
        "notify": {"pagerduty": {"url": "https://pager.example.test/v2/enqueue"}},
    },
}

# The whole of what rollbackd may do cluster-wide: (apiGroup, resource) -> verbs.
LEAST_PRIVILEGE: dict[tuple[str, str], set[str]] = {
    ("apps", "deployments"): {"get", "list", "watch", "patch"},
    ("apps", "replicasets"): {"get", "list", "watch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "services"): {"get", "list", "watch", "patch"},
    ("", "endpoints"): {"get", "list", "watch"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "patch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("argoproj.io", "applications"): {"get", "list", "patch"},
    ("argoproj.io", "rollouts"): {"get", "list", "watch", "patch"},
    ("argoproj.io", "rollouts/status"): {"patch"},
    ("kustomize.toolkit.fluxcd.io", "kustomizations"): {"get", "list", "patch"},
    ("helm.toolkit.fluxcd.io", "helmreleases"): {"get", "list", "patch"},
}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found on PATH: install the Debian package prometheus")
    return path


# --- running helm ----------------------------------------------------------------


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's cache/config/data dirs in a temp dir: tests never touch the user's."""
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"helm not found at {HELM.relative_to(REPO)}: run scripts/setup.sh")
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        **GO_SHORT_LIVED,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def _helm(
    env: Mapping[str, str], tmp: Path, *args: str, values: Mapping[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(HELM), *args]
    if values is not None:
        values_file = tmp / "values.yaml"
        values_file.write_text(yaml.safe_dump(dict(values)))
        argv += ["-f", str(values_file)]
    return subprocess.run(argv, capture_output=True, text=True, env=dict(env), timeout=60)


def _template(
    env: Mapping[str, str],
    tmp: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    api_versions: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    extra = [arg for api in api_versions for arg in ("--api-versions", api)]
    result = _helm(
        env, tmp, "template", release, str(CHART), "--namespace", NAMESPACE, *extra, values=values
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _template_error(env: Mapping[str, str], tmp: Path, values: Mapping[str, Any]) -> str:
    result = _helm(env, tmp, "template", RELEASE, str(CHART), "-n", NAMESPACE, values=values)
    assert result.returncode != 0, f"helm accepted the values:\n{result.stdout[:2000]}"
    return result.stderr


@pytest.fixture(scope="module")
def default_objects(
    helm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    return _template(helm_env, tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def feature_objects(
    helm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    return _template(
        helm_env, tmp_path_factory.mktemp("features"), FEATURES, api_versions=MONITORING_APIS
    )


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objects}


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _rollbackd_yaml(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_one(objects, "ConfigMap")["data"]["rollbackd.yaml"])
    return config


def _mount_path(objects: list[dict[str, Any]], volume: str) -> PurePosixPath:
    (mount,) = [m for m in _container(objects)["volumeMounts"] if m["name"] == volume]
    return PurePosixPath(mount["mountPath"])


def _rules(role: dict[str, Any]) -> Iterator[tuple[str, str, set[str]]]:
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                yield group, resource, set(rule["verbs"])


# --- lint -------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, FEATURES], ids=["defaults", "features"])
def test_chart_passes_strict_lint(
    helm_env: dict[str, str], tmp_path: Path, values: dict[str, Any] | None
) -> None:
    result = _helm(helm_env, tmp_path, "lint", "--strict", str(CHART), values=values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# --- what gets installed -------------------------------------------------------------


def test_default_install_creates_the_daemon_its_rbac_and_its_api_token_only(
    default_objects: list[dict[str, Any]],
) -> None:
    assert _kinds(default_objects) == {
        "Secret",
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    }
    namespaced = [o for o in default_objects if not o["kind"].startswith("Cluster")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {NAMESPACE}


def test_service_has_the_name_the_alertmanager_snippet_posts_to(
    default_objects: list[dict[str, Any]],
) -> None:
    service = _one(default_objects, "Service")
    (port,) = service["spec"]["ports"]
    url = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port['port']}/api/v1/alerts"
    (receiver,) = yaml.safe_load(RECEIVER.read_text())["receivers"]
    assert receiver["webhook_configs"][0]["url"] == url


def test_two_replicas_share_leadership_through_a_lease(
    default_objects: list[dict[str, Any]],
) -> None:
    deployment = _one(default_objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    election = _rollbackd_yaml(default_objects)["leader_election"]
    assert election == {"enabled": True, "namespace": NAMESPACE, "lease_name": "rollbackd"}
    # A voluntary disruption never takes both replicas at once.
    assert _one(default_objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


# --- RBAC -------------------------------------------------------------------------


def test_cluster_role_grants_exactly_least_privilege(
    default_objects: list[dict[str, Any]],
) -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for group, resource, verbs in _rules(_one(default_objects, "ClusterRole")):
        granted.setdefault((group, resource), set()).update(verbs)
    assert granted == LEAST_PRIVILEGE


def test_no_role_grants_wildcards_secrets_or_delete(
    default_objects: list[dict[str, Any]],
) -> None:
    for role in (o for o in default_objects if o["kind"] in {"Role", "ClusterRole"}):
        for group, resource, verbs in _rules(role):
            assert "*" not in (group, resource) and "*" not in verbs, role["metadata"]["name"]
            assert resource != "secrets"
            assert not verbs & {"delete", "deletecollection", "escalate", "bind", "impersonate"}
        assert all("nonResourceURLs" not in rule for rule in role["rules"])


def test_lease_role_can_create_the_lease_and_touch_only_that_one(
    default_objects: list[dict[str, Any]],
) -> None:
    role = _one(default_objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    lease = _rollbackd_yaml(default_objects)["leader_election"]["lease_name"]
    lease_rules = [r for r in role["rules"] if r["resources"] == ["leases"]]
    rules = {(tuple(r["verbs"]), tuple(r.get("resourceNames", ()))) for r in lease_rules}
    assert rules == {(("create",), ()), (("get", "update"), (lease,))}
    assert all(r["apiGroups"] == ["coordination.k8s.io"] for r in lease_rules)
    # Besides its Lease, only what the leader label needs: its own namespace's pods.
    others = [r for r in role["rules"] if r not in lease_rules]
    assert others == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]


def test_bindings_give_the_roles_to_the_pods_service_account(
    default_objects: list[dict[str, Any]],
) -> None:
    account = _one(default_objects, "ServiceAccount")["metadata"]["name"]
    pod = _one(default_objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = _one(default_objects, kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": _one(default_objects, role_kind)["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]


# --- the pod ------------------------------------------------------------------------


def test_pod_runs_non_root_read_only_without_capabilities(
    default_objects: list[dict[str, Any]],
) -> None:
    pod = _one(default_objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(default_objects)["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}


def test_writable_paths_are_volumes(default_objects: list[dict[str, Any]]) -> None:
    """With a read-only root, the journal, HOME and TMPDIR must each be a mount."""
    container = _container(default_objects)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert _mount_path(default_objects, "tmp") == PurePosixPath(env["HOME"])
    assert _mount_path(default_objects, "tmp") == PurePosixPath(env["TMPDIR"])
    journal = PurePosixPath(_rollbackd_yaml(default_objects)["journal"]["path"])
    assert journal.parent == _mount_path(default_objects, "journal")
    volumes = _one(default_objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (journal_volume,) = [v for v in volumes if v["name"] == "journal"]
    assert "emptyDir" in journal_volume


def test_container_runs_the_daemon_on_the_mounted_config(
    default_objects: list[dict[str, Any]],
) -> None:
    container = _container(default_objects)
    assert container["image"] == "rollbackd:0.1.0"  # the chart's appVersion
    assert container["args"][:2] == ["run", "--config"]
    config_file = PurePosixPath(container["args"][2])
    assert config_file.name == "rollbackd.yaml"
    assert config_file.parent == _mount_path(default_objects, "config")


def test_probes_hit_health_routes_on_the_port_the_daemon_listens_on(
    default_objects: list[dict[str, Any]],
) -> None:
    container = _container(default_objects)
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    listen = _rollbackd_yaml(default_objects)["webhook"]["listen"]
    assert listen == "0.0.0.0:8080"
    probes = {
        name: (probe["httpGet"]["path"], probe["httpGet"]["port"])
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
        for probe in [container[name]]
    }
    assert probes == {
        "startupProbe": ("/healthz", "http"),
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
    }
    (service_port,) = _one(default_objects, "Service")["spec"]["ports"]
    assert service_port["targetPort"] == "http"


def test_config_change_rolls_the_pods(
    helm_env: dict[str, str], tmp_path: Path, default_objects: list[dict[str, Any]]
) -> None:
    changed = _template(helm_env, tmp_path, {"config": {"policy": {"dry_run": True}}})

    def checksum(objects: list[dict[str, Any]]) -> str:
        template = _one(objects, "Deployment")["spec"]["template"]
        value: str = template["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum(changed) != checksum(default_objects)


# --- the config -------------------------------------------------------------------


def test_default_config_is_the_values_plus_what_the_chart_owns(
    default_objects: list[dict[str, Any]],
) -> None:
    assert _rollbackd_yaml(default_objects) == {
        "prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"},
        "logging": {"level": "info", "format": "json"},
        "webhook": {
            "listen": "0.0.0.0:8080",
            "bearer_token_file": "/var/run/secrets/rollbackd/webhook-bearer-token",
        },
        "journal": {"path": "/var/lib/rollbackd/journal.sqlite"},
        "leader_election": {"enabled": True, "namespace": NAMESPACE, "lease_name": "rollbackd"},
    }


def test_feature_config_keeps_every_user_value_and_points_at_mounted_secrets(
    feature_objects: list[dict[str, Any]],
) -> None:
    config = _rollbackd_yaml(feature_objects)
    assert config["prometheus"] == {"url": "http://prometheus.monitoring.svc:9090"}
    assert config["cluster"] == {"namespaces": ["shop", "search"]}
    assert config["policy"] == {"dry_run": True, "cooldown": "1h"}
    secrets_dir = _mount_path(feature_objects, "secrets")
    assert config["notify"]["pagerduty"] == {
        "url": "https://pager.example.test/v2/enqueue",
        "routing_key_file": str(secrets_dir / "pagerduty-routing-key"),
    }
    assert config["webhook"]["bearer_token_file"] == str(secrets_dir / "webhook-bearer-token")


def test_secrets_are_projected_read_only_from_the_named_secrets(
    feature_objects: list[dict[str, Any]],
) -> None:
    (mount,) = [m for m in _container(feature_objects)["volumeMounts"] if m["name"] == "secrets"]
    assert mount["readOnly"] is True
    volumes = _one(feature_objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "secrets"]
    assert volume["projected"]["defaultMode"] == 0o440
    sources = {s["secret"]["name"]: s["secret"]["items"] for s in volume["projected"]["sources"]}
    assert sources == {
        "rollbackd-webhook": [{"key": "token", "path": "webhook-bearer-token"}],
        "rollbackd-pager": [{"key": "routing-key", "path": "pagerduty-routing-key"}],
    }


def test_rendered_config_is_accepted_by_rollbackd(
    feature_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The daemon's own loader reads the ConfigMap, with the secret files in place."""
    from rollbackd.config import load_settings

    text = _one(feature_objects, "ConfigMap")["data"]["rollbackd.yaml"]
    secrets_dir = str(_mount_path(feature_objects, "secrets"))
    local_secrets = tmp_path / "secrets"
    local_secrets.mkdir()
    (local_secrets / "pagerduty-routing-key").write_text("R0UT1NGKEY\n")
    (local_secrets / "webhook-bearer-token").write_text("t0ken\n")
    config_file = tmp_path / "rollbackd.yaml"
    config_file.write_text(text.replace(secrets_dir, str(local_secrets)))

    settings = load_settings(config_file, env={})

    assert settings.policy.dry_run is True
    assert settings.policy.cooldown.total_seconds() == 3600
    assert settings.cluster.namespaces == ("shop", "search")
    assert settings.webhook.port == 8080
    assert settings.webhook.bearer_token_value() == "t0ken"
    assert settings.notify.pagerduty is not None
    assert settings.notify.pagerduty.routing_key_value() == "R0UT1NGKEY"
    assert settings.leader_election.namespace == NAMESPACE


def _load_rendered_config(objects: list[dict[str, Any]], tmp_path: Path) -> Any:
    """rollbackd's own loader on the ConfigMap, the chart's Secrets written where mounted."""
    from rollbackd.config import load_settings

    text = _one(objects, "ConfigMap")["data"]["rollbackd.yaml"]
    secrets_dir = str(_mount_path(objects, "secrets"))
    local_secrets = tmp_path / "secrets"
    local_secrets.mkdir()
    for secret in (o for o in objects if o["kind"] == "Secret"):
        for item in _projected_items(objects, secret["metadata"]["name"]):
            value = base64.b64decode(secret["data"][item["key"]])
            (local_secrets / item["path"]).write_bytes(value)
    config_file = tmp_path / "rollbackd.yaml"
    config_file.write_text(text.replace(secrets_dir, str(local_secrets)))
    return load_settings(config_file, env={})


def _projected_items(objects: list[dict[str, Any]], secret_name: str) -> list[dict[str, str]]:
    volumes = _one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "secrets"]
    sources = {s["secret"]["name"]: s["secret"]["items"] for s in volume["projected"]["sources"]}
    items: list[dict[str, str]] = sources[secret_name]
    return items


def test_default_config_is_accepted_by_rollbackd(
    default_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    settings = _load_rendered_config(default_objects, tmp_path)

    assert str(settings.prometheus.url).startswith("http://prometheus-operated.monitoring.svc")
    assert settings.journal.path == "/var/lib/rollbackd/journal.sqlite"
    assert settings.leader_election.enabled is True
    # Secure by default: Alertmanager's token is required, manual rollbacks over HTTP are off.
    assert settings.webhook.allow_unauthenticated is False
    assert settings.webhook.bearer_token_value() == _token(
        default_objects, "rollbackd-webhook-token"
    )
    assert settings.webhook.operator_token_value() is None


# --- the API's credentials ----------------------------------------------------------


def _token(objects: list[dict[str, Any]], secret_name: str, key: str = "token") -> str:
    (secret,) = [
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == secret_name
    ]
    return base64.b64decode(secret["data"][key]).decode()


def test_default_install_generates_a_random_webhook_token_and_mounts_it(
    helm_env: dict[str, str], tmp_path: Path, default_objects: list[dict[str, Any]]
) -> None:
    (secret,) = [o for o in default_objects if o["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "rollbackd-webhook-token"
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert secret["type"] == "Opaque"
    token = _token(default_objects, "rollbackd-webhook-token")
    assert len(token) == 48 and token.isalnum()
    # Random per install (an upgrade reads the live one back: see the kubesim test).
    assert _token(_template(helm_env, tmp_path), "rollbackd-webhook-token") != token
    assert _projected_items(default_objects, "rollbackd-webhook-token") == [
        {"key": "token", "path": "webhook-bearer-token"}
    ]
    webhook = _rollbackd_yaml(default_objects)["webhook"]
    mounted = _mount_path(default_objects, "secrets") / "webhook-bearer-token"
    assert webhook["bearer_token_file"] == str(mounted)
    assert "operator_token_file" not in webhook


def test_an_existing_secret_replaces_the_generated_token(
    feature_objects: list[dict[str, Any]],
) -> None:
    assert "Secret" not in _kinds(feature_objects)
    assert _projected_items(feature_objects, "rollbackd-webhook") == [
        {"key": "token", "path": "webhook-bearer-token"}
    ]


def test_an_operator_token_is_optional_and_separate(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    objects = _template(helm_env, tmp_path, {"secrets": {"operatorToken": {"create": True}}})
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    assert names == {"rollbackd-webhook-token", "rollbackd-operator-token"}
    assert _projected_items(objects, "rollbackd-operator-token") == [
        {"key": "token", "path": "webhook-operator-token"}
    ]
    settings = _load_rendered_config(objects, tmp_path)
    operator = settings.webhook.operator_token_value()
    assert operator == _token(objects, "rollbackd-operator-token")
    assert operator != settings.webhook.bearer_token_value()


def test_an_existing_operator_secret_is_mounted_not_created(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    values = {"secrets": {"operatorToken": {"existingSecret": "sre-operators", "key": "t"}}}
    objects = _template(helm_env, tmp_path, values)
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"} == {
        "rollbackd-webhook-token"
    }
    assert _projected_items(objects, "sre-operators") == [
        {"key": "t", "path": "webhook-operator-token"}
    ]


def test_an_open_api_must_be_asked_for_in_the_values(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    values = {
        "secrets": {"webhookBearerToken": {"create": False}},
        "config": {"webhook": {"allow_unauthenticated": True}},
    }
    objects = _template(helm_env, tmp_path, values)
    assert "Secret" not in _kinds(objects)
    settings = _load_rendered_config_without_secrets(objects, tmp_path)
    assert settings.webhook.allow_unauthenticated is True


def _load_rendered_config_without_secrets(objects: list[dict[str, Any]], tmp_path: Path) -> Any:
    from rollbackd.config import load_settings

    config_file = tmp_path / "rollbackd.yaml"
    config_file.write_text(_one(objects, "ConfigMap")["data"]["rollbackd.yaml"])
    return load_settings(config_file, env={})


# --- install notes ----------------------------------------------------------------


def _notes(env: Mapping[str, str], tmp: Path, values: Mapping[str, Any] | None) -> str:
    result = _helm(
        env, tmp, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client", values=values
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.partition("NOTES:")[2]


def test_notes_warn_about_nobody_to_page_and_missing_monitoring_apis(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    notes = _notes(helm_env, tmp_path, {"serviceMonitor": {"enabled": True}})
    assert "http://rollbackd.rollbackd.svc:8080/api/v1/alerts" in notes
    assert "no notification channel is configured" in notes
    assert "does not serve\nmonitoring.coreos.com/v1 ServiceMonitor" in notes
    # The default install is not open: no such warning.
    assert "allow_unauthenticated" not in notes


def test_notes_warn_about_an_api_opened_on_purpose(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    values = {"config": {"webhook": {"allow_unauthenticated": True}}}
    notes = _notes(helm_env, tmp_path, values)
    assert "WARNING: config.webhook.allow_unauthenticated is true" in notes


def _receiver_snippet(notes: str) -> dict[str, Any]:
    """The alertmanager.yml receiver the notes print, parsed."""
    start = notes.index("  receivers:")
    block = notes[start:].split("\n\n", 1)[0]
    snippet: dict[str, Any] = yaml.safe_load(block)
    return snippet


def test_notes_print_the_alertmanager_snippet_with_the_charts_real_names(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    notes = _notes(helm_env, tmp_path, None)
    (receiver,) = _receiver_snippet(notes)["receivers"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "http://rollbackd.rollbackd.svc:8080/api/v1/alerts"
    assert webhook["http_config"] == {
        "authorization": {
            "type": "Bearer",
            # Where the Prometheus Operator mounts a Secret listed in spec.secrets.
            "credentials_file": "/etc/alertmanager/secrets/rollbackd-webhook-token/token",
        }
    }
    assert "get secret rollbackd-webhook-token -o jsonpath='{.data.token}'" in notes
    # The repository's receiver file says the same thing.
    (documented,) = yaml.safe_load(RECEIVER.read_text())["receivers"]
    documented_webhook = documented["webhook_configs"][0]
    assert webhook["http_config"] == documented_webhook["http_config"]
    assert webhook["url"] == documented_webhook["url"]
    assert webhook["send_resolved"] is documented_webhook["send_resolved"] is True
    # Without an operator token the notes say manual rollbacks over HTTP are off.
    assert "Manual rollbacks over HTTP are disabled" in notes


def test_notes_name_an_existing_secret_and_the_operator_token(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    values = {
        "secrets": {
            "webhookBearerToken": {"existingSecret": "am-to-rollbackd", "key": "bearer"},
            "operatorToken": {"create": True},
        }
    }
    notes = _notes(helm_env, tmp_path, values)
    (receiver,) = _receiver_snippet(notes)["receivers"]
    authorization = receiver["webhook_configs"][0]["http_config"]["authorization"]
    assert authorization["credentials_file"] == "/etc/alertmanager/secrets/am-to-rollbackd/bearer"
    assert "generated" not in notes.split("Manual rollbacks", 1)[0]
    assert "need the operator token, in Secret\nrollbackd-operator-token, key token" in notes


def test_notes_stay_quiet_when_auth_and_paging_are_set_up(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    # No monitoring objects asked for: the dry run cannot offer their API.
    values = {
        **FEATURES,
        "serviceMonitor": {"enabled": False},
        "prometheusRule": {"enabled": False},
    }
    notes = _notes(helm_env, tmp_path, values)
    assert "http://rollbackd.rollbackd.svc:8080/api/v1/alerts" in notes
    assert "WARNING" not in notes
    assert "NOTE:" not in notes


# --- a real install and upgrade (kubesim) ----------------------------------------

# kubesim serves Deployments, Services, ConfigMaps and Secrets; not (yet) RBAC or PDBs.
KUBESIM_VALUES = (
    "--set", "rbac.create=false",
    "--set", "serviceAccount.create=false",
    "--set", "serviceAccount.name=default",
    "--set", "podDisruptionBudget.enabled=false",
    "--set", "replicaCount=1",
)  # fmt: skip


async def _helm_async(env: Mapping[str, str], kubeconfig: Path, *args: str) -> str:
    """helm without blocking the event loop that serves kubesim."""
    process = await asyncio.create_subprocess_exec(
        str(HELM), *args, "--kubeconfig", str(kubeconfig), "-n", NAMESPACE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dict(env),
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"helm {' '.join(args)} did not finish within 60 s") from None
    assert process.returncode == 0, out.decode()
    return out.decode()


@pytest.mark.timeout(180)
async def test_upgrades_keep_the_generated_tokens(helm_env: dict[str, str], kubesim: Any) -> None:
    def live_token(name: str) -> str:
        secret = kubesim.store.get("v1/secrets", NAMESPACE, name)
        return base64.b64decode(secret["data"]["token"]).decode()

    chart = (str(CHART), *KUBESIM_VALUES)
    await _helm_async(
        helm_env, kubesim.kubeconfig, "install", RELEASE, *chart, "--create-namespace"
    )
    webhook_token = live_token("rollbackd-webhook-token")
    assert len(webhook_token) == 48

    # A config change, then the operator token switched on: Alertmanager's token never moves.
    await _helm_async(
        helm_env,
        kubesim.kubeconfig,
        "upgrade",
        RELEASE,
        *chart,
        "--set",
        "config.policy.dry_run=true",
    )
    assert live_token("rollbackd-webhook-token") == webhook_token
    on = ("--set", "secrets.operatorToken.create=true")
    await _helm_async(helm_env, kubesim.kubeconfig, "upgrade", RELEASE, *chart, *on)
    operator_token = live_token("rollbackd-operator-token")
    await _helm_async(helm_env, kubesim.kubeconfig, "upgrade", RELEASE, *chart, *on)
    assert live_token("rollbackd-webhook-token") == webhook_token
    assert live_token("rollbackd-operator-token") == operator_token != webhook_token


# --- optional features ------------------------------------------------------------


def test_persistence_keeps_the_journal_on_a_claim_and_recreates_the_pod(
    feature_objects: list[dict[str, Any]],
) -> None:
    claim = _one(feature_objects, "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # Uninstalling the release must not delete the audit trail.
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    deployment = _one(feature_objects, "Deployment")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (journal,) = [v for v in volumes if v["name"] == "journal"]
    assert journal["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    # One replica: a PDB could only block node drains.
    assert "PodDisruptionBudget" not in _kinds(feature_objects)


def test_image_by_digest_wins_over_the_tag(feature_objects: list[dict[str, Any]]) -> None:
    assert _container(feature_objects)["image"] == "rollbackd@sha256:" + "ab" * 32


def test_monitoring_objects_need_the_operator_api(
    helm_env: dict[str, str], tmp_path: Path, feature_objects: list[dict[str, Any]]
) -> None:
    without_api = _template(helm_env, tmp_path, FEATURES)
    assert not _kinds(without_api) & {"ServiceMonitor", "PrometheusRule"}
    assert {"ServiceMonitor", "PrometheusRule"} <= _kinds(feature_objects)


def test_service_monitor_scrapes_the_service_metrics_port(
    feature_objects: list[dict[str, Any]],
) -> None:
    monitor = _one(feature_objects, "ServiceMonitor")
    service = _one(feature_objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_prometheus_rule_alerts_on_rollbackd_itself_and_passes_promtool(
    feature_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    spec = _one(feature_objects, "PrometheusRule")["spec"]
    alerts = {r["alert"] for g in spec["groups"] for r in g["rules"]}
    assert alerts == {
        "RollbackdEscalated",
        "RollbackdPrometheusQueryErrors",
        "RollbackdNoLeader",
        "RollbackdWebhook5xx",
        "RollbackdPagesUndelivered",
        "RollbackdPagesExpired",
        "RollbackdPollerStalled",
    }
    exprs = " ".join(r["expr"] for g in spec["groups"] for r in g["rules"])
    for metric in (
        "rollbackd_decisions_total",
        "rollbackd_prometheus_query_errors_total",
        "rollbackd_is_leader",
        "rollbackd_webhook_requests_total",
        "rollbackd_notification_delivery_lag_seconds",
        "rollbackd_notifications_expired_total",
        "rollbackd_poll_cycles_total",
    ):
        assert metric in exprs
    rule_file = tmp_path / "rollbackd-rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": spec["groups"]}))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_other_release_names_are_prefixed(helm_env: dict[str, str], tmp_path: Path) -> None:
    objects = _template(helm_env, tmp_path, release="ops")
    assert _one(objects, "Deployment")["metadata"]["name"] == "ops-rollbackd"
    assert _rollbackd_yaml(objects)["leader_election"]["lease_name"] == "ops-rollbackd"


# --- bad values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"config": {"polcy": {"dry_run": True}}}, "'polcy' not allowed"),
        ({"image": {"tag": "latest"}}, "/image/tag"),
        ({"persistence": {"enabled": True}}, "persistence.enabled needs replicaCount: 1"),
        ({"leaderElection": {"enabled": False}}, "leaderElection.enabled must be true"),
        (
            {"config": {"journal": {"path": "/data/journal.sqlite"}}},
            "config.journal.path is set by the chart",
        ),
        (
            {"config": {"notify": {"pagerduty": {}}}},
            "set secrets.pagerdutyRoutingKey.existingSecret",
        ),
        (
            {
                "secrets": {"webhookBearerToken": {"existingSecret": "s", "key": "token"}},
                "config": {"webhook": {"bearer_token_file": "/elsewhere"}},
            },
            "config.webhook.bearer_token_file is set by the chart from secrets.webhookBearerToken",
        ),
        (
            {"secrets": {"webhookBearerToken": {"create": False}}},
            "the API needs credentials: keep secrets.webhookBearerToken.create: true",
        ),
        (
            {
                "secrets": {"operatorToken": {"create": True}},
                "config": {"webhook": {"operator_token_file": "/x"}},
            },
            "config.webhook.operator_token_file is set by the chart from secrets.operatorToken",
        ),
        ({"secrets": {"operatorToken": {"create": "yes"}}}, "/secrets/operatorToken/create"),
    ],
    ids=[
        "zero-replicas",
        "unknown-config-section",
        "mutable-image-tag",
        "persistence-with-two-replicas",
        "two-leaderless-replicas",
        "journal-path-contradicts-the-mount",
        "pager-without-secret",
        "secret-path-set-twice",
        "api-without-credentials",
        "operator-token-path-set-twice",
        "operator-create-not-a-boolean",
    ],
)
def test_bad_values_fail_at_install_time_naming_the_problem(
    helm_env: dict[str, str], tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    assert message in _template_error(helm_env, tmp_path, values)


def test_repeating_a_chart_owned_value_unchanged_is_fine(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    values = {"config": {"journal": {"path": "/var/lib/rollbackd/journal.sqlite"}}}
    objects = _template(helm_env, tmp_path, values)
    assert _rollbackd_yaml(objects)["journal"] == values["config"]["journal"]


NAMED_CHANNELS: dict[str, Any] = {
    "secrets": {
        "channels": {
            "payments_oncall": {"existingSecret": "pager-keys", "key": "payments-oncall"},
            "payments_lead": {"existingSecret": "pager-keys", "key": "payments-lead"},
            "payments_chat": {"existingSecret": "chat-hooks", "key": "payments"},
        }
    },
    "config": {
        "notify": {
            "channels": {
                "payments_oncall": {"type": "pagerduty"},
                "payments_lead": {"type": "pagerduty"},
                "payments_chat": {"type": "slack"},
            },
            "routes": [
                {
                    "match": {"teams": ["payments"]},
                    "oncall": ["payments_oncall", "payments_chat"],
                    "lead": ["payments_lead"],
                },
                {"oncall": ["payments_oncall"], "lead": ["payments_lead"]},
            ],
        }
    },
}


def test_named_channels_get_their_secrets_mounted_and_rollbackd_accepts_the_config(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    objects = _template(helm_env, tmp_path, NAMED_CHANNELS)
    config = _rollbackd_yaml(objects)
    secrets_dir = _mount_path(objects, "secrets")
    channels = config["notify"]["channels"]
    assert channels["payments_oncall"] == {
        "type": "pagerduty",
        "routing_key_file": str(secrets_dir / "channel-payments_oncall"),
    }
    assert channels["payments_chat"]["webhook_url_file"] == str(
        secrets_dir / "channel-payments_chat"
    )
    assert _projected_items(objects, "chat-hooks") == [
        {"key": "payments", "path": "channel-payments_chat"}
    ]
    from rollbackd.config import PagerDutySettings, load_settings

    local = tmp_path / "secrets"
    local.mkdir()
    for name in channels:
        (local / f"channel-{name}").write_text(f"https://hooks.example.test/{name}\n")
    (local / "webhook-bearer-token").write_text("t0ken\n")
    config_file = tmp_path / "loaded.yaml"
    text = _one(objects, "ConfigMap")["data"]["rollbackd.yaml"]
    config_file.write_text(text.replace(str(secrets_dir), str(local)))
    settings = load_settings(config_file, env={})
    assert set(settings.notify.channel_names()) == {
        "payments_oncall",
        "payments_lead",
        "payments_chat",
    }
    lead = settings.notify.channels["payments_lead"]
    assert isinstance(lead, PagerDutySettings)
    assert lead.routing_key_value() == "https://hooks.example.test/payments_lead"


def test_a_channel_secret_for_no_configured_channel_fails_at_install_time(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    values = {"secrets": {"channels": {"ghost": {"existingSecret": "s", "key": "k"}}}}
    assert "secrets.channels.ghost: config.notify.channels has no channel ghost" in (
        _template_error(helm_env, tmp_path, values)
    )
