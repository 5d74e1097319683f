"""transformers' scheduler names and arguments, expressed in our shapes.

``TransformersSchedule("cosine", num_warmup_steps=100)`` gives, at every step of the run, the multiplier
that ``transformers.get_scheduler("cosine", ...)`` gives, with ``num_training_steps`` taken from the run.
Within the run the two agree step for step, in every group (tested side by side). The deliberate
differences:

- Past the end of the planned run (only reachable when a resumed run is longer, see
  ``LRSchedule(on_length_change="keep")``), ours holds the value of step ``num_training_steps``.
  transformers' ``cosine`` and ``cosine_with_min_lr`` keep following the cosine, so the LR climbs back
  up (with ``num_cycles=0.5``, to the peak at step ``2·num_training_steps − num_warmup_steps``), and
  ``inverse_sqrt`` keeps decaying; ``linear``, ``polynomial``, ``cosine_with_restarts`` and
  ``warmup_stable_decay`` already hold their end value there, as ours do.
- A plan longer than the run is refused at fit start instead of being cut short silently: a warmup longer
  than the run, and for ``warmup_stable_decay`` warmup + stable + decay steps beyond it.

Absolute floors (``lr_end``, ``min_lr``) are converted to multipliers with the optimizer's
``defaults["lr"]``, exactly as transformers does; other groups keep their ratio to it, so their floors are
not ``lr_end`` itself (research: transformers applies one multiplier to every group).

Like transformers, the warmup runs step 0 at LR 0. Our own presets (``LRSchedule("cosine",
warmup=...)``) train from the first step instead.

>>> s = TransformersSchedule("linear", num_warmup_steps=2)
>>> [s(k, total_steps=6) for k in range(6)]
[0.0, 0.5, 1.0, 0.75, 0.5, 0.25]

The scheduler-specific arguments each name takes, with transformers' defaults:

>>> TRANSFORMERS_ARGUMENTS["polynomial"]
{'lr_end': 1e-07, 'power': 1.0}
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from lr_callbacks.core.checks import check_choice, check_int, check_number
from lr_callbacks.core.durations import Duration, Run, Steps
from lr_callbacks.schedule.composites import CosineRestarts, Phase, Phases, Reversed
from lr_callbacks.schedule.shapes import (
    Constant,
    Cosine,
    InverseSqrt,
    Linear,
    OneMinusSqrt,
    Polynomial,
    Schedule,
)

__all__ = ["TRANSFORMERS_ARGUMENTS", "TransformersSchedule"]

#: The scheduler-specific arguments each transformers name takes, with transformers' defaults.
TRANSFORMERS_ARGUMENTS: dict[str, dict[str, Any]] = {
    "linear": {},
    "cosine": {"num_cycles": 0.5},
    "cosine_with_restarts": {"num_cycles": 1},
    "polynomial": {"lr_end": 1e-7, "power": 1.0},
    "constant": {},
    "constant_with_warmup": {},
    "inverse_sqrt": {"timescale": None},
    "cosine_with_min_lr": {"num_cycles": 0.5, "min_lr": None, "min_lr_rate": None},
    "warmup_stable_decay": {
        "num_decay_steps": None,
        "num_stable_steps": None,
        "warmup_type": "linear",
        "decay_type": "cosine",
        "min_lr_ratio": 0.0,
        "num_cycles": 0.5,
    },
}

_WSD_TYPES = ("linear", "cosine", "1-sqrt")

#: transformers' scheduler names that ``TransformersSchedule`` does not take, and why (transformers 5.x).
_NOT_SCHEDULES = {
    "reduce_lr_on_plateau": "follows a metric, not the step: it is no schedule LRSchedule can plan. Keep it as "
    "configure_optimizers' lr_scheduler (with a monitor) and drop LRSchedule",
    "greedy": "(GreedyLR) follows the loss, not the step: it is no schedule LRSchedule can plan. Keep it as "
    "configure_optimizers' lr_scheduler and drop LRSchedule",
    "cosine_warmup_with_min_lr": "is not supported: its warmup and decay run a step ahead of 'cosine_with_min_lr' "
    "(step 0 at 1/num_warmup_steps, the floor reached at the run's last step). Use 'cosine_with_min_lr' (the same "
    "floor, min_lr or min_lr_rate), or keep transformers' scheduler without LRSchedule",
}


@dataclass(frozen=True)
class TransformersSchedule(Schedule):
    """A transformers scheduler by its name and arguments, as a schedule of ours.

    Within the run it gives every step the multiplier ``transformers.get_scheduler`` gives it. Past the end
    it holds (transformers' ``cosine`` and ``cosine_with_min_lr`` climb back up, ``inverse_sqrt`` keeps
    decaying), and a warmup or WSD plan longer than the run is refused by :meth:`check` (transformers cuts
    it short silently).

    Args:
        name: a transformers scheduler name (see :data:`TRANSFORMERS_ARGUMENTS`).
        num_warmup_steps: the warmup, in optimizer steps.
        arguments: the scheduler-specific arguments, by transformers' names.
        reference_lr: ``optimizer.defaults["lr"]``, which transformers divides absolute floors by; set at
            fit start by :class:`~lr_callbacks.LRSchedule`. Needed only for ``lr_end`` and ``min_lr``.

    Raises:
        ValueError: for an unknown name, one of transformers' that is no schedule of the step
            (``reduce_lr_on_plateau``, ``greedy``) or not supported (``cosine_warmup_with_min_lr``), a warmup given to
            ``constant`` (transformers drops it: ``constant_with_warmup`` has one), or a value transformers would
            reject.
        TypeError: for an argument the named scheduler does not take.

    >>> cosine = TransformersSchedule("cosine", num_warmup_steps=10)
    >>> [round(cosine(k, total_steps=110), 3) for k in (0, 5, 10, 60, 109, 200)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    name: str
    num_warmup_steps: int = 0
    arguments: tuple[tuple[str, Any], ...] = ()
    reference_lr: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.name in _NOT_SCHEDULES:
            raise ValueError(
                f"from_transformers: transformers' {self.name!r} {_NOT_SCHEDULES[self.name]}; the names LRSchedule "
                f"takes: {', '.join(map(repr, TRANSFORMERS_ARGUMENTS))}"
            )
        check_choice("name", self.name, TRANSFORMERS_ARGUMENTS, owner="from_transformers")
        if isinstance(self.num_warmup_steps, float):
            raise TypeError(
                f"from_transformers: `num_warmup_steps` is a number of steps, got {self.num_warmup_steps!r}; "
                "for a ratio of the run use LRSchedule('cosine', warmup='5%') instead"
            )
        check_int("num_warmup_steps", self.num_warmup_steps, low=0, owner="from_transformers")
        if self.name == "constant" and self.num_warmup_steps > 0:
            raise ValueError(
                f"from_transformers('constant'): num_warmup_steps={self.num_warmup_steps} would warm nothing up: "
                "transformers' 'constant' has no warmup (get_scheduler drops num_warmup_steps for it); for a warmup "
                f"use from_transformers('constant_with_warmup', num_warmup_steps={self.num_warmup_steps}), or drop it"
            )
        args = dict(self.arguments)
        allowed = TRANSFORMERS_ARGUMENTS[self.name]
        unknown = sorted(set(args) - set(allowed))
        if "num_training_steps" in args:
            raise TypeError(
                "from_transformers: `num_training_steps` comes from the trainer "
                "(trainer.estimated_stepping_batches); drop it, and set Trainer(max_steps=...) to change it"
            )
        if unknown:
            takes = ", ".join(allowed) or "no other arguments"
            raise TypeError(
                f"from_transformers: {self.name!r} does not take {', '.join(map(repr, unknown))}; it takes: {takes}"
            )
        if self.reference_lr is not None:
            check_number("reference_lr", self.reference_lr, low=0.0, low_open=True, owner="from_transformers")
        self._validate({**allowed, **args})
        if self.name == "polynomial" and self.reference_lr is not None:
            self._check_lr_end(float(self.args["lr_end"]), self.reference_lr)

    def _check_lr_end(self, lr_end: float, reference_lr: float) -> None:
        """Refuse a polynomial's absolute ``lr_end`` at or above the optimizer's lr, which the decay starts from
        (transformers refuses it too, when the scheduler is built): the "decay" would climb to it.

        Raises:
            ValueError: naming both LRs and the fix.
        """
        if not reference_lr > lr_end:
            raise ValueError(
                f"from_transformers('polynomial'): `lr_end` ({lr_end:g}) must be smaller than the optimizer's lr "
                f"({reference_lr:g}), the LR the decay starts from (transformers refuses it too): lower lr_end below "
                f"{reference_lr:g} (it is an absolute LR, not a fraction of the peak), or raise the optimizer's lr"
            )

    def _validate(self, a: dict[str, Any]) -> None:
        owner = f"from_transformers({self.name!r})"
        if self.name == "warmup_stable_decay":
            check_choice("warmup_type", a["warmup_type"], _WSD_TYPES, owner=owner)
            check_choice("decay_type", a["decay_type"], _WSD_TYPES, owner=owner)
            if a["num_decay_steps"] is None:
                raise TypeError(f"{owner}: `num_decay_steps` is required")
            check_int("num_decay_steps", a["num_decay_steps"], low=0, owner=owner)
            if a["num_stable_steps"] is not None:
                check_int("num_stable_steps", a["num_stable_steps"], low=0, owner=owner)
            check_number("min_lr_ratio", a["min_lr_ratio"], low=0.0, high=1.0, owner=owner)
        if self.name == "cosine_with_min_lr":
            if (a["min_lr"] is None) == (a["min_lr_rate"] is None):
                raise ValueError(f"{owner}: set exactly one of `min_lr` (absolute) or `min_lr_rate` (a ratio)")
            if a["min_lr_rate"] is not None:
                rate = check_number("min_lr_rate", a["min_lr_rate"], low=0.0, owner=owner)
                if rate > 1.0:  # before, taken: the "decay" climbed from the peak to rate × the peak
                    raise ValueError(
                        f"{owner}: `min_lr_rate` is the floor as a fraction of the peak LR, at most 1, got {rate!r}, "
                        "which would make the cosine climb above the peak; for a floor of 10% of the peak write "
                        "min_lr_rate=0.1, or give the floor as an LR with min_lr"
                    )
            else:
                check_number("min_lr", a["min_lr"], low=0.0, owner=owner)
        if self.name == "polynomial":
            check_number("lr_end", a["lr_end"], low=0.0, owner=owner)
            check_number("power", a["power"], low=0.0, low_open=True, owner=owner)
        if "num_cycles" in a:
            check_number("num_cycles", a["num_cycles"], low=0.0, low_open=True, owner=owner)
        if self.name == "cosine_with_restarts":
            check_int("num_cycles", a["num_cycles"], low=1, owner=owner)
        if self.name == "inverse_sqrt" and a["timescale"] is not None:
            check_int("timescale", a["timescale"], low=1, owner=owner)

    @property
    def args(self) -> dict[str, Any]:
        """The scheduler-specific arguments with transformers' defaults filled in."""
        return {**TRANSFORMERS_ARGUMENTS[self.name], **dict(self.arguments)}

    def needs_reference_lr(self) -> bool:
        """Whether an absolute floor must be divided by ``optimizer.defaults["lr"]``."""
        return self.name == "polynomial" or (self.name == "cosine_with_min_lr" and self.args["min_lr"] is not None)

    def bound_to(self, reference_lr: float) -> TransformersSchedule:
        """This schedule with ``reference_lr`` as the LR its absolute floor is divided by, if it needs one and
        has none yet (transformers divides by the optimizer's ``defaults["lr"]``); else itself.

        The same object for the same LR: every group of an optimizer is bound, and the plan's summary shows one
        table per schedule object (before, each group of a ``polynomial`` had its own table, under the same name).

        >>> s = TransformersSchedule("polynomial", arguments=(("lr_end", 1e-3),))
        >>> s.bound_to(0.1) is s.bound_to(0.1), s.bound_to(0.1).reference_lr
        (True, 0.1)
        """
        if not self.needs_reference_lr() or self.reference_lr is not None:
            return self
        bound: dict[float, TransformersSchedule] = self.__dict__.setdefault("_bound", {})
        lr = float(reference_lr)
        if lr not in bound:
            bound[lr] = replace(self, reference_lr=lr)
        return bound[lr]

    def _ratio(self, absolute: float, name: str) -> float:
        if self.reference_lr is None:
            raise ValueError(
                f"from_transformers({self.name!r}): an absolute floor needs the optimizer's defaults['lr']: `{name}` "
                f"({absolute:g}) is an LR, which transformers divides by it. LRSchedule sets it at fit start; to "
                f"preview this schedule, give it: TransformersSchedule(..., reference_lr=<the optimizer's lr>) or "
                f".bound_to(<the optimizer's lr>)"
            )
        return absolute / self.reference_lr

    @cached_property
    def _body(self) -> Schedule:
        """The decay after the warmup (for WSD: the stable and decay phases too)."""
        a = self.args
        if self.name == "linear":
            return Linear(1.0, 0.0)
        if self.name == "cosine":
            return Cosine(1.0, 0.0, cycles=a["num_cycles"])
        if self.name == "cosine_with_restarts":
            return CosineRestarts(cycles=a["num_cycles"], end=0.0)
        if self.name == "polynomial":
            return Polynomial(1.0, self._ratio(a["lr_end"], "lr_end"), power=a["power"])
        if self.name in ("constant", "constant_with_warmup"):
            return Constant()
        if self.name == "inverse_sqrt":
            return InverseSqrt(Steps(a["timescale"] or self.num_warmup_steps or 10_000))
        if self.name == "cosine_with_min_lr":
            rate = a["min_lr_rate"] if a["min_lr_rate"] is not None else self._ratio(a["min_lr"], "min_lr")
            return Cosine(1.0, rate, cycles=a["num_cycles"])
        return self._wsd_body(a)

    def _wsd_body(self, a: dict[str, Any]) -> Schedule:
        m = float(a["min_lr_ratio"])
        decay = {
            "linear": Linear(1.0, m),
            "cosine": Cosine(1.0, m, cycles=a["num_cycles"]),
            "1-sqrt": OneMinusSqrt(1.0, m),
        }[a["decay_type"]]
        stable = Steps(a["num_stable_steps"]) if a["num_stable_steps"] is not None else None
        tail = [Phase(Constant(), stable), Phase(decay, Steps(a["num_decay_steps"]))]
        if stable is not None:
            tail.append(Phase(Constant(m), None))
        return Phases(tuple(tail))

    @cached_property
    def _warmup(self) -> Schedule:
        if self.name != "warmup_stable_decay":
            return Linear(0.0, 1.0)
        m = float(self.args["min_lr_ratio"])
        return {
            "linear": Linear(m, 1.0),
            "cosine": Cosine(m, 1.0),
            "1-sqrt": Reversed(OneMinusSqrt(1.0, m)),
        }[self.args["warmup_type"]]

    @cached_property
    def _schedule(self) -> Schedule:
        if self.num_warmup_steps == 0:  # always for "constant", which takes no warmup
            return self._body
        return Phases((Phase(self._warmup, Steps(self.num_warmup_steps)), Phase(self._body, None)))

    @property
    def phases_schedule(self) -> Schedule:
        """The same schedule written in our shapes (e.g. ``Phases`` of a warmup and a cosine)."""
        return self._schedule

    def needs_span(self) -> bool:
        return self._schedule.needs_span()

    def needs_total(self) -> bool:
        return self._schedule.needs_total()

    def durations(self) -> list[Duration]:
        a = self.args
        lengths = [self.num_warmup_steps, a.get("num_decay_steps"), a.get("num_stable_steps"), a.get("timescale")]
        return [Steps(n) for n in lengths if n is not None]  # all in steps: none needs the total or the epoch

    def check(self, span: float | None, run: Run) -> None:
        owner = f"from_transformers({self.name!r})"
        if span is not None and self.num_warmup_steps > span:
            raise ValueError(
                f"{owner}: num_warmup_steps={self.num_warmup_steps} is longer than the run's {span:g} optimizer "
                "steps, so the LR would never reach its peak (transformers runs it silently); lower "
                "num_warmup_steps or lengthen the run (Trainer(max_steps=...))"
            )
        if span is not None and self.name == "warmup_stable_decay":
            a = self.args
            stable = a["num_stable_steps"]
            planned = self.num_warmup_steps + a["num_decay_steps"] + (stable or 0)
            if planned > span:
                parts = "num_warmup_steps + num_decay_steps" + (" + num_stable_steps" if stable is not None else "")
                raise ValueError(
                    f"{owner}: {parts} = {planned} is more than the run's {span:g} optimizer steps, so the decay "
                    "would be cut short (transformers runs it silently); shorten the phases or lengthen the run"
                )
        self._schedule.check(span, run)

    def at(self, step: int, span: float | None, run: Run) -> float:
        return self._schedule.at(step, span, run)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments)
        extra = f", {args}" if args else ""
        return f"transformers {self.name!r}(num_warmup_steps={self.num_warmup_steps}{extra})"
