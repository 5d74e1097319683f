"""What :class:`~lr_callbacks.DivergenceWatchdog` does to tensors: read a step's signals, skip or clip its update,
and judge it on the device. Its snapshots are :class:`lr_callbacks.core.snapshot.ModelSnapshot`.

Nothing here imports Lightning; the callback passes in the module, the optimizer and the trainer's world size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from lr_callbacks.core.compat import flatten, set_found_inf
from lr_callbacks.core.grads import global_norm
from lr_callbacks.core.sharded import all_plain, is_dtensor, local, plain, shard_groups
from lr_callbacks.watchdog.config import Signal
from lr_callbacks.watchdog.samples import sample_statistics
from lr_callbacks.watchdog.stats import Gate, Samples, Verdict

__all__ = [
    "UPDATE_SAMPLE",
    "DeviceJudge",
    "Row",
    "StepSignals",
    "UpdateProbe",
    "all_reduce_mean",
    "all_reduce_signals",
    "clip_gradients",
    "drop_gradients",
    "row_from_state",
    "row_state",
    "sample_stride",
]


def _parameters(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for group in optimizer.param_groups:
        yield from group["params"]


def _gradients(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


class StepSignals:
    """One optimizer step's loss (its micro-batches combined) and its gradient norm before clipping, and the
    summary of its per-sample losses when the module reports them (:func:`~lr_callbacks.report_sample_losses`),
    counted against ``sample_limit``, the per-sample limit the host set at its last read.

    Everything stays on the device: nothing here reads a value back to the host. Under a sharded strategy the
    norm is the whole gradient's (:func:`~lr_callbacks.core.grads.global_norm`); ``shard_group`` is FSDP1's.
    """

    def __init__(self) -> None:
        self.shard_group: Any = None
        self.sample_limit = math.inf
        self.gradients = 0  # how many tensors the last collected step's gradient norm covered
        self.reset()

    def reset(self) -> None:
        self._loss: torch.Tensor | None = None
        self._micro_batches = 0
        self._samples: list[torch.Tensor] = []

    @property
    def micro_batches(self) -> int:
        """Micro-batches seen in the current step so far."""
        return self._micro_batches

    def add_loss(self, loss: torch.Tensor) -> None:
        """Add a micro-batch's loss, as Lightning passes it to ``on_before_backward`` (divided by the
        accumulation factor)."""
        value = plain(loss.detach())
        if value.dtype != torch.float32:
            value = value.float()
        self._loss = value if self._loss is None else self._loss + value
        self._micro_batches += 1

    def add_samples(self, losses: torch.Tensor) -> None:
        """Add a micro-batch's per-sample losses."""
        self._samples.append(losses)

    def collect(self, optimizer: torch.optim.Optimizer, accumulate: int, world_size: int = 1) -> torch.Tensor | None:
        """``[loss, grad_norm]`` of the step as a float32 tensor on the loss's device, followed by
        ``[largest, outliers, samples]`` of its per-sample losses if any were reported
        (:func:`~lr_callbacks.watchdog.samples.sample_statistics`); ``None`` without a loss.

        The loss is the mean over the step's micro-batches: Lightning divides each by ``accumulate``, so the
        sum is rescaled by ``accumulate / micro_batches`` for a shorter last group of an epoch.

        With more than one rank (``world_size``), always 6 values: the per-sample part and ``reported`` (1 with
        per-sample losses; all four 0 without), for :func:`all_reduce_signals`. Every rank must send a tensor of
        one size: before, a rank whose module reported per-sample losses at a step where another's did not sent
        5 values against 2, and the all-reduce aborted the job under gloo (``Received data size doesn't match
        expected size``) or hung.
        """
        if self._loss is None:
            return None
        loss = self._loss.reshape(())
        if accumulate != self._micro_batches:
            loss = loss * (accumulate / self._micro_batches)
        gradients = _gradients(optimizer)
        self.gradients = len(gradients)
        values = torch.stack([loss, global_norm(gradients, loss.device, self.shard_group)])
        if self._samples:
            summary = sample_statistics(self._samples, self.sample_limit).to(values.device)
            if world_size > 1:
                summary = torch.cat([summary, torch.ones(1, device=values.device)])
        elif world_size > 1:
            summary = torch.zeros(4, device=values.device)
        else:
            return values
        return torch.cat([values, summary])


def all_reduce_signals(values: torch.Tensor, world_size: int, strategy: Any) -> torch.Tensor:
    """A step's :meth:`StepSignals.collect` values combined over the ranks: ``[loss, grad_norm]`` and, with more
    than one rank, ``[largest, outliers, samples]``, each the mean over all ranks (:func:`all_reduce_mean`; the
    caller turns the two counts into totals) except ``largest``, the mean over the ranks that reported per-sample
    losses (``samples`` 0 when none did). One ``all_reduce`` of 6 values, and no barrier.

    ``largest`` is ``Σ largest / k`` for the ``k`` ranks that reported: the mean of all ranks, the same to the bit,
    when every rank did; before, only a step where every rank reported could be combined at all.
    """
    if world_size <= 1:
        return values
    reduced = all_reduce_mean(values, world_size, strategy)
    largest, reported = reduced[2], reduced[5]
    largest = torch.where(reported > 0, largest / reported, torch.zeros_like(largest))
    return torch.cat([reduced[:2], largest.reshape(1), reduced[3:5]])


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

    Each row holds ``[loss, grad_norm, loss_outlier, grad_outlier, skip, clip_factor, forced_skip]`` and, for
    the per-sample signal, ``[sample_outlier, largest, outliers, samples]`` (zeros without per-sample losses).
    """

    COLUMNS = 11
    _SAMPLES = 8  # where the per-sample summary starts

    def __init__(self, device: torch.device, rows: int, clip: bool, world_size: int = 1) -> None:
        self.clip = clip
        self.world_size = world_size  # the per-sample count arrives averaged over the ranks; its limit is a total
        self.gate = torch.full((4,), math.inf, device=device)
        self.rows = torch.zeros((rows, self.COLUMNS), device=device)
        self.steps: list[int] = []
        self._forced = 0

    def set_gate(self, gate: Gate) -> None:
        """Hand the host's current limits to the device (a 4-float copy, at host steps only)."""
        self.gate.copy_(torch.tensor([gate.loss_limit, gate.grad_limit, float(gate.clip), gate.sample_count]))

    def judge(self, optimizer: torch.optim.Optimizer, values: torch.Tensor, step: int, exact_skip: bool) -> None:
        """Judge the step of ``values`` (``[loss, grad_norm]``, then the per-sample summary if there is one),
        apply the verdict, and store its row."""
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
        zero = torch.zeros((), device=loss.device)
        samples = values[2:5] if values.numel() >= 5 else torch.zeros(3, device=loss.device)
        sample_out = (samples[1] * self.world_size > self.gate[3]) & (samples[2] > 0) & ~non_finite
        skip = non_finite | (outlier & ~clip) | sample_out
        clip_factor = torch.where(outlier & clip & ~non_finite & ~sample_out, factor, one)
        if exact_skip:
            set_found_inf(optimizer, skip.float())
        else:
            for gradient in _gradients(optimizer):
                gradient.masked_fill_(skip, 0.0)
        if self.clip:  # in "skip" mode the factor is always 1: spare the pass over the gradients
            clip_gradients(optimizer, clip_factor)
        row = [loss, norm, loss_out.float(), grad_out.float(), skip.float(), clip_factor, zero, sample_out.float()]
        self._store(torch.cat([torch.stack(row), samples]), step)

    def forced(self, values: torch.Tensor, step: int) -> None:
        """Store the row of a step the host skipped itself (after a rollback)."""
        zero = torch.zeros((), device=values.device)
        one = torch.ones((), device=values.device)
        samples = values[2:5] if values.numel() >= 5 else torch.zeros(3, device=values.device)
        self._store(torch.cat([torch.stack([values[0], values[1], zero, zero, one, one, one, zero]), samples]), step)
        self._forced += 1

    @property
    def full(self) -> bool:
        """Whether every row holds a step the host has not read: the next step must be read on the host (a
        step without a loss, such as a ``training_step`` that returned ``None``, skips the read it was due)."""
        return len(self.steps) >= self.rows.shape[0]

    def _store(self, row: torch.Tensor, step: int) -> None:
        self.rows[len(self.steps)].copy_(row)
        self.steps.append(step)

    @property
    def forced_pending(self) -> int:
        """Stored rows of host-forced skips that the host has not read yet."""
        return self._forced

    def read(self, current: torch.Tensor | None) -> tuple[list[Row], list[float]]:
        """Read every stored row and ``current`` (this step's values) with one host transfer.

        Returns the stored steps with their verdicts, values and per-sample summaries (``None`` without one;
        their ``limit`` is left to the caller, who knows it), oldest first, and the current values (empty
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
            largest, count, n = row[self._SAMPLES :]
            samples = Samples(largest, count, n) if n > 0 else None
            rows.append((step, _verdict(*row[: self._SAMPLES]), row[0], row[1], samples))
        self.steps, self._forced = [], 0
        return rows, flat[used * self.COLUMNS :]


Row = tuple[int, Verdict, float, float, Samples | None]
"""A judged step: its step, verdict, loss, gradient norm and per-sample summary (``None`` without one)."""


def row_state(step: int, verdict: Verdict, loss: float, norm: float, samples: Samples | None = None) -> dict[str, Any]:
    """A judged step as plain data, for a checkpoint."""
    state = {"step": step, "verdict": verdict.state(), "loss": loss, "grad_norm": norm}
    return state if samples is None else {**state, "samples": samples.state()}


def row_from_state(row: dict[str, Any]) -> Row:
    """The inverse of :func:`row_state` (a row of an older checkpoint has no per-sample summary)."""
    samples = Samples(*map(float, row["samples"])) if row.get("samples") is not None else None
    return int(row["step"]), Verdict.from_state(row["verdict"]), float(row["loss"]), float(row["grad_norm"]), samples


def _verdict(
    loss: float,
    norm: float,
    loss_out: float,
    grad_out: float,
    skip: float,
    factor: float,
    forced: float,
    sample_out: float = 0.0,
) -> Verdict:
    if forced:
        return Verdict(skip=True, forced=True)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        return Verdict(skip=True, signals=(Signal.NON_FINITE,))
    if sample_out:
        return Verdict(skip=True, signals=(Signal.SAMPLE_OUTLIERS,))
    signals = tuple(name for name, flag in ((Signal.LOSS, loss_out), (Signal.GRAD_NORM, grad_out)) if flag)
    return Verdict(skip=bool(skip), clip_factor=factor, signals=signals)


def _step_size(group: Mapping[str, Any], planned: float | None = None) -> float | torch.Tensor:
    """The LR as a steady update scales with it: under SGD's (or RMSprop's) momentum ``μ`` an update is
    ``lr · (1 − dampening) / (1 − μ)`` times the gradient, so a momentum that moves is no alarm (``one_cycle``
    co-schedules it, 0.95 → 0.85 → 0.95: updates 3× larger at the end for the same LR); Adam's ``β1`` leaves
    the size alone.

    A tensor LR (a fused or capturable optimizer's, on the device) stays a tensor, copied: read as a number only
    at the next host read (:meth:`UpdateProbe.take`), not here between reads, where it would sync the device.
    ``planned``: the LR the schedule planned for the group, in place of the one it holds (:class:`UpdateProbe`).

    >>> _step_size({"lr": 0.1, "momentum": 0.9}), _step_size({"lr": 0.1, "betas": (0.9, 0.999)})
    (1.0000000000000002, 0.1)
    """
    lr = group["lr"] if planned is None else planned
    lr = lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr)
    momentum = group.get("momentum")
    if isinstance(momentum, (int, float)) and 0.0 < momentum < 1.0:
        return lr * (1.0 - float(group.get("dampening", 0.0))) / (1.0 - float(momentum))
    return lr


class UpdateProbe:
    """The update's size relative to the weights, per parameter group: ``‖θ_after − θ_before‖ / ‖θ_after‖``.

    :meth:`arm` (before an update) copies the weights; :meth:`measure` (after it) leaves the ratios on the
    device, one per group, until :meth:`take` hands them to the next host read. Nothing is read back here.

    A group of plain tensors of one dtype on one device is copied as one flat tensor (:func:`_weights`): on the
    CPU a foreach op dispatches once per tensor, so one flat copy and whole-vector norms cost a fraction of the
    per-tensor copy, difference and norms (a quarter for the 30 tensors of a small GPT). The ratios are the same
    up to float rounding. A group of more than :data:`UPDATE_SAMPLE` elements is read on a fixed sample of them
    (every ``k``-th element of every tensor, ``k`` the same for all: :func:`sample_stride`), so the probe costs
    a small copy and no second copy of the model's weights, whatever the model's size.
    """

    def __init__(self) -> None:
        self._before: list[list[torch.Tensor]] | None = None
        self._lrs: list[float | torch.Tensor] = []
        self.pending: torch.Tensor | None = None
        self.pending_lrs: list[float | torch.Tensor] = []
        self.pending_step: int | None = None
        self._step: int | None = None
        self._grad_norm: float | torch.Tensor = math.nan

    @property
    def armed(self) -> bool:
        """Whether a measurement is under way or waits to be read (one at a time)."""
        return self._before is not None or self.pending is not None

    def arm(
        self,
        optimizer: torch.optim.Optimizer,
        step: int,
        grad_norm: float | torch.Tensor = math.nan,
        planned: list[float] | None = None,
    ) -> None:
        """Copy the weights the coming update starts from, and each group's LR: the one ``LRSchedule`` planned
        (``planned``, one per group), else the one the hooks left in the group.

        Judged against the planned LR, an LR that something else wrote over the plan for this step (a callback
        after LRSchedule's, the module's own hook; README: "judged against the LR the schedule planned") shows in
        the ratio. Before, the group's LR was read: such an LR ×30 made an update 18× its usual size that read as
        planned, and the damage was seen 14 steps later, by the loss.

        ``grad_norm``: the step's gradient norm, read by the host or still on the device (a step judged there);
        it travels with the ratios, as their last value."""
        self._grad_norm = grad_norm
        with torch.no_grad():
            self._before = [_weights(g["params"], copy=True)[0] for g in optimizer.param_groups]
        groups = optimizer.param_groups
        plan: list[float | None] = list(planned) if planned is not None else [None] * len(groups)
        self._lrs = [_step_size(g, lr) for g, lr in zip(groups, plan)]
        self._step = step

    def measure(
        self, optimizer: torch.optim.Optimizer, shard_group: Any = None, device: torch.device | None = None
    ) -> None:
        """After the update: the ratio per group, kept on the device.

        The norms are :func:`~lr_callbacks.core.grads.global_norm`'s: of the whole weights when they are sharded
        (FSDP2 ``DTensor``s, or FSDP1's plain shards over ``shard_group``), the same on every rank; a sampled
        group of ``DTensor``s is summed over the process groups that shard it. ``device``: where the norms are
        reduced (the strategy's root device; by default the weights'). Under FSDP2 with ``CPUOffloadPolicy`` the
        shards live on the host while the process group is NCCL's, which reduces only GPU tensors: before, the
        norms were reduced on the weights' device there, a host tensor NCCL refuses.
        """
        before, self._before = self._before, None
        if before is None:
            return
        ratios = []
        first = next((p for g in optimizer.param_groups for p in g["params"]), None)
        home = local(first).device if first is not None else torch.device("cpu")  # where the ratios are stacked
        with torch.no_grad():
            for group, old in zip(optimizer.param_groups, before):
                new, over = _weights(group["params"], copy=False)
                if not new:
                    ratios.append(torch.zeros((), device=home))  # an empty group: nothing moved
                    continue
                where = device if device is not None else local(new[0]).device
                torch._foreach_sub_(old, new)  # the copy becomes θ_before − θ_after: no third copy of the weights
                groups = shard_group if over is None else over
                step_norm = global_norm(old, where, groups)
                weight_norm = global_norm(new, where, groups)
                ratios.append((step_norm / weight_norm).float().to(home))
        norm = self._grad_norm
        if isinstance(norm, torch.Tensor):
            carried = norm.detach().reshape(1).float().to(home)
        else:
            carried = torch.full((1,), norm, device=home)  # a fill on the device, no copy from the host
        self.pending = torch.cat([torch.stack(ratios), carried])
        self.pending_lrs, self.pending_step = self._lrs, self._step

    def take(self) -> tuple[torch.Tensor | None, list[float], int | None]:
        """The ratios not read yet followed by the step's gradient norm (``None`` when there are none), their
        groups' LRs and their step."""
        pending, lrs, step = self.pending, self.pending_lr_values, self.pending_step
        self.pending, self.pending_lrs, self.pending_step = None, [], None
        return pending, lrs, step

    @property
    def pending_lr_values(self) -> list[float]:
        """The LRs of the measurement not read yet, as numbers (a tensor LR is read here, at a host read)."""
        return [float(lr) for lr in self.pending_lrs]

    def reset(self) -> None:
        self._before, self.pending, self.pending_step = None, None, None

    def state_dict(self) -> dict[str, Any] | None:
        """The measurement not read yet, as plain numbers (read back now: a checkpoint written after a sampled
        step must carry it, or the resumed run would never record that update); ``None`` when there is none."""
        if self.pending is None or self.pending_step is None:
            return None
        *ratios, norm = (float(v) for v in self.pending.tolist())
        return {"step": self.pending_step, "ratios": ratios, "lrs": self.pending_lr_values, "grad_norm": norm}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore a measurement :meth:`state_dict` saved (on the CPU: the next read moves it to the signals)."""
        self.reset()
        if state is not None:
            values = [*map(float, state["ratios"]), float(state["grad_norm"])]
            self.pending = torch.tensor(values, dtype=torch.float32)
            self.pending_lrs, self.pending_step = list(state["lrs"]), int(state["step"])


UPDATE_SAMPLE = 2**18
"""The most elements of a parameter group the update ratio reads (a megabyte in float32). A larger group is
read on a fixed strided sample: both norms are then estimated on the same ``UPDATE_SAMPLE`` or so elements,
spread over every tensor in proportion to its size, and their ratio is ``‖Δθ‖/‖θ‖`` to well under 1% (the
standard error of a norm estimated on n elements is about 1/√(2n) of it). Before, every fifth step copied the
whole model twice: 16 ms a step on a 22.7M-parameter MiniLM on the CPU (8% of its step), and twice the
model's size in memory at once, which a large model on a GPU may not have to spare."""


def sample_stride(elements: int) -> int:
    """The stride of the update ratio's sample of a group of ``elements``: 1 (every element) up to
    :data:`UPDATE_SAMPLE`, else the smallest prime at or above ``elements / UPDATE_SAMPLE`` (a prime does not fall
    in step with a tensor's row length, so a matrix is sampled across its columns, not down a few of them).

    >>> sample_stride(1000), sample_stride(2**18), sample_stride(22_700_000)
    (1, 1, 89)
    """
    stride = math.ceil(elements / UPDATE_SAMPLE)
    if stride <= 1:
        return 1
    while any(stride % d == 0 for d in range(2, math.isqrt(stride) + 1)):
        stride += 1
    return stride


def _weights(parameters: list[torch.Tensor], copy: bool) -> tuple[list[torch.Tensor], Any]:
    """A group's weights for the update ratio, and the process groups to sum their norms over (``None``: what
    :func:`~lr_callbacks.core.grads.global_norm` finds in the tensors themselves).

    Plain tensors of one dtype on one device: one flat tensor (a copy), of every :func:`sample_stride`-th element
    of each tensor when the group is large. ``DTensor``s sharded alike (FSDP2): a large group is sampled the same
    way on each rank's shards, a stride set by the whole group's size, and the norms are summed over the groups
    that shard them (a plain tensor, so ``over`` names them). Else the tensors themselves, or with ``copy`` a copy
    of each (a DTensor's laid out as it is).
    """
    if not parameters:  # an empty group (e.g. one kept for parameters added later)
        return [], None
    stride = sample_stride(sum(p.numel() for p in parameters))  # a DTensor's numel is the whole tensor's
    if all_plain(parameters) and len({(p.dtype, p.device) for p in parameters}) == 1:
        with torch.no_grad():
            if stride == 1:
                return [flatten(parameters)], None
            return [torch.cat([p.detach().reshape(-1)[::stride] for p in parameters])], None
    over = _common_shard_groups(parameters)
    if over and stride > 1 and len({(p.dtype, local(p).device) for p in parameters}) == 1:
        with torch.no_grad():
            return [torch.cat([local(p.detach()).reshape(-1)[::stride] for p in parameters])], over
    tensors = [p.detach() for p in parameters]
    return (list(torch._foreach_mul(tensors, 1.0)) if copy else tensors), None


def _common_shard_groups(parameters: list[torch.Tensor]) -> tuple[Any, ...] | None:
    """The process groups that shard every one of ``parameters``, when all are DTensors sharded over the same
    ones (FSDP2's ``fully_shard`` on one mesh); ``None`` otherwise."""
    if not all(is_dtensor(p) for p in parameters):
        return None
    groups = {shard_groups(p) for p in parameters}
    if len(groups) != 1:
        return None
    (over,) = groups
    return over or None
