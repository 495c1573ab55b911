"""`rollbackd demo`: the whole loop on this machine, narrated.

Starts kubesim, the real Prometheus and Alertmanager, a pager sink and
rollbackd; deploys a healthy v1, then a v2 that fails 30 % of its requests,
and shows rollbackd detect, roll back, verify and resolve, ending with the
postmortem draft. Nothing leaves loopback.

The loopback stack is ``rollbackd.testing`` with the ``demo`` extra
(kubesim needs ``jsonpatch``); the daemon's image carries neither, so there
the command says what to install instead of failing on an import.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rollbackd.model import Target
from rollbackd.postmortem.service import draft_for, render_draft
from rollbackd.postmortem.source import ImpactSource

# What is missing when the demo extra is not installed, or the package was
# installed without rollbackd.testing (the container image).
_DEMO_EXTRA_MODULES = ("rollbackd.testing", "jsonpatch")
NEEDS_DEMO_EXTRA = (
    "rollbackd demo needs the demo extra (kubesim, the Prometheus/Alertmanager "
    "harness and the pager sink): pip install 'rollbackd[demo]' from a source checkout"
)

TARGET = Target("default", "checkout")


def _say(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)


async def run_demo(*, workdir: Path | None, hold: float) -> int:
    from rollbackd.testing.stack import (
        PAGERDUTY_PATH,
        WEBHOOK_TOKEN,
        Stack,
        deployment_manifest,
        knobs,
    )

    started = time.monotonic()
    _say(started, "starting kubesim, Prometheus, Alertmanager, a pager sink and rollbackd ...")
    async with Stack(workdir) as stack:
        _say(started, f"kubesim API      {stack.sim.url}  (kubeconfig {stack.sim.kubeconfig})")
        _say(started, f"Prometheus       {stack.prometheus.url}")
        _say(started, f"Alertmanager     {stack.alertmanager.url}")
        _say(started, f"rollbackd        {stack.daemon.url}  (webhook {stack.webhook_url})")
        # The API needs credentials, as in a real install; the demo's token is no secret.
        _say(
            started,
            f'API              curl -H "Authorization: Bearer {WEBHOOK_TOKEN}" '
            f"{stack.daemon.url}/api/v1/rollbacks",
        )

        await stack.create_deployment(
            deployment_manifest(
                TARGET.name, image="registry.example/checkout:2.3.1", behaviour=knobs()
            )
        )
        await stack.wait_rollout_complete(TARGET.name)
        _say(started, "v1 checkout:2.3.1 is Ready and healthy; letting it run stable ...")
        await asyncio.sleep(4)

        await stack.roll_out(
            TARGET.name,
            image="registry.example/checkout:2.4.0",
            behaviour=knobs(error_rate=0.3),
            change_cause="deploy checkout 2.4.0",
        )
        await stack.wait_rollout_complete(TARGET.name)
        bad_ready = time.monotonic()
        bad_ready_at = datetime.now(UTC)
        _say(started, "v2 checkout:2.4.0 is Ready -- and fails 30 % of its requests")

        rollback = await stack.wait_rollback(
            TARGET, phases=("ROLLING_BACK", "VERIFYING", "ROLLBACK_COMPLETED", "ESCALATED")
        )
        _say(
            started,
            f"rollbackd started rollback {rollback.id}: revision "
            f"{rollback.from_revision} -> {rollback.to_revision} "
            f"({time.monotonic() - bad_ready:.1f}s after the bad pods became Ready)",
        )
        final = await stack.wait_rollback(TARGET, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
        _say(
            started,
            f"{final.phase}: {time.monotonic() - bad_ready:.1f}s after the bad pods became Ready",
        )
        dep = await stack.deployment(TARGET.name)
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        _say(started, f"the Deployment runs {image} again")
        await stack.sink.wait_for_count(PAGERDUTY_PATH, 2, timeout=15)
        for request in stack.sink.requests_to(PAGERDUTY_PATH):
            body = request.json if isinstance(request.json, dict) else {}
            _say(
                started,
                f"pager <- {body.get('event_action')} {body.get('payload', {}).get('severity', '')}"
                f" dedup_key={body.get('dedup_key')}",
            )
        timeline = await stack.daemon.journal.timeline(final.id)
        for kind, label in (
            ("phase:ROLLING_BACK", "rollback patch"),
            (f"phase:{final.phase}", str(final.phase)),
        ):
            at = next((e.at for e in timeline if e.kind == kind), None)
            if at is not None:
                seconds = (at - bad_ready_at).total_seconds()
                _say(started, f"measured: bad pods Ready -> {label}: {seconds:.1f}s")
        print()
        s = stack.settings
        source = ImpactSource(stack.daemon.promql, s.report, s.prometheus.deployment_label)
        draft = await draft_for(stack.daemon.journal, final.id, source, now=datetime.now(UTC))
        if draft is not None:  # it is journaled: wait_rollback read it back
            print(render_draft(draft, "markdown"))
        if hold > 0:
            _say(
                started,
                f"holding for {hold:.0f}s; try: kubectl --kubeconfig {stack.sim.kubeconfig} rollout history deploy/{TARGET.name}",
            )
            await asyncio.sleep(hold)
        return 0 if str(final.phase) == "ROLLBACK_COMPLETED" else 1


def demo_extra_installed() -> bool:
    """Whether the loopback stack imports; False only for the demo extra's modules."""
    try:
        import rollbackd.testing.stack  # noqa: F401
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not any(missing == m or missing.startswith(m + ".") for m in _DEMO_EXTRA_MODULES):
            raise
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rollbackd demo", description=__doc__)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep state here (default: a temp dir)"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds to keep everything running at the end, to explore with kubectl",
    )
    args = parser.parse_args(argv)
    if not demo_extra_installed():
        print(NEEDS_DEMO_EXTRA, file=sys.stderr)
        return 1
    return asyncio.run(run_demo(workdir=args.workdir, hold=args.hold))
