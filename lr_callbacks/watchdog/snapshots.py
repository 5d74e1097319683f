"""The watchdog's snapshots and its clean reference batch: a ring of snapshots taken at clean steps, each kept
with the batch of its step, and the probe that tells damaged weights from bad data.

Where a snapshot lives (``snapshot=``): ``"host"``, a :class:`~lr_callbacks.core.snapshot.ModelSnapshot` in host
memory; ``"disk"``, a :class:`DiskSnapshot`, its tensors in a file until a rollback reads them back;
``"off"``, none (the reference batches are still kept: the watchdog still tells the cause, but never rolls
back); ``"auto"``, host memory when the rings of the ranks on the host fit in a quarter of its free memory, else disk
(:func:`choose_snapshot`).

Nothing here imports Lightning; the callback passes in the module, the optimizer and the trainer's strategy.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from lr_callbacks.core.sharded import is_dtensor, local, strategy_kind
from lr_callbacks.core.snapshot import (
    ModelSnapshot,
    UserStates,
    evaluation_kept,
    host_tree,
    stateful_owners,
    synchronize,
)
from lr_callbacks.watchdog.device import all_reduce_mean

__all__ = [
    "SNAPSHOT_MODES",
    "DiskSnapshot",
    "NormStatistics",
    "SnapshotRing",
    "choose_snapshot",
    "loads_safely",
    "nonfinite_buffers",
    "reference_loss",
    "rng_state",
    "state_bytes",
]

SNAPSHOT_MODES = ("host", "disk", "off", "auto")


class Snapshot(Protocol):
    """What the ring needs of a snapshot (host or disk)."""

    step: int | None

    def take(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None: ...

    def restore(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None: ...

    def restore_buffers(self, module: torch.nn.Module, names: set[str] | None = None) -> None: ...

    def substitute(self, checkpoint: dict[str, Any]) -> dict[str, Any] | None: ...

    def export(self) -> dict[str, Any]: ...

    def user_states(self) -> list[tuple[Any, Any]]: ...


class DiskSnapshot:
    """A :class:`~lr_callbacks.core.snapshot.ModelSnapshot` whose tensors wait in a file between its take and its
    use (a rollback, a buffers' restore, a checkpoint's substitute), loaded back for it and let go again.

    Replicated state (one process, DDP): rank 0 writes one file at the snapshot's step and every rank waits for it
    there (every rank takes a snapshot at the same step), so that reading it back needs no collective: a rank may
    restore its buffers alone (a NaN batch on one rank). Before, the wait was at the read, and a rank reading alone
    waited for the others for good. Sharded state (FSDP2): each rank writes its own shards to a file of its own
    (before, the strategy wrote a distributed checkpoint, a folder, which the read could not open).

    Args:
        directory: where the files go (``<default_root_dir>/watchdog-snapshots/<this fit's own>``).
        strategy: the trainer's strategy (its ranks, ``barrier``).
    """

    def __init__(self, directory: str, strategy: Any) -> None:
        self.directory = directory
        self.strategy = strategy
        self.step: int | None = None
        self.path: str | None = None
        world = int(getattr(strategy, "world_size", 1) or 1)
        self._rank = int(getattr(strategy, "global_rank", 0) or 0)
        self._shared = world > 1 and strategy_kind(strategy) == "replicated"  # one file, rank 0's
        self._own_files = world > 1 and not self._shared
        self._host = ModelSnapshot()
        self._owners: list[Any] = []  # the objects the module keeps that save their own state (an EMA), this rank's
        self._device = torch.device("cpu")  # this rank's module's, for the user states rank 0 wrote

    def take(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        self.remove()
        name = f"step-{step}-rank{self._rank}.pt" if self._own_files else f"step-{step}.pt"
        path = os.path.join(self.directory, name)
        self._owners = stateful_owners(module, model_only=True)
        self._device = next((p.device for p in module.parameters()), torch.device("cpu"))
        if not self._shared or self._rank == 0:
            os.makedirs(self.directory, exist_ok=True)
            live = module.state_dict()
            if self._own_files or any(is_dtensor(t) for t in live.values()):
                # shards: their local parts through a host snapshot, which keeps how to put them back (and has
                # copied the user states: an empty one, which it leaves out, loads as nothing, as here)
                self._host.take(module, optimizer, step)
                taken = {id(owner): state for owner, state in self._host.user.saved}
                user = [taken.get(id(owner), {}) for owner in self._owners]
                synchronize()  # the copies into pinned host memory are asynchronous: done before the file reads them
                torch.save({"model": self._host.model, "optimizer": self._host.optimizer.state, "user": user}, path)
                self._unload()
            else:  # whole tensors: written as they are (torch.save copies them off the device), no host copy first
                user = [host_tree(owner.state_dict()) for owner in self._owners]
                synchronize()  # the user states' copies
                torch.save({"model": live, "optimizer": optimizer.state_dict()["state"], "user": user}, path)
        if self._shared:
            self.strategy.barrier("watchdog-snapshot")  # rank 0 has written it
        self.path, self.step = path, step

    def _unload(self) -> None:
        """Let the host copies go (the file holds them); the next take allocates anew."""
        host = self._host
        host.model, host.optimizer.state, host.user = {}, {}, UserStates([])
        host._plan.forget()
        host.optimizer._plan.forget()

    def _load(self) -> ModelSnapshot:
        """The file read back into the host snapshot."""
        if self.path is None or self.step is None:
            raise ValueError("there is no snapshot to restore yet")
        saved = torch.load(self.path, map_location="cpu", weights_only=False)
        host = self._host
        host.model, host.optimizer.state, host.step = saved["model"], saved["optimizer"], self.step
        states = zip(self._owners, saved.get("user", []))
        host.user = UserStates([(owner, state) for owner, state in states if state], self._device_of)
        return host

    @contextlib.contextmanager
    def _loaded(self) -> Iterator[ModelSnapshot]:
        host = self._load()
        try:
            yield host
        finally:
            self._unload()

    def to_host(self) -> ModelSnapshot | None:
        """The snapshot read back into host memory to outlive its file (:meth:`SnapshotRing.release`); ``None`` on a
        rank that reads rank 0's file, which another rank may remove meanwhile (rank 0 alone writes a checkpoint)."""
        if self._shared and self._rank != 0:
            return None
        host, self._host = self._load(), ModelSnapshot()
        return host

    def _device_of(self, device: torch.device) -> torch.device:
        """Where a user state's tensor from ``device`` goes on this rank: rank 0 wrote the shared file, and its
        accelerator is this rank's own."""
        if self._shared and device.type == self._device.type and device.type != "cpu":
            return self._device
        return device

    def restore(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        with self._loaded() as host:
            host.restore(module, optimizer)

    def restore_buffers(self, module: torch.nn.Module, names: set[str] | None = None) -> None:
        with self._loaded() as host:
            host.restore_buffers(module, names)

    def substitute(self, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
        with self._loaded() as host:
            return host.substitute(checkpoint)

    def export(self) -> dict[str, Any]:
        with self._loaded() as host:
            return host.export()

    def user_states(self) -> list[tuple[Any, Any]]:
        with self._loaded() as host:
            return host.user_states()

    def remove(self) -> None:
        if self.path is not None and (not self._shared or self._rank == 0):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        self.path, self.step = None, None


def state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """The bytes one snapshot of this rank holds: the module's ``state_dict``, the optimizer's state and the objects
    the module keeps that save their own state (an EMA: a snapshot holds them too), of a sharded tensor this rank's
    shard; before the optimizer's first step (no state yet) its state is counted as two tensors per parameter
    (Adam's moments)."""
    model = sum(_bytes(t) for t in module.state_dict().values() if isinstance(t, torch.Tensor))
    model += sum(_tree_bytes(owner.state_dict()) for owner in stateful_owners(module, model_only=True))
    held = [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    if held:
        return model + sum(_bytes(t) for t in held)
    parameters = [p for g in optimizer.param_groups for p in g["params"]]
    return model + 2 * sum(_bytes(p) for p in parameters)


def _bytes(tensor: torch.Tensor) -> int:
    """The bytes of ``tensor`` on this rank (of a DTensor, its local shard: what a host snapshot copies)."""
    shard = local(tensor)
    return shard.numel() * shard.element_size()


def _tree_bytes(value: Any) -> int:
    """The bytes of the tensors in ``value`` (a state dict: dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return _bytes(value)
    if isinstance(value, dict):
        return sum(_tree_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tree_bytes(item) for item in value)
    return 0


def free_host_bytes() -> int | None:
    """The host's available memory in bytes (Linux ``sysconf``), or ``None`` where it cannot be read."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def choose_snapshot(ring_bytes: int, free: int | None, ranks: int = 1) -> tuple[str, str]:
    """``"host"`` when the rings of the ``ranks`` processes on this host (``ring_bytes`` each) fit in a quarter of its
    free memory (or the free memory is unknown), else ``"disk"``; with the sentence that says why.

    >>> choose_snapshot(10 * 2**20, 64 * 2**30)[0], choose_snapshot(40 * 2**30, 64 * 2**30)[0]
    ('host', 'disk')
    >>> choose_snapshot(3 * 2**30, 64 * 2**30)[0], choose_snapshot(3 * 2**30, 64 * 2**30, ranks=8)[0]
    ('host', 'disk')
    """
    if ranks > 1:
        ring_bytes *= ranks
        size = f"{ring_bytes / 2**20:.1f} MiB for the rings of the {ranks} ranks on this host"
    else:
        size = f"{ring_bytes / 2**20:.1f} MiB"
    if free is None:
        return "host", f"the ring needs {size}; the free host memory is unknown"
    verdict = "host" if ring_bytes <= free // 4 else "disk"
    relation = "fits in" if verdict == "host" else "exceeds"
    return verdict, f"the ring needs {size}, which {relation} a quarter of the {free / 2**30:.1f} GiB free"


_PLAIN = (int, float, bool, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_CONTAINERS = (dict, list, tuple, set, OrderedDict)


def loads_safely(value: Any) -> bool:
    """Whether ``value`` (a training batch) loads back with ``torch.load(weights_only=True)``, the default of
    ``trainer.fit(ckpt_path=...)`` and ``load_from_checkpoint``: tensors and plain values in plain dicts, lists
    and tuples. A ``BatchEncoding``, a named tuple or a NumPy array would make the whole checkpoint unloadable.

    >>> from collections import namedtuple
    >>> loads_safely({"x": torch.ones(2), "y": [1, (2.0, None)]}), loads_safely(namedtuple("B", "x")(torch.ones(2)))
    (True, False)
    """
    if isinstance(value, torch.Tensor):
        return type(value) in (torch.Tensor, torch.nn.Parameter)
    if type(value) in _PLAIN:
        return True
    if type(value) in _CONTAINERS:
        items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        return all(loads_safely(k) and loads_safely(v) for k, v in items)
    return False


class SnapshotRing:
    """Snapshots by step, the oldest given up (its buffers reused, its file removed) when the policy drops it.

    Each snapshot keeps the batches of its step, and the RNG state each one's forward pass started from: at its
    weights their loss was the step's own loss, so later evaluating the live weights on them, with the same random
    draws (dropout's masks), tells whether the weights moved for the worse.

    Args:
        mode: ``"host"``, ``"disk"`` or ``"off"`` (resolved: not ``"auto"``).
        directory, strategy: for ``"disk"``.
    """

    def __init__(self, mode: str = "host", directory: str = "", strategy: Any = None) -> None:
        self.mode = mode
        self.directory = directory
        self.strategy = strategy
        self.snapshots: dict[int, Snapshot] = {}
        self.batches: dict[int, list[Any]] = {}
        self.rngs: dict[int, list[dict[str, torch.Tensor]]] = {}
        self._spare: Snapshot | None = None
        self.seconds: list[float] = []  # the time each snapshot took

    def __len__(self) -> int:
        return len(self.snapshots)

    def _new(self) -> Snapshot:
        if self.mode == "disk":
            return DiskSnapshot(self.directory, self.strategy)
        return ModelSnapshot()

    def take(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        step: int,
        batches: list[Any],
        rngs: list[dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """Snapshot the state before ``step``'s update (none with ``"off"``), with the batches of that step and the
        RNG states their forward passes started from (``None``: not known, as after a resume)."""
        self.batches[step] = list(batches)
        self.rngs[step] = list(rngs or [])
        if self.mode == "off":
            return
        started = time.perf_counter()
        # a step taken again (a fresh run's start, at its first step with its batch) is copied into its own buffers:
        # before, it got new ones and the old were freed (MiniLM: 91 MB allocated and written anew at the first step)
        snapshot = self.snapshots.pop(step, None)
        if snapshot is None:
            snapshot = self._spare if self._spare is not None else self._new()
            self._spare = None
        snapshot.take(module, optimizer, step)
        self.snapshots[step] = snapshot
        self.seconds.append(time.perf_counter() - started)

    def drop(self, step: int) -> None:
        """Give up the snapshot of ``step`` (its buffers serve the next one; its file is removed)."""
        snapshot = self.snapshots.pop(step, None)
        self.batches.pop(step, None)
        self.rngs.pop(step, None)
        if isinstance(snapshot, DiskSnapshot):
            snapshot.remove()
        if snapshot is not None:
            self._spare = snapshot

    def keep_only(self, steps: list[int]) -> None:
        """Give up every snapshot whose step is not in ``steps``."""
        for step in [k for k in set(self.snapshots) | set(self.batches) if k not in steps]:
            self.drop(step)

    def clear(self) -> None:
        """Give up every snapshot (and remove the files of ``"disk"``)."""
        self.keep_only([])

    def release(self, step: int | None, keep_snapshot: bool) -> None:
        """After a fit: give up every snapshot and the spare buffers but the reference batch of ``step`` (a
        checkpoint written after the fit carries it), and ``step``'s snapshot too with ``keep_snapshot`` (the fit
        ended in an open incident: such a checkpoint holds those weights, not the live ones). Every ``"disk"`` file
        is removed, with the directory (:meth:`close`): a kept snapshot is read back into host memory first.
        Before, the files went with the snapshot, and a checkpoint written after a fit that ended in an open
        incident held the live weights, as no checkpoint written during it does."""
        self.keep_only([step] if step is not None else [])
        snapshot = self.snapshots.pop(step, None) if step is not None else None
        kept: Snapshot | None
        if isinstance(snapshot, DiskSnapshot):
            kept = snapshot.to_host() if keep_snapshot else None
            snapshot.remove()
        else:
            kept = snapshot if keep_snapshot else None
        if kept is not None and step is not None:
            self.snapshots[step] = kept
        self._spare = None
        self._remove_directory()

    def close(self) -> None:
        """Give up every snapshot and the spare buffers, and remove the ``"disk"`` directory when that leaves it
        empty (it was made for them; a directory that holds anything else stays)."""
        self.clear()
        self._spare = None
        self._remove_directory()

    def _remove_directory(self) -> None:
        """Remove the ``"disk"`` directory when it is empty, then ``watchdog-snapshots`` when no other run's is left."""
        if self.mode == "disk":
            for directory in (self.directory, os.path.dirname(self.directory)):
                # another rank (or run) may remove it between any two of these calls: listdir fails then too
                with contextlib.suppress(OSError):
                    if not os.listdir(directory):
                        os.rmdir(directory)

    def newest(self) -> Snapshot | None:
        return self.snapshots[max(self.snapshots)] if self.snapshots else None

    def get(self, step: int | None) -> Snapshot | None:
        """The snapshot of ``step`` (``None``: the newest)."""
        return self.newest() if step is None else self.snapshots.get(step, self.newest())

    def restore_buffers(self, module: torch.nn.Module, names: set[str]) -> None:
        """Put the newest snapshot's buffers of these ``names`` back into ``module`` (nothing without a snapshot)."""
        snapshot = self.newest()
        if snapshot is not None:
            snapshot.restore_buffers(module, names)

    def reference_batches(self) -> list[Any]:
        """The batches kept with the newest snapshot (empty when it has none)."""
        return self.batches[max(self.batches)] if self.batches else []

    def reference_rngs(self) -> list[dict[str, torch.Tensor]]:
        """The RNG states of the newest snapshot's batches (empty when they are not known)."""
        return self.rngs.get(max(self.batches), []) if self.batches else []


class NormStatistics:
    """The running statistics of a module's normalization layers (BatchNorm's, and InstanceNorm's that track them)
    as they were at the start of a step, copied on their device: a skipped batch's forward pass moved them, and
    they go back to exactly these values. One foreach copy a step, none for a model without such layers.

    Before, a skip put every buffer back to the newest snapshot's, up to ``snapshot_every`` steps old: the
    statistics lost the clean steps since, and an EMA held in buffers lost its updates of those steps.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.layers = [
            (name, m)
            for name, m in module.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._NormBase) and any(True for _ in m.buffers(recurse=False))
        ]
        self.names = {
            f"{name}.{b}" if name else b for name, m in self.layers for b, _ in m.named_buffers(recurse=False)
        }
        self.saved: list[torch.Tensor] = []
        self._live: list[torch.Tensor] = []

    def capture(self) -> None:
        """Copy the statistics as they are now (at the step's start)."""
        if not self.layers:
            return
        first = next(self.layers[0][1].buffers(recurse=False), None)
        with torch.no_grad():
            if not self._live or self._live[0] is not first:  # the first capture, or the module was moved since
                self._live = [b for _, m in self.layers for b in m.buffers(recurse=False)]
                self.saved = [t.detach().clone() for t in self._live]
            else:
                torch._foreach_copy_(self.saved, self._live)

    def restore(self) -> None:
        """Put the statistics back as :meth:`capture` found them."""
        if self._live:
            with torch.no_grad():
                torch._foreach_copy_(self._live, self.saved)


def nonfinite_buffers(module: torch.nn.Module) -> set[str]:
    """The names of ``module``'s floating-point buffers that hold a NaN or an infinity (one host read)."""
    named = [(name, b) for name, b in module.named_buffers() if b.is_floating_point() and b.numel()]
    if not named:
        return set()
    bad = torch.stack([~torch.isfinite(b).all() for _, b in named]).tolist()
    return {name for (name, _), flag in zip(named, bad) if flag}


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG state a forward pass starts from now: the CPU's, and the device's on CUDA (host-side copies of the
    generators' states: no synchronisation)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _replay(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def _silenced(module: Any) -> Iterator[None]:
    """``self.log`` and ``self.log_dict`` do nothing inside (a reference evaluation must not be logged)."""
    saved = {name: module.__dict__.get(name) for name in ("log", "log_dict")}
    module.log = lambda *args, **kwargs: None
    module.log_dict = lambda *args, **kwargs: None
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = value


def reference_loss(
    module: Any, batches: list[Any], world_size: int, strategy: Any, rngs: list[dict[str, torch.Tensor]] | None = None
) -> float | None:
    """The live weights' loss on ``batches``: ``training_step`` without gradients, logging, a random draw, a moved
    buffer or a torchmetrics update left behind (the RNG is forked, the rest put back), averaged over the batches
    and over ranks (one all-reduce). ``None`` when there is nothing to evaluate or ``training_step`` returns no loss.

    ``rngs``: the state of torch's generators (CPU, and CUDA) when each batch's own step started, replayed so that
    its draws from them (dropout's masks, a ``torch.rand`` masking in ``training_step``) are the step's: the loss
    then differs from the step's only by the weights. It runs in the precision plugin's training context (the
    step's autocast under ``16-mixed``/``bf16-mixed``): before, a float32 reading was held to a level measured in
    half precision, and a model with half-only kernels failed. Draws from Python's ``random`` or NumPy are not replayed.
    Without them every evaluation draws afresh, and at a low loss dropout alone moved a fine-tuned MiniLM's loss on
    one batch of 8 from 0.0055 to 0.147 at the same weights, read as damaged weights."""
    if not batches:
        return None
    devices = [module.device] if module.device.type == "cuda" else []
    losses = []
    precision = getattr(strategy, "precision_plugin", None)
    autocast = precision.train_step_context() if precision is not None else contextlib.nullcontext()
    with torch.no_grad(), torch.random.fork_rng(devices=devices), _silenced(module), evaluation_kept(module), autocast:
        for index, batch in enumerate(batches):
            if rngs and index < len(rngs):
                _replay(rngs[index], module.device)
            out = module.training_step(batch, index)
            loss = out.get("loss") if isinstance(out, dict) else out
            if not isinstance(loss, torch.Tensor):
                return None
            losses.append(loss.detach().float().reshape(()))
    value = all_reduce_mean(torch.stack(losses).mean().reshape(1), world_size, strategy)
    return float(value[0])
