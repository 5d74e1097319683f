"""What :class:`~lr_callbacks.LRSchedule` does once at fit start: resolve the run, build its table of
parameter groups, and check that the schedule fits; every refusal names the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lr_callbacks.core.compat import callback_named, optimizer_steps
from lr_callbacks.core.console import warn_rank_zero
from lr_callbacks.core.durations import Epochs, Run
from lr_callbacks.core.logs import given_names, group_names, names_of, unique
from lr_callbacks.core.lr_model import as_float, require_lr_groups
from lr_callbacks.schedule.shapes import Schedule
from lr_callbacks.schedule.transformers import TransformersSchedule

__all__ = [
    "LENGTH_POLICIES",
    "GroupState",
    "apply_length_policy",
    "bind",
    "build_table",
    "check_group_momentum",
    "check_momentum",
    "check_restored_shape",
    "check_schedule",
    "for_group",
    "group_keys",
    "refuse_unusable",
    "resolve_run",
    "short_epoch",
    "warn_manual_max_steps",
]

LENGTH_POLICIES = ("keep", "rescale", "error")


@dataclass
class GroupState:
    """What the schedule knows of one parameter group."""

    tag: str  # "group0", "head", or "Adam/head" with several optimizers
    name: str  # its name in the tags: the given name, made unique (group_names)
    given: str  # param_group["name"] or "group<i>", which several groups may share
    schedule: Schedule
    peak: float
    scale: float = 1.0
    lr: float = math.nan  # the LR last written
    momentum: bool = field(init=False)  # whether the schedule co-schedules the momentum (asked once)

    def __post_init__(self) -> None:
        self.momentum = self.schedule.co_schedules_momentum()


def refuse_unusable(trainer: Any) -> None:
    """Refuse a run with a torch scheduler (it would fight over the LR), or with no optimizer or LR to drive.

    Raises:
        ValueError: naming the scheduler, or the missing optimizer, and the fix.
    """
    if trainer.lr_scheduler_configs:
        names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
        raise ValueError(
            f"LRSchedule drives the learning rate, but configure_optimizers also returned a torch scheduler "
            f"({names}) that would overwrite it at every step. Return only the optimizer(s), or drop LRSchedule "
            "and keep your scheduler (LRFinder and DivergenceWatchdog work with it)"
        )
    require_lr_groups(trainer, "LRSchedule")


def resolve_run(trainer: Any, schedules: Sequence[Schedule]) -> Run:
    """The run's length in optimizer steps and its epoch length, from the trainer."""
    total_steps = optimizer_steps(trainer)
    if trainer.train_dataloader is None and any(isinstance(d, Epochs) for s in schedules for d in s.durations()):
        # With max_steps (max_epochs=-1), estimated_stepping_batches answers without loading the data, so
        # the epoch length is unknown at fit start. Load it, as estimated_stepping_batches does with max_epochs,
        # only when a duration is in epochs: loaded before the checkpoint's loop state is restored, a stateful
        # dataloader does not get its state back.
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    per_epoch = None
    if batches is not None and not math.isinf(batches) and batches > 0:
        per_epoch = math.ceil(batches / max(int(trainer.accumulate_grad_batches), 1))
    accumulation = callback_named(trainer, "GradientAccumulationScheduler")
    if accumulation is not None and per_epoch is not None:
        return _accumulation_run(trainer, accumulation, int(batches), total_steps, schedules)
    return Run(total_steps=total_steps, steps_per_epoch=per_epoch)


def _accumulation_run(
    trainer: Any, accumulation: Any, batches: int, total_steps: int | None, schedules: Sequence[Schedule]
) -> Run:
    """The run under Lightning's ``GradientAccumulationScheduler``: ``total_steps`` counted epoch by epoch
    (:func:`~lr_callbacks.core.compat.optimizer_steps`), the first epoch's length. Durations in epochs are refused:
    an epoch has no fixed number of optimizer steps when the factor changes.

    Raises:
        ValueError: for a duration in epochs while the factor changes between epochs.
    """
    epochs = int(trainer.max_epochs or 0)
    if epochs > 0:
        factors = [int(accumulation.get_accumulate_grad_batches(e)) for e in range(epochs)]
    else:  # max_steps alone (Lightning sets max_epochs=-1): the epochs it reaches are unknown, every factor counts
        factors = [int(accumulation.get_accumulate_grad_batches(0)), *map(int, accumulation.scheduling.values())]
    if len(set(factors)) > 1 and any(isinstance(d, Epochs) for s in schedules for d in s.durations()):
        raise ValueError(
            "LRSchedule: a duration in epochs needs a fixed number of optimizer steps per epoch, but "
            f"GradientAccumulationScheduler({accumulation.scheduling}) changes it between epochs; give the "
            'duration in steps ("500 steps") or as a share of the run ("5%")'
        )
    return Run(total_steps=total_steps, steps_per_epoch=math.ceil(batches / max(factors[0], 1)))


def apply_length_policy(trainer: Any, restored: Mapping[str, Any], run: Run, policy: str) -> Run:
    """The run to plan for on resume, when its length differs from the checkpoint's (see ``on_length_change``); the
    warning said on ``trainer``'s global rank 0.

    Raises:
        ValueError: under ``"error"``, when the length changed.
    """
    before = Run(total_steps=restored["total_steps"], steps_per_epoch=restored["steps_per_epoch"])
    if before.total_steps == run.total_steps:
        return run
    change = (
        f"the run had {before.total_steps} optimizer steps when the checkpoint was written (or the last fit on this "
        f"Trainer ended), it now has {run.total_steps}"
    )
    if policy == "error":
        raise ValueError(
            f"LRSchedule: {change}. Resume with the original max_steps/max_epochs, or set "
            "on_length_change='keep' (follow the original plan) or 'rescale' (re-plan for the new length)"
        )
    if policy == "keep":
        now, then = run.total_steps, before.total_steps
        shorter = now is not None and then is not None and now < then
        effect = (
            f"the run stops at step {run.total_steps} of that plan, before its end: a decay does not finish"
            if shorter
            else f"past step {before.total_steps} the LR holds the plan's final value, its `end` (a decay to 0 "
            "trains the extra steps at LR 0)"
        )
        warn_rank_zero(
            trainer,
            f"LRSchedule: {change}; following the original plan (on_length_change='keep'), so {effect}; "
            "on_length_change='rescale' re-plans for the new length instead",
            stacklevel=3,
        )
        return before
    warn_rank_zero(
        trainer,
        f"LRSchedule: {change}; re-planning the schedule for the new length "
        "(on_length_change='rescale'): boundaries given as fractions of the run move",
        stacklevel=3,
    )
    return run


def build_table(
    optimizers: Sequence[Any],
    schedule: Schedule,
    group_schedules: Mapping[str, Schedule],
    peak_overrides: Mapping[str, float],
    restored: Mapping[str, Any] | None,
    adds_groups: str | None = None,
) -> tuple[list[list[GroupState]], list[str], list[str]]:
    """Every group of every optimizer with its tag, schedule, peak and scale; the optimizers' names; and the names in
    ``group_schedules`` that no group has yet, which wait for a group added during the fit (``adds_groups``: the class
    name of the fine-tuning callback that adds groups, ``None`` when the trainer has none).

    Raises:
        ValueError: if ``peak_overrides`` names a group that does not exist, or ``group_schedules`` does with no
            fine-tuning callback to add it; or a restored group's name differs from this run's.
    """
    several = len(optimizers) > 1
    optimizer_names = unique([type(o).__name__ for o in optimizers])
    table: list[list[GroupState]] = []
    known: set[str] = set()
    for index, optimizer in enumerate(optimizers):
        groups = []
        given = given_names(optimizer)
        names = _restored_names(restored, index, given) if restored is not None else group_names(given)
        for j, (group, name) in enumerate(zip(optimizer.param_groups, names)):
            tag = f"{optimizer_names[index]}/{name}" if several else name
            keys = group_keys(tag, name, given[j], optimizer_names[index] if several else None)
            known.update(keys)
            chosen = bind(for_group(group_schedules, keys, schedule), optimizer)
            peak, scale = for_group(peak_overrides, keys, None), 1.0
            if restored is not None:
                peak, scale = float(restored["peaks"][index][j]), float(restored["scales"][index][j])
            elif peak is None:
                peak = _configured_peak(group, tag)
            groups.append(GroupState(tag=tag, name=name, given=given[j], schedule=chosen, peak=peak, scale=scale))
        table.append(groups)
    waiting = sorted(set(group_schedules) - known)
    unknown = sorted(set(peak_overrides) - known) + ([] if adds_groups is not None else waiting)
    if unknown:
        if adds_groups is not None:  # only peak_lrs names
            fix = (
                f"; a group that {adds_groups} adds during the fit cannot be named in `peak_lrs`: it trains at the "
                f"LR it is added with (set it in {adds_groups}), and follows its schedule from there"
            )
        elif waiting:
            fix = (
                "; a name in `group_schedules` waits for a group added during the fit when a fine-tuning callback "
                "adds it (Lightning's BaseFinetuning, e.g. BackboneFinetuning)"
            )
        else:
            fix = ""
        raise ValueError(
            f"LRSchedule: no parameter group is named {', '.join(map(repr, sorted(unknown)))}; the groups are "
            f"{', '.join(sorted(known))}. Name a group with param_group['name'] in configure_optimizers{fix}"
        )
    return table, optimizer_names, waiting


def _configured_peak(group: Mapping[str, Any], tag: str) -> float:
    """A group's LR from ``configure_optimizers``, its peak; refused unless finite and >= 0 (before, an LR of nan
    or inf became the peak and every step wrote it: the weights turned NaN at the first update, without a word)."""
    lr = as_float(group["lr"])
    if not (math.isfinite(lr) and lr >= 0.0):
        raise ValueError(
            f"LRSchedule: parameter group {tag!r} has lr={lr!r} from configure_optimizers, and its peak LR must be "
            f"finite and >= 0. Set a valid lr in configure_optimizers, or give the peak with "
            f"LRSchedule(..., peak_lrs={{{tag!r}: ...}})"
        )
    return lr


def group_keys(tag: str, name: str, given: str, optimizer_name: str | None) -> tuple[str, ...]:
    """The keys ``group_schedules`` and ``peak_lrs`` may name a group by, most specific first: its tag and name as
    made unique (``decay-1``), then the ``param_group["name"]`` it was given, which several groups may share (every
    group of that name gets it: before, only the first did, and the others kept the default without a word).

    >>> group_keys("decay-1", "decay-1", "decay", None)
    ('decay-1', 'decay')
    >>> group_keys("SGD/decay-1", "decay-1", "decay", "SGD")
    ('SGD/decay-1', 'decay-1', 'SGD/decay', 'decay')
    """
    keys = [tag, name] + ([f"{optimizer_name}/{given}"] if optimizer_name is not None else []) + [given]
    return tuple(dict.fromkeys(keys))


def for_group(mapping: Mapping[str, Any], keys: Sequence[str], default: Any) -> Any:
    """The value ``mapping`` gives the first of ``keys`` it holds, else ``default``."""
    return next((mapping[key] for key in keys if key in mapping), default)


def _restored_names(restored: Mapping[str, Any], index: int, given: Sequence[str]) -> list[str]:
    """The checkpoint's names of optimizer ``index``'s groups, kept: groups added during its run were named as they
    came (``a``, ``h``, then ``a-1``, ``a-1-1`` for groups named ``a`` and ``a-1``), which naming them all at once now
    would not repeat (``a-2``, ``a-1``). Before, such a resume was refused, its names taken for other groups.

    The groups' given names must be the checkpoint's; a checkpoint that did not save them (``"given"``, written
    since) is checked by its names (:func:`~lr_callbacks.core.logs.names_of`). Before, only the names were: groups
    given ``x``, ``x``, ``x-1`` (tagged ``x``, ``x-2``, ``x-1``) resumed as ``x``, ``x``, ``x`` without a word, the
    third group renamed from ``x-1`` to ``x``.

    Raises:
        ValueError: if a group's given name is not the checkpoint's (without them: if a group's name is not the
            checkpoint's, nor a suffixed form of it after a group of that name).
    """
    saved = [str(name) for name in restored["names"][index]]
    if "given" in restored:
        then = [str(name) for name in restored["given"][index]]
        differs = [j for j, (was, now) in enumerate(zip(then, given)) if was != now]
    else:  # a checkpoint written before the given names were saved: checked by its names
        then = saved
        differs = [j for j in range(len(given)) if not names_of(saved[: j + 1], [*saved[:j], given[j]])]
    if differs:
        j = differs[0]
        raise ValueError(
            f"LRSchedule: group {j} of optimizer {index} was {then[j]!r} in the checkpoint and is {given[j]!r} now; "
            "resume with the same configure_optimizers"
        )
    return saved


def check_restored_shape(restored: Mapping[str, Any], optimizers: Sequence[Any]) -> None:
    """Refuse a checkpoint whose optimizers had other numbers of parameter groups.

    Raises:
        ValueError: naming both shapes.
    """
    saved = [len(names) for names in restored["names"]]
    now = [len(o.param_groups) for o in optimizers]
    if saved != now:
        raise ValueError(
            f"LRSchedule: the checkpoint has {saved} parameter groups per optimizer, this run has {now}; "
            "resume with the same configure_optimizers"
        )


def bind(schedule: Schedule, optimizer: Any) -> Schedule:
    """Give a transformers schedule with an absolute floor the optimizer's ``defaults["lr"]``, as transformers does."""
    if isinstance(schedule, TransformersSchedule):
        return schedule.bound_to(float(optimizer.defaults["lr"]))
    return schedule


def no_run_to_plan(trainer: Any) -> str:
    """Why this fit has no run for a plan to fit, in Lightning's words, or ``""``: ``fast_dev_run`` trains a batch or a
    few to check the code, and ``limit_train_batches=0`` skips training (its length reads as unknown, -1)."""
    if trainer.fast_dev_run:
        return "fast_dev_run"
    return "limit_train_batches=0" if trainer.limit_train_batches == 0 else ""


def unknown_length_cause(trainer: Any) -> str:
    """Why the run's length is unknown, in words: Lightning sets ``max_epochs=-1`` when only ``max_time`` bounds the
    run, ``max_epochs=-1`` given alone trains until something stops the run, and an iterable dataset has no length.
    (Before, ``max_epochs=-1`` on a dataset with a length was blamed on "an iterable dataset".)"""
    timer = callback_named(trainer, "Timer")
    bounded = timer is not None and timer.time_remaining() is not None  # a Timer with a duration: max_time
    unbounded = int(trainer.max_steps) < 0 and (trainer.max_epochs is None or trainer.max_epochs < 0)
    if bounded and unbounded:
        return "only Trainer(max_time=...) bounds it, and a time counts no steps: Lightning sets max_epochs=-1"
    if unbounded:
        return "Trainer(max_epochs=-1) trains until something stops it (EarlyStopping): it has no end to plan for"
    return "an iterable dataset with no max_steps?"


def check_schedule(schedule: Schedule, run: Run, cause: str, group: str = "") -> None:
    """Check that ``schedule`` fits ``run`` (``cause``: why the run's length is unknown, for the message; ``group``:
    the group it is checked for, named in the message, for a group added during the fit).

    Raises:
        ValueError: for a run of unknown length the schedule needs, a plan that does not fit it, or a co-scheduled
            momentum that leaves [0, 1) within it.
    """
    if run.total_steps is None and schedule.needs_total():
        described = schedule.describe()
        epochs = (
            " and give its durations in steps (Steps(...)): the epoch length is unknown too"
            if run.steps_per_epoch is None and "epoch" in described
            else ""
        )
        named = f" ({group})" if group else ""
        raise ValueError(
            f"LRSchedule needs a run of known length for {described}{named}, but this run's length is "
            f"unknown ({cause}). Set Trainer(max_steps=...){epochs}, or use a "
            "schedule that needs no total: 'constant', 'inverse_sqrt', 'step', 'multistep', or durations in steps"
        )
    try:
        schedule.check(run.total_steps, run)
        schedule.check_momentum(run.total_steps, run)
    except ValueError as error:
        raise ValueError(f"LRSchedule: {group + ': ' if group else ''}{error}") from None


def short_epoch(
    batches: int,
    planned_batches: float,
    factors: Sequence[int],
    bounded: bool,
    max_steps: int,
    run: Run,
    epoch_durations: bool,
) -> str:
    """Why the plan cannot be right, seen at the first epoch's end, or ``""``: the epoch ran ``batches`` batches where
    the plan counted ``planned_batches`` (Lightning's ``num_training_batches``: ``limit_train_batches`` on an iterable
    loader that ran out sooner, or an ``__len__`` that says more than it yields; ``inf`` when it could not know).

    Args:
        batches: the batches the first epoch ran.
        planned_batches: the batches per epoch Lightning counted at fit start (``inf``: unknown).
        factors: the gradient accumulation factor of each epoch of the run, from the first (with unbounded epochs,
            the first's only).
        bounded: whether ``max_epochs`` bounds the run (``factors`` then has one factor per epoch).
        max_steps: the trainer's ``max_steps`` (``-1``: none).
        run: the run planned at fit start.
        epoch_durations: whether a schedule has a duration in epochs (planned with the epoch's length).

    >>> print(short_epoch(4, 10, [1, 1, 1], True, -1, Run(total_steps=30, steps_per_epoch=10), False))
    ... # doctest: +ELLIPSIS
    the first epoch ran 4 batches (4 optimizer steps), but the plan counted 10 an epoch (...), so the run will end \
after about 12 of the 30 optimizer steps planned at fit start, its LR short of the plan's end. Give the run's real \
length: Trainer(max_steps=12) or Trainer(limit_train_batches=4)
    >>> short_epoch(10, 10, [1, 1, 1], True, -1, Run(total_steps=30, steps_per_epoch=10), False)
    ''
    """
    if batches <= 0 or batches >= planned_batches or run.total_steps is None or not factors:
        return ""
    steps = math.ceil(batches / max(factors[0], 1))
    ends = sum(math.ceil(batches / max(f, 1)) for f in factors) if bounded else math.inf
    if max_steps > 0:
        ends = min(ends, max_steps)
    said = f"the first epoch ran {batches} batches ({steps} optimizer steps)"
    if math.isfinite(planned_batches):
        said += (
            f", but the plan counted {planned_batches:g} an epoch (Lightning's num_training_batches: "
            "limit_train_batches on an iterable dataset that ran out sooner, or a dataset whose len() says more than "
            "it yields)"
        )
    else:
        said += (
            f", and Trainer(max_epochs={len(factors)}) ends the run after its last epoch, but the plan took "
            f"max_steps={max_steps}: Lightning could not count an epoch's batches (an iterable dataset with no len())"
        )
    limit = f" or Trainer(limit_train_batches={batches})" if math.isfinite(planned_batches) else ""
    if ends < run.total_steps:
        return (
            f"{said}, so the run will end after about {ends:g} of the {run.total_steps} optimizer steps planned at "
            f"fit start, its LR short of the plan's end. Give the run's real length: Trainer(max_steps={ends:g}){limit}"
        )
    if epoch_durations and run.steps_per_epoch is not None and steps != run.steps_per_epoch:
        return (
            f"{said}, so its durations in epochs are planned at {run.steps_per_epoch} optimizer steps an epoch, not "
            f"{steps}. Give them in steps ('{steps} steps' an epoch){limit}"
        )
    return ""


def check_momentum(optimizers: Sequence[Any], table: Sequence[Sequence[GroupState]]) -> None:
    """Refuse to co-schedule the momentum of an optimizer that has none.

    Raises:
        ValueError: naming the optimizer and the fix.
    """
    for optimizer, groups in zip(optimizers, table):
        for group, g in zip(optimizer.param_groups, groups):
            check_group_momentum(optimizer, group, g.schedule)


def check_group_momentum(optimizer: Any, group: Mapping[str, Any], schedule: Schedule, named: str = "") -> None:
    """Refuse to co-schedule the momentum of a parameter ``group`` that has none (``named``: the group, for the
    message, for a group added during the fit).

    Raises:
        ValueError: naming the optimizer and the fix.
    """
    if schedule.co_schedules_momentum() and "momentum" not in group and "betas" not in group:
        raise ValueError(
            f"LRSchedule: {named + ': ' if named else ''}{schedule.describe()} co-schedules the momentum, but "
            f"{type(optimizer).__name__} has neither `momentum` nor `betas`; pass momentum=None to "
            "the schedule, or use SGD(momentum=...) or Adam/AdamW"
        )


def warn_manual_max_steps(trainer: Any, optimizers: Sequence[Any]) -> None:
    """Warn that ``max_steps`` under manual optimization with several optimizers cuts every plan short."""
    module = trainer.lightning_module
    if len(optimizers) < 2 or getattr(module, "automatic_optimization", True) or trainer.max_steps == -1:
        return
    warn_rank_zero(
        trainer,
        f"LRSchedule: under manual optimization Lightning counts max_steps={trainer.max_steps} over the steps of "
        f"all {len(optimizers)} optimizers, but plans each optimizer's schedule over {trainer.max_steps} of "
        "its own steps, so each covers only part of its plan (half, with two optimizers stepping every batch). "
        "Set Trainer(max_epochs=...) instead of max_steps, or give the schedule's durations in steps",
        stacklevel=3,
    )
