"""The one LR model the three callbacks share: ``lr(g, k) = peak(g) × schedule(k) × scale(g)``.

A :class:`ScheduleOwner` (:class:`~lr_callbacks.LRSchedule`) owns the formula when it is present: the finder
writes ``peak`` through :func:`set_peak_lr`, the watchdog writes ``scale`` through :func:`set_lr_scale`, and the
schedule writes the product into the optimizer. This module knows the schedule callback only through that
protocol, so ``core`` imports no callback. When the user drives the LR with their own torch scheduler instead, the
same functions rescale the scheduler's ``base_lrs`` (and ``max_lrs``, a cosine's ``eta_min``, the ``initial_lr``,
``max_lr`` and ``min_lr`` that OneCycleLR keeps in each group, and the ``swa_lr`` of SWALR's) with ``group["lr"]``,
so that the next ``scheduler.step()`` keeps the change instead of undoing it. The same holds once ``LRSchedule``
has handed the LR over to Lightning's ``StochasticWeightAveraging``.

Ratios between parameter groups are always kept: the *reference group* is the first group of the first
optimizer, and every LR the finder reports or sets is that group's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from lr_callbacks.core.compat import scale_backbone_ramp

__all__ = [
    "LRScaler",
    "Pausable",
    "ScheduleOwner",
    "as_float",
    "find_lr_schedule",
    "paused",
    "reference_lr",
    "require_lr_groups",
    "rescale_lrs",
    "scale_new_swa_scheduler",
    "schedule_callback",
    "set_lr",
    "set_lr_scale",
    "set_peak_lr",
]


@runtime_checkable
class Pausable(Protocol):
    """A callback that stops acting on the LR while another one (the finder's sweep) has the controls.

    The methods are private to the package: users never call them, the finder does through :func:`paused`.
    """

    def _pause(self) -> None: ...

    def _resume(self, trainer: Any) -> None: ...


@runtime_checkable
class ScheduleOwner(Protocol):
    """The callback that writes ``peak(g) × schedule(k) × scale(g)`` into the optimizers (``LRSchedule``).

    The finder sets its peak and the watchdog its scale through these methods, never through the optimizer,
    so that the next step's write keeps them. Private to the package, like :class:`Pausable`'s.
    """

    @property
    def peak_lrs(self) -> list[list[float]]: ...

    def _setup_for(self, trainer: Any) -> None: ...

    def _set_peak_lr(self, lr: float) -> None: ...

    def _set_scale(self, scale: float) -> None: ...

    def _scale_peak_overrides(self, factor: float) -> None: ...

    def _take_changes(self) -> list[int]: ...

    def _planned_lrs(self, index: int) -> list[float] | None: ...

    def _last_written_over(self) -> tuple[int, float, int] | None: ...

    @property
    def _handed_over(self) -> bool:
        """The LR is driven by Lightning's ``StochasticWeightAveraging`` now (SWALR), not by the schedule."""
        ...

    @property
    def _aside(self) -> bool:
        """This fit has no run to plan (``fast_dev_run``, ``limit_train_batches=0``): the schedule stands aside, and
        the LRs are the optimizer's own."""
        ...

    @property
    def _peaks_restored(self) -> bool:
        """This fit's peaks and scales are a checkpoint's (or, continued on the last fit's trainer, that fit's): they
        hold the finder's answer, and any LR set outside the schedule since, which it took as the group's peak."""
        ...


@runtime_checkable
class LRScaler(Protocol):
    """A callback that holds a ``scale(g)`` of the LR model (the watchdog's cut, 1.0 when it has none).

    Without a :class:`ScheduleOwner` the scale is in the optimizers' LRs themselves (:func:`set_lr_scale` rescales
    them): :func:`set_peak_lr` reads it to set a peak under it, not in its place. Private, like :class:`Pausable`'s.
    """

    @property
    def _lr_scale(self) -> float: ...


_CONFORMING: dict[tuple[type, type], bool] = {}


def _conforms(callback: Any, protocol: type) -> bool:
    """``isinstance(callback, protocol)`` for the protocols above, decided once per class of callback.

    On Python 3.11 a check against a runtime protocol collects the protocol's members at every call: 5-18 µs per
    callback and protocol, paid for every callback of the trainer each time the watchdog looks the schedule up (every
    ``update_every`` steps). What meets the protocols here is what every instance of a class has (its methods and
    properties, and the attributes its ``__init__`` sets), so the first instance of a class decides for the class.

    >>> class Owner:
    ...     def _pause(self): ...
    ...     def _resume(self, trainer): ...
    >>> _conforms(Owner(), Pausable), _conforms(object(), Pausable)
    (True, False)
    """
    key = (type(callback), protocol)
    known = _CONFORMING.get(key)
    if known is None:
        known = _CONFORMING[key] = isinstance(callback, protocol)
    return known


def lr_scale(trainer: Any) -> float:
    """The product of the scales the trainer's :class:`LRScaler` callbacks hold (1.0 without one)."""
    scale = 1.0
    for callback in trainer.callbacks:
        if _conforms(callback, LRScaler):
            scale *= callback._lr_scale
    return scale


def schedule_callback(trainer: Any) -> ScheduleOwner | None:
    """The trainer's :class:`ScheduleOwner` (its ``LRSchedule``) as it is, or ``None``: a lookup, also after a fit.

    Raises:
        ValueError: if there are several (they would fight over the LR).
    """
    schedules = [c for c in trainer.callbacks if _conforms(c, ScheduleOwner)]
    if len(schedules) > 1:
        raise ValueError(
            f"found {len(schedules)} LRSchedule callbacks; they would overwrite each other's LR. Use one, "
            "with `group_schedules` for groups that need their own schedule"
        )
    return schedules[0] if schedules else None


def find_lr_schedule(trainer: Any) -> ScheduleOwner | None:
    """The trainer's :class:`ScheduleOwner`, set up for the fit under way (its table of groups built from the
    trainer's optimizers), or ``None``, also when it stands aside in this fit (``fast_dev_run``): the LRs are then
    the optimizer's own, as without one. Before, the watchdog set an aside schedule up at its first step, against
    the smoke test's few batches: ``fast_dev_run`` with ``LRSchedule("cosine", warmup="50 steps")`` and the watchdog
    failed with "the phases add up to 50 steps, but the run has 3 steps". Only during a fit: called after one, it
    would bind the schedule to the finished fit's optimizers (use :func:`schedule_callback` there).

    Raises:
        ValueError: if there are several (they would fight over the LR).
    """
    schedule = schedule_callback(trainer)
    if schedule is None or schedule._aside:
        return None
    schedule._setup_for(trainer)
    return schedule


@contextlib.contextmanager
def paused(trainer: Any) -> Iterator[None]:
    """Pause every :class:`Pausable` callback of ``trainer`` (LRSchedule, the watchdog) for a while."""
    callbacks = [c for c in trainer.callbacks if _conforms(c, Pausable)]
    for callback in callbacks:
        callback._pause()
    try:
        yield
    finally:
        for callback in callbacks:
            callback._resume(trainer)


def reference_lr(trainer: Any) -> float:
    """The reference group's peak LR: LRSchedule's ``peak``, or the peak of the user's torch scheduler, or the LR.

    A torch scheduler's peak is its ``base_lrs``, except for the two that climb above them: ``CyclicLR``, whose
    ``base_lrs`` are the cycle's floor and ``max_lrs`` its top, and ``OneCycleLR``, whose ``base_lrs`` are its
    start (``max_lr / div_factor``) and whose peak is the ``max_lr`` it keeps in each group; also inside a
    ``SequentialLR`` or ``ChainedScheduler`` (the highest of their schedulers' peaks). The finder sets this
    peak (:func:`set_peak_lr`): read as the start, its answer would become a OneCycleLR's start and the run's peak
    ``div_factor`` (25) times the answer.
    """
    schedule = find_lr_schedule(trainer)
    if schedule is not None:
        return schedule.peak_lrs[0][0]
    optimizer = _first_optimizer(trainer)
    group = optimizer.param_groups[0]
    for config in trainer.lr_scheduler_configs:
        if getattr(config.scheduler, "optimizer", None) is optimizer:
            peak = _scheduler_peak(config.scheduler, group)
            if peak is not None:
                return peak
    return float(group.get("initial_lr", as_float(group["lr"])))


def _scheduler_peak(scheduler: Any, group: dict[str, Any]) -> float | None:
    """The first group's peak under ``scheduler``: ``OneCycleLR``'s ``max_lr``, ``CyclicLR``'s top, another's
    ``base_lrs``; for ``SequentialLR`` and ``ChainedScheduler`` the highest of their schedulers' (a ``OneCycleLR``
    inside one peaks at its ``max_lr`` as it does alone). ``None`` when it names none."""
    children = getattr(scheduler, "_schedulers", None)
    if children:
        peaks = [p for p in (_scheduler_peak(child, group) for child in children) if p is not None]
        return max(peaks) if peaks else None
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and "max_lr" in group:
        return float(group["max_lr"])
    for attribute in ("max_lrs", "base_lrs"):  # CyclicLR's top, else the base every other one scales
        values = getattr(scheduler, attribute, None)
        if values:
            return float(values[0])
    return None


def set_peak_lr(trainer: Any, lr: float) -> None:
    """Make ``lr`` the reference group's peak; every other group keeps its ratio to it.

    With :class:`~lr_callbacks.LRSchedule` this sets its peaks; otherwise it rescales the optimizers'
    LRs and the user's schedulers by ``lr × scale / reference_lr(trainer)``, where ``scale`` is the watchdog's
    cut (:func:`lr_scale`), which those LRs hold: the LR becomes ``lr × scale``, as under LRSchedule. Before, a
    finder that ran while the watchdog held a cut set ``lr`` itself, and the watchdog giving its cut back then
    took the LR above the finder's answer (×2 after a ×0.5 cut). ``BackboneFinetuning``'s ramp goes on from the
    rescaled backbone LR.
    """
    schedule = find_lr_schedule(trainer)
    current = schedule.peak_lrs[0][0] if schedule is not None else reference_lr(trainer) / lr_scale(trainer)
    factor = lr / current
    scale_backbone_ramp(trainer, factor)
    if schedule is not None:
        schedule._set_peak_lr(lr)
        return
    rescale_lrs(trainer, factor)


def set_lr_scale(trainer: Any, scale: float, previous: float) -> None:
    """Move the watchdog's multiplier from ``previous`` to ``scale``, for every group.

    With :class:`~lr_callbacks.LRSchedule` this sets its ``scale``; otherwise, or once it has handed the LR over
    to ``StochasticWeightAveraging``, it rescales the optimizers' LRs and the schedulers by ``scale / previous``.
    ``BackboneFinetuning``'s ramp goes on from the rescaled backbone LR.
    """
    scale_backbone_ramp(trainer, scale / previous)
    schedule = find_lr_schedule(trainer)
    if schedule is not None and not schedule._handed_over:
        schedule._set_scale(scale)
        return
    rescale_lrs(trainer, scale / previous)


def rescale_lrs(trainer: Any, factor: float) -> None:
    """Multiply every group's LR by ``factor``, in the optimizers and in the user's torch schedulers.

    ``CosineAnnealingLR``'s and ``CosineAnnealingWarmRestarts``' ``eta_min`` is scaled too: it is where their
    curve goes, so left alone it would pull a cut LR back up to it. ReduceLROnPlateau's ``min_lrs``, a clamp that
    never raises an LR, is left alone.
    """
    if factor == 1.0:
        return
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            set_lr(group, as_float(group["lr"]) * factor)
            for key in ("initial_lr", "max_lr", "min_lr", "swa_lr"):
                if key in group:
                    group[key] = group[key] * factor
    for config in trainer.lr_scheduler_configs:
        _rescale_scheduler(config.scheduler, factor)


def _rescale_scheduler(scheduler: Any, factor: float) -> None:
    for child in getattr(scheduler, "_schedulers", ()):  # SequentialLR, ChainedScheduler
        _rescale_scheduler(child, factor)
    for attribute in ("base_lrs", "max_lrs", "_last_lr"):
        values = getattr(scheduler, attribute, None)
        if isinstance(values, list):
            setattr(scheduler, attribute, [v * factor for v in values])
    if isinstance(getattr(scheduler, "eta_min", None), (int, float)):  # the cosine's end, one for all groups
        scheduler.eta_min = scheduler.eta_min * factor


def scale_new_swa_scheduler(trainer: Any, scale: float, known: int | None) -> int | None:
    """Put the watchdog's ``scale`` into the ``swa_lr`` of an ``SWALR`` that Lightning's ``StochasticWeightAveraging``
    created since the last call (``known``: the ``id`` of the one seen then); returns the ``id`` of the one in force.

    SWALR anneals from the group's LR, which holds the cut, to the ``swa_lrs`` it is given, which do not. Once it
    drives the LR, :func:`set_lr_scale` rescales its ``swa_lr`` with the LR; a cut taken before it started was
    not in it, and giving that cut back took the LR above the user's ``swa_lrs`` (0.04 for ``swa_lrs=0.02``
    after a cut to 0.5 at the step before SWA began, given back in its phase).
    """
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if isinstance(scheduler, torch.optim.swa_utils.SWALR) and id(scheduler) != known:
            if scale != 1.0:
                for group in scheduler.optimizer.param_groups:
                    if "swa_lr" in group:
                        group["swa_lr"] = group["swa_lr"] * scale
            return id(scheduler)
    return known


def require_lr_groups(trainer: Any, owner: str) -> None:
    """Refuse a fit with no optimizer, or with a parameter group that has no ``lr`` to read and write.

    Raises:
        ValueError: naming the optimizer and group, and the fix.
    """
    if not trainer.optimizers or any(not o.param_groups for o in trainer.optimizers):
        raise ValueError(
            f"{owner} found no optimizer to drive: configure_optimizers returned none (or one without parameter "
            "groups); return an optimizer from configure_optimizers"
        )
    for optimizer in trainer.optimizers:
        for index, group in enumerate(optimizer.param_groups):
            if "lr" not in group:
                settings = sorted(k for k in group if k != "params")
                raise ValueError(
                    f"{owner} reads and writes each parameter group's 'lr', but group {index} of "
                    f"{type(optimizer).__name__} has none (its settings: {settings}); use an optimizer with a "
                    f"learning rate, or leave {owner} out"
                )


def _first_optimizer(trainer: Any) -> torch.optim.Optimizer:
    if not trainer.optimizers:
        raise ValueError("the trainer has no optimizer yet; the LR can be read only once fit has started")
    return trainer.optimizers[0]


def as_float(value: Any) -> float:
    """A group's LR (or any hyperparameter) as a float, whether it is a float or a tensor."""
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def set_lr(group: dict[str, Any], value: float) -> None:
    """Write a group's LR, in place if it is a tensor (capturable or compiled optimizers)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value
