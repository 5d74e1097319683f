"""``LRSchedule``: the callback that writes ``peak(g) × schedule(k) × scale(g)`` into the optimizers.

The clock ``k`` counts real optimizer updates, one clock per optimizer: it advances when the optimizer's
``step()`` actually runs (a step post-hook), so

- with gradient accumulation it advances once per accumulated step, not per batch;
- a step that mixed precision skips (the ``GradScaler`` found inf/NaN and did not call ``step()``) does not
  advance it: the schedule waits for the first real update. Lightning still counts the skipped step in
  ``trainer.global_step`` (and in ``max_steps``), so after ``s`` skipped steps the clock is ``s`` behind
  ``global_step`` and a run that stops at ``max_steps`` ends ``s`` steps short of its plan: its last LR is
  ``lr(T − 1 − s)``. A ``GradScaler`` often skips its first step or two while it lowers its initial scale
  (``2**16`` by default) to one that fits float16;
- a step the watchdog skips still runs ``step()`` (with no gradients), and advances it: the batch was spent.

The LR of step ``k`` is written before the step runs (after the previous step, and again at each batch
start), so a torch optimizer uses exactly ``lr(g, k)``; that value is what ``lr/<group>`` shows at ``k``.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from typing_extensions import override

from lr_callbacks.core.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_step,
    given_arguments,
)
from lr_callbacks.core.compat import (
    Callback,
    accumulation,
    callback_named,
    move_after_finetuning,
    swa_start_epoch,
)
from lr_callbacks.core.console import warn_rank_zero
from lr_callbacks.core.durations import Epochs, Run
from lr_callbacks.core.logs import given_names, group_names, log_cadence, log_image, log_scalars, log_text
from lr_callbacks.core.lr_model import LRScaler, as_float, set_lr
from lr_callbacks.schedule import setup
from lr_callbacks.schedule.plan import UNKNOWN_LENGTH_PREVIEW, plan_image, plan_tables, sample_steps
from lr_callbacks.schedule.presets import preset
from lr_callbacks.schedule.shapes import Schedule
from lr_callbacks.schedule.transformers import TransformersSchedule

if TYPE_CHECKING:
    from pytorch_lightning import LightningModule, Trainer

_OWNER = "LRSchedule"

__all__ = ["LRSchedule"]

log = logging.getLogger("lr_callbacks")


def _refuse_names_that_collide(argument: str, mapping: Mapping[Any, Any]) -> None:
    """Refuse two keys of ``group_schedules`` or ``peak_lrs`` that name one group: a group is named by
    ``str(param_group["name"])``, so ``{0: 1e-3, "0": 1e-2}`` gave group ``"0"`` one of the two, the other dropped
    without a word.

    Raises:
        ValueError: naming both keys and the fix.
    """
    seen: dict[str, Any] = {}
    for key in mapping:
        if str(key) in seen:
            raise ValueError(
                f"{_OWNER}: `{argument}` names the group {str(key)!r} twice, as {seen[str(key)]!r} and {key!r} "
                "(a group is named by str(param_group['name'])), and only one of the two would be kept; give it once"
            )
        seen[str(key)] = key


class LRSchedule(Callback):
    """Drive every parameter group's LR with a closed-form schedule, exact on resume.

    The LR used by optimizer step ``k`` is ``peak(g) × schedule(k) × scale(g)``:

    - ``peak(g)``: the group's LR from ``configure_optimizers`` (so ratios between groups are kept),
      unless ``peak_lrs`` or :class:`~lr_callbacks.LRFinder` sets it;
    - ``schedule(k)``: the multiplier, resolved against the run's length at fit start
      (``trainer.estimated_stepping_batches``);
    - ``scale(g)``: the :class:`~lr_callbacks.DivergenceWatchdog`'s multiplier, 1 until it intervenes; a run
      resumed without it keeps the checkpoint's (its cut), and a warning says so, with how to drop it.

    The clock ``k`` counts the optimizer's real updates (see the module's notes): with gradient
    accumulation it advances once per accumulated step; a step that a mixed-precision ``GradScaler`` skips
    (inf/NaN gradients) does not advance it, and is not logged, so the next real update uses the LR the
    skipped one would have. Lightning counts skipped steps in ``global_step`` and ``max_steps``, so a run
    with ``s`` skipped steps ends ``s`` steps before the end of its plan.

    Manual optimization works, with one clock per optimizer (each counts its own ``step()`` calls), but the
    run's length is Lightning's ``estimated_stepping_batches``: batches per epoch × epochs, capped by
    ``max_steps``, which Lightning counts over the steps of *all* optimizers. An optimizer that steps on only
    some batches, or every optimizer of a ``max_steps`` run with several (a warning says so at fit start),
    covers only part of its plan; use ``max_epochs`` and durations in steps for such schedules.

    A parameter group added during the fit (``optimizer.add_param_group``, e.g. by ``BackboneFinetuning``)
    joins at the next batch: the LR it was added with is its LR at that step, and it follows the schedule
    from there, keeping its ratio to the other groups (its peak is that LR over ``schedule(k)·scale``). An LR
    that something else writes into a group between steps, or in a step up to its backward pass
    (``BackboneFinetuning``'s ramp of the backbone's LR at each epoch, your own change in a hook or in
    ``training_step``) is taken the same way: it is that step's LR, and the group's peak follows it, so the
    schedule's shape goes on from there. One written later, in the update's own hooks
    (``on_before_optimizer_step``), trains that step only.

    Logs ``lr/<group>`` (and ``momentum/<group>`` when co-scheduled) every ``log_every_n_steps`` optimizer
    steps (by default the trainer's, 50 unless set), at x = ``k``; with several optimizers,
    ``lr/<optimizer>/<group>``. At fit start it writes ``lr_schedule/plan``, an image of the whole planned
    curve, and ``lr_schedule/summary``, a table of key steps.

    Args:
        schedule: a :class:`~lr_callbacks.Schedule` (e.g. ``Phases([...])``), or a preset name
            (``"cosine"``, ``"wsd"``, ``"one_cycle"``, … see :func:`~lr_callbacks.preset`).
        group_schedules: a schedule (or preset name) for named groups, by ``param_group["name"]`` (every group of
            that name; one of several that share it by its tag, ``decay-1``). Under a fine-tuning callback (Lightning's
            ``BaseFinetuning``, e.g. ``BackboneFinetuning``), a name that no group has at fit start waits for the group
            of that name it adds during the fit (an unnamed group is ``group<i>``: ``BackboneFinetuning``'s backbone,
            added after one group, is ``group1``): an info line says so, its schedule is checked against the run at
            fit start, and a warning at the fit's end names one that no group took (a typo). Without one, such a name
            is refused at fit start.
        peak_lrs: a peak LR for named groups, overriding the configured one (a new run's: a resumed run keeps the
            checkpoint's peaks, and a warning says so when the plan given then would make the LR jump); named as in
            ``group_schedules``.
        on_length_change: on resume with a different run length (``max_steps``/``max_epochs``):
            ``"keep"`` follows the original plan (past its end the LR holds the plan's final value, its
            ``end``: 0 for a decay to 0),
            ``"rescale"`` re-resolves the schedule against the new length (fractions of the run move, the
            LR may jump), ``"error"`` refuses. A warning names the change in the first two cases. Resuming
            from a checkpoint written without LRSchedule, the plan covers the whole run from step 0 and the
            clock starts at the checkpoint's ``global_step`` (with several optimizers, each clock at its batches
            done: Lightning's ``global_step`` counts the steps of all of them).
        log_every_n_steps: log ``lr/<group>`` every this many optimizer steps (each point the exact LR that
            step used); ``None``: the trainer's ``log_every_n_steps``, the cadence of Lightning's own metrics
            and of ``LearningRateMonitor``. ``1`` logs every step, at a host cost of about 50 µs per step
            with TensorBoard (measured when it was the default; the benchmarks now log at the trainer's
            cadence).
        log_plan: write ``lr_schedule/plan`` and ``lr_schedule/summary`` before the first step (after the
            finder, if any, has set the peak), and again when a later finder run sets a new one (not for an LR set
            outside the schedule, which changes a group's peak without a new plan).
        preset_args: the preset's arguments as one mapping, the same as ``**preset_kwargs``; the form a
            YAML config can give (LightningCLI: ``init_args: {schedule: cosine, preset_args: {warmup: 5%}}``).
        **preset_kwargs: the preset's arguments, when ``schedule`` is a name.

    Raises:
        ValueError, TypeError: at construction, for a bad argument; at fit start, for a run the schedule
            does not fit, an unknown group name, or a torch scheduler returned by ``configure_optimizers``.

    Example::

        trainer = Trainer(max_steps=1000, callbacks=[LRSchedule("cosine", warmup="5%", end=0.1)])

    >>> print(LRSchedule("wsd", warmup="100 steps", decay="20%").schedule.describe())
    Phases(Warmup() for 100 steps; Constant() for the rest of the run; OneMinusSqrt() for 0.2 of the run)
    """

    _trainer: Any
    _handed_over: bool  # the LR is handed over to StochasticWeightAveraging (from its start epoch)
    _optimizers: list[Any]
    _handles: list[Any]
    _clock_from_trainer: bool
    _past_end_said: bool
    _checkpoint_lrs: list[list[float]] | None  # a resume from a checkpoint without LRSchedule: its optimizers' LRs
    _fit_length: int | None  # this fit's own length at its start, before on_length_change="keep" kept the plan's
    _last_fit: tuple[weakref.ref[Any], dict[str, Any]] | None  # the trainer of the last fit, and its state then
    _before_set_up: dict[str, Any] | None
    _training: bool
    _aside: bool  # this fit trains nothing (limit_train_batches=0) or only smoke-tests the code (fast_dev_run)
    _peaks_restored: bool  # this fit's peaks and scales are a checkpoint's (or those of the last fit it continues)
    _epoch_checked: bool
    _short_epoch_said: bool
    _scaled_at: int | None  # the trainer's global_step when the scale last changed (None: never, or not known)

    def __init__(
        self,
        schedule: Schedule | str = "cosine",
        *,
        group_schedules: Mapping[str, Schedule | str] | None = None,
        peak_lrs: Mapping[str, float] | None = None,
        on_length_change: str = "keep",
        log_every_n_steps: int | None = None,
        log_plan: bool = True,
        preset_args: Mapping[str, Any] | None = None,
        **preset_kwargs: Any,
    ) -> None:
        self._given = given_arguments(LRSchedule.__init__, locals())  # for repr: what it was built with
        if preset_args is not None:
            if not isinstance(preset_args, Mapping):
                raise TypeError(
                    f"LRSchedule: `preset_args` must be a mapping such as {{'warmup': '5%'}}, got {preset_args!r}"
                )
            named = [key for key in preset_args if not isinstance(key, str)]
            if named:  # before, Python's bare "keywords must be strings"
                raise TypeError(
                    f"LRSchedule: `preset_args` is keyed by the preset's argument names, such as {{'warmup': '5%'}}, "
                    f"got the key {named[0]!r} in {dict(preset_args)!r}; write it as a name"
                )
            twice = sorted(set(preset_args) & set(preset_kwargs))
            if twice:
                raise TypeError(
                    f"LRSchedule: {', '.join(twice)} given both in `preset_args` and as keywords; give each once"
                )
            preset_kwargs = {**preset_args, **preset_kwargs}
        self._schedule = self._to_schedule(schedule, preset_kwargs, "schedule")
        for name, mapping in (("group_schedules", group_schedules), ("peak_lrs", peak_lrs)):
            if mapping is not None and not isinstance(mapping, Mapping):
                raise TypeError(
                    f"LRSchedule: `{name}` must be a dict keyed by param_group['name'], e.g. {{'head': ...}}, "
                    f"got {mapping!r}"
                )
            _refuse_names_that_collide(name, mapping or {})
        self._group_schedules = {
            str(name): self._to_schedule(value, {}, f"group_schedules[{name!r}]")
            for name, value in (group_schedules or {}).items()
        }
        self._peak_overrides = {
            str(name): check_number(f"peak_lrs[{name!r}]", value, low=0.0, low_open=True, owner=_OWNER)
            for name, value in (peak_lrs or {}).items()
        }
        self._on_length_change = check_choice("on_length_change", on_length_change, setup.LENGTH_POLICIES, owner=_OWNER)
        if log_every_n_steps is not None:
            check_int("log_every_n_steps", log_every_n_steps, low=1, owner=_OWNER)
        self._log_every_arg = log_every_n_steps
        self._log_every = log_every_n_steps or 1
        self._log_plan = check_bool("log_plan", log_plan, owner=_OWNER)
        self._reset_runtime()
        self._restored: dict[str, Any] | None = None
        # the stage of the trainer's last setup: a state loaded outside a fit (validate, test) is not kept
        self._stage: str | None = None

    def __repr__(self) -> str:
        given = dict(self._given)
        shown = [repr(given.pop("schedule", "cosine")), *(f"{k}={v!r}" for k, v in given.items())]
        return f"LRSchedule({', '.join(shown)})"

    @staticmethod
    def _to_schedule(value: Schedule | str, kwargs: dict[str, Any], name: str) -> Schedule:
        if isinstance(value, Schedule):
            if kwargs:
                raise TypeError(
                    f"LRSchedule: preset arguments ({', '.join(sorted(kwargs))}) go with a preset name, "
                    f"not with a Schedule object; put them in the schedule's constructor"
                )
            return value
        if isinstance(value, str):
            return preset(value, **kwargs)
        raise TypeError(f"LRSchedule: `{name}` must be a Schedule or a preset name such as 'cosine', got {value!r}")

    @classmethod
    def from_transformers(cls, name: str, num_warmup_steps: int = 0, **kwargs: Any) -> LRSchedule:
        """A drop-in for ``transformers.get_scheduler(name, ...)``, by its names and arguments.

        ``num_training_steps`` comes from the trainer. Every optimizer step then gets, in every group, the
        LR that transformers' scheduler gives it (tested side by side, with accumulation). The deliberate
        differences (also in :class:`~lr_callbacks.TransformersSchedule`): past the end of the planned run the LR holds
        where transformers' ``cosine`` and ``cosine_with_min_lr`` climb back up and ``inverse_sqrt`` keeps
        decaying; and a warmup (or a WSD plan) longer than the run is refused at fit start instead of being
        cut short silently. As in transformers, the warmup trains step 0 at LR 0.

        Args:
            name: ``linear``, ``cosine``, ``cosine_with_restarts``, ``polynomial``, ``constant``,
                ``constant_with_warmup``, ``inverse_sqrt``, ``cosine_with_min_lr`` or ``warmup_stable_decay``.
            num_warmup_steps: the warmup, in optimizer steps (none for ``constant``, which has no warmup in
                transformers: ``constant_with_warmup`` has one).
            **kwargs: transformers' scheduler-specific arguments (``num_cycles``, ``lr_end``, ``power``,
                ``timescale``, ``min_lr``, ``min_lr_rate``, ``num_stable_steps``, ``num_decay_steps``,
                ``warmup_type``, ``decay_type``, ``min_lr_ratio``), or LRSchedule's own keyword arguments.

        >>> print(LRSchedule.from_transformers("cosine", num_warmup_steps=100).schedule.describe())
        transformers 'cosine'(num_warmup_steps=100)
        """
        own = {"group_schedules", "peak_lrs", "on_length_change", "log_every_n_steps", "log_plan"}
        callback_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        schedule = TransformersSchedule(name, num_warmup_steps, tuple(sorted(kwargs.items())))
        return cls(schedule, **callback_kwargs)

    # --- public read-outs ------------------------------------------------------------------------------

    @property
    def schedule(self) -> Schedule:
        """The default schedule (groups without their own in ``group_schedules``)."""
        return self._schedule

    @property
    def group_schedules(self) -> dict[str, Schedule]:
        """The schedules given for named groups (``group_schedules``), preset names built."""
        return dict(self._group_schedules)

    @property
    def peak_overrides(self) -> dict[str, float]:
        """The peak LRs given for named groups (``peak_lrs``)."""
        return dict(self._peak_overrides)

    @property
    def run(self) -> Run | None:
        """The run the schedule was resolved against at fit start (``None`` before)."""
        return self._run

    @property
    def steps(self) -> list[int]:
        """Each optimizer's clock: the optimizer steps taken under this schedule."""
        return list(self._clocks)

    @property
    def peak_lrs(self) -> list[list[float]]:
        """``peak(g)`` of each group of each optimizer."""
        return [[g.peak for g in groups] for groups in self._table]

    @property
    def scales(self) -> list[list[float]]:
        """``scale(g)`` of each group of each optimizer."""
        return [[g.scale for g in groups] for groups in self._table]

    @property
    def group_tags(self) -> list[list[str]]:
        """The TensorBoard name of each group: ``lr/<tag>``."""
        return [[g.tag for g in groups] for groups in self._table]

    def lr_at(self, step: int, optimizer: int = 0, group: int | str = 0) -> float:
        """The LR that ``group`` of ``optimizer`` gets at ``step`` under the current peak and scale.

        Args:
            step: the optimizer step, from 0 (past the plan's end, its final LR).
            optimizer: the optimizer's index, in ``configure_optimizers``' order.
            group: the parameter group's index in that optimizer, or its tag (see :attr:`group_tags`).

        Raises:
            ValueError: before fit start (the run's length is unknown), for a negative or fractional ``step``, or an
                optimizer or group that does not exist; each names the fix.
        """
        run = self._require_run()
        step = check_step("step", step, owner="LRSchedule.lr_at")
        g = self._group_state(optimizer, group)
        return g.peak * g.schedule.multiplier(step, run) * g.scale

    def _group_state(self, optimizer: int, group: int | str) -> setup.GroupState:
        """The group ``group`` (an index or a tag) of optimizer ``optimizer``, or a ValueError listing those that
        exist (before, an IndexError or a TypeError from inside the table)."""
        count = len(self._table)
        if isinstance(optimizer, bool) or not isinstance(optimizer, int) or not 0 <= optimizer < count:
            names = ", ".join(f"{i}: {name}" for i, name in enumerate(self._optimizer_names))
            raise ValueError(
                f"LRSchedule.lr_at: no optimizer {optimizer!r}; this fit has {count} ({names}): pass `optimizer` as "
                f"an index from 0 to {count - 1}"
            )
        groups = self._table[optimizer]
        tags = [g.tag for g in groups]
        if isinstance(group, str) and group in tags:
            return groups[tags.index(group)]
        if not isinstance(group, bool) and isinstance(group, int) and 0 <= group < len(groups):
            return groups[group]
        raise ValueError(
            f"LRSchedule.lr_at: optimizer {optimizer} has no parameter group {group!r}; pass `group` as an index from "
            f"0 to {len(groups) - 1} or a tag: {', '.join(map(repr, tags))}"
        )

    # --- the ScheduleOwner and Pausable protocols (core.lr_model): used by the finder and the watchdog -----

    def _set_peak_lr(self, lr: float) -> None:
        """Make ``lr`` the reference group's peak (first group, first optimizer); others keep their ratio."""
        check_number("lr", lr, low=0.0, low_open=True, owner=_OWNER)
        factor = lr / self._table[0][0].peak
        for groups in self._table:
            for g in groups:
                g.peak *= factor
        self._plan_due = self._log_plan
        self._write_all()

    def _scale_peak_overrides(self, factor: float) -> None:
        """Multiply the ``peak_lrs`` given for named groups by ``factor``, for the next fit (``find_lr``'s answer
        keeps them at their ratio to the reference group, as :meth:`_set_peak_lr` keeps this fit's peaks)."""
        self._peak_overrides = {name: peak * factor for name, peak in self._peak_overrides.items()}

    def _set_scale(self, scale: float) -> None:
        """Set ``scale(g)`` of every group (the watchdog's multiplier) and apply it at once."""
        check_number("scale", scale, low=0.0, low_open=True, owner=_OWNER)
        if any(g.scale != scale for groups in self._table for g in groups) and self._trainer is not None:
            self._scaled_at = int(self._trainer.global_step)
        for groups in self._table:
            for g in groups:
                g.scale = scale
        self._write_all()

    def _pause(self) -> None:
        """Stop writing LRs and counting steps (while the finder sweeps)."""
        self._paused = True

    def _resume(self, trainer: Any) -> None:
        """Start again: write the LR of the current step into every group."""
        self._paused = False
        self._settled = False
        self._write_all()

    # --- Lightning hooks -------------------------------------------------------------------------------

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stage = stage
        self._checkpoint_lrs = None
        if stage == "fit":
            # a fit's own states, not carried into the next fit of a reused LRSchedule: before, a fit that had
            # handed the LR over to StochasticWeightAveraging left every later fit unscheduled, without a word
            self._handed_over = self._paused = self._past_end_said = self._training = self._aside = False
            self._epoch_checked = self._short_epoch_said = False
            # until this fit sets up, the state is not this fit's: a tuner callback (BatchSizeFinder,
            # LearningRateFinder) saves a checkpoint at fit start and restores it; given the last fit's clocks, this
            # fit took them as a resume (a reused LRSchedule trained its second fit at LR 0, past the plan's end)
            # ... except a fit continued on the trainer of the last one, which goes on from that fit's state
            last = self._last_fit
            continued = last is not None and last[0]() is trainer and int(trainer.global_step) > 0
            self._before_set_up = last[1] if continued and last is not None else {}
            # On resume the fine-tuning callbacks put the groups they added back in their on_fit_start: listed
            # first, the schedule refused the checkpoint ("it has 2 parameter groups, this run has 1")
            after = move_after_finetuning(trainer, self)
            if after is not None and trainer.is_global_zero:
                log.debug("LRSchedule: runs after %s", after)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A fit that trains nothing, or only checks that the code runs on a batch or a few, has no run for the plan
        # to fit: before, the first was refused as "an iterable dataset with no max_steps?", and the second refused
        # every plan longer than its batches ("shorten the phases", wrong for the real run). Stand aside, as the
        # LRFinder and Lightning's tuners do under fast_dev_run: the LRs stay configure_optimizers'.
        why = setup.no_run_to_plan(trainer)
        if why:
            setup.refuse_unusable(trainer)  # a torch scheduler beside it is still a configuration to fix
            self._aside, self._restored = True, None
            log.info("LRSchedule: stands aside under %s (no run to plan); the LRs stay configure_optimizers'", why)
            return
        self._setup_for(trainer)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Resuming from a checkpoint that holds no LRSchedule state: the loops are restored only after
        # on_fit_start, so the clocks take the restored loop's count now.
        if self._clock_from_trainer and self._optimizers:
            start = _resumed_clock(trainer, len(self._optimizers))
            if any(clock < start for clock in self._clocks):
                self._clocks[:] = [max(clock, start) for clock in self._clocks]
                self._write_all()
        self._clock_from_trainer = False
        self._training = True
        # a run resumed inside StochasticWeightAveraging's phase, where no epoch start may come before its first
        # step (resumed mid-epoch, or from the last batch's checkpoint): before, the plan took the LR back from SWA
        self._hand_over_to_swa(trainer)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._hand_over_to_swa(trainer)

    def _hand_over_to_swa(self, trainer: Any) -> None:
        if self._aside:
            return
        swa = self._swa
        start = swa_start_epoch(swa) if swa is not None else None  # None before SWA's on_fit_start
        if start is not None and not self._handed_over and trainer.current_epoch >= start:
            # Lightning's StochasticWeightAveraging drives the LR from its start epoch (SWALR, annealing from the
            # LR it finds to its swa_lrs). Two writers would fight; it is handed over, as Lightning hands over a
            # user's torch scheduler.
            self._handed_over = True
            log.info(
                "LRSchedule hands the LR over to StochasticWeightAveraging at epoch %d (SWA starts at epoch %d, "
                "counted from 0), at optimizer step %d; the plan's remaining steps are not used",
                trainer.current_epoch,
                start,
                self._clocks[0] if self._clocks else 0,
            )

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._idle:
            return
        # The LR of this step was written after the last one; write again only if something else (a restored
        # checkpoint, another callback, the user) changed a group since, or added one.
        for index in self._take_changes():
            self._write(index)
        self._settled = True
        if self._checkpoint_lrs is not None:
            checkpoint_lrs, self._checkpoint_lrs = self._checkpoint_lrs, None
            self._warn_new_on_resume(checkpoint_lrs)
        run = self._run
        if not self._past_end_said and run is not None and run.total_steps:
            self._warn_past_end(trainer, run.total_steps)
        if self._plan_due:
            # Before the first step, and after the finder (which runs at on_train_start) has set the peak.
            self._plan_due = False
            self._log_the_plan(trainer)

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        """An LR written after this step's start, before its backward pass (the module's ``on_train_batch_start``, a
        callback listed after this one, ``training_step``), is taken as at a step's start: before, it trained this
        step and was then written over by the plan, without a word."""
        if self._idle or not self._settled:
            return
        for index in self._take_changes():
            self._write(index)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._epoch_checked:
            self._epoch_checked = True
            self._warn_short_epoch(trainer)

    def _warn_short_epoch(self, trainer: Any) -> None:
        """At the first epoch's end: say so when the epoch ran fewer batches than the plan counted (an iterable
        dataset shorter than ``limit_train_batches``, or whose length Lightning cannot know, and ``max_epochs``), so
        that the run will end before the plan does. Before, it was said only at the run's end, blaming a loader
        reloaded shorter. An epoch that ``max_steps`` or a stop cut short is not read."""
        run = self._run
        if self._idle or run is None or run.total_steps is None or self._fit_length != run.total_steps:
            return  # nothing planned, or a resume under on_length_change="keep", said then
        max_steps = int(trainer.max_steps)
        if trainer.should_stop or 0 < max_steps <= int(trainer.global_step):
            return
        epochs = int(trainer.max_epochs) if trainer.max_epochs is not None else -1
        factors = [accumulation(trainer, e) for e in range(max(epochs, 1))]
        durations = [d for groups in self._table for g in groups for d in g.schedule.durations()]
        said = setup.short_epoch(
            _epoch_batches(trainer),
            float(trainer.num_training_batches),
            factors,
            epochs > 0,
            max_steps,
            run,
            any(isinstance(d, Epochs) for d in durations),
        )
        if said:
            self._short_epoch_said = True
            warn_rank_zero(trainer, f"LRSchedule: {said}", stacklevel=2)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._flush_logs()

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush_logs()
        self._warn_unfinished(trainer)
        self._warn_unused_names(trainer)

    def _warn_short(self, trainer: Any, done: int, total: int, counted: str) -> None:
        """A run that ended before its plan's end with all its epochs done (not stopped early): its training loader
        shrank between epochs (``reload_dataloaders_every_n_epochs``); or one that ``max_time`` stopped, a planned
        end (a job's time limit) where a user expects the decay to have happened. Either way the LR never reached
        the plan's end."""
        epochs, max_steps = trainer.max_epochs, int(trainer.max_steps)
        timer = callback_named(trainer, "Timer")
        remaining = timer.time_remaining() if timer is not None else None
        if trainer.should_stop and remaining is not None and remaining <= 0:
            last, peak = self.lr_at(max(self._clocks[0] - 1, 0)), self._table[0][0].peak * self._table[0][0].scale
            share = f" ({last / peak:.0%} of its peak)" if peak > 0 else ""
            warn_rank_zero(
                trainer,
                f"LRSchedule: Trainer(max_time=...) ended the run at {done} {counted} of the {total} planned at fit "
                f"start, its LR at {last:.4g}{share}, short of the plan's end. To have the decay happen in the time, "
                "give Trainer(max_steps=...) that fit in it",
                stacklevel=2,
            )
            return
        if trainer.should_stop or not epochs or epochs < 0 or int(trainer.current_epoch) < epochs:
            return  # stopped early (EarlyStopping, an exception) or by max_steps
        if self._fit_length is not None and done >= self._fit_length:
            # the run did all the steps it had at fit start: resumed into a shorter run under on_length_change="keep",
            # said then. Before, this blamed a training loader that shrank ("reloaded every epoch?"), which did not.
            return
        if 0 < max_steps <= int(trainer.global_step):
            return  # max_steps ended the last epoch (it counts every optimizer's steps: warned at fit start)
        if self._short_epoch_said:
            return  # said at the first epoch's end, with its cause
        last = self.lr_at(max(self._clocks[0] - 1, 0))
        warn_rank_zero(
            trainer,
            f"LRSchedule: the run ended after its {epochs} epochs at {done} {counted}, short of the {total} planned at "
            f"fit start: its training loader became shorter since (reloaded every epoch?). The LR ended at {last:.4g}, "
            f"not at the plan's end ({self.lr_at(total - 1):.4g}). To plan on the run's real length, give "
            "Trainer(max_steps=...)",
            stacklevel=2,
        )

    def _warn_past_end(self, trainer: Any, total: int) -> None:
        """The run goes on past its plan's end: an optimizer that steps more often than its plan counts (said by
        :meth:`_warn_stepped_past`), or a run whose length changed since fit start. Both need a clock at the
        plan's end: until one is, nothing is read from the trainer (this runs at every batch start)."""
        if max(self._clocks) < total or self._warn_stepped_past(trainer) or self._clocks[0] < total:
            return
        self._past_end_said = True
        warn_rank_zero(
            trainer,
            f"LRSchedule: the run goes on past the {total} optimizer steps planned at fit start (its "
            "length changed since: a training loader whose length changes with "
            "reload_dataloaders_every_n_epochs); from here the LR holds the plan's final value, "
            f"{self.lr_at(total):.3g} for the first group (a decay to 0 trains these steps at LR 0). Set max_steps "
            "to the run's real length",
            stacklevel=3,
        )

    def _warn_stepped_past(self, trainer: Any, ended: bool = False) -> bool:
        """Under manual optimization the plan counts one step a batch (Lightning's ``estimated_stepping_batches``):
        an optimizer that steps more often (a WGAN's critic, several updates a batch) runs past its plan's end
        before the run's batches do, and trains the rest of the run at the plan's final value. Said once, naming
        the optimizer, when its clock reaches the plan's end while batches remain (``ended``: at the run's end, when
        it went past it). Returns whether it warned."""
        run = self._run
        if run is None or not run.total_steps or getattr(trainer.lightning_module, "automatic_optimization", True):
            return False
        total = run.total_steps
        done = _batches_done(trainer)
        for index, clock in enumerate(self._clocks):
            if clock < total or (clock == total and (ended or done >= total)):
                continue
            self._past_end_said = True
            g = self._table[index][0]
            own = math.ceil(clock * total / max(done, 1))  # its steps over the whole run, at its rate so far
            example = f"{{{g.tag!r}: Phases([(Warmup(), '50 steps'), (Cosine(), '{own} steps')])}}"
            final = self.lr_at(total, index)
            warn_rank_zero(
                trainer,
                f"LRSchedule: optimizer {self._optimizer_names[index]} stepped {clock} times in the run's first {done} "
                f"batches, past the {total} steps of its plan, which counts one step a batch (Lightning's estimate "
                f"under manual optimization): from here it trains at the plan's final LR, {final:.3g} "
                f"for its first group (a decay to 0 trains these steps at LR 0). Give an optimizer that steps more "
                f"often than once a batch a schedule whose durations are in its own steps (group_schedules={example}, "
                f"about {own} steps at its rate so far)",
                stacklevel=3,
            )
            return True
        return False

    def _warn_unfinished(self, trainer: Any) -> None:
        """The plan counts one step a batch under manual optimization (Lightning's ``estimated_stepping_batches``),
        and one a ``global_step`` under automatic optimization, where a module's own ``optimizer_step`` may skip
        ``optimizer.step()`` (Lightning still counts the step). An optimizer that stepped less often (a GAN's
        generator every other batch) ended part-way through its plan, its LR short of the plan's end. Said once the
        run's batches are all done. A ``GradScaler`` skips a few steps too (its clock waits for them, see above):
        under one, only a clock at half its plan or less is told."""
        run = self._run
        if self._idle or run is None or not run.total_steps:
            return
        manual = not getattr(trainer.lightning_module, "automatic_optimization", True)
        if manual:
            done, counted, unit = _batches_done(trainer), "batches", "batch"
            why = "Lightning's estimate under manual optimization"
        else:
            done, counted, unit = int(trainer.global_step), "steps", "global_step"
            why = "the module's optimizer_step skipped the others"
        if manual and not self._past_end_said and self._warn_stepped_past(trainer, ended=True):
            return
        if done < run.total_steps:
            self._warn_short(trainer, done, run.total_steps, counted)
            return  # stopped early (or max_steps counted the steps of several optimizers: warned at fit start)
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        for index, clock in enumerate(self._clocks):
            if clock >= run.total_steps or (scaler is not None and not manual and 2 * clock > run.total_steps):
                continue
            last = self.lr_at(max(clock - 1, 0), index)
            example = f"Phases([(Warmup(), '50 steps'), (Cosine(), '{clock} steps')])"
            fix = f"group_schedules, e.g. {example}" if manual else f"LRSchedule({example})"
            warn_rank_zero(
                trainer,
                f"LRSchedule: optimizer {self._optimizer_names[index]} stepped {clock} times in the run's {done} "
                f"{counted}, but its plan counts one step a {unit} ({run.total_steps} "
                f"steps; {why}): it ended at step {clock} of its plan, its LR at {last:.4g}, short of the plan's end. "
                f"Give an optimizer that steps less often a schedule whose durations are in its own steps ({fix})",
                stacklevel=2,
            )

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Detach from the trainer; the clocks, peaks and scales stay readable until the next fit."""
        self._flush_logs()
        self._detach()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """A fit that ends by an exception or an interrupt (Ctrl-C), where Lightning calls no ``teardown``: detach
        as at a normal end. Before, the next fit on the same Trainer kept the old optimizer (its LR never written
        again), and a cached optimizer object got a second step hook (its clock counted each step twice)."""
        self.teardown(trainer, pl_module, "fit")

    def _detach(self) -> None:
        """Let go of the trainer and its optimizers (the step hooks removed); the clocks, peaks and scales stay, and
        the state a fit continued on the same trainer goes on from."""
        if self._trainer is not None and self._table and self._settled:  # a fit that trained (its set-up complete)
            self._last_fit = (weakref.ref(self._trainer), self.state_dict())
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._trainer = None
        self._optimizers = []

    @override
    def state_dict(self) -> dict[str, Any]:
        if not self._table or self._before_set_up is not None:
            return dict(self._restored or self._before_set_up or {})
        assert self._run is not None
        return {
            "steps": list(self._clocks),
            "peaks": self.peak_lrs,
            "scales": self.scales,
            "names": [[g.name for g in groups] for groups in self._table],
            "given": [[g.given for g in groups] for groups in self._table],  # told apart on resume: x, x-1 and x, x
            "total_steps": self._run.total_steps,
            "steps_per_epoch": self._run.steps_per_epoch,
            # the plan's LR for each group's next step: a resume under a changed plan is told the LR jumps
            "lrs": [[self.lr_at(self._clocks[i], i, j) for j in range(len(gs))] for i, gs in enumerate(self._table)],
            # each group's schedule in words: a resume under a plan changed further on is told so too
            "plans": [[g.schedule.describe() for g in groups] for groups in self._table],
            # the step the scales were set at: a resume without the watchdog that set them is told it keeps them
            "scaled_at": self._scaled_at,
            # the last step's LR written over, for the watchdog's next step (see _last_written_over)
            "written_over": list(self._written_over) if self._written_over is not None else None,
        }

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called for every callback; load_state_dict only for those whose state the checkpoint holds. Without ours,
        # the plan starts from configure_optimizers' LRs: keep the LRs the checkpoint's run trained at, to compare.
        if self._stage not in (None, "fit") or self.state_key in (checkpoint.get("callbacks") or {}):
            return
        if not checkpoint.get("global_step"):
            return  # nothing trained before it (a tuner's checkpoint at fit start): no LR to compare with
        states = checkpoint.get("optimizer_states")
        if isinstance(states, list) and all(isinstance(s, dict) and "param_groups" in s for s in states):
            self._checkpoint_lrs = [[as_float(g["lr"]) for g in s["param_groups"]] for s in states]
        elif states is None and self._trainer is trainer and self._optimizers:
            # a distributed checkpoint (ModelParallelStrategy) is loaded after on_fit_start, the optimizers' states in
            # place and none of them here: the groups hold the checkpoint's LRs now. Before, such a resume was never
            # told that the plan moved the LR (0.1 at the checkpoint, 0.08536 planned), as a resume on one device is
            self._checkpoint_lrs = [[as_float(g["lr"]) for g in o.param_groups] for o in self._optimizers]

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = {"steps", "peaks", "scales", "names", "total_steps", "steps_per_epoch"} - set(state_dict)
        if missing:
            raise ValueError(
                f"LRSchedule: the checkpoint's state lacks {sorted(missing)}; was it written by LRSchedule?"
            )
        if self._stage not in (None, "fit"):
            return  # trainer.test/validate(ckpt_path=...) loads every callback's state: not a resume
        self._restored = dict(state_dict)
        trainer = self._trainer
        if trainer is not None and self._optimizers:
            # A strategy that restores the checkpoint after its own set-up (ModelParallelStrategy, FSDP, DeepSpeed)
            # loads the callbacks' state after on_fit_start, where the plan was already set up without it: set it
            # up again, from the checkpoint's clocks, peaks and scales.
            training = self._training
            self._detach()
            self._setup_for(trainer)
            # A restore once training has started is a tuner's, of this fit's own state (Lightning's
            # LearningRateFinder.lr_find run from an epoch start): the LR it writes into the groups after it is
            # that step's, the group's new peak. Before, the plan wrote over the finder's suggestion at once.
            self._settled = training

    # --- set-up at fit start ---------------------------------------------------------------------------

    def _reset_runtime(self) -> None:
        self._trainer = None
        self._run: Run | None = None
        self._table: list[list[setup.GroupState]] = []
        self._clocks: list[int] = []
        self._optimizers = []
        self._optimizer_names: list[str] = []
        self._handles = []
        self._pending: list[tuple[int, dict[str, float]]] = []
        # (the last step, whose update ran at an LR above the one written for it, the ratio, the first of the steps
        # in a row up to it that did): written over after this schedule's write, by a callback after it or a second
        # scheduler; read by the watchdog. None when the last step ran at the LR written for it
        self._written_over: tuple[int, float, int] | None = None
        self._paused = False
        self._settled = False  # a step has started since the fit's setup or the finder's restore
        self._training = False  # this fit's on_train_start has run: a restore from here on is a tuner's, mid-fit
        self._aside = False
        self._peaks_restored = False
        self._handed_over = False
        self._swa: Any = None
        self._plan_due = False
        self._clock_from_trainer = False
        self._past_end_said = False  # the warning that the run went past its plan was given (or a resume's was)
        self._epoch_checked = False  # the first epoch's length was compared with the plan's
        self._short_epoch_said = False  # ... and found shorter: the run's end does not say it again
        self._checkpoint_lrs = None
        self._fit_length = None
        self._waiting: list[str] = []  # names of group_schedules that wait for a group added during the fit
        self._last_fit = None
        self._scaled_at = None
        # from a fit's setup until it sets up, the state it shows (its table is the last fit's): {} or, for a fit
        # continued on the last fit's trainer, that fit's state; None once set up
        self._before_set_up = None

    @property
    def _idle(self) -> bool:
        """Neither writing LRs nor counting steps: paused by the finder, handed over to SWA, or standing aside."""
        return self._paused or self._handed_over or self._aside

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_trainer=None, _optimizers=[], _handles=[], _last_fit=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # an LRSchedule pickled by 0.2.0 before stop 24 has no state before set-up: its table is its last fit's
        defaults: dict[str, Any] = {
            "_before_set_up": None,
            "_training": False,
            "_aside": False,
            "_fit_length": None,
            "_peaks_restored": False,
            "_epoch_checked": False,
            "_short_epoch_said": False,
            "_scaled_at": None,
            "_waiting": [],
        }
        self.__dict__.update({**defaults, **state})

    def _setup_for(self, trainer: Any) -> None:
        """Resolve the schedule against ``trainer``'s run and take over its optimizers (once per fit)."""
        if self._trainer is trainer and self._optimizers:
            return
        setup.refuse_unusable(trainer)
        last, self._last_fit = self._last_fit, None
        if self._restored is None and last is not None and int(trainer.global_step) > 0:
            fitted_on, state = last
            if fitted_on() is trainer:
                # ``trainer.fit`` again on the trainer of the last fit goes on from its step: the plan goes on as
                # from that fit's checkpoint (``on_length_change`` for a longer run). Before, a run continued with
                # max_steps raised was planned afresh over the longer run, and the LR jumped back up without a word.
                self._restored = state
        self._trainer = trainer
        self._optimizers = list(trainer.optimizers)
        self._settled = False
        self._log_every = log_cadence(trainer, self._log_every_arg)
        run = setup.resolve_run(trainer, [self._schedule, *self._group_schedules.values()])
        self._fit_length = run.total_steps
        restored, self._restored = self._restored, None
        if restored is not None:
            setup.check_restored_shape(restored, self._optimizers)
            planned = run
            run = setup.apply_length_policy(trainer, restored, run, self._on_length_change)
            self._past_end_said = run.total_steps != planned.total_steps  # "keep" said so already
        self._run = run
        finetuning = callback_named(trainer, "BaseFinetuning")  # adds groups during the fit: names may wait for them
        adds_groups = type(finetuning).__name__ if finetuning is not None else None
        self._table, self._optimizer_names, self._waiting = setup.build_table(
            self._optimizers, self._schedule, self._group_schedules, self._peak_overrides, restored, adds_groups
        )
        self._clocks = list(restored["steps"]) if restored else [int(trainer.global_step)] * len(self._optimizers)
        self._clock_from_trainer = restored is None
        self._peaks_restored = restored is not None
        self._scaled_at = restored.get("scaled_at") if restored is not None else None
        written = restored.get("written_over") if restored is not None else None
        self._written_over = (int(written[0]), float(written[1]), int(written[2])) if written else None
        for schedule in {id(g.schedule): g.schedule for groups in self._table for g in groups}.values():
            setup.check_schedule(schedule, run, setup.unknown_length_cause(trainer))
        self._wait_for_groups(trainer, run, adds_groups)
        setup.check_momentum(self._optimizers, self._table)
        if restored is not None and run.total_steps == restored["total_steps"]:  # a length change warned already
            jumped = self._warn_changed_plan(restored.get("lrs"))
            if not jumped:
                self._warn_changed_schedule(restored.get("plans"))
        if restored is not None:
            self._warn_kept_scale(trainer)
        setup.warn_manual_max_steps(trainer, self._optimizers)
        self._swa = callback_named(trainer, "StochasticWeightAveraging")
        for index, optimizer in enumerate(self._optimizers):
            self._handles.append(optimizer.register_step_post_hook(_StepHook(self, index)))
        self._write_all()
        self._plan_due = self._log_plan
        self._before_set_up = None

    def _wait_for_groups(self, trainer: Any, run: Run, adds_groups: str | None) -> None:
        """The schedules of ``group_schedules`` whose name no group has at fit start wait for a group of that name that
        the fine-tuning callback ``adds_groups`` adds during the fit (its backbone, at its unfreeze epoch): checked
        against the run now, so that one that does not fit is refused before the first step, not at the unfreeze
        epoch; said in one info line (and at the fit's end, in a warning, if no such group came: a typo)."""
        for name in self._waiting:
            named = f"group_schedules[{name!r}], waiting for a group added during the fit"
            setup.check_schedule(self._group_schedules[name], run, setup.unknown_length_cause(trainer), named)
        if self._waiting and trainer.is_global_zero:
            log.info(
                "LRSchedule: group_schedules names %s, which no parameter group has at fit start (the groups: %s); "
                "its schedule waits for a group of that name that %s adds during the fit",
                ", ".join(map(repr, self._waiting)),
                ", ".join(g.tag for groups in self._table for g in groups),
                adds_groups,
            )

    def _warn_unused_names(self, trainer: Any) -> None:
        """At the fit's end: say which names of ``group_schedules`` still wait, no group of that name having come
        during the fit (a typo passed at fit start, where a fine-tuning callback might have added the group)."""
        if not self._waiting:
            return
        tags = ", ".join(g.tag for groups in self._table for g in groups)
        warn_rank_zero(
            trainer,
            f"LRSchedule: group_schedules names {', '.join(map(repr, self._waiting))}, but no parameter group of that "
            f"name was at fit start or joined during the fit (the groups: {tags}), so its schedule was never used. "
            "Name a group by its param_group['name'] (an unnamed group is group<i>, i its index in the optimizer: "
            "BackboneFinetuning's backbone, added after one group, is group1)",
            stacklevel=2,
        )

    def _warn_kept_scale(self, trainer: Any) -> None:
        """On resume without the :class:`~lr_callbacks.DivergenceWatchdog`: say so when the checkpoint's scales hold
        its LR cut. They are kept, so that the LR goes on as the checkpoint's run trained (dropping them would change
        it without being asked), but nothing gives them back now. Before, only Lightning's generic warning about a
        callback missing from the checkpoint's said anything, and the run trained at the cut LR to its end."""
        if any(isinstance(c, LRScaler) for c in trainer.callbacks):
            return  # the watchdog sets its own scale at its train start, and gives its cut back itself
        kept = [(g.tag, g.scale) for groups in self._table for g in groups if g.scale != 1.0]
        if not kept:
            return
        when = f" at step {self._scaled_at}" if self._scaled_at is not None else ""
        scales = ", ".join(f"{tag!r} {scale:.3g}" for tag, scale in kept)
        ones = [[1.0] * len(groups) for groups in self._table]
        warn_rank_zero(
            trainer,
            f"LRSchedule: resuming with the LR scales DivergenceWatchdog set{when} ({scales}), but this run has no "
            "DivergenceWatchdog to give them back: the groups train at that share of the plan's LR for the rest of "
            "the run. Keep DivergenceWatchdog in the callbacks to have the cut given back after a clean stretch "
            "(`recover_after`); or, to train at the plan's LR from here, set the scales to 1 in the checkpoint before "
            f"resuming (and drop the LRs it was to train at, which a resume compares with): ckpt = torch.load(path, "
            f"weights_only=False); state = ckpt['callbacks'][{self.state_key!r}]; state['scales'] = {ones}; "
            "state.pop('lrs'); torch.save(ckpt, path)",
            stacklevel=4,
        )

    def _warn_changed_schedule(self, saved: list[list[str]] | None) -> None:
        """On resume, when the LR goes on as before: say so when a group's schedule differs from the checkpoint's
        further on (a milestone moved, a decay shortened). Checkpoints written before the plans were saved are not
        compared."""
        if saved is None:
            return
        for groups, plans in zip(self._table, saved):
            for g, before in zip(groups, plans):
                now = g.schedule.describe()
                if now != before:
                    warn_rank_zero(
                        self._trainer,
                        f"LRSchedule: resuming, group {g.tag!r} has a schedule other than the checkpoint's: {before} "
                        f"then, {now} now. The LR goes on from the same value, and follows the schedule given now "
                        "from here; resume with the original schedule to go on exactly",
                        stacklevel=4,
                    )
                    return

    def _warn_changed_plan(self, saved: list[list[float | None]] | None) -> bool:
        """On resume: say so when the plan given now would not go on with the LR the checkpoint's run was about
        to use (the schedule or its arguments changed since; the peaks and scales come from the checkpoint, so a
        ``peak_lrs`` given now is not used). Checkpoints written before the LRs were saved are not compared.
        Returns whether it warned."""
        if saved is None:
            return False
        for index, (groups, lrs) in enumerate(zip(self._table, saved)):
            for j, (g, before) in enumerate(zip(groups, lrs)):
                now = self.lr_at(self._clocks[index], index, j)
                if before is not None and not math.isclose(now, before, rel_tol=1e-9, abs_tol=1e-15):
                    warn_rank_zero(
                        self._trainer,
                        f"LRSchedule: resuming at step {self._clocks[index]}, group {g.tag!r} was to train at LR "
                        f"{before:.4g}; the schedule given now plans {now:.4g} there, so the LR jumps: the schedule "
                        "or its arguments changed since the checkpoint. The peaks and LR scales are the checkpoint's "
                        "(peak_lrs given now are not used); resume with the original schedule to go on exactly",
                        stacklevel=4,
                    )
                    return True
        return False

    def _warn_new_on_resume(self, checkpoint_lrs: list[list[float]]) -> None:
        """On a resume from a checkpoint written without LRSchedule: say so when the plan moves the LR away from
        the one the checkpoint's run trained at (its peak is configure_optimizers' LR, unless the finder or the
        watchdog, resumed too, gave their answer and cut)."""
        if [len(lrs) for lrs in checkpoint_lrs] != [len(groups) for groups in self._table]:
            return
        for index, (groups, lrs) in enumerate(zip(self._table, checkpoint_lrs)):
            for g, before in zip(groups, lrs):
                if not math.isclose(g.lr, before, rel_tol=1e-6, abs_tol=1e-15):
                    warn_rank_zero(
                        self._trainer,
                        f"LRSchedule: resuming at step {self._clocks[index]} from a checkpoint written without "
                        f"LRSchedule: group {g.tag!r} trained at LR {before:.4g} there, and the plan now writes "
                        f"{g.lr:.4g} (its peak {g.peak:.4g}). To go on near the checkpoint's LR, give its peak "
                        "(configure_optimizers or peak_lrs); to go on exactly, resume without LRSchedule",
                        stacklevel=2,
                    )
                    return

    # --- the per-step work -----------------------------------------------------------------------------

    def _require_run(self) -> Run:
        if self._run is None:
            raise ValueError(
                "LRSchedule has not started: the run's length is known only once fit starts; to preview the plan "
                "before, evaluate `.schedule(step, total_steps=N)` or run `python -m lr_callbacks plot` with the "
                "run's length"
            )
        return self._run

    def _sync_groups(self, index: int) -> None:
        """Take in groups added during the fit (e.g. by BackboneFinetuning).

        A group is added with the LR it should train at now, at step ``k``: its peak is that LR divided by
        ``schedule(k) × scale``, so it keeps its ratio to the other groups from then on (if the schedule is
        at 0 at step ``k``, the LR it was added with is its peak). Its schedule is checked as at fit start.

        Raises:
            ValueError: for a schedule that does not fit the run, or co-schedules a momentum the group lacks or
                leaves ``[0, 1)``, naming the group.
        """
        optimizer, groups = self._optimizers[index], self._table[index]
        run = self._require_run()
        given = given_names(optimizer)
        names = group_names(given, [g.name for g in groups])
        for j in range(len(groups), len(optimizer.param_groups)):
            group, name, base = optimizer.param_groups[j], names[j], given[j]
            several = len(self._optimizers) > 1
            tag = f"{self._optimizer_names[index]}/{name}" if several else name
            keys = setup.group_keys(tag, name, base, self._optimizer_names[index] if several else None)
            schedule = setup.bind(setup.for_group(self._group_schedules, keys, self._schedule), optimizer)
            # the checks a group present at fit start had (before, a group added later took its schedule unchecked:
            # a default that no group used then, growing past 10⁶ × the peak within the run, trained without a word)
            named = f"parameter group {tag!r}, added during the fit at step {self._clocks[index]}"
            cause = setup.unknown_length_cause(self._trainer) if self._trainer is not None else ""
            setup.check_schedule(schedule, run, cause, named)
            setup.check_group_momentum(optimizer, group, schedule, named)
            came = [name for name in self._waiting if name in keys]
            if came:  # a name of group_schedules that waited for it since fit start
                self._waiting = [name for name in self._waiting if name not in keys]
                log.info("LRSchedule: %s takes group_schedules[%r]: %s", named, came[0], schedule.describe())
            scale = groups[0].scale if groups else 1.0
            multiplier = schedule.multiplier(self._clocks[index], run) * scale
            lr = as_float(group["lr"])
            peak = lr / multiplier if multiplier > 0 else lr
            groups.append(setup.GroupState(tag=tag, name=name, given=base, schedule=schedule, peak=peak, scale=scale))

    def _adopt(self, index: int) -> None:
        """Take an LR that something else wrote into a group between steps (``BackboneFinetuning``'s ramp of the
        backbone's LR each epoch, the user's own change) as that group's new peak: the LR it set is this step's,
        and the schedule goes on from it, in its shape (the peak is that LR over ``schedule(k)·scale``).

        Only in a settled fit, up to a step's backward pass: what is written after it, in the update's own hooks
        (a fault injected in ``on_before_optimizer_step``), trains that step and is overwritten by the next LR,
        and the LRs a restored checkpoint or the finder's restore leave in the groups before the first step are
        written over, as before.
        """
        run = self._run
        assert run is not None
        step = self._clocks[index]
        for group, g in zip(self._optimizers[index].param_groups, self._table[index]):
            lr = group["lr"]
            if isinstance(lr, torch.Tensor) or math.isnan(g.lr) or lr == g.lr:
                continue  # a tensor LR is not read back (that would sync); nothing written yet; unchanged
            multiplier = g.schedule.multiplier(step, run) * g.scale
            # an LR of 0 (a group frozen by its LR) is taken too: before, the plan wrote over it, the group trained on
            if multiplier <= 0 or lr < 0:
                continue
            old, g.peak = g.peak, float(lr) / multiplier
            log.info("LRSchedule: group %s's LR was set to %.4g outside it; its peak follows: %.4g → %.4g",
                     g.tag, lr, old, g.peak)  # fmt: skip

    def _take_changes(self) -> list[int]:
        """Take in what changed in the groups since the last step, without writing: a group added
        (``BackboneFinetuning`` unfreezing at an epoch's start), an LR set outside (adopted only once a step has
        started: not the LRs a checkpoint or the finder's restore left in the groups). Returns the optimizers whose
        groups changed. Each step's start calls it, then writes those; the finder reads the peaks through it
        before a sweep at an epoch's start, where no step has started yet."""
        changed = [index for index in range(len(self._optimizers)) if self._table and self._stale(index)]
        for index in changed:
            if self._settled:
                self._adopt(index)
            self._sync_groups(index)
        return changed

    def _planned_lrs(self, index: int) -> list[float] | None:
        """The LRs this schedule wrote for the coming step of optimizer ``index`` (``peak × schedule × scale`` per
        group), or ``None`` when it does not drive them now (paused, handed over to SWA, standing aside, not set up,
        or its table not matching the groups). The watchdog judges the update ratio against them: an LR that
        something else wrote over them for a step (a callback or the module, before the update) is not planned."""
        if self._idle or index >= len(self._table) or index >= len(self._optimizers):
            return None
        if len(self._optimizers[index].param_groups) != len(self._table[index]):
            return None
        return [g.lr for g in self._table[index]]

    def _stale(self, index: int) -> bool:
        """Whether a group of optimizer ``index`` no longer holds the LR last written, or is new."""
        groups = self._optimizers[index].param_groups
        if len(groups) != len(self._table[index]):
            return True
        for group, g in zip(groups, self._table[index]):
            lr = group["lr"]
            if isinstance(lr, torch.Tensor) or lr != g.lr:  # a tensor LR is not read back: that would sync
                return True
        return False

    def _write(self, index: int) -> None:
        run = self._run
        assert run is not None
        self._sync_groups(index)
        step = self._clocks[index]
        multipliers: dict[int, tuple[float, float | None]] = {}
        for group, g in zip(self._optimizers[index].param_groups, self._table[index]):
            key = id(g.schedule)
            if key not in multipliers:
                multipliers[key] = (
                    g.schedule.multiplier(step, run),
                    g.schedule.momentum_for(step, run) if g.momentum else None,
                )
            multiplier, momentum = multipliers[key]
            g.lr = g.peak * multiplier * g.scale
            set_lr(group, g.lr)
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, *tuple(group["betas"])[1:])
                else:
                    group["momentum"] = momentum

    def _write_all(self) -> None:
        if self._trainer is not None:
            # decided before any write: on a run resumed inside SWA's phase the watchdog's on_train_start sets the
            # scale (here) before this schedule's own on_train_start, and wrote the plan's LR over SWA's
            self._hand_over_to_swa(self._trainer)
        if self._idle:
            return
        for index in range(len(self._optimizers)):
            self._write(index)

    def _after_step(self, index: int) -> None:
        """The optimizer's ``step()`` ran: log the LR it used, advance its clock, write the next LR."""
        if self._idle or not self._table:
            return
        step = self._clocks[index]
        if index == 0 and not self._paused:
            self._note_written_over(step)
        if step % self._log_every == 0:
            metrics = {f"lr/{g.tag}": g.lr for g in self._table[index]}
            optimizer = self._optimizers[index]
            for group, g in zip(optimizer.param_groups, self._table[index]):
                if g.momentum:
                    metrics[f"momentum/{g.tag}"] = float(group["betas"][0] if "betas" in group else group["momentum"])
            self._pending.append((step, metrics))
        self._clocks[index] = step + 1
        self._write(index)

    def _note_written_over(self, step: int) -> None:
        """After ``step``'s update: whether a group of the first optimizer ran at an LR above the one written for it
        (a tensor LR is not read back: that would sync)."""
        ratio = 1.0
        for group, g in zip(self._optimizers[0].param_groups, self._table[0]):
            lr = group["lr"]
            if not isinstance(lr, torch.Tensor) and g.lr > 0.0 and lr > g.lr:
                ratio = max(ratio, lr / g.lr)
        if ratio > 1.0:
            since = self._written_over[2] if self._written_over is not None else step
            self._written_over = (step, ratio, since)
        else:
            self._written_over = None

    def _last_written_over(self) -> tuple[int, float, int] | None:
        """Whether the last step ran above the LR written for it: ``(that step, the largest ratio, the first of the
        steps in a row up to it that did)``, or ``None`` (see :meth:`_note_written_over`). The watchdog reads it at
        the next step; a checkpoint written between keeps it."""
        return self._written_over

    def _flush_logs(self) -> None:
        if not self._pending or self._trainer is None:
            return
        pending, self._pending = self._pending, []
        for step, metrics in pending:
            log_scalars(self._trainer, metrics, step)

    # --- the plan --------------------------------------------------------------------------------------

    def plan(self, points: int = 1000) -> dict[str, tuple[list[int], list[float]]]:
        """The planned LR of every group over the run: ``{tag: (steps, lrs)}``, up to ``points`` each.

        Raises:
            ValueError: before fit start (the run's length is unknown), or for ``points`` < 1; each names the fix.
        """
        run = self._require_run()
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise ValueError(
                f"LRSchedule.plan: `points` is how many steps to sample, a whole number >= 1, got {points!r}; "
                "e.g. plan(points=1000) (the first and last step are always among them, from points=2)"
            )
        total = run.total_steps if run.total_steps is not None else UNKNOWN_LENGTH_PREVIEW
        steps = sample_steps(max(total, 1), points)
        curves = {}
        for groups in self._table:
            for g in groups:
                curves[g.tag] = (steps, [g.peak * g.schedule.multiplier(k, run) * g.scale for k in steps])
        return curves

    def plan_table(self) -> str:
        """A markdown table of every group's LR at the key steps of the plan (phase boundaries, end)."""
        run = self._require_run()
        return plan_tables(((g.tag, g.schedule, g.peak * g.scale) for groups in self._table for g in groups), run)

    def _log_the_plan(self, trainer: Any) -> None:
        """The plan's table on the console, and with a logger its image and table in TensorBoard (the console line
        does not wait for a logger: ``Trainer(logger=False)`` printed the finder's answer but not the plan)."""
        if not trainer.is_global_zero:
            return
        run = self._require_run()
        length = (
            f"{run.total_steps} optimizer steps"
            if run.total_steps is not None
            else (f"unknown length, first {UNKNOWN_LENGTH_PREVIEW} steps shown")
        )
        table = self.plan_table()
        if trainer.loggers:
            step = self._clocks[0] if self._clocks else 0
            log_image(trainer, "lr_schedule/plan", plan_image(self.plan(), f"LR plan ({length})"), step)
            log_text(trainer, "lr_schedule/summary", f"Run: {length}.\n\n{table}", step)
        log.info("LRSchedule plan (%s):\n%s", length, table)


def _resumed_clock(trainer: Any, optimizers: int) -> int:
    """Where the clocks start on a resume from a checkpoint written without LRSchedule: with one optimizer, the
    restored ``global_step`` (its steps). With several (manual optimization), ``global_step`` counts the steps of
    all of them, and their plan counts one step a batch (Lightning's ``estimated_stepping_batches``): the batches
    done. Before, their clocks stayed at 0: the resumed run trained the plan again from its start, and was told at
    its end that its optimizers had stepped less often than once a batch."""
    if optimizers == 1:
        return int(trainer.global_step)
    return _batches_done(trainer)


def _epoch_batches(trainer: Any) -> int:
    """The training batches this epoch has done, those before a resume in it included: Lightning's ``processed``."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def _batches_done(trainer: Any) -> int:
    """The training batches the fit has done, counted over its epochs (resumes included): Lightning's ``processed``.

    Not its ``completed``, which a checkpoint written in ``on_train_batch_end`` (``ModelCheckpoint`` every
    ``n`` steps; at the run's last batch too) saves one short, before the batch is counted: Lightning makes up for
    it only when the resumed epoch goes on, after ``on_train_start``. Read there, a resume under manual optimization
    from a checkpoint written without LRSchedule at batch 3 started its clocks at 2 (the plan a step behind, and
    "stepped 15 times in the run's 16 batches" at its end); one resumed from the last batch's checkpoint was told
    at its end that its training loader had become shorter.
    """
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)


class _StepHook:
    """The optimizer step post-hook; a small class (not a closure) so that nothing unpicklable is held."""

    def __init__(self, owner: LRSchedule, index: int) -> None:
        self.owner, self.index = owner, index

    def __call__(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.owner._after_step(self.index)
