"""What :class:`~lr_callbacks.DivergenceWatchdog` does to tensors: read a step's signals, skip or clip its update,
judge it on the device, and snapshot or restore the model and the optimizer on the CPU.

Nothing here imports Lightning; the callback passes in the module, the optimizer and the trainer's world size.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch

from lr_callbacks._grads import global_norm
from lr_callbacks._watchdog_stats import Gate, Verdict

__all__ = [
    "DeviceJudge",
    "Snapshot",
    "StepSignals",
    "all_reduce_mean",
    "clip_gradients",
    "drop_gradients",
    "row_from_state",
    "row_state",
]


def _parameters(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for group in optimizer.param_groups:
        yield from group["params"]


def _gradients(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p.grad for p in _parameters(optimizer) if p.grad is not None]


class StepSignals:
    """One optimizer step's loss (its micro-batches combined) and its gradient norm before clipping.

    Everything stays on the device: nothing here reads a value back to the host.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._loss: torch.Tensor | None = None
        self._micro_batches = 0

    def add_loss(self, loss: torch.Tensor) -> None:
        """Add a micro-batch's loss, as Lightning passes it to ``on_before_backward`` (divided by the
        accumulation factor)."""
        value = loss.detach().float()
        self._loss = value if self._loss is None else self._loss + value
        self._micro_batches += 1

    def collect(self, optimizer: torch.optim.Optimizer, accumulate: int) -> torch.Tensor | None:
        """``[loss, grad_norm]`` of the step as a float32 tensor on the loss's device; ``None`` without a loss.

        The loss is the mean over the step's micro-batches: Lightning divides each by ``accumulate``, so the
        sum is rescaled by ``accumulate / micro_batches`` for a shorter last group of an epoch.
        """
        if self._loss is None:
            return None
        loss = self._loss.reshape(())
        if accumulate != self._micro_batches:
            loss = loss * (accumulate / self._micro_batches)
        return torch.stack([loss, global_norm(_gradients(optimizer), loss.device)])


def all_reduce_mean(tensor: torch.Tensor, world_size: int, strategy: Any) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks: one ``all_reduce``, and no barrier.

    Lightning's ``strategy.reduce`` puts a ``barrier()`` before every all-reduce
    (``lightning_fabric/utilities/distributed.py``, ``_sync_ddp``); a step needs only the collective itself,
    so this calls ``torch.distributed.all_reduce`` when a process group is up, and the strategy otherwise.
    A non-finite value on any rank makes the mean non-finite on every rank.
    """
    if world_size <= 1:
        return tensor
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor / world_size
    reduced: torch.Tensor = strategy.reduce(tensor, reduce_op="mean")
    return reduced


def drop_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Skip the coming update: torch optimizers leave a parameter without a gradient untouched.

    Weights, moments and Adam's step count do not move. Under a ``GradScaler`` this is safe too, because
    Lightning unscales (and the scaler records its inf checks) before ``on_before_optimizer_step``.
    """
    for parameter in _parameters(optimizer):
        parameter.grad = None


def clip_gradients(optimizer: torch.optim.Optimizer, factor: float | torch.Tensor) -> None:
    """Multiply every gradient by ``factor``: the step keeps its direction and shrinks to the threshold."""
    gradients = _gradients(optimizer)
    if gradients:
        torch._foreach_mul_(gradients, factor)


class DeviceJudge:
    """Judge steps on the device against a :class:`Gate`, and keep the rows until the host reads them.

    A step judged here is made harmless without the host knowing its verdict:

    - optimizers that accept a ``found_inf`` flag (torch's fused Adam, AdamW, SGD, Adagrad) skip it exactly, as
      for a ``GradScaler`` overflow: weights, moments and step count do not move;
    - any other optimizer gets zero gradients: no bad value reaches the weights, but momentum and Adam's
      moments decay by one step and weight decay applies. Only a host that knows the verdict before the
      update can make such a step a true no-op.

    Each row holds ``[loss, grad_norm, loss_outlier, grad_outlier, skip, clip_factor, forced_skip]``.
    """

    COLUMNS = 7

    def __init__(self, device: torch.device, rows: int, clip: bool) -> None:
        self.clip = clip
        self.gate = torch.full((3,), math.inf, device=device)
        self.rows = torch.zeros((rows, self.COLUMNS), device=device)
        self.steps: list[int] = []
        self._forced = 0

    def set_gate(self, gate: Gate) -> None:
        """Hand the host's current limits to the device (a 3-float copy, at host steps only)."""
        self.gate.copy_(torch.tensor([gate.loss_limit, gate.grad_limit, float(gate.clip)]))

    def judge(self, optimizer: torch.optim.Optimizer, values: torch.Tensor, step: int, exact_skip: bool) -> None:
        """Judge the step of ``values`` (``[loss, grad_norm]``), apply the verdict, and store its row."""
        loss, norm = values[0], values[1]
        non_finite = ~(torch.isfinite(loss) & torch.isfinite(norm))
        x, y = torch.log(loss), torch.log(norm)
        loss_out = (x > self.gate[0]) & ~non_finite
        grad_out = (y > self.gate[1]) & ~non_finite
        outlier = loss_out | grad_out
        clip = self.gate[2] > 0
        one = torch.ones((), device=loss.device)
        factor = torch.minimum(
            torch.where(loss_out, torch.exp(self.gate[0] - x), one),
            torch.where(grad_out, torch.exp(self.gate[1] - y), one),
        )
        skip = non_finite | (outlier & ~clip)
        clip_factor = torch.where(outlier & clip & ~non_finite, factor, one)
        if exact_skip:
            optimizer.found_inf = skip.float()  # type: ignore[attr-defined]
            optimizer.grad_scale = None  # type: ignore[attr-defined]
        else:
            for gradient in _gradients(optimizer):
                gradient.masked_fill_(skip, 0.0)
        if self.clip:  # in "skip" mode the factor is always 1: spare the pass over the gradients
            clip_gradients(optimizer, clip_factor)
        zero = torch.zeros((), device=loss.device)
        self._store(
            torch.stack([loss, norm, loss_out.float(), grad_out.float(), skip.float(), clip_factor, zero]), step
        )

    def forced(self, values: torch.Tensor, step: int) -> None:
        """Store the row of a step the host skipped itself (after a rollback)."""
        zero = torch.zeros((), device=values.device)
        one = torch.ones((), device=values.device)
        self._store(torch.stack([values[0], values[1], zero, zero, one, one, one]), step)
        self._forced += 1

    def _store(self, row: torch.Tensor, step: int) -> None:
        self.rows[len(self.steps)].copy_(row)
        self.steps.append(step)

    @property
    def forced_pending(self) -> int:
        """Stored rows of host-forced skips that the host has not read yet."""
        return self._forced

    def read(self, current: torch.Tensor | None) -> tuple[list[tuple[int, Verdict, float, float]], list[float]]:
        """Read every stored row and ``current`` (this step's ``[loss, grad_norm]``) with one host transfer.

        Returns the stored steps with their verdicts and values, oldest first, and the current values (empty
        without ``current``). The device rows are cleared.
        """
        used = len(self.steps)
        parts = [self.rows[:used].reshape(-1)]
        if current is not None:
            parts.append(current.reshape(-1).float())
        flat = torch.cat(parts).tolist()
        rows = []
        for index, step in enumerate(self.steps):
            row = flat[index * self.COLUMNS : (index + 1) * self.COLUMNS]
            rows.append((step, _verdict(*row), row[0], row[1]))
        self.steps, self._forced = [], 0
        return rows, flat[used * self.COLUMNS :]


def row_state(step: int, verdict: Verdict, loss: float, norm: float) -> dict[str, Any]:
    """A judged step as plain data, for a checkpoint."""
    return {"step": step, "verdict": asdict(verdict), "loss": loss, "grad_norm": norm}


def row_from_state(row: dict[str, Any]) -> tuple[int, Verdict, float, float]:
    """The inverse of :func:`row_state`."""
    verdict = Verdict(**{**row["verdict"], "signals": tuple(row["verdict"]["signals"])})
    return int(row["step"]), verdict, float(row["loss"]), float(row["grad_norm"])


def _verdict(
    loss: float, norm: float, loss_out: float, grad_out: float, skip: float, factor: float, forced: float
) -> Verdict:
    if forced:
        return Verdict(skip=True, signals=("after_rollback",))
    if not (math.isfinite(loss) and math.isfinite(norm)):
        return Verdict(skip=True, signals=("non_finite",))
    signals = tuple(name for name, flag in (("loss", loss_out), ("grad_norm", grad_out)) if flag)
    return Verdict(skip=bool(skip), clip_factor=factor, signals=signals)


class Snapshot:
    """The module's and the optimizer's state at a clean step, held on the CPU (pinned when it comes from a GPU).

    Buffers are allocated once and reused, so taking a snapshot every ``snapshot_every`` steps costs a copy,
    not an allocation. Restoring copies back *in place*: parameters, optimizer state tensors and param-group
    dicts keep their identity (fused and capturable optimizers, schedulers and hooks hold references to them),
    and the groups keep their current hyperparameters (the LR is the schedule's, not the snapshot's).
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self.model: dict[str, torch.Tensor] = {}
        self.optimizer: dict[int, dict[str, Any]] = {}
        self._devices: dict[tuple[int, str], torch.device] = {}
        self._from_accelerator = False

    def take(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Copy the module's ``state_dict`` and the optimizer's per-parameter state."""
        with torch.no_grad():
            self.model = {name: self._copy(self.model.get(name), t) for name, t in module.state_dict().items()}
            taken: dict[int, dict[str, Any]] = {}
            for index, parameter in enumerate(_parameters(optimizer)):
                old = self.optimizer.get(index, {})
                state = optimizer.state.get(parameter, {})
                for key, value in state.items():
                    if isinstance(value, torch.Tensor):
                        self._devices[index, key] = value.device
                taken[index] = {
                    key: self._copy(old.get(key), value) if isinstance(value, torch.Tensor) else copy.deepcopy(value)
                    for key, value in state.items()
                }
            self.optimizer = taken
        self.step = step

    def _copy(self, buffer: Any, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        on_accelerator = tensor.device.type != "cpu"
        self._from_accelerator = self._from_accelerator or on_accelerator
        if not (
            isinstance(buffer, torch.Tensor)
            and buffer.shape == tensor.shape
            and buffer.dtype == tensor.dtype
            and buffer.device.type == "cpu"
        ):
            buffer = torch.empty(
                tensor.shape, dtype=tensor.dtype, pin_memory=on_accelerator and torch.cuda.is_available()
            )
        buffer.copy_(tensor, non_blocking=on_accelerator)
        return buffer

    def _wait(self) -> None:
        if self._from_accelerator and torch.cuda.is_available():
            torch.cuda.synchronize()

    def restore(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Copy the snapshot back into ``module`` and ``optimizer``, in place."""
        if self.step is None:
            raise ValueError("DivergenceWatchdog: there is no snapshot to restore yet")
        self._wait()
        with torch.no_grad():
            module.load_state_dict(self.model)
            self.restore_optimizer_state(optimizer, self.optimizer, self._devices)

    @staticmethod
    def restore_optimizer_state(
        optimizer: torch.optim.Optimizer,
        saved: dict[int, dict[str, Any]],
        devices: dict[tuple[int, str], torch.device] | None = None,
    ) -> None:
        """Put ``saved`` (per-parameter state by position) into ``optimizer``, in place where shapes allow.

        A tensor the optimizer no longer holds is recreated on the device it came from (``devices``), or, for
        lack of it, on the parameter's device (Adam's ``step`` on the CPU, as torch keeps it unless fused).
        """
        with torch.no_grad():
            for index, parameter in enumerate(_parameters(optimizer)):
                state = saved.get(index, {})
                if not state:
                    optimizer.state.pop(parameter, None)
                    continue
                live = optimizer.state[parameter]
                for key in [k for k in live if k not in state]:
                    del live[key]
                for key, value in state.items():
                    current = live.get(key)
                    if isinstance(value, torch.Tensor):
                        if isinstance(current, torch.Tensor) and current.shape == value.shape:
                            current.copy_(value)
                        else:
                            default = torch.device("cpu") if key == "step" else parameter.device
                            device = (devices or {}).get((index, key), default)
                            live[key] = value.detach().clone().to(device)
                    else:
                        live[key] = copy.deepcopy(value)

    def substitute(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """Put the snapshot's module and optimizer state into ``checkpoint``; return the live ones it replaced.

        The optimizer keeps its current param groups (LR, momentum): only the per-parameter state is replaced.
        """
        optimizer_states = checkpoint.get("optimizer_states") or [{}]
        live = {"model": checkpoint["state_dict"], "optimizer": optimizer_states[0].get("state", {})}
        checkpoint["state_dict"] = self.model_state()
        if checkpoint.get("optimizer_states"):
            checkpoint["optimizer_states"][0] = {**checkpoint["optimizer_states"][0], "state": self.optimizer_state()}
        return live

    def model_state(self) -> dict[str, torch.Tensor]:
        """A copy of the module's state, for a checkpoint."""
        self._wait()
        return {name: tensor.clone() for name, tensor in self.model.items()}

    def optimizer_state(self) -> dict[int, dict[str, Any]]:
        """A copy of the optimizer's per-parameter state, in ``Optimizer.state_dict()["state"]`` form."""
        self._wait()
        return {
            index: {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in state.items()}
            for index, state in self.optimizer.items()
            if state
        }
