"""Reading the file, applying environment overrides, reporting every problem."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rollbackd.config.settings import Settings
from rollbackd.config.types import (
    ENV_PREFIX,
    ConfigError,
    _env_name,
    is_secret_path,
    secret_paths,
)


def load_settings(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ
) -> Settings:
    """Load, override from ``env`` and validate; raise ConfigError listing every problem."""
    data = _read_yaml(path) if path is not None else {}
    for section in Settings.model_fields:
        if section in data and data[section] is None:
            data[section] = {}  # an empty section means "all defaults"
    errors = _pop_inline_secrets(data)
    env_errors, from_env = _apply_env(data, env)
    errors += env_errors
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors += [_format_error(e, from_env) for e in exc.errors()]
        raise ConfigError(errors) from None
    if errors:
        raise ConfigError(errors)
    return settings


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    name = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}: config file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}: cannot read config file: {exc}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{name}: invalid YAML{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: expected a mapping of sections at the top level"])
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error, not "last wins".

    Two ``notify.channels`` entries of the same name would otherwise become one, silently.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _pop_inline_secrets(data: dict[str, Any]) -> list[str]:
    errors = []
    for secret_path in secret_paths(data):
        node: Any = data
        for key in secret_path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and secret_path[-1] in node:
            del node[secret_path[-1]]  # never keep an inline secret around
            key = secret_path[-1]
            errors.append(
                f"{'.'.join(secret_path)}: secrets are not accepted in the config file; "
                f"use {key}_file or env {_env_name(*secret_path)}"
            )
    return errors


def _apply_env(
    data: dict[str, Any], env: Mapping[str, str]
) -> tuple[list[str], dict[tuple[str, ...], str]]:
    """Merge overrides into ``data``; return problems and which key paths env set."""
    errors = []
    applied: dict[tuple[str, ...], str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            errors.append(f"env {name}: expected ROLLBACKD__SECTION__KEY")
            continue
        raw = env[name]
        value: Any = raw if is_secret_path(path) else _yaml_scalar(raw)
        node = data
        for depth, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                errors.append(f"env {name}: {where} is not a section")
                break
            node = child
        else:
            node[path[-1]] = value
            applied[path] = name
    return errors, applied


def _yaml_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _format_error(error: Mapping[str, Any], from_env: Mapping[tuple[str, ...], str]) -> str:
    loc = tuple(error["loc"])
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    # Say where a bad value came from: the file shows a different one.
    source = next(
        (name for env_path, name in from_env.items() if loc[: len(env_path)] == env_path), None
    )
    if source is not None:
        message += f" (from env {source})"
    return f"{path or '(top level)'}: {message}"
