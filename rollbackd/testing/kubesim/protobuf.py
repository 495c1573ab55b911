"""Decode the Kubernetes protobuf request bodies that kubectl's generators send.

``kubectl create deployment|configmap|secret|namespace|service`` posts
``application/vnd.kubernetes.protobuf``, not JSON, and client-go does not
fall back to JSON on a 415. kubesim therefore decodes the protobuf envelope
(``k8s\\x00`` + ``runtime.Unknown``) and the subset of messages those
generators fill in, into the same JSON dict a JSON client would have sent.

Only the fields listed in ``_SCHEMAS`` are understood. Any other field is a
clear 415 asking for JSON, never a silently dropped setting. Responses are
always JSON, which every client that sends protobuf also accepts.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request, unsupported_media_type

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # string, bytes, int, bool, map, bytesmap, quantitymap, intorstring, message, skip
    message: str = ""  # submessage schema for kind "message"
    repeated: bool = False
    keep_zero: bool = False  # pointer fields in Go: an explicit 0/false/"" is meaningful


def _f(name: str, kind: str, message: str = "", **flags: bool) -> Field:
    return Field(name, kind, message, **flags)


_SCHEMAS: dict[str, dict[int, Field]] = {
    "Unknown": {
        1: _f("typeMeta", "message", "TypeMeta"),
        2: _f("raw", "bytes"),
        3: _f("contentEncoding", "string"),
        4: _f("contentType", "string"),
    },
    "TypeMeta": {1: _f("apiVersion", "string"), 2: _f("kind", "string")},
    "ObjectMeta": {
        1: _f("name", "string"),
        2: _f("generateName", "string"),
        3: _f("namespace", "string"),
        5: _f("uid", "string"),
        6: _f("resourceVersion", "string"),
        7: _f("generation", "int"),
        8: _f("creationTimestamp", "skip"),  # server-set; kubectl sends the zero time
        11: _f("labels", "map"),
        12: _f("annotations", "map"),
        14: _f("finalizers", "string", repeated=True),
    },
    "LabelSelector": {
        1: _f("matchLabels", "map"),
        2: _f("matchExpressions", "message", "LabelSelectorRequirement", repeated=True),
    },
    "LabelSelectorRequirement": {
        1: _f("key", "string"),
        2: _f("operator", "string"),
        3: _f("values", "string", repeated=True),
    },
    "Deployment": {
        1: _f("metadata", "message", "ObjectMeta"),
        2: _f("spec", "message", "DeploymentSpec"),
        3: _f("status", "skip"),  # the server resets status on create
    },
    "DeploymentSpec": {
        1: _f("replicas", "int", keep_zero=True),
        2: _f("selector", "message", "LabelSelector"),
        3: _f("template", "message", "PodTemplateSpec"),
        4: _f("strategy", "message", "DeploymentStrategy"),
        5: _f("minReadySeconds", "int"),
        6: _f("revisionHistoryLimit", "int", keep_zero=True),
        7: _f("paused", "bool"),
        9: _f("progressDeadlineSeconds", "int", keep_zero=True),
    },
    "DeploymentStrategy": {
        1: _f("type", "string"),
        2: _f("rollingUpdate", "message", "RollingUpdateDeployment"),
    },
    "RollingUpdateDeployment": {
        1: _f("maxUnavailable", "intorstring"),
        2: _f("maxSurge", "intorstring"),
    },
    "PodTemplateSpec": {
        1: _f("metadata", "message", "ObjectMeta"),
        2: _f("spec", "message", "PodSpec"),
    },
    "PodSpec": {
        2: _f("containers", "message", "Container", repeated=True),
        3: _f("restartPolicy", "string"),
        4: _f("terminationGracePeriodSeconds", "int", keep_zero=True),
        6: _f("dnsPolicy", "string"),
        7: _f("nodeSelector", "map"),
        8: _f("serviceAccountName", "string"),
        19: _f("schedulerName", "string"),
        20: _f("initContainers", "message", "Container", repeated=True),
    },
    "Container": {
        1: _f("name", "string"),
        2: _f("image", "string"),
        3: _f("command", "string", repeated=True),
        4: _f("args", "string", repeated=True),
        5: _f("workingDir", "string"),
        6: _f("ports", "message", "ContainerPort", repeated=True),
        7: _f("env", "message", "EnvVar", repeated=True),
        8: _f("resources", "message", "ResourceRequirements", keep_zero=True),
        13: _f("terminationMessagePath", "string"),
        14: _f("imagePullPolicy", "string"),
        20: _f("terminationMessagePolicy", "string"),
    },
    "ContainerPort": {
        1: _f("name", "string"),
        2: _f("hostPort", "int"),
        3: _f("containerPort", "int"),
        4: _f("protocol", "string"),
        5: _f("hostIP", "string"),
    },
    "EnvVar": {1: _f("name", "string"), 2: _f("value", "string")},
    "ResourceRequirements": {1: _f("limits", "quantitymap"), 2: _f("requests", "quantitymap")},
    "ConfigMap": {
        1: _f("metadata", "message", "ObjectMeta"),
        2: _f("data", "map"),
        3: _f("binaryData", "bytesmap"),
        4: _f("immutable", "bool", keep_zero=True),
    },
    "Secret": {
        1: _f("metadata", "message", "ObjectMeta"),
        2: _f("data", "bytesmap"),
        3: _f("type", "string"),
        4: _f("stringData", "map"),
        5: _f("immutable", "bool", keep_zero=True),
    },
    "Namespace": {
        1: _f("metadata", "message", "ObjectMeta"),
        2: _f("spec", "message", "NamespaceSpec"),
        3: _f("status", "skip"),
    },
    "NamespaceSpec": {1: _f("finalizers", "string", repeated=True)},
    "Service": {
        1: _f("metadata", "message", "ObjectMeta"),
        2: _f("spec", "message", "ServiceSpec"),
        3: _f("status", "skip"),
    },
    "ServiceSpec": {
        1: _f("ports", "message", "ServicePort", repeated=True),
        2: _f("selector", "map"),
        3: _f("clusterIP", "string"),
        4: _f("type", "string"),
        5: _f("externalIPs", "string", repeated=True),
        7: _f("sessionAffinity", "string"),
        10: _f("externalName", "string"),
    },
    "ServicePort": {
        1: _f("name", "string"),
        2: _f("protocol", "string"),
        3: _f("port", "int"),
        4: _f("targetPort", "intorstring"),
        5: _f("nodePort", "int"),
    },
}

# (apiVersion, kind) -> top-level message.
_TOP_LEVEL = {
    ("apps/v1", "Deployment"): "Deployment",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("v1", "Namespace"): "Namespace",
    ("v1", "Service"): "Service",
}


class _Reader:
    """A cursor over protobuf wire-format bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise bad_request("malformed protobuf: truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise bad_request("malformed protobuf: field runs past the end of the body")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def fields(self) -> list[tuple[int, int, Any]]:
        """(field number, wire type, raw value) for every field in this message."""
        result: list[tuple[int, int, Any]] = []
        while not self.done():
            tag = self.varint()
            number, wire = tag >> 3, tag & 7
            if wire == _VARINT:
                result.append((number, wire, self.varint()))
            elif wire == _LENGTH:
                result.append((number, wire, self.take(self.varint())))
            elif wire == _FIXED64:
                result.append((number, wire, self.take(8)))
            elif wire == _FIXED32:
                result.append((number, wire, self.take(4)))
            else:
                raise bad_request(f"malformed protobuf: unsupported wire type {wire}")
        return result


def _signed(value: int) -> int:
    """Go writes negative int32/int64 as 64-bit two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(raw: Any) -> str:
    if not isinstance(raw, bytes):
        raise bad_request("malformed protobuf: expected a length-delimited string")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise bad_request("malformed protobuf: string is not UTF-8") from None


def _map_entry(raw: Any) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, item in _Reader(raw).fields():
        if number == 1:
            key = _text(item)
        elif number == 2:
            value = item if isinstance(item, bytes) else b""
    return key, value


def _int_or_string(raw: Any) -> int | str:
    kind, int_value, str_value = 0, 0, ""
    for number, _, item in _Reader(raw).fields():
        if number == 1:
            kind = item
        elif number == 2:
            int_value = _signed(item)
        elif number == 3:
            str_value = _text(item)
    return str_value if kind == 1 else int_value


def _quantity(raw: bytes) -> str:
    for number, _, item in _Reader(raw).fields():
        if number == 1:
            return _text(item)
    return ""


def _value(field: Field, raw: Any) -> Any:
    if field.kind == "string":
        return _text(raw)
    if field.kind == "bytes":
        return raw
    if field.kind == "int":
        return _signed(raw)
    if field.kind == "bool":
        return bool(raw)
    if field.kind == "intorstring":
        return _int_or_string(raw)
    if field.kind == "message":
        return decode_message(field.message, raw)
    raise AssertionError(f"unhandled kind {field.kind}")


def _is_zero_wire(wire: int, raw: Any, depth: int = 0) -> bool:
    """Whether a raw field holds only zero values (recursively for submessages)."""
    if wire == _VARINT:
        return bool(raw == 0)
    if wire in (_FIXED32, _FIXED64):
        return not any(raw)
    if not raw:
        return True
    if depth > 8:
        return False
    try:
        return all(_is_zero_wire(w, r, depth + 1) for _, w, r in _Reader(raw).fields())
    except ApiError:
        return False  # not a message: a non-empty string or bytes


def _is_zero(value: Any) -> bool:
    return value in ("", 0, False, None) or value == {} or value == []


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    """Decode one message by schema name into a JSON-shaped dict."""
    schema = _SCHEMAS[name]
    result: dict[str, Any] = {}
    for number, wire, raw in _Reader(data).fields():
        field = schema.get(number)
        if field is None and _is_zero_wire(wire, raw):
            continue  # Go writes unset non-pointer fields as zero values: nothing to lose
        if field is None:
            raise unsupported_media_type(
                f"kubesim does not decode protobuf field {number} of {name}; send this object "
                "as JSON (e.g. kubectl create -f FILE)"
            )
        if field.kind == "skip":
            continue
        if field.kind in ("map", "bytesmap", "quantitymap"):
            key, value = _map_entry(raw)
            target = result.setdefault(field.name, {})
            if field.kind == "map":
                target[key] = _text(value)
            elif field.kind == "bytesmap":
                target[key] = base64.b64encode(value).decode()
            else:
                target[key] = _quantity(value)
            continue
        value = _value(field, raw)
        if field.repeated:
            result.setdefault(field.name, []).append(value)
        else:
            result[field.name] = value
    # Go omits zero values of non-pointer fields from JSON (omitempty).
    return {
        key: value
        for key, value in result.items()
        if not _is_zero(value) or _keep_zero(schema, key)
    }


def _keep_zero(schema: dict[int, Field], key: str) -> bool:
    return any(field.name == key and field.keep_zero for field in schema.values())


def decode_object(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object a JSON client would have sent."""
    if not body.startswith(MAGIC):
        raise bad_request("protobuf body does not start with the Kubernetes envelope magic")
    envelope = decode_message("Unknown", body[len(MAGIC) :])
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    message = _TOP_LEVEL.get((api_version, kind))
    if message is None:
        raise unsupported_media_type(
            f"kubesim decodes protobuf only for {sorted(k for _, k in _TOP_LEVEL)}, not "
            f"{api_version} {kind}; send this object as JSON"
        )
    if envelope.get("contentEncoding"):
        raise unsupported_media_type("compressed protobuf bodies are not supported")
    try:
        obj = decode_message(message, envelope.get("raw", b""))
    except ApiError:
        raise
    except (ValueError, IndexError, TypeError, AttributeError) as error:
        # A field with the wrong wire type for its schema: malformed input.
        raise bad_request(f"malformed protobuf body: {error}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
