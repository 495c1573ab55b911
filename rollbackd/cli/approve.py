"""``approve`` and ``reject``: a human's verdict, sent to the running daemon's API.

The waiting rollback lives in the daemon (the leader), so these commands do
not open the journal: they POST to ``/api/v1/rollbacks/{id}/approve`` or
``/reject`` with the operator token from the config (``webhook.operator_token_file``
or ``ROLLBACKD__WEBHOOK__OPERATOR_TOKEN``), at ``--url`` or the config's
``webhook.listen``. A 503 (a standby, or a new leader still resuming the
rollback) is retried for about ten seconds. Exit codes: 0 done (or already done by you), 1 refused
(unknown, finished, changed, standby), 2 usage or configuration.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rollbackd.cli.common import EXIT_OK, EXIT_USAGE, CliError, load

URL_ENV = "ROLLBACKD_URL"
TIMEOUT_SECONDS = 60.0  # an approval answers once PLANNING is on the Deployment
RETRIES_503 = 6
RETRY_PAUSE_SECONDS = 2.0


def add_commands(commands: Any, with_config: argparse.ArgumentParser) -> None:
    """Register ``approve`` and ``reject`` on the top-level subparsers."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--url",
        default=os.environ.get(URL_ENV),
        help=f"rollbackd's API (default: ${URL_ENV}, else http://<webhook.listen>)",
    )
    where.add_argument("--by", default=None, help="who decides (default: your user name)")
    approve = commands.add_parser(
        "approve", parents=[with_config, where], help="approve a proposed rollback (approve mode)"
    )
    approve.add_argument("id")
    approve.set_defaults(handler=cmd_approve)
    reject = commands.add_parser(
        "reject", parents=[with_config, where], help="reject a proposed rollback (approve mode)"
    )
    reject.add_argument("id")
    reject.add_argument("--reason", required=True, help="why not; recorded and paged")
    reject.set_defaults(handler=cmd_reject)


def cmd_approve(args: argparse.Namespace) -> int:
    return _send(args, "approve", {"by": _by(args)})


def cmd_reject(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise CliError("--reason must say why", EXIT_USAGE)
    return _send(args, "reject", {"by": _by(args), "reason": args.reason})


def _by(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except Exception:  # no user name in a bare container: say so in the record
        return "operator"


def _send(args: argparse.Namespace, verb: str, body: dict[str, str]) -> int:
    settings = load(args.config)
    token = settings.webhook.operator_token_value()
    if token is None:
        raise CliError(
            "no operator token: set webhook.operator_token_file or "
            "ROLLBACKD__WEBHOOK__OPERATOR_TOKEN",
            EXIT_USAGE,
        )
    base = args.url or _listen_url(settings.webhook.host, settings.webhook.port)
    request = urllib.request.Request(
        f"{base.rstrip('/')}/api/v1/rollbacks/{urllib.parse.quote(args.id, safe='')}/{verb}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    answer = _post(request, verb, base)
    print(f"{args.id}: {answer.get('message', '')} (phase {answer.get('phase', '?')})")
    return EXIT_OK


def _post(request: urllib.request.Request, verb: str, base: str) -> dict[str, Any]:
    """POST; a 503 (a standby, or a leader still resuming the rollback) is retried a few times."""
    for attempt in range(1, RETRIES_503 + 1):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return _json(response.read())
        except urllib.error.HTTPError as exc:
            answer = _json(exc.read())
            if exc.code == 503 and attempt < RETRIES_503:
                print(f"rollbackd: {answer.get('error', exc.reason)}; retrying", file=sys.stderr)
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            hint = f" ({answer['hint']})" if answer.get("hint") else ""
            error = answer.get("error", exc.reason)
            raise CliError(f"{verb} refused ({exc.code}): {error}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"could not reach rollbackd at {base}: {exc}; use --url") from None
    raise AssertionError("unreachable")


def _listen_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
