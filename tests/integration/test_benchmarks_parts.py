"""The benchmark's parts, one by one: the baselines' rules, the faults, the counters, the metrics and the tasks."""

from __future__ import annotations

import doctest
import itertools
import math

import pytest
import torch

import benchmarks._common
import benchmarks.faults
import benchmarks.finder_quality
import benchmarks.finetune
import benchmarks.overhead
import benchmarks.spike_baselines
import benchmarks.watchdog_early
import benchmarks.watchdog_recovery
from benchmarks._common import grid_lrs
from benchmarks.faults import FaultyLoader, LRFault, fault
from benchmarks.finder_quality import RunCache, best_lr, regret
from benchmarks.finders import fastai_sweep, fastai_valley, valley
from benchmarks.models import (
    HELD_OUT_FIFTH_TASKS,
    HELD_OUT_FOURTH_TASKS,
    HELD_OUT_SECOND_TASKS,
    HELD_OUT_TASKS,
    HELD_OUT_THIRD_TASKS,
    TASKS,
    Task,
    make_task,
    train,
    train_loader,
)
from benchmarks.overhead import HostReads, StepTimer
from benchmarks.spike_baselines import HighLossError, KillLossSpike, LossSpikeError
from lr_callbacks import LRSchedule, preset
from tests.helpers import TinyModel, loader, make_trainer, regression_data


@pytest.mark.parametrize(
    "module",
    [
        benchmarks._common,
        benchmarks.faults,
        benchmarks.finder_quality,
        benchmarks.finetune,
        benchmarks.overhead,
        benchmarks.spike_baselines,
        benchmarks.watchdog_early,
        benchmarks.watchdog_recovery,
    ],
)
def test_doctests(module) -> None:
    failed, attempted = doctest.testmod(module, globs={"math": math, **vars(module)})
    assert attempted > 0 and failed == 0


# --- fastai's valley, reimplemented -----------------------------------------------------------------------


def test_valley_picks_about_half_way_along_the_longest_decreasing_run() -> None:
    # A strictly decreasing run of 31 points, then a rise: fastai's longest decreasing subsequence ends at
    # index 30 with length 31, its start is estimated as 30 − 31 = −1 (one too early), and the pick is
    # start + int(31/3) + int(31/6) = −1 + 10 + 5 = 14.
    losses = [100.0 - i for i in range(31)] + [70.0 + i for i in range(1, 10)]
    lrs = [float(i) for i in range(len(losses))]
    assert valley(lrs, losses) == 14.0


def test_valley_skips_noise_bumps_as_fastai_does() -> None:
    # A bump inside the descent does not break a subsequence (it is not a contiguous run).
    losses = [10.0, 9.0, 9.5, 8.0, 7.0, 7.5, 6.0, 5.0, 6.0, 7.0]
    lrs = [float(i) for i in range(len(losses))]
    # LDS ends at index 7 (10, 9, 8, 7, 6, 5: length 6); start 7 − 6 = 1; pick 1 + int(2) + int(1) = 4.
    assert valley(lrs, losses) == 4.0
    with pytest.raises(ValueError, match="needs at least one point"):
        valley([], [])


def _exploding_task() -> Task:
    """Linear regression: plain SGD's loss grows without bound once the LR passes 2/λmax."""
    data = regression_data(n=64)
    return Task(
        name="toy",
        build=lambda: torch.nn.Linear(4, 1),
        train_set=data,
        val_set=data,
        loss=torch.nn.functional.mse_loss,
        batch_size=8,
        steps=10,
        schedule=preset("constant"),
        default_lr={"sgd": 1e-3},
        grid={"sgd": (1e-4, 1.0)},
        optimizers=("sgd",),
    )


def test_fastai_sweep_follows_its_exponential_schedule_and_stops_at_four_times_the_best() -> None:
    task = _exploding_task()
    lrs, losses = fastai_sweep(task, "sgd", seed=0)
    expected = [1e-7 * (10 / 1e-7) ** (i / 100) for i in range(len(lrs))]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert len(lrs) < 100
    assert losses[-1] > 4 * min(losses) and all(v <= 4 * min(losses[: i + 1]) for i, v in enumerate(losses[:-1]))
    # The first smoothed value is the first raw loss (the EMA is debiased).
    torch.manual_seed(0)
    model = task.build()
    x, y = next(iter(train_loader(task, 0)))
    assert losses[0] == pytest.approx(float(task.loss(model(x), y)), rel=1e-5)
    # Digits: the lagging EMA never reaches 4× its best before the sweep ends.
    assert len(fastai_sweep(make_task("digits-mlp", steps=20), "adamw", seed=0)[0]) == 100


def test_fastai_valley_suggestion_lies_inside_its_sweep() -> None:
    task = make_task("digits-mlp", steps=20)
    suggestion = fastai_valley(task, "adamw", seed=0)
    assert suggestion.finder == "fastai_valley" and suggestion.lr is not None
    assert suggestion.lrs[10] <= suggestion.lr <= suggestion.lrs[-6]
    assert fastai_valley(task, "adamw", seed=1).losses != suggestion.losses  # the seed sets model and data order


# --- KillLossSpike ----------------------------------------------------------------------------------------


def _feed(rule: KillLossSpike, losses: list[float], total: int = 1000, start: int = 1) -> int:
    for i, loss in enumerate(losses):
        if rule.observe(loss, current_step=start + i, total_steps=total):
            return start + i
    return -1


def test_kill_loss_spike_fires_on_the_fifth_outlier_in_a_row() -> None:
    rule = KillLossSpike()
    _feed(rule, [1.0] * 100)
    with pytest.raises(LossSpikeError, match=r"5 consecutive losses ≥ 2\.0× the running mean"):
        _feed(rule, [3.0] * 5, start=101)


def test_kill_loss_spike_patience_resets_and_nan_is_never_an_outlier() -> None:
    rule = KillLossSpike(log_only=True)
    assert _feed(rule, [1.0] * 100 + [3.0] * 4 + [1.0] + [3.0] * 4 + [math.nan] * 20) == -1
    assert _feed(KillLossSpike(log_only=True, patience=2), [1.0] * 100 + [3.0] * 3) == 103


def test_kill_loss_spike_window_grows_to_five_percent_of_the_run() -> None:
    rule = KillLossSpike(log_only=True)
    # 4,000 steps: the window becomes 200 when the first 100 are in, and detection waits for it to fill.
    assert _feed(rule, [1.0] * 100 + [5.0] * 99, total=4000) == -1
    assert rule.window_size == 200


def test_kill_loss_spike_high_loss_rule_uses_the_cap_of_ten() -> None:
    rule = KillLossSpike()
    with pytest.raises(HighLossError, match="half of the last 100 losses above 10"):
        _feed(rule, [20.0] * 300)
    assert rule.loss_cap == 10.0  # the cap check first runs one step after the window fills, as in the original
    calm = KillLossSpike(log_only=True)
    assert _feed(calm, [9.0] * 300) == -1


def test_kill_loss_spike_halts_a_real_trainer_at_the_expected_step(tmp_path) -> None:
    model = TinyModel(loss_hook=lambda step, loss: loss * 100 if step >= 110 else loss.detach() * 0 + 1.0 + loss * 0)
    trainer = make_trainer(tmp_path, max_steps=200, callbacks=[KillLossSpike()], logger=False)
    with pytest.raises(LossSpikeError):
        trainer.fit(model, loader(batch_size=1))
    assert trainer.global_step == 115  # steps 110–114 are outliers; the fifth raises after its update


# --- faults -----------------------------------------------------------------------------------------------


def test_faulty_loader_corrupts_exactly_the_batches_of_the_fault_across_epochs() -> None:
    data = loader(batch_size=8)  # 8 batches per epoch
    x_clean = torch.cat([x for x, _ in data])
    nan = FaultyLoader(data, fault("nan_batch", start=10), classes=10)
    batches = [x for _ in range(2) for x, _ in nan]
    assert [i for i, x in enumerate(batches) if torch.isnan(x).any()] == [10]
    assert torch.isnan(batches[10][0]).all() and not torch.isnan(batches[10][1:]).any()
    scaled = FaultyLoader(data, fault("inputs_x1e3", start=3), classes=10)
    assert torch.equal(list(scaled)[3][0], x_clean[24:32] * 1e3)
    assert len(scaled) == 8


def test_label_noise_is_seeded_and_covers_its_window() -> None:
    ys = torch.zeros(64, dtype=torch.long)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(64, 64), ys), batch_size=4)
    first = [y for _, y in FaultyLoader(data, fault("label_noise_10", start=2, seed=3), classes=10)]
    again = [y for _, y in FaultyLoader(data, fault("label_noise_10", start=2, seed=3), classes=10)]
    other = [y for _, y in FaultyLoader(data, fault("label_noise_10", start=2, seed=4), classes=10)]
    changed = [i for i, y in enumerate(first) if y.any()]
    assert min(changed) >= 2 and max(changed) <= 11 and len(changed) >= 8
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_data_switch_lowers_the_contrast_from_its_start_on() -> None:
    data = loader(torch.utils.data.TensorDataset(torch.ones(32, 64), torch.zeros(32)), batch_size=8)
    batches = [x for x, _ in FaultyLoader(data, fault("data_switch", start=2), classes=10)]
    assert [float(x.mean()) for x in batches] == pytest.approx([1.0, 1.0, 0.75, 0.75])


def test_lr_fault_multiplies_the_lr_of_exactly_its_steps(tmp_path) -> None:
    model = TinyModel()
    pulse = LRFault(fault("lr_pulse_x30", start=3))
    trainer = make_trainer(tmp_path, max_steps=30, callbacks=[LRSchedule("constant"), pulse], logger=False)
    trainer.fit(model, loader(batch_size=2))
    body = [lrs[0] for lrs in model.seen_lrs]
    assert body == pytest.approx([0.1] * 3 + [3.0] * 20 + [0.1] * 7)
    persistent = TinyModel()
    trainer = make_trainer(
        tmp_path,
        max_steps=8,
        callbacks=[LRSchedule("constant"), LRFault(fault("lr_x5_persistent", start=5))],
        logger=False,
    )
    trainer.fit(persistent, loader(batch_size=2))
    assert [lrs[1] for lrs in persistent.seen_lrs] == pytest.approx([0.01] * 5 + [0.05] * 3)


def test_partial_label_noise_replaces_a_fifth_of_the_labels_for_200_batches() -> None:
    ys = torch.full((4000,), -1, dtype=torch.long)  # -1 is never drawn: every changed label shows
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4000, 1), ys), batch_size=10)
    batches = [y for _, y in FaultyLoader(data, fault("label_noise_20pct_200", start=5, seed=1), classes=10)]
    changed = [float((y >= 0).float().mean()) for y in batches]
    assert all(c == 0.0 for c in changed[:5] + changed[205:])
    assert sum(changed[5:205]) / 200 == pytest.approx(0.2, abs=0.02)


def test_scheduler_restart_replays_the_schedule_from_step_0(tmp_path) -> None:
    from lr_callbacks import preset

    schedule = preset("cosine", warmup="10%")
    model = TinyModel()
    restart = LRFault(fault("scheduler_restart", start=10), schedule, 20)
    trainer = make_trainer(tmp_path, max_steps=20, callbacks=[LRSchedule(schedule), restart], logger=False)
    trainer.fit(model, loader(batch_size=2))
    body = [lrs[0] for lrs in model.seen_lrs]
    planned = [0.1 * schedule(k, 20, 1) for k in range(20)]
    assert body[:10] == pytest.approx(planned[:10])
    assert body[10:] == pytest.approx(planned[:10])


def test_adam_v_reset_zeroes_the_second_moment_once_and_keeps_the_step_count() -> None:
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    for _ in range(3):
        parameter.grad = torch.ones(3)
        optimizer.step()
    reset = LRFault(fault("adam_v_reset", start=1))
    reset.on_before_optimizer_step(None, None, optimizer)
    assert float(optimizer.state[parameter]["exp_avg_sq"].sum()) > 0  # step 0: not yet
    reset.on_before_optimizer_step(None, None, optimizer)
    assert float(optimizer.state[parameter]["exp_avg_sq"].abs().sum()) == 0.0
    assert float(optimizer.state[parameter]["step"]) == 3.0


def test_zclip_clips_a_norm_far_above_its_ema_reciprocally() -> None:
    from benchmarks.spike_baselines import ZClip

    clip = ZClip(warmup_steps=4)
    assert [clip.target(g) for g in (1.0, 1.2, 0.8, 1.0)] == [None] * 4
    mean, std = clip.mean, clip.var**0.5
    z = (10.0 - mean) / (std + 1e-6)
    assert clip.target(10.0) == pytest.approx(mean + 2.5 * std / (z / 2.5))
    assert clip.target(float("nan")) is None


def test_zclip_with_the_librarys_cap_clips_to_the_smaller_of_the_adaptive_value_and_the_cap() -> None:
    """``zclip.capped``: the library's default ``max_grad_norm=1.0`` (``zclip/zclip.py``): the warmup clips at the
    cap alone, later steps at ``min(adaptive, cap)``, and the EMAs follow the adaptive value."""
    from benchmarks.spike_baselines import ZClip

    capped, pure = ZClip(warmup_steps=4, max_grad_norm=1.0), ZClip(warmup_steps=4)
    assert [capped.target(g) for g in (1.0, 1.2, 0.8, 3.0)] == [None, 1.0, None, 1.0]
    for g in (1.0, 1.2, 0.8, 3.0):
        pure.target(g)
    assert capped.mean == pure.mean and capped.target(1.5) == 1.0 and pure.target(1.5) is None
    assert capped.mean == pure.mean  # the cap does not enter the EMAs


def test_the_trials_ranking_has_one_place_per_candidate_and_reaches_tau_1() -> None:
    """Successive halving's ranking: a candidate of a later rung above one of an earlier rung, then by the loss at
    its last rung. Before, every rung's trial was an item: 0.8 was the highest τ a three-candidate list allowed."""
    from benchmarks.finetune import kendall_tau, trial_ranking

    trials = [
        {"lr": 1e-4, "val_loss": 1.77, "rung": 0},
        {"lr": 1e-5, "val_loss": 1.79, "rung": 0},
        {"lr": 1e-6, "val_loss": 1.80, "rung": 0},
        {"lr": 1e-4, "val_loss": 1.74, "rung": 1},
        {"lr": 1e-5, "val_loss": 1.79, "rung": 1},
    ]
    ranking = trial_ranking(trials)
    assert ranking == {1e-4: 0, 1e-5: 1, 1e-6: 2}
    full = {1e-4: 0.98, 1e-5: 1.2, 1e-6: 1.7}
    assert kendall_tau([ranking[lr] for lr in full], list(full.values())) == 1.0


def test_unknown_fault_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"fault must be one of nan_batch, .*, clean, data_switch; got 'gremlins'"):
        fault("gremlins", start=0)


# --- counters ---------------------------------------------------------------------------------------------


class _Reader(TinyModel):
    """Reads its loss back to the host once per step (``loss.item()``), like a progress print would."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        loss.item()
        return loss


@pytest.mark.parametrize(("model", "extra"), [(TinyModel, 0.0), (_Reader, 1.0)])
def test_host_reads_per_step_count_what_the_step_reads(tmp_path, model, extra) -> None:
    def reads_per_step(module) -> float:
        counter = HostReads()
        timer = StepTimer(warmup=2, reads=counter)
        trainer = make_trainer(tmp_path, max_steps=12, callbacks=[timer], logger=False)
        with counter:
            trainer.fit(module, loader(batch_size=4))
        assert len(timer.times) == 12 and timer.seconds_per_step() > 0
        return timer.reads_per_step()

    assert reads_per_step(model()) - reads_per_step(TinyModel()) == extra


def test_step_timer_waits_until_ready() -> None:
    state = {"ready": False}
    timer = StepTimer(ready=lambda: state["ready"], warmup=0)
    timer.on_train_batch_start(None, None, None, 0)
    state["ready"] = True
    timer.on_train_batch_start(None, None, None, 1)
    assert len(timer.times) == 1 and math.isnan(timer.seconds_per_step())


# --- metrics and the grid ---------------------------------------------------------------------------------


def test_every_task_grid_spans_four_decades_in_half_octaves() -> None:
    held_out = (*HELD_OUT_TASKS, *HELD_OUT_SECOND_TASKS, *HELD_OUT_THIRD_TASKS, *HELD_OUT_FOURTH_TASKS)
    for name in (*TASKS[:3], *held_out, *HELD_OUT_FIFTH_TASKS):
        task = make_task(name)
        for optimizer in task.optimizers:
            lrs = grid_lrs(*task.grid[optimizer])
            assert lrs[-1] / lrs[0] >= 1e4, (name, optimizer)
            assert all(b / a == pytest.approx(2**0.5) for a, b in itertools.pairwise(lrs))
            assert lrs[0] < task.default_lr[optimizer] < lrs[-1]
    assert len(grid_lrs(1e-3, 10.0)) == 28


def test_best_lr_keeps_the_grid_point_at_an_edge_or_on_a_concave_fit() -> None:
    lrs = [10.0**k for k in range(-5, 0)]
    assert best_lr(lrs, [1.0, 2.0, 3.0, 4.0, 5.0]) == (0, 1e-5)
    assert best_lr(lrs, [5.0, 4.0, 1.0, 4.0, math.nan]) == (2, 1e-3)  # a NaN in the window: no fit
    assert math.isnan(regret(0.5, best=0.5, default=0.5))  # no span between the default and the best


def test_run_cache_trains_once_and_survives_a_reload(tmp_path) -> None:
    task = make_task("digits-mlp", steps=5)
    cache = RunCache(str(tmp_path / "cache" / "runs.json"))
    first = cache.get(task, "sgd", 0.1, 0)
    assert cache.get(task, "sgd", 0.1, 0) == first and cache.trained == 1
    cache.get(task, "sgd", 0.1, 1)
    cache.save()
    again = RunCache(str(tmp_path / "cache" / "runs.json"))
    assert again.get(task, "sgd", 0.1, 0) == first and again.trained == 0
    longer = make_task("digits-mlp", steps=6)
    assert RunCache.key(longer, "sgd", 0.1, 0) != RunCache.key(task, "sgd", 0.1, 0)


def test_train_follows_the_schedule_and_flags_divergence() -> None:
    task = make_task("digits-mlp", steps=30)
    calm, _ = train(task, "adamw", 3e-3, seed=0)
    assert not calm.diverged and calm.steps == 30 and calm.loss < calm.train_losses[0]
    same, _ = train(task, "adamw", 3e-3, seed=0)
    assert same == calm
    blown, _ = train(task, "sgd", 1e4, seed=0)
    assert blown.diverged and blown.loss == pytest.approx(task.chance_loss)
    with pytest.raises(
        ValueError, match=r"optimizer must be one of sgd, adamw, nesterov, .*, radam, asgd, amsgrad; got 'lamb'"
    ):
        train(task, "lamb", 1e-3, seed=0)


def test_train_does_not_call_a_run_that_never_learned_diverged() -> None:
    # digits-autoencoder at LR 1e-5 never learns (validation 1.12, above the task's chance loss 1.0), and one batch
    # holding rare pixels scores 2.5× the first (2.67 against 1.09) at any weights: a hard batch, not a blow-up
    task = make_task("digits-autoencoder", steps=60)
    stalled, _ = train(task, "nadam", 1e-5, seed=0)
    assert max(stalled.train_losses) > 2 * stalled.train_losses[0] and stalled.loss >= task.chance_loss
    assert not stalled.diverged
    blown, _ = train(make_task("digits-mlp", steps=60), "sgd", 3.5, seed=0)  # blows up, then stalls at chance
    assert blown.diverged and math.isfinite(blown.loss) and max(blown.train_losses) > 100 * blown.train_losses[0]


def test_finder_report_names_each_optimizers_default_lr(tmp_path) -> None:
    # the regret's reference is the optimizer's own default in torch: 1e-2 for Adagrad and 2e-3 for NAdam, not 1e-3
    import json
    import os

    from benchmarks._common import Context
    from benchmarks.finder_quality import FULL, GROUPS, _aggregate, _report

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "benchmarks", "results", "finder.json")) as handle:
        tasks = json.load(handle)["tasks"]
    results = {key: tasks[key] for key in ("docstrings-bag/adagrad", "digits-autoencoder/nadam", "digits-mlp/sgd")}
    for pair in results.values():
        pair["suggestions"] = [s for s in pair["suggestions"] if s["finder"] == "lr_callbacks"][:1]
    rows = [{"task": key, **e} for key, r in results.items() for e in r["suggestions"]]
    table = _aggregate(rows, results)
    ctx = Context(out=str(tmp_path), command="python -m benchmarks", quick=False, threads=1)
    _report(ctx, FULL, results, table, dict.fromkeys(GROUPS, table), {}, 1.0)
    text = (tmp_path / "finder.md").read_text()
    assert "default LR in torch − best grid loss; 0.01 for adagrad, 2.00e-03 for nadam, 1.00e-03 for sgd)" in text
    assert "default LR 1e-3" not in text


def test_unknown_task_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match="task must be one of digits-mlp, digits-cnn, charlm, minilm, digits-vit, digits-lstm, tabular, "
        "cancer-transformer, digits-mixer, digits-gru, digits-resnet, docstrings-bag, digits-autoencoder, "
        "cancer-logreg, docstrings-cnn, charlm-gru, docstrings-transformer, digits-deepmlp, charlm-conv; got 'mnist'",
    ):
        make_task("mnist")


# --- arguments that matter, and the remaining refusals ------------------------------------------------------


def test_kill_loss_spike_arguments_each_change_when_it_fires() -> None:
    assert _feed(KillLossSpike(log_only=True), [1.0] * 100 + [1.6] * 10) == -1
    assert _feed(KillLossSpike(log_only=True, outlier_multiplier=1.5), [1.0] * 100 + [1.6] * 10) == 105
    # A window size the user sets never gets a maxlen (as in the original), so the rule looks only once, at the
    # step when the window holds exactly that many losses.
    assert _feed(KillLossSpike(log_only=True, window_size=50, patience=0), [1.0] * 50 + [3.0] * 5) == 51
    assert _feed(KillLossSpike(log_only=True, window_size=50), [1.0] * 50 + [3.0] * 20) == -1
    assert _feed(KillLossSpike(log_only=True, loss_cap=5.0), [6.0] * 250) == 200  # a user cap is kept
    assert _feed(KillLossSpike(log_only=True), [6.0] * 250) == -1  # the default cap of 10 is not reached


def test_fastai_sweep_range_and_length_are_its_arguments() -> None:
    task = make_task("digits-mlp", steps=20)
    lrs, _ = fastai_sweep(task, "adamw", seed=0, start_lr=1e-5, end_lr=1.0, num_it=20)
    assert len(lrs) == 20 and lrs[0] == 1e-5 and lrs[-1] == pytest.approx(1e-5 * 1e5 ** (19 / 20))


def test_train_overrides_change_the_run() -> None:
    task = make_task("digits-mlp", steps=20)
    base, _ = train(task, "adamw", 3e-3, seed=0)
    assert train(task, "adamw", 3e-3, seed=0, schedule=preset("constant"))[0].loss != base.loss
    assert train(task, "adamw", 3e-3, seed=0, steps=5)[0].steps == 5
    assert train(task, "adamw", 3e-3, seed=1)[0].loss != base.loss
    torch.manual_seed(0)
    trained = train(task, "adamw", 3e-3, seed=0)[1]
    assert train(task, "adamw", 3e-3, seed=0, model=trained)[0].loss != base.loss  # continues from it


def test_unknown_finder_and_method_list_the_valid_ones(tmp_path) -> None:
    from benchmarks.finders import run_finder
    from benchmarks.watchdog_recovery import _method

    task = make_task("digits-mlp", steps=5)
    with pytest.raises(ValueError, match=r"finder must be one of lr_callbacks, lightning, .*; got 'oracle'"):
        run_finder("oracle", task, "sgd", 0, str(tmp_path))
    with pytest.raises(ValueError, match=r"method must be one of none, early_stopping, .*; got 'prayer'"):
        _method("prayer")


def test_success_bar_is_the_worst_of_the_best_and_its_neighbours_on_the_same_seed() -> None:
    from benchmarks.finder_quality import _near_best

    losses = {  # lr -> loss per seed; seed 2 is beyond the grid's two seeds, trained on demand
        1.0: [0.9, 0.8, 0.3],
        2.0: [0.5, 0.7, 0.2],
        3.0: [0.6, 0.4, 0.1],
        4.0: [2.0, 2.0, 2.0],
    }

    class Cache:
        def get(self, task, optimizer, lr, seed):
            return {"loss": losses[lr][seed]}

    truth = {"best_index": 1, "lrs": [1.0, 2.0, 3.0, 4.0]}
    assert _near_best(Cache(), None, "sgd", truth, 0) == 0.9 and _near_best(Cache(), None, "sgd", truth, 1) == 0.8
    assert _near_best(Cache(), None, "sgd", {**truth, "best_index": 0}, 1) == 0.8  # at the edge: one neighbour
    assert _near_best(Cache(), None, "sgd", truth, 2) == 0.3  # a finder seed the grid does not have


def test_a_pair_rerun_for_some_finders_names_the_commit_of_each() -> None:
    from benchmarks.finder_quality import _measured_at

    pair = {
        "commit": "new",  # the pair's stamp is the latest run's; the finders it did not rerun are older
        "suggestions": [
            {"finder": "lightning", "commit": "new"},
            {"finder": "lightning", "commit": "new"},
            {"finder": "lr_callbacks", "commit": "old"},
            {"finder": "lr_callbacks.confirm", "commit": "old"},
        ],
    }
    assert _measured_at(pair) == "commits `new` (lightning), `old` (lr_callbacks, lr_callbacks.confirm)"
    assert _measured_at({**pair, "suggestions": pair["suggestions"][:2]}) == "commit `new`"
    assert _measured_at({"commit": "c", "suggestions": [{"finder": "x"}]}) == "commit `c`"  # entries before stamps


def test_a_watchdog_rerun_of_some_methods_keeps_the_others_runs(tmp_path) -> None:
    import dataclasses
    import json

    from benchmarks._common import write_json
    from benchmarks.watchdog_recovery import METHODS, Outcome, _methods, _provenance, _with_previous

    assert _methods(("lr_callbacks.per_sample", "none")) == ["none", "lr_callbacks.per_sample"]
    assert _methods(()) == list(METHODS)
    with pytest.raises(ValueError, match=r"--methods: unknown prayer; choose among none, early_stopping"):
        _methods(("prayer",))
    path = str(tmp_path / "watchdog.json")
    with pytest.raises(ValueError, match=r"the others come from .*watchdog.json, which is missing"):
        _with_previous([], ["lr_callbacks.per_sample"], path)
    old = [
        Outcome("none", "sgd", "nan_batch", 0, math.nan, math.nan, 400),
        Outcome("lr_callbacks", "sgd", "nan_batch", 0, 0.1, 0.97, 400, events=["step 167: non_finite → skip"]),
        Outcome("lr_callbacks.per_sample", "sgd", "nan_batch", 0, 9.0, 0.1, 400),  # replaced by the rerun
    ]
    write_json(path, {"runs": [dataclasses.asdict(o) for o in old]})
    with open(path) as handle:
        assert json.load(handle)["runs"][0]["loss"] is None  # NaN is written as null
    new = [Outcome("lr_callbacks.per_sample", "sgd", "nan_batch", 0, 0.1, 0.97, 400)]
    merged = _with_previous(new, ["lr_callbacks.per_sample"], path)
    assert [o.method for o in merged] == ["none", "lr_callbacks", "lr_callbacks.per_sample"]
    assert math.isnan(merged[0].loss) and merged[1] == old[1] and merged[2] == new[0]
    # runs written before they kept their commit get the one of the report's stamp
    stamp = "- command: `python -m benchmarks --only watchdog` at commit `09680fc812a3`\n"
    (tmp_path / "watchdog.md").write_text(stamp)
    merged = _with_previous([dataclasses.replace(new[0], commit="08ecbfc11ca0")], ["lr_callbacks.per_sample"], path)
    assert [o.commit for o in merged] == ["09680fc812a3", "09680fc812a3", "08ecbfc11ca0"]
    assert _provenance(merged).endswith("- `none`: `09680fc812a3`\n- `lr_callbacks`: `09680fc812a3`\n"
                                        "- `lr_callbacks.per_sample`: `08ecbfc11ca0`")  # fmt: skip
    assert _provenance(merged[:2]) == ""
    write_json(path, {"runs": [dataclasses.asdict(o) for o in old[1:]]})
    with pytest.raises(ValueError, match=r"the unguarded runs \(method 'none'\) are the references"):
        _with_previous(new, ["lr_callbacks.per_sample"], path)


def test_the_per_sample_task_module_reports_what_its_loss_averages() -> None:
    from benchmarks.models import TaskModule
    from lr_callbacks.watchdog.samples import take_sample_losses

    task = make_task("digits-mlp", steps=5)
    module = TaskModule(task, "sgd", 0.1, log_loss=False, per_sample=True)
    x, y = next(iter(train_loader(task, 0)))
    loss = module.training_step((x, y), 0)
    samples = take_sample_losses(module)
    assert samples is not None and samples.shape == (len(y),)
    assert float(samples.mean()) == pytest.approx(float(loss), rel=1e-6)
    plain = TaskModule(task, "sgd", 0.1, log_loss=False)
    assert torch.equal(plain.training_step((x, y), 0), loss) and take_sample_losses(plain) is None
    with pytest.raises(ValueError, match=r"per_sample=True needs a task with a sample_loss; 'charlm' has none"):
        TaskModule(make_task("charlm", steps=5), "sgd", 0.1, per_sample=True)


def test_a_partial_run_keeps_the_summary_sections_another_process_wrote_meanwhile(tmp_path, monkeypatch) -> None:
    import json

    import benchmarks.__main__ as entry

    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"natural": {"old": 1}, "watchdog": {"old": 1}}))

    def natural(ctx) -> dict[str, int]:  # while it runs, another process finishes the watchdog benchmark
        summary.write_text(json.dumps({"natural": {"old": 1}, "watchdog": {"new": 2}}))
        return {"new": 3}

    monkeypatch.setattr(entry, "_runner", lambda name: natural)
    monkeypatch.setattr(entry, "summary_markdown", lambda summary, header: "")
    result = entry.main(["--only", "natural", "--out", str(tmp_path)])
    assert json.loads(summary.read_text()) == {"watchdog": {"new": 2}, "natural": {"new": 3}} == result


def test_finder_report_states_the_seeds_each_finder_ran(tmp_path) -> None:
    # the report said "Every finder then runs on 5 seed(s)" where the peers ran 3 on the tuning pairs
    import json
    import os

    from benchmarks._common import Context
    from benchmarks.finder_quality import FULL, GROUPS, _aggregate, _report

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "benchmarks", "results", "finder.json")) as handle:
        tasks = json.load(handle)["tasks"]
    results = {key: tasks[key] for key in ("digits-mlp/sgd", "digits-resnet/sgd")}
    for pair in results.values():
        pair["suggestions"] = [s for s in pair["suggestions"] if s["finder"] in ("lr_callbacks", "lightning")]
    rows = [{"task": key, **e} for key, r in results.items() for e in r["suggestions"]]
    table = _aggregate(rows, results)
    ctx = Context(out=str(tmp_path), command="python -m benchmarks", quick=False, threads=1)
    _report(ctx, FULL, results, table, dict.fromkeys(GROUPS, table), {}, 1.0)
    text = " ".join((tmp_path / "finder.md").read_text().split())
    assert "Finder seeds per pair: lr_callbacks 5 on every pair; lightning 3 (tuning), 5 (held out, third set)." in text
    assert "5 seed(s) (model initialisation" not in text


def test_summary_names_the_command_of_each_section(tmp_path) -> None:
    # sections come from different runs; summary.md gave one command at the top, the last run's
    from benchmarks.__main__ import _stamps, summary_markdown

    (tmp_path / "watchdog_natural.md").write_text(
        "# Natural\n\n- command: `python -m benchmarks --only natural` at commit `aaaa`\n- machine: x\n\nText\n"
    )
    (tmp_path / "finder_variants.md").write_text(
        "# Variants\n\n- command: `python -m benchmarks --only finder_variants` at commit `bbbb`\n- machine: y\n\nT\n"
    )
    natural = {"within_10pct": 0, "unstable_multiples": 3, "never_worse": True}
    natural |= {"snapshot_mib": 1.0, "snapshot_host_ms": 1.0, "snapshot_disk_ms": 1.0}
    summary = {"finder_variants": {}, "natural": natural}
    text = summary_markdown(summary, _stamps(str(tmp_path), summary))
    variants = "From `python -m benchmarks --only finder_variants` at commit `bbbb` (`finder_variants.md` has the"
    assert f"## LR finder under variants of one pair (each against its own grid)\n\n{variants} machine" in text
    assert (
        "## Watchdog under natural instability\n\nFrom `python -m benchmarks --only natural` at commit `aaaa`" in text
    )
    assert "machine: " not in text


def test_committed_reports_are_what_the_renderer_writes_from_their_json(tmp_path) -> None:
    # a sentence typed into a report by hand (finetune.md's on the τ's ranking) is lost at the next run; the
    # committed finder.md, finetune.md and summary.md must be exactly what --report-only writes from the JSON
    import os
    import shutil

    import benchmarks.__main__ as entry

    results = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
    results = os.path.join(results, "results")
    for name in ("finder", "finetune", "summary"):
        shutil.copy(os.path.join(results, f"{name}.json"), tmp_path)
    for name in entry.REPORTS.values():
        shutil.copy(os.path.join(results, name), tmp_path)
    entry.main(["--report-only", "--out", str(tmp_path)])
    for name in ("finder.md", "finetune.md", "summary.md"):
        with open(os.path.join(results, name), encoding="utf-8") as handle:
            assert (tmp_path / name).read_text() == handle.read(), f"{name} differs from what its renderer writes"


def test_the_committed_sweeps_give_today_the_answers_finder_json_reports() -> None:
    """The committed finder benchmark's numbers come from the committed analysis: each of our default's and confirm
    mode's sweeps in ``finder.json`` (110 each), read by today's ``suggest_lr``, gives the suggestion, the range and
    the sweep's flags its result records. A change to the analysis that moves any of them must rerun the benchmark
    (``python -m benchmarks --only finder``) before it lands. The ``lr_callbacks.<method>`` rows are left out: they
    re-analysed older sweeps at their first run (benchmarks/README.md)."""
    import json
    import os

    from lr_callbacks.finder.analysis import suggest_lr

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "benchmarks", "results", "finder.json")) as handle:
        tasks = json.load(handle)["tasks"]
    runs = [
        (key, run)
        for key, pair in tasks.items()
        for run in pair["suggestions"]
        if run["finder"] in ("lr_callbacks", "lr_callbacks.confirm")
    ]
    assert len(runs) == 220
    moved = []
    for key, run in runs:
        result, sweep = run["result"], run["sweep"]
        losses = [math.nan if loss is None else loss for loss in sweep["losses"]]
        answer = suggest_lr(sweep["lrs"], losses, result["method"], window=result["window"])
        now = (answer.lr, list(answer.range) if answer.range is not None else None)
        if now != (result["suggestion"], result["range"]) or not set(answer.flags) <= set(result["flags"]):
            moved.append((key, run["finder"], run["seed"], now, result["suggestion"], answer.flags, result["flags"]))
    assert not moved, f"{len(moved)} committed sweeps answer otherwise today, e.g. {moved[:2]}"


def test_the_early_fault_benchmark_runs_the_recovery_benchmarks_run_with_the_fault_moved_into_the_window() -> None:
    """``benchmarks.watchdog_early`` runs the watchdog benchmark's run with its fault at step 25 (inside the window
    where trouble is read as the peak's), unguarded and guarded. An LR pulse ×10 there (AdamW, seed 0) was sent back
    to the run's start at a tenth of the LR for good at stop 36's rules: 0.364 against 0.128 unguarded; told from a
    peak too high now (the LR ran above the one LRSchedule wrote), it ends below the unguarded run."""
    import dataclasses
    import tempfile

    from benchmarks.models.digits import digits_task
    from benchmarks.watchdog_early import FULL, run_start

    scale = dataclasses.replace(
        FULL, runs=dataclasses.replace(FULL.runs, optimizers=("adamw",), faults=("lr_pulse_x10",), fault_seeds=1)
    )
    task = digits_task("mlp", steps=scale.runs.steps)
    with tempfile.TemporaryDirectory() as root, benchmarks._common.quiet():
        none, guarded = run_start(task, scale, 25, root)
    for run in (none, guarded):
        assert (run.fault, run.optimizer, run.seed, run.start) == ("lr_pulse_x10", "adamw", 0, 25)
    assert (none.method, guarded.method) == ("none", "lr_callbacks")
    assert any("rollback" in e for e in guarded.events)  # the pulse damaged the weights, and the watchdog acted
    assert guarded.loss <= none.loss < 0.2
