"""Accept negotiation and the ``meta.k8s.io`` conversions a response can ask for.

The real server (``endpoints/handlers/negotiation`` and ``handlers/response.go``)
walks the Accept clauses in order and takes the first JSON one whose ``as``/
``g``/``v`` parameters name a conversion the endpoint allows: ``Table``,
``PartialObjectMetadata`` or ``PartialObjectMetadataList`` in ``meta.k8s.io``
``v1`` or ``v1beta1``. A clause it cannot serve is skipped; when none is left
the plain object is sent (the server falls back to its first media type, it
does not refuse). A conversion that does not fit the answer is refused with
406 NotAcceptable: a single object as ``PartialObjectMetadataList``, a list as
``PartialObjectMetadata``.

kubesim encodes JSON only, so protobuf and YAML clauses are skipped too and
the next clause decides (client-go's metadata client sends a protobuf clause
first and the same conversion in JSON second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .resources import ResourceType
from .store import Obj

META_GROUP = "meta.k8s.io"
META_VERSIONS = frozenset({"v1", "v1beta1"})
PARTIAL = "PartialObjectMetadata"
PARTIAL_LIST = "PartialObjectMetadataList"
TABLE = "Table"
_CONVERSIONS = frozenset({PARTIAL, PARTIAL_LIST, TABLE})
_JSON_RANGES = frozenset({("application", "json"), ("application", "*"), ("*", "*")})


@dataclass(frozen=True)
class Output:
    """What the response must be converted to; ``kind`` None: the object as stored."""

    kind: str | None = None
    version: str = "v1"

    @property
    def api_version(self) -> str:
        return f"{META_GROUP}/{self.version}"

    @property
    def partial(self) -> bool:
        return self.kind in (PARTIAL, PARTIAL_LIST)


PLAIN = Output()


def _clause(text: str) -> tuple[str, str, dict[str, str]]:
    media, *raw_params = [part.strip() for part in text.split(";")]
    kind, _, subtype = media.partition("/")
    params: dict[str, str] = {}
    for raw in raw_params:
        key, _, value = raw.partition("=")
        params[key.strip()] = value.strip().strip('"')
    return kind.strip().lower(), subtype.strip().lower(), params


def negotiate(accept: str) -> Output:
    """The first Accept clause kubesim can serve; :data:`PLAIN` when none is."""
    for text in accept.split(","):
        if not text.strip():
            continue
        kind, subtype, params = _clause(text)
        if (kind, subtype) not in _JSON_RANGES:
            continue
        if not {"as", "g", "v"} & params.keys():
            return PLAIN
        convert = params.get("as", "")
        if (
            convert in _CONVERSIONS
            and params.get("g") == META_GROUP
            and params.get("v") in META_VERSIONS
        ):
            return Output(convert, params["v"])
    return PLAIN


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message)


def _go_type(rtype: ResourceType, suffix: str = "") -> str:
    """How the real server names the internal Go type in its 406 messages (``*core.Pod``)."""
    package = rtype.group.split(".")[0] if rtype.group else "core"
    return f"*{package}.{rtype.kind}{suffix}"


def check_single(output: Output, rtype: ResourceType) -> None:
    """A GET of one object (or a watch event) cannot become a list."""
    if output.kind == PARTIAL_LIST:
        raise not_acceptable(
            f"you requested {PARTIAL_LIST}, but the requested object is not a list "
            f"({_go_type(rtype)})"
        )


def check_list(output: Output, rtype: ResourceType) -> None:
    """A list cannot become a single PartialObjectMetadata."""
    if output.kind == PARTIAL:
        raise not_acceptable(
            f"you requested {PARTIAL}, but the requested object is a list "
            f"({_go_type(rtype, 'List')})"
        )


def partial_object(obj: Obj, output: Output) -> dict[str, Any]:
    """``meta.AsPartialObjectMetadata``: the whole ObjectMeta, nothing else."""
    return {"kind": PARTIAL, "apiVersion": output.api_version, "metadata": obj["metadata"]}


def partial_list(items: list[Obj], metadata: dict[str, Any], output: Output) -> dict[str, Any]:
    """A ``PartialObjectMetadataList`` of ``items`` with the list's own metadata."""
    return {
        "kind": PARTIAL_LIST,
        "apiVersion": output.api_version,
        "metadata": metadata,
        "items": [partial_object(obj, output) for obj in items],
    }
