"""The sample models (real data only, nothing downloaded): digits, charlm and minilm, and the held-out ones.

:func:`make_task` builds one by name: ``"digits-mlp"``, ``"digits-cnn"``, ``"charlm"`` or ``"minilm"`` (the
tuning tasks), or a held-out one (:data:`~benchmarks.models.heldout.HELD_OUT_TASKS`: ``"digits-vit"``,
``"digits-lstm"``, ``"tabular"``), which no constant of the finder was tuned on, and the second held-out set
(:data:`~benchmarks.models.heldout_second.HELD_OUT_SECOND_TASKS`, fixed at stop 24 when the first had been read),
the third (:data:`~benchmarks.models.heldout_third.HELD_OUT_THIRD_TASKS`, fixed at stop 31 when both had been), the
fourth (:data:`~benchmarks.models.heldout_fourth.HELD_OUT_FOURTH_TASKS`, fixed at stop 31 when the third had been
read, before any rule changed in response) and the fifth
(:data:`~benchmarks.models.heldout_fifth.HELD_OUT_FIFTH_TASKS`, fixed at stop 37 when all four had been read, before
any rule changed in response and before its first run).
"""

from __future__ import annotations

from benchmarks.models._task import (
    OPTIMIZERS,
    Start,
    Task,
    TaskModule,
    TrainResult,
    evaluate,
    make_optimizer,
    train,
    train_loader,
)

__all__ = [
    "HELD_OUT_FIFTH_TASKS",
    "HELD_OUT_FOURTH_TASKS",
    "HELD_OUT_SECOND_TASKS",
    "HELD_OUT_TASKS",
    "HELD_OUT_THIRD_TASKS",
    "OPTIMIZERS",
    "TASKS",
    "Start",
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
HELD_OUT_TASKS = ("digits-vit", "digits-lstm", "tabular")
HELD_OUT_SECOND_TASKS = ("cancer-transformer", "digits-mixer", "digits-gru")
HELD_OUT_THIRD_TASKS = ("digits-resnet", "docstrings-bag", "digits-autoencoder")
HELD_OUT_FOURTH_TASKS = ("cancer-logreg", "docstrings-cnn", "charlm-gru")
HELD_OUT_FIFTH_TASKS = ("docstrings-transformer", "digits-deepmlp", "charlm-conv")


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
    if name in HELD_OUT_TASKS:
        from benchmarks.models.heldout import heldout_task

        return heldout_task(name) if steps is None else heldout_task(name, steps=steps)
    if name in HELD_OUT_SECOND_TASKS:
        from benchmarks.models.heldout_second import second_task

        return second_task(name) if steps is None else second_task(name, steps=steps)
    if name in HELD_OUT_THIRD_TASKS:
        from benchmarks.models.heldout_third import third_task

        return third_task(name) if steps is None else third_task(name, steps=steps)
    if name in HELD_OUT_FOURTH_TASKS:
        from benchmarks.models.heldout_fourth import fourth_task

        return fourth_task(name) if steps is None else fourth_task(name, steps=steps)
    if name in HELD_OUT_FIFTH_TASKS:
        from benchmarks.models.heldout_fifth import fifth_task

        return fifth_task(name) if steps is None else fifth_task(name, steps=steps)
    names = (
        *TASKS,
        *HELD_OUT_TASKS,
        *HELD_OUT_SECOND_TASKS,
        *HELD_OUT_THIRD_TASKS,
        *HELD_OUT_FOURTH_TASKS,
        *HELD_OUT_FIFTH_TASKS,
    )
    raise ValueError(f"task must be one of {', '.join(names)}; got {name!r}")
