"""The three sample models (real data only, nothing downloaded): digits, charlm and minilm.

:func:`make_task` builds one by name: ``"digits-mlp"``, ``"digits-cnn"``, ``"charlm"`` or ``"minilm"``.
"""

from __future__ import annotations

from benchmarks.models._task import (
    OPTIMIZERS,
    Task,
    TaskModule,
    TrainResult,
    evaluate,
    make_optimizer,
    train,
    train_loader,
)

__all__ = [
    "OPTIMIZERS",
    "TASKS",
    "Task",
    "TaskModule",
    "TrainResult",
    "evaluate",
    "make_optimizer",
    "make_task",
    "train",
    "train_loader",
]

TASKS = ("digits-mlp", "digits-cnn", "charlm", "minilm")


def make_task(name: str, steps: int | None = None) -> Task:
    """The sample model ``name`` (see :data:`TASKS`), with its default budget or ``steps``."""
    if name in ("digits-mlp", "digits-cnn"):
        from benchmarks.models.digits import digits_task

        return digits_task(name.split("-")[1]) if steps is None else digits_task(name.split("-")[1], steps=steps)
    if name == "charlm":
        from benchmarks.models.charlm import charlm_task

        return charlm_task() if steps is None else charlm_task(steps=steps)
    if name == "minilm":
        from benchmarks.models.minilm import minilm_task

        return minilm_task() if steps is None else minilm_task(steps=steps)
    raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
