"""Kubernetes API errors as the real API server reports them.

Every failure kubesim answers is an ``ApiError`` rendered as a ``metav1.Status``
body, because clients (kubectl, kubernetes-asyncio) read ``reason`` and
``code`` from that body to decide what went wrong; a bare HTTP status would
make them print generic messages and retry the wrong things.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the API server refuses, with the Status body it would send."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        list_meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        # Extra response headers, e.g. Retry-After on 429.
        self.headers = dict(headers or {})
        # The Status's own ListMeta, e.g. the inconsistent continue token of a 410.
        self.list_meta = dict(list_meta or {})

    def status_body(self) -> dict[str, Any]:
        """The ``metav1.Status`` object for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.list_meta),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


def qualified_resource(resource: str, group: str = "") -> str:
    """``deployments.apps`` / ``pods``: the resource name the server puts in messages."""
    return f"{resource}.{group}" if group else resource


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified_resource(resource, group)} "{name}" not found',
        details=_details(name, group, resource),
    )


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified_resource(resource, group)} "{name}" already exists',
        details=_details(name, group, resource),
    )


CONFLICT_STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def conflict(resource: str, name: str, message: str = CONFLICT_STALE, group: str = "") -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified_resource(resource, group)} "{name}": {message}',
        details=_details(name, group, resource),
    )


def invalid(kind: str, name: str, causes: list[dict[str, str]], group: str = "") -> ApiError:
    """422 Invalid; ``causes`` are ``{"reason", "message", "field"}`` dicts as the server lists them."""
    summary = ", ".join(
        f"{cause.get('field', '')}: {cause.get('message', '')}".strip(": ") for cause in causes
    )
    qualified_kind = f"{kind}.{group}" if group else kind
    details = _details(name, group, kind)
    details["causes"] = causes
    return ApiError(
        422, "Invalid", f'{qualified_kind} "{name}" is invalid: {summary}', details=details
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


# The etcd3 store's words when a continue token outlived the history (storage/etcd3/store.go).
INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may "
    "show up in the list."
)


def continue_expired(inconsistent_token: str) -> ApiError:
    """410 for a continue token whose snapshot is gone, offering an inconsistent one."""
    return ApiError(
        410, "Expired", INCONSISTENT_CONTINUE, list_meta={"continue": inconsistent_token}
    )


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def internal_error(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def path_not_found() -> ApiError:
    """What the real server answers for a URL it has no handler for."""
    return ApiError(404, "NotFound", "the server could not find the requested resource")
