"""DivergenceWatchdog's optional per-sample signal: a module that reports its per-sample losses
(``report_sample_losses``) gets a batch dominated by outlier samples skipped as bad data.

Real Trainer runs on the digits: one batch with a quarter of its labels wrong, which the step's loss alone does
not flag (the plain watchdog trains on it); clean runs; the device path and its host reads; exact resume; the
checkpoint state; bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lr_callbacks import DivergenceWatchdog, report_sample_losses
from lr_callbacks.watchdog.config import WatchdogConfig
from lr_callbacks.watchdog.policy import WatchdogPolicy
from lr_callbacks.watchdog.samples import take_sample_losses
from lr_callbacks.watchdog.stats import SampleBaseline, Samples, Verdict, binomial_limit
from tests.helpers import FORKED_RANKS, make_trainer
from tests.watchdog.test_callback import StepSpy, SyncCounter
from tests.watchdog.test_models import DigitsModel, Faults, digits_data, fit

CORRUPT_AT = 150
"""The step whose batch has wrong labels, after both warmups of the per-sample signal (50 batches each)."""


class PerSampleModel(DigitsModel):
    """The digits MLP reporting its per-sample losses (``report=True``); ``corrupt`` maps a step to the share of
    its batch's labels made wrong (on ``rank`` only, if given)."""

    def __init__(
        self,
        corrupt: dict[int, float] | None = None,
        report: bool = True,
        rank: int | None = None,
        batch_by_step: bool = False,
        faults: Faults | None = None,
        optimizer: str = "adamw",
    ) -> None:
        super().__init__(optimizer, batch_by_step=batch_by_step, faults=faults)
        self.corrupt, self.report, self.rank = corrupt or {}, report, rank

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        step = self.global_step
        if self.by_step is not None:
            start = (step * 32) % (len(self.by_step[1]) - 31)
            x, y = self.by_step[0][start : start + 32], self.by_step[1][start : start + 32]
        share = self.corrupt.get(step, 0.0) if torch.is_grad_enabled() else 0.0  # not the reference batch's
        if share and self.rank in (None, self.global_rank):
            wrong = round(share * len(y))
            shift = torch.randint(1, 10, (wrong,), generator=torch.Generator().manual_seed(step))
            y = torch.cat([(y[:wrong] + shift) % 10, y[wrong:]])  # a wrong label for each of the first `wrong`
        losses = torch.nn.functional.cross_entropy(self.net(x), y, reduction="none")
        if self.report:
            report_sample_losses(self, losses)
        loss = losses.mean()
        if torch.is_grad_enabled():
            self.losses.append(float(loss.detach()))
        return loss


def quiet_watchdog(**kwargs: object) -> DivergenceWatchdog:
    return DivergenceWatchdog(flat_loss_steps=None, **kwargs)  # type: ignore[arg-type]


# --- the rule, pure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "p"), [(32, 0.02), (32, 0.2), (8, 0.1), (256, 0.003), (1000, 0.05)])
def test_binomial_limit_is_the_smallest_count_with_a_tail_below_alpha(n, p):
    def tail(k: int) -> float:  # P(X > k), summed exactly
        return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1, n + 1))

    k = binomial_limit(n, p, 1e-6)
    assert tail(k) <= 1e-6 < tail(k - 1)


def test_the_limit_is_the_median_of_the_batches_largest_losses_and_the_rate_is_measured_at_it():
    baseline = SampleBaseline(window=10, warmup=5)
    for largest in (1.0, 5.0, 2.0, 4.0):
        baseline.add(Samples(largest=largest, count=0, n=32))
    assert baseline.limit == math.inf  # the warmup
    baseline.add(Samples(largest=3.0, count=0, n=32))
    assert baseline.limit == 3.0 and baseline.max_count(32) == math.inf
    for count in (1, 1, 2, 1, 1):  # less dispersed than a binomial: φ = 1
        baseline.add(Samples(largest=3.0, count=count, n=32, limit=3.0))
    assert baseline.tail_rate == pytest.approx(6.5 / 161) and baseline.dispersion == 1.0
    assert baseline.max_count(32) == binomial_limit(32, 6.5 / 161)
    for count in (0, 0, 0, 0, 6):  # a clean batch with 6: the counts vary more than a binomial's
        baseline.add(Samples(largest=3.0, count=count, n=32, limit=3.0))
    p = 12.5 / 321
    phi = sum((c - 32 * p) ** 2 for c in (1, 1, 2, 1, 1, 0, 0, 0, 0, 6)) / (10 * 32 * p * (1 - p))
    assert baseline.dispersion == pytest.approx(phi) and phi > 2
    assert baseline.max_count(32) == pytest.approx(phi * binomial_limit(round(32 / phi), p))
    assert baseline.max_count(32) > binomial_limit(32, p)
    baseline.add(Samples(largest=math.nan, count=0, n=32, limit=3.0))  # a non-finite summary is ignored
    assert len(baseline.tails) == 10


def policy_after_clean_batches(steps: int = 120, **kwargs: object) -> WatchdogPolicy:
    policy = WatchdogPolicy(WatchdogConfig(**kwargs))  # type: ignore[arg-type]
    for step in range(steps):
        samples = Samples(2.0 + 0.1 * (step % 5), float(step % 2), 32.0, policy.gate().sample_limit)
        policy.record(step, 1.0 + 0.01 * (step % 3), 2.0, policy.judge(1.0, 2.0, samples), None, samples)
    return policy


def test_a_dominated_batch_is_skipped_as_bad_data_without_an_lr_cut_within_the_data_budget():
    policy = policy_after_clean_batches(max_data_skips=3)
    gate = policy.gate()
    assert gate.sample_limit == 2.2 and gate.sample_count < 16
    bad = Samples(largest=9.0, count=16, n=32, limit=gate.sample_limit)
    decisions = []
    for step in range(120, 123):
        verdict = policy.judge(1.0, 2.0, bad)  # the batch loss is normal: only the samples tell
        assert verdict == Verdict(skip=True, signals=("sample_outliers",))
        decisions.append(policy.record(step, 1.0, 2.0, verdict, None, bad))
    actions = [(e.step, e.signal, e.action) for d in decisions for e in d.incidents]
    assert actions == [
        (120, "sample_outliers", "skip"),
        (121, "sample_outliers", "skip"),
        (122, "sample_outliers", "skip"),
        (122, "sample_outliers", "rebaseline"),  # three in a row (max_data_skips): a change of data
    ]
    assert "16 of 32 samples have a loss above 2.2" in decisions[0].incidents[0].detail
    assert all(d.scale is None and not d.rollback and d.halt is None for d in decisions)
    assert policy.scale == 1.0 and policy.gate().sample_limit == math.inf  # the per-sample warmup starts again


@pytest.mark.parametrize(("reference", "damaged"), [(1.2, False), (1.7, True), (None, None)])
def test_the_clean_reference_batch_tells_bad_data_from_damaged_weights(reference, damaged):
    policy = policy_after_clean_batches()
    policy.snapshot_taken(119, reference=1.0)  # the reference batch's loss at the snapshot's weights
    bad = Samples(largest=9.0, count=16, n=32, limit=policy.gate().sample_limit)
    verdict = policy.judge(1.0, 2.0, bad)
    decision = policy.record(120, 1.0, 2.0, verdict, None if reference is None else lambda: reference, bad)
    actions = [(e.signal, e.action) for e in decision.incidents]
    if damaged:  # the weights make the samples outliers (an LR fault): the ladder rolls back, as for the loss
        assert actions == [("sample_outliers", "skip"), ("damaged_weights", "rollback")]
        assert decision.rollback and decision.rollback_to == 119 and decision.scale == 0.5
        assert "the clean reference batch's loss rose too" in decision.incidents[0].detail
    else:  # bad data (or nothing to tell): skipped, nothing else
        assert actions == [("sample_outliers", "skip")] and not decision.rollback and decision.scale is None
        known = "shows sound weights" if damaged is False else "no reference batch to tell"
        assert f"{known}: bad data" in decision.incidents[0].detail


def test_the_policy_state_round_trips_and_an_older_state_without_samples_loads():
    policy = policy_after_clean_batches()
    fresh = WatchdogPolicy(policy.config)
    fresh.load_state_dict(policy.state_dict())
    assert repr(fresh.state_dict()) == repr(policy.state_dict()) and fresh.gate() == policy.gate()
    older = policy.state_dict()
    del older["samples"]
    fresh.load_state_dict(older)
    assert fresh.gate().sample_limit == math.inf and fresh.gate().loss_limit == policy.gate().loss_limit


# --- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("losses", "error", "message"),
    [
        (torch.tensor([1, 2]), TypeError, "must be a floating-point tensor of one loss per sample, got a torch.int64"),
        ([0.1, 0.2], TypeError, "got 'list'"),
        (torch.tensor(0.5), ValueError, "must be 1-D, one loss per sample of the batch, got shape ()"),
        (torch.ones(4, 8), ValueError, "got shape (4, 8); compute the loss with reduction='none'"),
        (torch.ones(0), ValueError, "got shape (0,)"),
    ],
)
def test_per_sample_losses_of_the_wrong_kind_are_refused_with_the_fix(losses, error, message):
    with pytest.raises(error, match=r"report_sample_losses: `losses`") as raised:
        report_sample_losses(torch.nn.Linear(1, 1), losses)
    assert message in str(raised.value)


def test_reported_losses_are_detached_and_taken_once():
    module, losses = torch.nn.Linear(1, 1), torch.ones(3, requires_grad=True) * 2
    report_sample_losses(module, losses)
    taken = take_sample_losses(module)
    assert taken is not None and not taken.requires_grad and torch.equal(taken, losses.detach())
    assert take_sample_losses(module) is None


# --- with a real Trainer ----------------------------------------------------------------------------------


def test_a_batch_with_a_quarter_of_wrong_labels_is_skipped_only_with_the_per_sample_signal(tmp_path):
    reporting, plain = quiet_watchdog(), quiet_watchdog()
    spy = StepSpy(CORRUPT_AT)
    fit(tmp_path / "a", PerSampleModel({CORRUPT_AT: 0.25}), [reporting, spy], CORRUPT_AT + 10)
    model = PerSampleModel({CORRUPT_AT: 0.25}, report=False)
    fit(tmp_path / "b", model, [plain], CORRUPT_AT + 10)
    assert [(e.step, e.signal, e.action) for e in reporting.events] == [(CORRUPT_AT, "sample_outliers", "skip")]
    assert spy.unchanged()  # a true no-op
    assert reporting.scale == 1.0
    # the step's loss alone does not flag the batch: the plain watchdog trains on it (so the test can fail)
    assert plain.events == []
    losses = model.losses
    assert losses[CORRUPT_AT] > 4 * max(losses[CORRUPT_AT - 5 : CORRUPT_AT])  # and yet it is a bad batch


@pytest.mark.parametrize("seed", [0, 1])
def test_clean_runs_that_report_their_samples_get_no_intervention_from_them(tmp_path, seed):
    reporting, plain = quiet_watchdog(), quiet_watchdog()
    fit(tmp_path / "a", PerSampleModel(), [reporting], 300, seed=seed)
    fit(tmp_path / "b", PerSampleModel(report=False), [plain], 300, seed=seed)
    # the per-sample signal adds nothing on clean data: the same events as without it (the update-ratio
    # signal's, if any), none of them its own, and the signal was live for the last 200 steps
    assert [repr(e) for e in reporting.events] == [repr(e) for e in plain.events]
    assert reporting._policy.gate().sample_count < 32


def test_an_lr_fault_that_makes_the_samples_outliers_is_rolled_back_not_skipped_as_data(tmp_path):
    # the update of step CORRUPT_AT - 1 runs at 100× the LR: the next batches' samples are outliers because the
    # weights are damaged; skipped as bad data, the weights would never recover (nothing trains them back)
    watchdog = quiet_watchdog()
    model = PerSampleModel(faults=Faults(lr_times={CORRUPT_AT - 1: 100.0}))
    fit(tmp_path, model, [watchdog], CORRUPT_AT + 20)
    first = [(e.step, e.signal, e.action) for e in watchdog.events][:2]
    assert first == [(CORRUPT_AT, "sample_outliers", "skip"), (CORRUPT_AT, "damaged_weights", "rollback")]
    assert not any(e.action == "skip" and "bad data" in e.detail for e in watchdog.events)


def test_on_the_device_the_batch_is_skipped_too_with_no_extra_host_read(tmp_path):
    spy, watchdog = StepSpy(CORRUPT_AT), quiet_watchdog(sync_every_n_steps=4)
    fit(tmp_path, PerSampleModel({CORRUPT_AT: 0.25}), [watchdog, spy], CORRUPT_AT + 10)
    assert [(e.step, e.signal, e.action) for e in watchdog.events] == [(CORRUPT_AT, "sample_outliers", "skip")]
    assert spy.before is not None and spy.after is not None  # SGD: zero gradients on the device (documented)
    counts = []
    for report in (False, True):
        with SyncCounter() as counter:
            fit(tmp_path, PerSampleModel(report=report), [quiet_watchdog(sync_every_n_steps=8)], 64, logger=False)
        counts.append(counter.count)
    assert counts[0] == counts[1]  # the per-sample summary rides on the reads the watchdog makes anyway


def test_the_share_is_logged_to_tensorboard_once_the_limit_exists(tmp_path):
    from tests.helpers import read_scalars

    fit(tmp_path, PerSampleModel({CORRUPT_AT: 0.25}), [quiet_watchdog(log_every_n_steps=1)], CORRUPT_AT + 2)
    shares = dict(read_scalars(tmp_path, "watchdog/sample_outliers"))
    assert min(shares) == 50 and shares[CORRUPT_AT] == pytest.approx(8 / 32)  # the 8 wrong labels


def resumable_run(tmp_path, steps: int, ckpt_path: str | None = None, **kwargs: object):
    """Checkpointed after step 146: not an update-ratio sample step (the ratio measured after the update of a
    sample step is not in the checkpoint), and between two reads on the device (steps 144-146 are held)."""
    model = PerSampleModel({CORRUPT_AT: 0.25, CORRUPT_AT + 3: 0.5}, batch_by_step=True)
    watchdog = quiet_watchdog(**kwargs)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=147, save_top_k=-1)
    trainer = make_trainer(tmp_path, max_steps=steps, callbacks=[watchdog, saver], enable_checkpointing=True)
    trainer.fit(model, DataLoader(digits_data(), batch_size=32, shuffle=False), ckpt_path=ckpt_path)
    return model, watchdog


@pytest.mark.parametrize("kwargs", [{}, {"sync_every_n_steps": 4}], ids=["host", "device"])
def test_resuming_behaves_like_the_uninterrupted_run(tmp_path, kwargs):
    full_model, full = resumable_run(tmp_path / "full", 200, **kwargs)
    assert {(CORRUPT_AT, "sample_outliers", "skip"), (153, "sample_outliers", "skip")} <= {
        (e.step, e.signal, e.action) for e in full.events
    }
    ckpt = str(tmp_path / "full" / "ckpt" / "epoch=2-step=147.ckpt")
    pending = torch.load(ckpt, weights_only=False)["callbacks"]["DivergenceWatchdog"]["pending"]
    assert [(row["step"], len(row["samples"])) for row in pending] == ([(144, 4), (145, 4), (146, 4)] if kwargs else [])
    resumed_model, resumed = resumable_run(tmp_path / "resumed", 200, ckpt_path=ckpt, **kwargs)
    assert [repr(e) for e in resumed.events] == [repr(e) for e in full.events]
    assert repr(resumed.state_dict()) == repr(full.state_dict())
    assert all(map(torch.equal, resumed_model.state_dict().values(), full_model.state_dict().values()))


# --- DDP -------------------------------------------------------------------------------------------------


def fit_on_two_ranks(tmp_path: Path, model: PerSampleModel) -> list[dict[str, Any]]:
    """Fit ``model`` under the quiet watchdog on 2 forked gloo processes to ``CORRUPT_AT + 5`` steps; each
    rank's record (:class:`~tests.integration.test_watchdog_ddp.Record`: events, scale, weights)."""
    from tests.integration.test_watchdog_ddp import Record

    watchdog = quiet_watchdog()
    trainer = make_trainer(
        tmp_path,
        max_steps=CORRUPT_AT + 5,
        accelerator="cpu",
        devices=2,
        strategy=FORKED_RANKS,
        callbacks=[watchdog, Record(str(tmp_path), watchdog)],
    )
    pl.seed_everything(0, verbose=False)
    trainer.fit(model, DataLoader(digits_data(), batch_size=32, shuffle=True))
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_under_ddp_every_rank_takes_the_same_decision(tmp_path):
    # rank 1's batch at CORRUPT_AT has half its labels wrong, rank 0's is clean: a quarter of the global batch
    ranks = fit_on_two_ranks(tmp_path, PerSampleModel({CORRUPT_AT: 0.5}, rank=1))
    assert ranks[0] == ranks[1]  # same incidents, same scale, same weights, bit for bit
    (skip,) = [e for e in ranks[0]["events"] if f"step={CORRUPT_AT}, signal='sample_outliers'" in e]
    assert "action='skip'" in skip and "bad data" in skip
    count = float(skip.split("value=")[1].split(",")[0])
    assert 16 <= count <= 20 and "of 64 samples" in skip  # counted over both ranks: 16 wrong labels, a few hard


class SilentOnRank1(PerSampleModel):
    """:class:`PerSampleModel` whose rank 1 reports no per-sample losses at the steps of ``silent`` (a batch that
    took another code path)."""

    def __init__(self, silent: Sequence[int], corrupt: dict[int, float], rank: int) -> None:
        super().__init__(corrupt, rank=rank)
        self.silent = set(silent)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.report = not (self.global_rank == 1 and self.global_step in self.silent)
        return super().training_step(batch, batch_idx)


def test_under_ddp_a_step_where_only_some_ranks_report_per_sample_losses_is_judged_on_theirs(tmp_path):
    """Rank 1 reports no per-sample losses at steps 20-22 and CORRUPT_AT, where rank 0's batch has half its labels
    wrong. Before, the ranks all-reduced 2 values against 5 at step 20: gloo aborted the job ("Received data size
    doesn't match expected size"). Now every rank sends the per-sample summary, and the step is judged on rank 0's
    32 samples alone."""
    import faulthandler

    faulthandler.dump_traceback_later(240, exit=True)  # a hang (NCCL's answer to the mismatch) ends the test run
    try:
        ranks = fit_on_two_ranks(tmp_path, SilentOnRank1([20, 21, 22, CORRUPT_AT], {CORRUPT_AT: 0.5}, rank=0))
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert ranks[0] == ranks[1]  # same incidents, same scale, same weights, bit for bit
    assert ranks[0]["steps"] == CORRUPT_AT + 5
    (skip,) = [e for e in ranks[0]["events"] if "signal='sample_outliers'" in e]
    assert f"step={CORRUPT_AT}," in skip and "action='skip'" in skip and "bad data" in skip
    count = float(skip.split("value=")[1].split(",")[0])
    assert 16 <= count <= 20 and "of 32 samples" in skip  # rank 0's 32: 16 wrong labels, a few hard


class OtherRank:
    """A strategy stand-in for one process without a process group: the mean with the other rank's ``values``."""

    def __init__(self, values: list[float]) -> None:
        self.values = torch.tensor(values)

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "mean"
        return (tensor + self.values) / 2


def test_the_per_sample_summary_over_ranks_counts_only_the_ranks_that_reported():
    from lr_callbacks.watchdog.device import StepSignals, all_reduce_signals

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    optimizer.param_groups[0]["params"][0].grad = torch.full((2,), 3.0)  # norm √18
    signals = StepSignals()
    signals.add_loss(torch.tensor(1.0))
    assert signals.collect(optimizer, 1).numel() == 2  # one process: as before, nothing added
    assert signals.collect(optimizer, 1, world_size=2).tolist()[2:] == [0.0, 0.0, 0.0, 0.0]  # reported none
    signals.add_samples(torch.tensor([0.5, 4.0, 1.0]))
    signals.sample_limit = 0.75
    assert signals.collect(optimizer, 1).tolist()[2:] == [4.0, 2.0, 3.0]
    mine = signals.collect(optimizer, 1, world_size=2)
    assert mine.tolist()[2:] == [4.0, 2.0, 3.0, 1.0]
    # the other rank reported none: its largest is not averaged in; the counts stay means (the caller's totals / 2)
    combined = all_reduce_signals(mine.clone(), 2, OtherRank([3.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    assert combined.tolist()[2:] == [4.0, 1.0, 1.5]
    both = all_reduce_signals(mine.clone(), 2, OtherRank([3.0, 1.0, 2.0, 1.0, 5.0, 1.0]))
    assert both.tolist()[2:] == [3.0, 1.5, 4.0]
    none = all_reduce_signals(torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0, 0.0]), 2, OtherRank([3.0, 1.0, 0, 0, 0, 0]))
    assert none.tolist() == [2.0, 1.5, 0.0, 0.0, 0.0]  # no samples anywhere: n = 0, read as no per-sample summary
