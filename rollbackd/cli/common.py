"""What every command shares: exit codes, the config path, loading, errors."""

from __future__ import annotations

import os
import sys

from rollbackd.config import ConfigError, Settings, load_settings
from rollbackd.redact import redact_text

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_CONFIG = "rollbackd.yaml"
CONFIG_ENV = "ROLLBACKD_CONFIG"


class CliError(Exception):
    """A failure to report as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def default_config_path(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    return env.get(CONFIG_ENV) or DEFAULT_CONFIG


def print_error(message: str) -> None:
    print(f"rollbackd: {redact_text(message)}", file=sys.stderr)


def load(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        raise CliError(config_problems(path, exc), EXIT_USAGE) from None


def config_problems(path: str, exc: ConfigError) -> str:
    lines = [f"invalid configuration {path} ({len(exc.errors)} problem(s)):"]
    lines += [f"  {error}" for error in exc.errors]
    return "\n".join(lines)
