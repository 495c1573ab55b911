"""Load kubernetes-asyncio's runtime without its generated API classes and models.

rollbackd speaks plain Kubernetes JSON: it uses the package's ``ApiClient``
(``call_api`` with ``_preload_content=False``), ``Configuration``, ``rest``,
``exceptions``, the kubeconfig and in-cluster loaders and ``Watch``, and never
a generated ``*Api`` class or model. A normal ``import kubernetes_asyncio``
runs ``kubernetes_asyncio/__init__`` and ``client/__init__``, which import
about 60 API modules and 768 model modules: some 30 MB of RSS and half a
second of CPU in every process, for nothing.

:func:`install`, called by the entry point of the commands that run the
daemon before anything imports the package, registers ``kubernetes_asyncio``,
``kubernetes_asyncio.client`` and ``kubernetes_asyncio.client.models`` as
*lazy packages*: their submodules import as usual, and the first time code
asks one of them for a name it does not hold yet (``client.CoreV1Api``, a
model) the package's real ``__init__`` runs, so code that does use the
generated classes gets them, only later. A package laid out differently (a
future version) makes :func:`install` undo what it did and import the package
the normal way; the outcome says so and the daemon logs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["LeanImport", "install", "log_outcome", "outcome"]

PACKAGE = "kubernetes_asyncio"
LAZY_PACKAGES = (PACKAGE, f"{PACKAGE}.client", f"{PACKAGE}.client.models")
# What rollbackd uses, in an order where each module finds what it imports.
RUNTIME_MODULES = (
    f"{PACKAGE}.client.exceptions",
    f"{PACKAGE}.client.configuration",
    f"{PACKAGE}.client.rest",
    f"{PACKAGE}.client.api_client",
)
# Names the loaders and Watch import from ``kubernetes_asyncio.client``: set on the lazy package.
CLIENT_NAMES = {
    "ApiClient": f"{PACKAGE}.client.api_client",
    "Configuration": f"{PACKAGE}.client.configuration",
    "ApiException": f"{PACKAGE}.client.exceptions",
    "OpenApiException": f"{PACKAGE}.client.exceptions",
}
LOADERS = (f"{PACKAGE}.config", f"{PACKAGE}.watch")
# What rollbackd calls, checked once loaded.
REQUIRED = (
    (f"{PACKAGE}.config", "new_client_from_config"),
    (f"{PACKAGE}.config", "load_incluster_config"),
    (f"{PACKAGE}.watch", "Watch"),
)
# Names with an underscore that the real ``__init__`` defines: asking for them loads it.
_PUBLIC_DUNDERS = frozenset({"__all__", "__version__"})
# A model module: loaded means the lean import saved nothing.
MODEL_PROBE = f"{PACKAGE}.client.models.v1_pod"


@dataclass(frozen=True)
class LeanImport:
    """How the package was loaded: ``lean``, ``full`` (and why), or ``already`` imported."""

    mode: str
    reason: str = ""


_outcome: LeanImport | None = None
_lock = threading.Lock()


def outcome() -> LeanImport | None:
    """What :func:`install` did in this process (None: it was not called)."""
    return _outcome


def log_outcome() -> None:
    """Log what :func:`install` did (nothing when it was not called): a warning if it fell back."""
    import structlog  # the CLI's other commands never log this

    lean = _outcome
    if lean is None:
        return
    log = structlog.get_logger("rollbackd.kube")
    report = log.warning if lean.mode == "full" else log.info
    report("kubernetes_client_import", mode=lean.mode, reason=lean.reason or None)


def install(package: str = PACKAGE) -> LeanImport:
    """Load the runtime lean if the package is not imported yet; idempotent.

    ``package`` is for tests (a stand-in package laid out differently).
    """
    global _outcome
    with _lock:
        if _outcome is not None:
            return _outcome
        if package in sys.modules:
            _outcome = LeanImport("already", "imported before the entry point ran")
            return _outcome
        before = set(sys.modules)
        try:
            _load_lean(package)
        except Exception as exc:  # any layout we do not know: the normal import
            for name in set(sys.modules) - before:
                if name == package or name.startswith(package + "."):
                    del sys.modules[name]
            importlib.import_module(package)
            _outcome = LeanImport("full", f"lean import failed: {type(exc).__name__}: {exc}")
            return _outcome
        if _renamed(MODEL_PROBE, package) in sys.modules:
            _outcome = LeanImport("full", "the runtime modules imported the models themselves")
        else:
            _outcome = LeanImport("lean")
        return _outcome


def _renamed(name: str, package: str) -> str:
    return package + name.removeprefix(PACKAGE)


def _load_lean(package: str) -> None:
    parent: ModuleType | None = None
    for name in LAZY_PACKAGES:
        module = _lazy_package(_renamed(name, package))
        if parent is not None:
            setattr(parent, module.__name__.rpartition(".")[2], module)
        parent = module
    for name in RUNTIME_MODULES:
        importlib.import_module(_renamed(name, package))
    client = sys.modules[_renamed(f"{PACKAGE}.client", package)]
    for attribute, home in CLIENT_NAMES.items():
        setattr(client, attribute, getattr(sys.modules[_renamed(home, package)], attribute))
    for name in LOADERS:
        importlib.import_module(_renamed(name, package))
    for home, attribute in REQUIRED:
        if not hasattr(sys.modules[_renamed(home, package)], attribute):
            raise ImportError(f"{home} has no {attribute}")
    if not hasattr(client.ApiClient, "call_api"):
        raise ImportError("ApiClient has no call_api")


def _lazy_package(name: str) -> ModuleType:
    """``name`` in ``sys.modules`` with its ``__path__`` but its ``__init__`` not run yet."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a package here")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    lock = threading.RLock()
    ran = False

    def __getattr__(attribute: str) -> Any:
        # PEP 562: called only for names the module does not hold.
        nonlocal ran
        if attribute.startswith("_") and attribute not in _PUBLIC_DUNDERS:
            # A probe (pytest's, inspect's, a mock's), never a generated class.
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        with lock:
            if not ran:
                ran = True  # a name asked for while __init__ runs is simply missing
                loader.exec_module(module)
                return getattr(module, attribute)
        raise AttributeError(f"module {name!r} has no attribute {attribute!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module
    return module
