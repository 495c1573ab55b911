"""The poller and the PromQL adapter against a real Prometheus scraping a workload we control."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rollbackd.model import Signal, SignalStatus, Target
from rollbackd.promql import Combine, PromQL, PromQLError, TargetKey
from rollbackd.signalquery import evaluate_specs
from rollbackd.signals import (
    DEFAULT_SIGNALS,
    Evaluation,
    SignalSpec,
    Verdict,
    render_query,
)
from rollbackd.sources.pollgrid import landing_margin
from rollbackd.sources.prometheus import PrometheusPoller
from rollbackd.testing.promstack import MetricsEndpoint, PrometheusServer, poll_until
from tests.integration.test_attribution_new_leader import counting_replaced_pods

pytestmark = pytest.mark.integration

CART = Target("shop", "cart")
WEB = Target("shop", "web")
BUCKETS = ("0.1", "0.5", "1", "+Inf")
# A short window so a change shows in rate() within a few 1 s scrapes.
SPECS = tuple(dataclasses.replace(spec, window="5s", for_count=2) for spec in DEFAULT_SIGNALS)
ERROR_RATIO, LATENCY = SPECS


@dataclass
class Behaviour:
    rps: float = 10.0
    error_ratio: float = 0.0
    latency: float = 0.05  # seconds, every request
    pod: str = "abc12"  # a new name is a rollout: the old pod's series end


@dataclass
class Workload:
    """Serves http_requests_total and a latency histogram; each scrape advances one second.

    Only each target's current pod is exposed, so a pod replaced by a rollout
    disappears from the scrape (and Prometheus marks its series stale).
    """

    behaviour: dict[Target, Behaviour] = field(default_factory=dict)
    _counters: dict[tuple[Target, str, str, str], float] = field(default_factory=dict)

    def _add(self, target: Target, pod: str, series: str, label: str, amount: float) -> None:
        key = (target, pod, series, label)
        self._counters[key] = self._counters.get(key, 0.0) + amount

    def render(self) -> str:
        lines = []
        for target, b in self.behaviour.items():
            errors = b.rps * b.error_ratio
            self._add(target, b.pod, "requests", '"200"', b.rps - errors)
            self._add(target, b.pod, "requests", '"500"', errors)
            for le in BUCKETS:
                hit = le == "+Inf" or b.latency <= float(le)
                self._add(target, b.pod, "bucket", f'"{le}"', b.rps if hit else 0.0)
            self._add(target, b.pod, "count", "", b.rps)
            self._add(target, b.pod, "sum", "", b.rps * b.latency)
        current = {(target, b.pod) for target, b in self.behaviour.items()}
        for (target, pod, series, label), value in self._counters.items():
            if (target, pod) in current:
                lines.append(self._line(target, pod, series, label, value))
        return "\n".join(lines) + "\n"

    @staticmethod
    def _line(target: Target, pod: str, series: str, label: str, value: float) -> str:
        labels = (
            f'namespace="{target.namespace}",deployment="{target.name}",pod="{target.name}-{pod}"'
        )
        name, extra = {
            "requests": ("http_requests_total", f",code={label}"),
            "bucket": ("http_request_duration_seconds_bucket", f",le={label}"),
            "count": ("http_request_duration_seconds_count", ""),
            "sum": ("http_request_duration_seconds_sum", ""),
        }[series]
        return f"{name}{{{labels}{extra}}} {value}"


class CountingPromQL(PromQL):
    """The real adapter, counting the queries it sends."""

    def __init__(self, url: str) -> None:
        super().__init__(url, attempts=2, max_backoff=0.2, timeout=5.0)
        self.queries: list[str] = []

    async def query_vector(self, expr: str, **options: Any) -> dict[TargetKey, float]:
        self.queries.append(expr)
        return await super().query_vector(expr, **options)


@dataclass
class Rig:
    workload: Workload
    prometheus: PrometheusServer
    promql: CountingPromQL
    emitted: list[Signal] = field(default_factory=list)
    query_errors: list[str] = field(default_factory=list)

    def poller(self, specs: tuple[SignalSpec, ...] = SPECS) -> PrometheusPoller:
        async def emit(signal: Signal) -> None:
            self.emitted.append(signal)

        return PrometheusPoller(
            self.promql,
            specs,
            interval=1.0,
            emit=emit,
            clock=lambda: datetime.now(UTC),
            on_query_error=lambda name, exc: self.query_errors.append(name),
        )

    async def wait_verdict(
        self, target: Target, spec: SignalSpec, verdict: Verdict, within: float = 30
    ) -> None:
        """Wait until Prometheus's data gives ``verdict`` (changes take a few scrapes)."""

        async def probe() -> bool | None:
            found = await evaluate_specs(self.promql, [spec], target=target)
            return True if found[(target, spec.name)].verdict is verdict else None

        await poll_until(probe, within=within, interval=0.5, message=f"{target} {verdict}")


@pytest.fixture
async def rig(prometheus_factory: Any) -> AsyncIterator[Rig]:
    workload = Workload({CART: Behaviour(), WEB: Behaviour()})
    async with MetricsEndpoint(workload.render) as endpoint:
        prometheus = await prometheus_factory(targets=[endpoint.host_port])
        promql = CountingPromQL(prometheus.url)
        try:
            yield Rig(workload, prometheus, promql)
        finally:
            await promql.close()


async def test_fires_after_for_count_breaching_cycles_then_resolves_once(rig: Rig) -> None:
    rig.workload.behaviour[CART].error_ratio = 0.5
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.BREACH)
    poller = rig.poller((ERROR_RATIO,))

    assert await poller.evaluate_once() == []  # one breach: pending
    second = await poller.evaluate_once()
    assert [(s.target, s.name, s.status) for s in second] == [
        (CART, "error_ratio", SignalStatus.FIRING)
    ]
    firing = second[0]
    assert firing.key == f"prom:shop/cart:error_ratio:{firing.started_at.isoformat()}"
    assert firing.value is not None and firing.value == pytest.approx(0.5, abs=0.1)
    assert firing.threshold == 0.05
    assert firing.started_at < firing.observed_at

    third = await poller.evaluate_once()
    assert [s.key for s in third] == [firing.key]  # repeats with the same key

    rig.workload.behaviour[CART].error_ratio = 0.0
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.HEALTHY)
    resolved = await poller.evaluate_once()
    assert [(s.target, s.status) for s in resolved] == [(CART, SignalStatus.RESOLVED)]
    assert resolved[0].key != firing.key
    assert await poller.evaluate_once() == []
    assert all(s.target == CART for s in rig.emitted)
    assert rig.emitted == [*second, *third, *resolved]


async def test_one_breaching_cycle_then_healthy_stays_silent(rig: Rig) -> None:
    rig.workload.behaviour[CART].error_ratio = 0.5
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.BREACH)
    poller = rig.poller((ERROR_RATIO,))
    assert await poller.evaluate_once() == []

    rig.workload.behaviour[CART].error_ratio = 0.0
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.HEALTHY)
    assert await poller.evaluate_once() == []
    assert await poller.evaluate_once() == []
    assert rig.emitted == []
    assert poller.tracked == 0


async def test_a_rollout_is_judged_on_the_pods_it_runs_not_on_those_it_replaced(
    rig: Rig,
) -> None:
    """The first look with two scrapes of the new pod reads its own error ratio.

    The 10 s window still holds eight seconds of the replaced, healthy pod;
    counted, they hold the ratio at a fraction of the new pod's for several
    scrapes (the diluted reading below shows they are there).
    """
    spec = dataclasses.replace(ERROR_RATIO, window="10s")
    diluted = dataclasses.replace(spec, query=counting_replaced_pods(spec.query))
    assert diluted.query != spec.query
    await asyncio.sleep(10)  # ten healthy scrapes fill the window
    rig.workload.behaviour[CART] = Behaviour(error_ratio=0.3, pod="v2pod")

    async def scraped() -> bool | None:
        return bool(await rig.promql.query('http_requests_total{pod="cart-v2pod"}')) or None

    await poll_until(scraped, within=15, interval=0.1, message="new pod scraped")

    async def first_judged() -> tuple[datetime, Evaluation] | None:
        at = datetime.now(UTC)
        found = (await evaluate_specs(rig.promql, [spec], target=CART, at=at))[(CART, spec.name)]
        return None if found.verdict is Verdict.NO_DATA else (at, found)

    at, live = await poll_until(first_judged, within=15, interval=0.2, message="new pod judged")
    assert live.verdict is Verdict.BREACH, live
    assert live.value is not None and 0.25 <= live.value <= 0.35, live
    old = (await evaluate_specs(rig.promql, [diluted], target=CART, at=at))[(CART, spec.name)]
    assert old.value is not None and old.value < live.value / 2, old


async def test_latency_breach_is_read_from_the_histogram(rig: Rig) -> None:
    rig.workload.behaviour[WEB].latency = 0.8
    await rig.wait_verdict(WEB, LATENCY, Verdict.BREACH)
    found = await evaluate_specs(rig.promql, SPECS)
    assert found[(WEB, "latency_p99")].value is not None
    assert 0.5 < found[(WEB, "latency_p99")].value <= 1.0  # type: ignore[operator]
    assert found[(CART, "latency_p99")].verdict is Verdict.HEALTHY
    assert found[(WEB, "error_ratio")].verdict is Verdict.HEALTHY


async def test_prometheus_outage_is_no_data_never_firing(rig: Rig) -> None:
    rig.workload.behaviour[CART].error_ratio = 0.5
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.BREACH)
    poller = rig.poller((ERROR_RATIO,))
    assert await poller.evaluate_once() == []
    firing = await poller.evaluate_once()
    assert [s.status for s in firing] == [SignalStatus.FIRING]

    await rig.prometheus.stop()
    during = await poller.evaluate_once()
    assert [(s.target, s.status) for s in during] == [(CART, SignalStatus.NO_DATA)]
    assert "query failed" in during[0].summary
    assert rig.query_errors == ["error_ratio"]
    assert await poller.evaluate_once() == []  # reported once per outage
    assert not any(
        s.status is SignalStatus.FIRING
        for s in rig.emitted
        if s.observed_at > firing[0].observed_at
    )

    await rig.prometheus.restart()
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.BREACH)
    after = await poller.evaluate_once()
    # Still the same anomaly: same start, same key, so the daemon joins it.
    assert [s.key for s in after] == [firing[0].key]


async def test_pending_breach_interrupted_by_an_outage_starts_over(rig: Rig) -> None:
    rig.workload.behaviour[CART].error_ratio = 0.5
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.BREACH)
    poller = rig.poller((ERROR_RATIO,))
    assert await poller.evaluate_once() == []

    await rig.prometheus.stop()
    during = await poller.evaluate_once()
    assert [s.status for s in during] == [SignalStatus.NO_DATA]

    await rig.prometheus.restart()
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.BREACH)
    assert await poller.evaluate_once() == []  # the count restarted at one
    assert [s.status for s in await poller.evaluate_once()] == [SignalStatus.FIRING]


async def test_low_traffic_is_not_judged(rig: Rig) -> None:
    quiet = Target("shop", "quiet")
    rig.workload.behaviour[quiet] = Behaviour(rps=1.0, error_ratio=1.0)
    rig.workload.behaviour[CART].error_ratio = 1.0
    spec = dataclasses.replace(ERROR_RATIO, min_traffic=3.0)
    await rig.wait_verdict(CART, spec, Verdict.BREACH)

    found = await evaluate_specs(rig.promql, [spec])
    assert found[(quiet, "error_ratio")].verdict is Verdict.NO_DATA
    assert "not judged" in found[(quiet, "error_ratio")].detail

    poller = rig.poller((spec,))
    for _ in range(3):
        await poller.evaluate_once()
    assert {s.target for s in rig.emitted} == {CART}


async def test_one_query_per_signal_per_cycle_however_many_deployments(rig: Rig) -> None:
    fleet = [Target(f"team{i % 4}", f"svc{i}") for i in range(40)]
    for target in fleet:
        rig.workload.behaviour[target] = Behaviour(rps=5.0)
    await rig.wait_verdict(fleet[-1], ERROR_RATIO, Verdict.HEALTHY)

    poller = rig.poller()
    rig.promql.queries.clear()
    await poller.evaluate_once()
    # Two signals, one value query each: with nothing breaching or tracked,
    # there is no verdict for a traffic query to gate.
    values = [render_query(spec.query, spec.window) for spec in SPECS]
    assert sorted(rig.promql.queries) == sorted(values)

    rig.workload.behaviour[fleet[0]].error_ratio = 0.5
    await rig.wait_verdict(fleet[0], ERROR_RATIO, Verdict.BREACH)
    rig.promql.queries.clear()
    await poller.evaluate_once()
    # A breach: its signal's traffic query runs too, to judge the evidence.
    assert ERROR_RATIO.traffic_query is not None
    traffic = render_query(ERROR_RATIO.traffic_query, ERROR_RATIO.window)
    assert sorted(rig.promql.queries) == sorted([*values, traffic])
    found = await evaluate_specs(rig.promql, SPECS)
    judged = {target for (target, _), e in found.items() if e.verdict is Verdict.HEALTHY}
    assert set(fleet[1:]) | {CART, WEB} <= judged


async def _has_active_targets(url: str) -> bool | None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/v1/targets", params={"state": "active"}) as resp,
    ):
        return True if (await resp.json())["data"]["activeTargets"] else None


async def test_adapter_reads_scrape_interval_health_and_nan(rig: Rig) -> None:
    # Right after start (targets not listed yet) the global config answers.
    assert await rig.promql.scrape_interval() == timedelta(seconds=1)
    await poll_until(
        lambda: _has_active_targets(rig.prometheus.url), within=30, message="active targets"
    )
    assert await rig.promql.scrape_interval() == timedelta(seconds=1)
    assert await rig.promql.healthy()

    scalar = await rig.promql.query("0/0")
    assert len(scalar) == 1 and math.isnan(scalar[0].value) and scalar[0].labels == {}
    vector = await rig.promql.query('label_replace(vector(0)/0, "namespace", "x", "", "")')
    assert math.isnan(vector[0].value) and vector[0].labels == {"namespace": "x"}

    with pytest.raises(PromQLError) as bad:
        await rig.promql.query("sum(")
    assert not bad.value.retryable

    await rig.prometheus.stop()
    assert not await rig.promql.healthy()
    assert await rig.promql.scrape_interval() is None
    with pytest.raises(PromQLError, match="unreachable"):
        await rig.promql.query("vector(1)")


async def test_adapter_retries_transient_errors_but_not_bad_queries() -> None:
    statuses = [503, 502]
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.query["query"])
        if request.query["query"] == "bad":
            return web.json_response({"status": "error", "error": "parse error"}, status=400)
        if statuses:
            return web.Response(status=statuses.pop(0))
        data = {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "2"]}]}
        return web.json_response({"status": "success", "data": data})

    app = web.Application()
    app.router.add_get("/api/v1/query", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    promql = PromQL(f"http://127.0.0.1:{runner.addresses[0][1]}", attempts=3, max_backoff=0.1)
    try:
        assert [s.value for s in await promql.query("good")] == [2.0]
        assert seen == ["good"] * 3

        seen.clear()
        with pytest.raises(PromQLError, match="400") as bad:
            await promql.query("bad")
        assert seen == ["bad"]
        assert not bad.value.retryable

        seen.clear()
        statuses.extend([503, 503, 503])
        with pytest.raises(PromQLError, match="503"):
            await promql.query("good")
        assert seen == ["good"] * 3  # bounded
    finally:
        await promql.close()
        await runner.cleanup()


Folded = dict[TargetKey, float]


class ScriptedPromQL:
    """Stands in for the adapter in loop tests: each query pops the next scripted answer."""

    def __init__(
        self, script: list[Folded | Exception], landings: list[float] | None = None
    ) -> None:
        self.script = script
        self.landings = landings or []
        self.calls = 0
        self.called_at: list[float] = []
        self.landing_asks = 0
        self.exhausted = asyncio.Event()

    async def query_vector(
        self, expr: str, *, at: datetime | None = None, combine: Combine = "max", **_: str
    ) -> Folded:
        self.calls += 1
        self.called_at.append(time.time())
        if not self.script:
            self.exhausted.set()
            return {}
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def scrape_landings(self) -> list[float]:
        self.landing_asks += 1
        return self.landings


def _breach(target: Target) -> Folded:
    return {(target.namespace, target.name): 1.0}


async def test_run_survives_a_failing_cycle_and_stops_cleanly_when_cancelled() -> None:
    spec = SignalSpec(name="x", query="q", threshold=0.5, for_count=1)
    scripted = ScriptedPromQL([RuntimeError("unexpected"), _breach(CART)])
    emitted: list[Signal] = []

    async def emit(signal: Signal) -> None:
        emitted.append(signal)

    poller = PrometheusPoller(
        scripted,  # type: ignore[arg-type]
        [spec],
        interval=0.01,
        emit=emit,
        clock=lambda: datetime.now(UTC),
    )
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(scripted.exhausted.wait(), 10)
    assert not task.done()  # the RuntimeError cycle did not kill the loop
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(s.target, s.status) for s in emitted][:1] == [(CART, SignalStatus.FIRING)]


async def test_a_firing_target_that_vanishes_from_results_is_no_data() -> None:
    spec = SignalSpec(name="x", query="q", threshold=0.5, for_count=1)
    scripted = ScriptedPromQL([_breach(CART), {}])
    emitted: list[Signal] = []

    async def emit(signal: Signal) -> None:
        emitted.append(signal)

    poller = PrometheusPoller(
        scripted,  # type: ignore[arg-type]
        [spec],
        interval=1.0,
        emit=emit,
        clock=lambda: datetime.now(UTC),
    )
    await poller.evaluate_once()
    gone = await poller.evaluate_once()
    assert [(s.status, s.summary) for s in gone] == [(SignalStatus.NO_DATA, "no series")]
    assert [s.status for s in emitted] == [SignalStatus.FIRING, SignalStatus.NO_DATA]


async def test_a_failing_emit_does_not_hide_the_other_signals() -> None:
    spec = SignalSpec(name="x", query="q", threshold=0.5, for_count=1)
    scripted = ScriptedPromQL([_breach(CART) | _breach(WEB)])
    received: list[Target] = []

    async def emit(signal: Signal) -> None:
        if signal.target == CART:
            raise RuntimeError("queue closed")
        received.append(signal.target)

    poller = PrometheusPoller(
        scripted,  # type: ignore[arg-type]
        [spec],
        interval=1.0,
        emit=emit,
        clock=lambda: datetime.now(UTC),
    )
    await poller.evaluate_once()
    assert received == [WEB]


class SteppedClock:
    """A clock the test moves: one second a cycle."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def step(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)


async def _looks(script: list[Folded | Exception]) -> tuple[list[Signal], SteppedClock]:
    """Run one cycle per scripted answer, a second apart; the signals emitted."""
    spec = SignalSpec(name="x", query="q", threshold=0.5, for_count=1, window="30s")
    clock = SteppedClock()
    start = clock.now
    poller = PrometheusPoller(
        ScriptedPromQL(list(script)),  # type: ignore[arg-type]
        [spec],
        interval=1.0,
        emit=lambda _signal: asyncio.sleep(0),
        clock=clock,
    )
    emitted: list[Signal] = []
    for _ in script:
        emitted += await poller.evaluate_once()
        clock.step()
    clock.now = start
    return emitted, clock


HEALTHY_CART: Folded = {(CART.namespace, CART.name): 0.0}


async def test_a_first_look_that_breaches_may_be_made_of_a_whole_windows_old_samples() -> None:
    # A poller that just took the Lease: nothing looked at before this breach.
    emitted, clock = await _looks([_breach(CART), _breach(CART)])
    first, repeat = emitted
    assert first.started_at == clock.now
    assert first.evidence_since == clock.now - timedelta(seconds=30)
    assert first.earliest_start == clock.now - timedelta(seconds=30)
    assert (repeat.key, repeat.evidence_since) == (first.key, first.evidence_since)


async def test_a_breach_after_a_healthy_look_is_new_since_that_look() -> None:
    emitted, clock = await _looks([HEALTHY_CART, HEALTHY_CART, _breach(CART)])
    [signal] = emitted
    assert signal.started_at == clock.now + timedelta(seconds=2)
    # The samples new since the look at +1 s count requests from one interval before it.
    assert signal.evidence_since == clock.now


async def test_a_breach_after_a_failed_query_may_be_a_whole_window_old() -> None:
    emitted, clock = await _looks([HEALTHY_CART, PromQLError("down"), _breach(CART)])
    [signal] = emitted
    assert signal.started_at == clock.now + timedelta(seconds=2)
    assert signal.evidence_since == clock.now + timedelta(seconds=2 - 30)


async def test_a_cycle_judges_only_breaching_and_tracked_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 10 000 healthy Deployments and one breaching: one Evaluation is built, not 10 001.
    from rollbackd.signals import Judgement

    fleet: Folded = {("fleet", f"svc{i}"): 0.0 for i in range(10_000)}
    spec = SignalSpec(name="x", query="q", threshold=0.5, for_count=2)
    scripted = ScriptedPromQL([fleet | _breach(CART), fleet | _breach(CART)])
    built: list[TargetKey] = []
    original = Judgement.evaluation

    def counting(self: Judgement, key: TargetKey) -> Any:
        built.append(key)
        return original(self, key)

    monkeypatch.setattr(Judgement, "evaluation", counting)
    emitted: list[Signal] = []

    async def emit(signal: Signal) -> None:
        emitted.append(signal)

    poller = PrometheusPoller(
        scripted,  # type: ignore[arg-type]
        [spec],
        interval=1.0,
        emit=emit,
        clock=lambda: datetime.now(UTC),
    )
    assert await poller.evaluate_once() == []
    assert [s.status for s in await poller.evaluate_once()] == [SignalStatus.FIRING]
    assert built == [("shop", "cart"), ("shop", "cart")]
    assert poller.tracked == 1


async def test_polls_run_just_after_the_scrapes_land() -> None:
    interval = 0.5
    landing = time.time() - 3.21  # any past landing: only its phase matters
    spec = SignalSpec(name="x", query="q", threshold=0.5)
    scripted = ScriptedPromQL([{} for _ in range(6)], landings=[landing])

    async def emit(signal: Signal) -> None:
        raise AssertionError("nothing breaches")

    poller = PrometheusPoller(
        scripted,  # type: ignore[arg-type]
        [spec],
        interval=interval,
        emit=emit,
        clock=lambda: datetime.now(UTC),
    )
    task = asyncio.create_task(poller.run())
    try:
        await asyncio.wait_for(scripted.exhausted.wait(), 20)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    expected = (landing + landing_margin(interval)) % interval
    # The first poll runs at start; every later one on the aligned grid, one interval apart.
    later = scripted.called_at[1:]
    offsets = [((t - expected + interval / 2) % interval) - interval / 2 for t in later]
    assert all(-0.005 <= offset < 0.1 for offset in offsets), offsets
    gaps = [b - a for a, b in itertools.pairwise(later)]
    assert all(gap > interval * 0.8 for gap in gaps), gaps


async def test_adapter_folds_vectors_and_reads_scrape_landings(rig: Rig) -> None:
    await rig.wait_verdict(CART, ERROR_RATIO, Verdict.HEALTHY)
    folded = await rig.promql.query_vector(
        "sum by (namespace, deployment) (rate(http_requests_total[5s]))", combine="sum"
    )
    assert set(folded) == {("shop", "cart"), ("shop", "web")}
    assert all(rate > 0 for rate in folded.values())

    landings = await rig.promql.scrape_landings()
    assert len(landings) == 1  # one scrape target
    assert time.time() - 5 < landings[0] <= time.time() + 0.1

    with pytest.raises(PromQLError, match="HTTP 400") as bad:
        await rig.promql.query_vector("sum(")
    assert not bad.value.retryable
    with pytest.raises(PromQLError, match="instant vector") as matrix:
        await rig.promql.query_vector("http_requests_total[5s]")
    assert not matrix.value.retryable


@pytest.mark.parametrize(("landings", "asks"), [([], {5, 6}), ([1_700_000_000.25], {1})])
async def test_the_phase_is_asked_for_until_known_then_kept(
    landings: list[float], asks: set[int]
) -> None:
    spec = SignalSpec(name="x", query="q", threshold=0.5)
    scripted = ScriptedPromQL([{} for _ in range(5)], landings=landings)

    async def emit(signal: Signal) -> None:
        raise AssertionError("nothing breaches")

    poller = PrometheusPoller(
        scripted,  # type: ignore[arg-type]
        [spec],
        interval=0.05,
        emit=emit,
        clock=lambda: datetime.now(UTC),
    )
    task = asyncio.create_task(poller.run())
    try:
        await asyncio.wait_for(scripted.exhausted.wait(), 20)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Five scripted cycles ran, and maybe the sixth that found the script empty.
    assert scripted.landing_asks in asks


async def test_every_cycle_reports_whether_it_was_ok_degraded_or_failed() -> None:
    spec = SignalSpec(name="x", query="q", threshold=0.5, for_count=1)
    scripted = ScriptedPromQL(
        [RuntimeError("a bug"), PromQLError("prometheus down"), _breach(CART), {}]
    )
    results: list[str] = []

    async def emit(signal: Signal) -> None:
        pass

    poller = PrometheusPoller(
        scripted,  # type: ignore[arg-type]
        [spec],
        interval=0.01,
        emit=emit,
        clock=lambda: datetime.now(UTC),
        on_cycle=results.append,
    )
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(scripted.exhausted.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert results[:4] == ["failed", "degraded", "ok", "ok"]
