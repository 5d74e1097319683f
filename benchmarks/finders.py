"""The LR finders the quality benchmark compares, each run the way its documentation says, at its defaults.

Every finder sweeps a fresh model of the same seed, on the same seeded data order (:func:`train_loader`), and
returns a :class:`Suggestion`. What each one is:

- ``lr_callbacks`` (and ``lr_callbacks.<method>``): our :class:`~lr_callbacks.LRFinder`, through
  :func:`~lr_callbacks.find_lr` inside a real ``Trainer`` that carries the task's :class:`~lr_callbacks.LRSchedule`;
  the other methods re-analyse the same sweep with :func:`~lr_callbacks.suggest_lr`. ``lr_callbacks.confirm``
  is the finder's confirm mode at its defaults (trials of the real schedule at ×0.5 and ×1 the probe's answer).
- ``lightning``: Lightning's ``Tuner(trainer).lr_find(model)`` at its defaults (1e-8 to 1, 100 steps), then
  ``.suggestion()``.
- ``torch_lr_finder``: ``torch_lr_finder.LRFinder`` as its README's "fastai approach" says (optimizer LR 1e-7,
  ``range_test(end_lr=100, num_iter=100)``), suggestion from ``plot(suggest_lr=True)`` (steepest gradient).
- ``fastai_valley``: fastai's ``Learner.lr_find`` reimplemented from its source (fastai
  ``nbs/14_callback.schedule.ipynb``: ``LRFinder``, ``lr_find``, ``valley``; ``AvgSmoothLoss`` in
  ``fastai/learner.py``) because fastai is not installed: ``lr_i = 1e-7 · (10/1e-7)^(i/100)`` for i < 100, the
  loss smoothed by a debiased EMA (β = 0.98), stop when the smoothed loss exceeds 4× its best, trim
  ``[num_it//10 : -5]``, cut at the first NaN, then ``valley``: the longest strictly decreasing subsequence
  (an O(n²) DP) and the point ``start + int(L/3) + int(L/6)`` of it.

Ours and Lightning's run through a ``Trainer`` and a :class:`~benchmarks.models.TaskModule`, so they honour a
task's start state and gradient clipping (:mod:`benchmarks.finder_variants`); the other two sweep in their own
loop and refuse such a task.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks._common import no_stdout, quiet
from benchmarks.models import Task, TaskModule, make_optimizer, train_loader
from lr_callbacks.finder.analysis import valley_rule as valley

__all__ = [
    "FINDERS",
    "OUR_METHODS",
    "Suggestion",
    "fastai_sweep",
    "fastai_valley",
    "lightning_finder",
    "run_finder",
    "torch_lr_finder",
    "valley",
]

OUR_METHODS = ("default", "steepest", "min_div_10", "valley")
CONFIRM_LENGTH = None  # the finder's default (issue 12: the trials get what sweep and probe leave of 35% of the run)
FINDERS = ("lr_callbacks", "lightning", "torch_lr_finder", "fastai_valley")
_OWN_LOOPS = ("torch_lr_finder", "fastai_valley")  # they do not go through a Trainer and a TaskModule


@dataclass(frozen=True)
class Suggestion:
    """A finder's answer: the LR (``None`` when it gave none), the steps its sweep cost, and the curve it saw."""

    finder: str
    lr: float | None
    steps: int
    lrs: tuple[float, ...] = ()
    losses: tuple[float, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def trainer(root: str, max_steps: int, callbacks: Sequence[Any] = (), **kwargs: Any) -> Any:
    """A quiet CPU ``Trainer`` with no logger, checkpoints or validation unless asked."""
    import pytorch_lightning as pl

    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=root,
        callbacks=list(callbacks),
    )
    options.update(kwargs)
    return pl.Trainer(**options)


# --- fastai (reimplemented) -------------------------------------------------------------------------------


def fastai_sweep(
    task: Task, optimizer: str, seed: int, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100
) -> tuple[list[float], list[float]]:
    """fastai's ``LRFinder`` sweep on a fresh model: the LRs and the *smoothed* losses it records."""
    torch.manual_seed(seed)
    model = task.build()
    model.train()
    groups = task.groups(model)
    opt = make_optimizer(optimizer, [{k: v for k, v in g.items() if k != "lr"} for g in groups], start_lr)
    loader = train_loader(task, seed)
    lrs: list[float] = []
    losses: list[float] = []
    best, average, count, it = math.inf, 0.0, 0, 0
    beta = 0.98
    while it < num_it:
        for x, y in loader:
            lr = start_lr * (end_lr / start_lr) ** (it / num_it)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = task.loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            count += 1
            average = beta * average + (1 - beta) * float(loss.detach())  # torch.lerp(loss, val, beta)
            smooth = average / (1 - beta**count)
            lrs.append(lr)
            losses.append(smooth)
            best = min(best, smooth)
            if smooth > 4 * best or it >= num_it:  # NaN compares False, as in fastai
                return lrs, losses
    return lrs, losses


def fastai_valley(task: Task, optimizer: str, seed: int, num_it: int = 100) -> Suggestion:
    """fastai's ``lr_find()`` at its defaults, with its default ``valley`` suggestion."""
    lrs, losses = fastai_sweep(task, optimizer, seed, num_it=num_it)
    cut_lrs, cut_losses = lrs[num_it // 10 : -5], losses[num_it // 10 : -5]
    nan = [i for i, v in enumerate(cut_losses) if math.isnan(v)]
    if nan:
        cut_lrs, cut_losses = cut_lrs[: nan[0]], cut_losses[: nan[0]]
    if not cut_losses:
        return Suggestion("fastai_valley", None, len(lrs), tuple(lrs), tuple(losses), "too few points after trimming")
    return Suggestion("fastai_valley", valley(cut_lrs, cut_losses), len(lrs), tuple(lrs), tuple(losses))


# --- torch-lr-finder --------------------------------------------------------------------------------------


def torch_lr_finder(task: Task, optimizer: str, seed: int) -> Suggestion:
    """torch-lr-finder's README "fastai approach": start at 1e-7, ``range_test(end_lr=100, num_iter=100)``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from torch_lr_finder import LRFinder as TorchLRFinder

    torch.manual_seed(seed)
    model = task.build()
    groups = task.groups(model)
    opt = make_optimizer(optimizer, [{k: v for k, v in g.items() if k != "lr"} for g in groups], 1e-7)
    finder = TorchLRFinder(model, opt, task.loss, device="cpu")
    with no_stdout():
        finder.range_test(train_loader(task, seed), end_lr=100, num_iter=100)
    lrs, losses = list(finder.history["lr"]), list(finder.history["loss"])
    try:
        with no_stdout():
            _, lr = finder.plot(ax=Figure().add_subplot(1, 1, 1), suggest_lr=True)
        suggestion, note = float(lr), ""
    except (RuntimeError, ValueError) as error:
        suggestion, note = None, f"no suggestion: {error}"
    finder.reset()
    return Suggestion("torch_lr_finder", suggestion, len(lrs), tuple(lrs), tuple(losses), note)


# --- Lightning --------------------------------------------------------------------------------------------


def lightning_finder(task: Task, optimizer: str, seed: int, root: str) -> Suggestion:
    """Lightning's ``Tuner.lr_find`` at its defaults, suggestion from ``.suggestion()``."""
    from pytorch_lightning.tuner import Tuner

    module = TaskModule(task, optimizer, task.default_lr[optimizer], seed=seed, log_loss=False)
    with quiet():
        tr = trainer(root, task.steps, gradient_clip_val=task.gradient_clip_val)
        result = Tuner(tr).lr_find(module, train_dataloaders=train_loader(task, seed), update_attr=False)
    if result is None:
        return Suggestion("lightning", None, 0, note="lr_find returned None")
    lrs, losses = list(result.results["lr"]), list(result.results["loss"])
    with quiet():
        suggestion = result.suggestion()
    note = "" if suggestion is not None else "suggestion() returned None"
    return Suggestion("lightning", suggestion, len(lrs), tuple(lrs), tuple(losses), note)


# --- ours -------------------------------------------------------------------------------------------------


def ours(task: Task, optimizer: str, seed: int, root: str, confirm: bool = False) -> list[Suggestion]:
    """Our finder through ``find_lr`` in a Trainer carrying the task's schedule; one suggestion per method.

    With ``confirm=True`` the sweep and the probe are followed by the finder's confirm mode at its defaults
    (trials at ×0.5 and ×1 the probe's answer, compared on the validation loss, when the budget leaves room)
    and only its choice is returned; the probe's and the trials' steps count in the cost. Without it, the
    answer is the suggestion as the stability probe left it, and the probe's steps count in the cost.
    """
    from torch.utils.data import DataLoader

    from lr_callbacks import LRSchedule, find_lr, suggest_lr

    module = TaskModule(task, optimizer, task.default_lr[optimizer], seed=seed, log_loss=False)
    clip = {"gradient_clip_val": task.gradient_clip_val}
    with quiet():
        if confirm:
            tr = trainer(
                root,
                task.steps,
                callbacks=[LRSchedule(task.schedule, log_plan=False)],
                limit_val_batches=None,
                **clip,
            )
            result = find_lr(
                tr,
                module,
                train_dataloaders=train_loader(task, seed),
                val_dataloaders=DataLoader(task.val_set, batch_size=256),
                confirm=True,
                **({"confirm_length": CONFIRM_LENGTH} if CONFIRM_LENGTH is not None else {}),
            )
        else:
            tr = trainer(root, task.steps, callbacks=[LRSchedule(task.schedule, log_plan=False)], **clip)
            result = find_lr(tr, module, train_dataloaders=train_loader(task, seed))
    lrs, losses = tuple(float(v) for v in result.lrs), tuple(float(v) for v in result.losses)
    steps = _steps_spent(result)
    note = ",".join(result.flags)
    record = {"result": _record(result)}
    if confirm:
        return [Suggestion("lr_callbacks.confirm", _or_none(result.chosen_lr), steps, lrs, losses, note, record)]
    # the default applies the suggestion as the stability probe left it (halved when unstable when held)
    out = [Suggestion("lr_callbacks", _or_none(result.chosen_lr), steps, lrs, losses, note, record)]
    sweep = len(lrs)
    for method in OUR_METHODS[1:]:
        answer = suggest_lr(lrs, losses, method=method)
        out.append(
            Suggestion(f"lr_callbacks.{method}", _or_none(answer.lr), sweep, lrs, losses, ",".join(answer.flags))
        )
    return out


def _steps_spent(result: Any) -> int:
    """Every optimizer step the finder ran: the sweep's, and the probe's and the trials' when there are any."""
    steps = getattr(result, "steps_spent", None)
    if steps is not None:
        return int(steps)
    return len(result.lrs) + sum(len(t.losses) for t in result.trials)


def _record(result: Any) -> dict[str, Any]:
    """The finder's result without the sweep's curve (kept beside it): trials with every loss, flags, probe."""
    data = result.to_dict()
    return {k: v for k, v in data.items() if k not in ("lrs", "losses", "grad_norms", "smoothed")}


def _or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def run_finder(name: str, task: Task, optimizer: str, seed: int, root: str) -> list[Suggestion]:
    """Run one finder by name (see :data:`FINDERS`, plus ``"lr_callbacks.confirm"``); each answer records the
    finder's wall time in ``extra["seconds"]``."""
    started = time.perf_counter()
    answers = _run_finder(name, task, optimizer, seed, root)
    seconds = time.perf_counter() - started
    for answer in answers:
        answer.extra["seconds"] = seconds
    return answers


def _run_finder(name: str, task: Task, optimizer: str, seed: int, root: str) -> list[Suggestion]:
    os.makedirs(root, exist_ok=True)
    if name in _OWN_LOOPS and (task.start is not None or task.gradient_clip_val is not None):
        raise ValueError(
            f"finder {name!r} sweeps a fresh model in its own loop, without the task's start state or gradient "
            f"clipping; run a variant task with lr_callbacks, lr_callbacks.confirm or lightning"
        )
    if name == "lr_callbacks":
        return ours(task, optimizer, seed, root)
    if name == "lr_callbacks.confirm":
        return ours(task, optimizer, seed, root, confirm=True)
    if name == "lightning":
        return [lightning_finder(task, optimizer, seed, root)]
    if name == "torch_lr_finder":
        return [torch_lr_finder(task, optimizer, seed)]
    if name == "fastai_valley":
        return [fastai_valley(task, optimizer, seed)]
    raise ValueError(f"finder must be one of {', '.join((*FINDERS, 'lr_callbacks.confirm'))}; got {name!r}")
