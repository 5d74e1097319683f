"""Properties of the watchdog's pure decision core, :class:`WatchdogPolicy`, over random streams (hypothesis).

Streams of steps (loss, gradient norm, reference-batch probe readings, update ratios, per-sample summaries) with
NaN/inf, long clean stretches, spikes, level shifts, plateaus, zeros and negative losses, under random valid
configs, driven as the callback drives the policy (``_host_step``). Whatever comes: no exception; every scale a
decision sets is finite and within [``min_lr_scale``, 1]; a rollback goes to a snapshot the policy holds; a halt
is final; and a checkpoint anywhere (``state_dict`` through JSON or pickle, loaded into a fresh policy) resumes
with exactly the decisions and state of the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import pickle
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lr_callbacks.watchdog.config import Action, WatchdogConfig
from lr_callbacks.watchdog.policy import WatchdogPolicy
from lr_callbacks.watchdog.state import Decision, Probe
from lr_callbacks.watchdog.stats import Samples

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)


@dataclass(frozen=True)
class Step:
    """One step as the callback reads it."""

    loss: float
    grad: float
    probe: tuple[float | None] | None  # None: no reference batch; else its reading on the live weights
    ratio: tuple[float, float] | None  # (update ratio, LR) of the one group, measured at this step
    samples: tuple[float, float, float] | None  # (largest, count, n) of the per-sample losses
    share: float  # the planned LR's share of its peak
    scaled: bool
    untouched: bool
    rebaseline: bool
    widened: bool


ODD = (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-300, 1e300)


@st.composite
def configs(draw: st.DrawFn) -> WatchdogConfig:
    window = draw(st.integers(3, 40))
    lower_after = draw(st.integers(1, 4))
    return WatchdogConfig(
        z_threshold=draw(st.sampled_from([0.5, 2.0, 6.0])),
        grad_z_threshold=draw(st.sampled_from([1.0, 10.0])),
        window=window,
        warmup_steps=draw(st.integers(3, window)),
        min_spread=draw(st.sampled_from([0.001, 0.02, 0.3])),
        outlier_action=draw(st.sampled_from(["skip", "clip"])),
        patience=draw(st.integers(2, 6)),
        lower_after=lower_after,
        lower_window=2 * lower_after - 1 + draw(st.integers(0, 30)),
        lr_factor=draw(st.sampled_from([0.1, 0.5, 0.9])),
        min_lr_scale=draw(st.sampled_from([0.01, 0.05, 0.5, 1.0])),
        cooldown_steps=draw(st.integers(0, 20)),
        recover_after=draw(st.sampled_from([None, 1, 7, "5%"])),
        cusum_drift=draw(st.sampled_from([0.0, 0.5, 1.0])),
        cusum_threshold=draw(st.sampled_from([0.5, 5.0, 25.0])),
        max_level_shift=draw(st.sampled_from([1.0, 1.5, 3.0])),
        snapshot_every=draw(st.sampled_from([None, 1, 3, 10])),
        snapshots=draw(st.integers(1, 4)),
        max_rollbacks=draw(st.integers(0, 4)),
        max_data_skips=draw(st.sampled_from([1, 3, "25%"])),
        update_every=draw(st.sampled_from([None, 1, 2, 5])),
        update_z_threshold=draw(st.sampled_from([1.0, 8.0])),
        skip_after_rollback=draw(st.integers(0, 2)),
        flat_loss_steps=draw(st.sampled_from([None, 10, 40])),
        flat_loss_drop=draw(st.sampled_from([0.01, 0.5, 1.0])),
    )


SEGMENT = st.tuples(
    st.sampled_from(["clean", "spike", "odd", "shift", "plateau", "climb", "negative", "zero", "wild"]),
    st.integers(1, 40),  # length
    st.sampled_from([1e-300, 1e-3, 0.5, 1.0, 3.0, 1e4, 1e300]),  # level
    st.integers(0, 2**16),  # seed
)


def expand(segments: list[tuple[str, int, float, int]], extras: int) -> list[Step]:
    """The steps of the segments, their extras (probes, ratios, samples...) drawn from ``extras``: odd readings
    everywhere (``extras`` odd), or readings as a sound run gives them (even)."""
    rng = random.Random(extras)
    harsh = extras % 2 == 1
    steps, share = [], rng.choice([0.01, 0.2, 1.0])
    for kind, length, level, seed in segments:
        local = random.Random(seed)
        for k in range(length):
            noise = math.exp(local.gauss(0.0, 0.05))
            loss = {
                "clean": level * noise,
                "spike": level * noise * (1e3 if k % 3 == 0 else 1.0),
                "odd": local.choice(ODD),
                "shift": 2.0 * level * noise,
                "plateau": level,
                "climb": level * noise * 1.05**k,
                "negative": -level * noise,
                "zero": 0.0,
                "wild": local.choice([level, 1.0 / level if level > 1e-300 else 1e300]) * noise,
            }[kind]
            grad = local.choice([*ODD, 1.0]) if kind == "odd" and local.random() < 0.5 else noise * (k % 2 + 1)
            probe = None
            if harsh and rng.random() < 0.6:
                probe = (rng.choice([None, level, level * 3.0, math.nan, math.inf, 0.0, -1.0]),)
            elif not harsh and kind != "odd":
                probe = (level * (3.0 if kind == "climb" and k > 10 else noise),)
            ratio = None
            if harsh and rng.random() < 0.5:
                ratio = (rng.choice([1e-3, 1e-2, 1.0, 0.0, math.nan, 1e300]), rng.choice([1e-3, 0.1, 0.0, 1e-300]))
            elif not harsh:
                ratio = (1e-3 * noise * (30.0 if rng.random() < 0.03 else 1.0), 1e-3)
            samples = None
            if harsh and rng.random() < 0.3:
                samples = (level * rng.choice([1.0, 5.0, math.inf]), float(rng.randint(0, 8)), rng.choice([8.0, 0.0]))
            elif not harsh and level < 1.0:
                samples = (level * noise * 2.0, float(rng.random() < 0.1) * (8.0 if kind == "spike" else 1.0), 8.0)
            share = min(1.0, share * rng.choice([1.0, 1.5, 0.5])) if rng.random() < 0.3 else share
            steps.append(
                Step(
                    loss,
                    grad,
                    probe,
                    ratio,
                    samples,
                    share if rng.random() < 0.95 else math.nan,
                    rng.random() < 0.1,
                    rng.random() < 0.5,
                    rng.random() < (0.02 if harsh else 0.002),
                    rng.random() < (0.02 if harsh else 0.002),
                )
            )
    return steps


def fresh(config: WatchdogConfig, total: int | None, can_roll_back: bool) -> WatchdogPolicy:
    policy = WatchdogPolicy(config)
    policy.configure(total, can_roll_back=can_roll_back)
    return policy


def check(policy: WatchdogPolicy, step: int, decision: Decision, halted_before: bool) -> None:
    """The invariants of one decision."""
    c = policy.config
    if halted_before:
        assert decision == Decision(), "a halted policy decides nothing more"
    if decision.scale is not None:
        assert math.isfinite(decision.scale) and c.min_lr_scale - 1e-12 <= decision.scale <= 1.0 + 1e-12, decision
    assert math.isfinite(policy.scale) and 0.0 < policy.scale <= 1.0 + 1e-12
    assert c.min_lr_scale - 1e-12 <= policy.state.scale <= 1.0 + 1e-12
    if decision.rollback:
        held = [int(r["step"]) for r in policy.state.ring]
        assert decision.rollback_to is not None and decision.rollback_to in held, (decision, held)
        assert decision.rollback_to <= step and policy.state.snapshot_step == decision.rollback_to
        assert policy.state.can_roll_back
    for incident in decision.incidents:
        if incident.action is Action.ROLLBACK:
            assert decision.rollback and incident.rollback_to == decision.rollback_to
    if decision.halt is not None:  # the budget of rollbacks (or cuts) is spent, no snapshot, or bad data's
        assert policy.state.halted == decision.halt
        last = decision.incidents[-1]
        spent = policy.state.rollbacks >= c.max_rollbacks or policy.state.snapshot_step is None
        assert spent or last.signal == "bad_data", decision
        assert [i.action for i in decision.incidents][-1:] == [Action.HALT]


def run(policy: WatchdogPolicy, steps: list[Step], first: int, checked: bool = True) -> list[str]:
    """Drive ``policy`` over ``steps`` from step ``first`` as the callback's ``_host_step`` does; each step's
    decisions, written as plain data (NaN compares equal so)."""
    out = []
    for offset, s in enumerate(steps):
        step = first + offset
        halted = policy.state.halted is not None
        if s.rebaseline:
            policy.rebaseline(step)
        if s.widened:
            policy.gradients_widened()
        policy.restored_untouched = s.untouched
        policy.scaled = s.scaled
        if policy.wants_share:
            policy.planned_share(step, s.share)
        samples = None
        if s.samples is not None:
            samples = Samples(*s.samples, limit=policy.gate().sample_limit)
        verdict = policy.judge(s.loss, s.grad, samples)
        decision = policy.record(step, s.loss, s.grad, verdict, reader(s.probe), samples)
        decisions = [decision]
        if checked:
            check(policy, step, decision, halted)
        every = policy.config.update_every
        if s.ratio is not None and every is not None and not (decision.rollback or decision.halt):
            update = policy.record_update(step, {"g": s.ratio}, s.grad)
            decisions.append(update)
            if checked:
                check(policy, step, update, halted or decision.halt is not None)
        if policy.wants_snapshot(step):
            leaving = policy.leaving(step)
            dropped = policy.snapshot_taken(step, s.loss)
            assert dropped == leaving
        out.append(json.dumps([_plain(d) for d in decisions]))
    return out


def reader(reading: tuple[float | None] | None) -> Probe | None:
    """The step's probe: its one reading at every call (the callback evaluates the reference batch once per read);
    ``None``: no reference batch."""
    return None if reading is None else lambda: reading[0]


def _plain(decision: Decision) -> list[Any]:
    incidents = [i.state() for i in decision.incidents]
    return [decision.scale, decision.rollback, decision.halt, decision.rollback_to, incidents]


def dump(policy: WatchdogPolicy) -> str:
    return json.dumps(policy.state_dict(), sort_keys=True)


@SETTINGS
@given(
    config=configs(),
    total=st.sampled_from([None, 30, 400]),
    can_roll_back=st.booleans(),
    segments=st.lists(SEGMENT, min_size=1, max_size=6),
    extras=st.integers(0, 2**16),
    cut=st.floats(0.0, 1.0),
    via=st.sampled_from(["json", "pickle"]),
)
def test_any_stream_keeps_the_invariants_and_resumes_exactly(config, total, can_roll_back, segments, extras, cut, via):
    """The invariants of :func:`check` at every decision, and a checkpoint after step ``cut`` × the stream (through
    JSON or pickle, as a checkpoint file holds it) resumed in a fresh policy decides as the uninterrupted one and
    ends in the same state. (The callback's own resume, which keeps only the checkpoint's snapshot, is
    ``resumed_from``'s, tested with the callback.)"""
    steps = expand(segments, extras)
    whole = fresh(config, total, can_roll_back)
    uninterrupted = run(whole, steps, first=0)
    k = round(cut * len(steps))
    before = fresh(config, total, can_roll_back)
    run(before, steps[:k], first=0, checked=False)
    saved = before.state_dict()
    saved = json.loads(json.dumps(saved)) if via == "json" else pickle.loads(pickle.dumps(saved))
    resumed = fresh(config, total, can_roll_back)
    resumed.load_state_dict(saved)
    assert resumed.scale == before.scale
    after = run(resumed, steps[k:], first=k, checked=False)
    assert after == uninterrupted[k:]
    assert dump(resumed) == dump(whole)
