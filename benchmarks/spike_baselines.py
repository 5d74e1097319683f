"""A Lightning port of LLM Foundry's ``KillLossSpike`` (``llmfoundry/callbacks/kill_loss_spike_callback.py``).

Ported rule for rule from the source (see ``research/spike_anchors.md`` §2.1), with Composer's events mapped to
Lightning's: ``batch_end`` → ``on_train_batch_end``, ``state.loss`` → the step's loss, and
``state.timestamp.batch`` (Composer advances it *before* ``BATCH_END``) → ``trainer.global_step`` there.

- The loss of every batch enters a window (outliers too). Detection starts once the window holds
  ``window_size`` (100) losses; the first time, the window grows to ``max(100, round(0.05 × total steps))``
  and fills again if it grew.
- Spike: ``loss ≥ outlier_multiplier × mean(window)`` (2×) for more than ``patience`` (4) consecutive steps,
  i.e. 5 in a row; a non-outlier resets the count.
- High loss: after ``2 × window_size`` steps, at least half the window above ``loss_cap``. The cap is meant to
  become the first window's maximum (at most 10) when ``current_step == window_size``; as in the original,
  that check first runs one step after the window fills, so with the defaults the cap stays at 10.
- A ``window_size`` the user sets (not the default 100) never gets a ``maxlen``, as in the original, so
  the window keeps growing and the rules run only at the one step when it holds exactly ``window_size``
  losses. The benchmark uses the default.
- With ``log_only=False`` (the setting benchmarked: the default only logs), it raises
  :class:`LossSpikeError` / :class:`HighLossError`, which ends the run. A NaN loss compares false, as in the
  original, so it is neither an outlier nor a high loss.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from lr_callbacks.core.compat import Callback

__all__ = ["HighLossError", "KillLossSpike", "LossSpikeError"]

_MIN_WINDOW_SIZE = 100
_MAX_LOSS_CAP = 10.0
_WINDOW_FRACTION = 0.05


class LossSpikeError(RuntimeError):
    """Raised by :class:`KillLossSpike` on a persistent loss spike."""


class HighLossError(RuntimeError):
    """Raised by :class:`KillLossSpike` when half the window is above the loss cap."""


class KillLossSpike(Callback):
    """LLM Foundry's loss-spike killer, as a Lightning callback (defaults as in the original, ``log_only`` aside).

    >>> rule = KillLossSpike(log_only=True)
    >>> rule.observe(1.0, current_step=1, total_steps=1000)
    False
    """

    def __init__(
        self,
        log_only: bool = False,
        patience: int = 4,
        outlier_multiplier: float = 2.0,
        window_size: int = _MIN_WINDOW_SIZE,
        loss_cap: float = _MAX_LOSS_CAP,
    ) -> None:
        self.log_only = log_only
        self.patience = patience
        self.outlier_multiplier = outlier_multiplier
        self.outlier_counter = 0
        self.window_size = window_size
        self.loss_window: deque[float] = deque()
        self.loss_cap = loss_cap
        self.window_size_set = window_size != _MIN_WINDOW_SIZE
        self.loss_cap_set = loss_cap != _MAX_LOSS_CAP
        self.fired: str | None = None

    def _detect_loss_spike(self, train_loss: float, running_loss_avg: float) -> bool:
        if train_loss >= running_loss_avg * self.outlier_multiplier:
            self.outlier_counter += 1
            if self.outlier_counter > self.patience:
                return True
        elif self.outlier_counter > 0:
            self.outlier_counter = 0
        return False

    def _detect_high_losses(self, current_step: int) -> bool:
        if current_step < self.window_size * 2:
            return False
        high_loss_count = sum(1 for loss in self.loss_window if loss > self.loss_cap)
        return high_loss_count >= self.window_size / 2

    def observe(self, train_loss: float, current_step: int, total_steps: int) -> bool:
        """Feed one batch's loss; return whether the rule fired (raise instead unless ``log_only``)."""
        if len(self.loss_window) == self.window_size:
            if not self.window_size_set:
                self.window_size = max(self.window_size, round(float(total_steps * _WINDOW_FRACTION)))
                self.loss_window = deque(self.loss_window, maxlen=self.window_size)
                self.window_size_set = True
                if self.window_size > _MIN_WINDOW_SIZE:
                    self.loss_window.append(train_loss)
                    return False
            if not self.loss_cap_set and current_step == self.window_size:
                self.loss_cap = min(max(self.loss_window), self.loss_cap)
                self.loss_cap_set = True
            running_loss_avg = sum(self.loss_window) / len(self.loss_window)
            if self._detect_loss_spike(train_loss, running_loss_avg):
                self.fired = "loss_spike"
                if not self.log_only:
                    raise LossSpikeError(
                        f"loss spike: {self.outlier_counter} consecutive losses ≥ {self.outlier_multiplier}× the "
                        f"running mean {running_loss_avg:.4g}"
                    )
                self.loss_window.append(train_loss)
                return True
            if self._detect_high_losses(current_step):
                self.fired = "high_loss"
                if not self.log_only:
                    raise HighLossError(f"high loss: half of the last {self.window_size} losses above {self.loss_cap}")
                self.loss_window.append(train_loss)
                return True
        self.loss_window.append(train_loss)
        return False

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.observe(float(loss.detach()), int(trainer.global_step), int(trainer.estimated_stepping_batches))


class ZClip(Callback):
    """ZClip (Kumar et al. 2025, ``bluorion-com/ZClip``), its default ``mode="zscore"`` with reciprocal clipping.

    As in the original (``zclip/zclip.py``): the first ``warmup_steps`` gradient norms fill a buffer (clipped at
    ``max_grad_norm`` alone; none with ``max_grad_norm=None``, the "pure ZClip" setting of
    ``research/spike_anchors.md`` §5, this port's default; the library's is 1.0), then the mean
    and variance start from it; a norm with ``z = (g − μ) / (σ + eps) > z_thresh`` is clipped to
    ``μ + z_thresh·σ / (z / z_thresh)``, and the EMAs (``alpha``) are updated with the clipped norm. A
    non-finite norm is passed through untouched, as in the original (``z`` is NaN there). With a
    ``max_grad_norm`` every step is clipped to the smaller of the adaptive value and it, as the original does.

    >>> clip = ZClip(warmup_steps=3)
    >>> [clip.target(g) for g in (1.0, 1.1, 0.9)], clip.target(1.0) is None
    ([None, None, None], True)
    """

    def __init__(
        self,
        alpha: float = 0.97,
        z_thresh: float = 2.5,
        warmup_steps: int = 25,
        eps: float = 1e-6,
        max_grad_norm: float | None = None,
    ) -> None:
        self.alpha, self.z_thresh, self.warmup_steps, self.eps = alpha, z_thresh, warmup_steps, eps
        self.max_grad_norm = max_grad_norm
        self.buffer: list[float] = []
        self.mean: float | None = None
        self.var = 0.0
        self.clipped = 0

    def target(self, norm: float) -> float | None:
        """Feed one gradient norm; return the norm to clip it to, or ``None`` to leave it."""
        cap = self.max_grad_norm
        if self.mean is None:
            self.buffer.append(norm)
            if len(self.buffer) == self.warmup_steps:
                self.mean = sum(self.buffer) / len(self.buffer)
                self.var = sum((b - self.mean) ** 2 for b in self.buffer) / len(self.buffer)
            return cap if cap is not None and norm > cap else None  # the warmup clips at the cap alone
        std = self.var**0.5
        z = (norm - self.mean) / (std + self.eps)
        clipped = norm
        if z > self.z_thresh:
            clipped = self.mean + (self.z_thresh * std) / (z / self.z_thresh)
        if norm == norm and abs(norm) != float("inf"):
            self.mean = self.alpha * self.mean + (1 - self.alpha) * clipped
            self.var = self.alpha * self.var + (1 - self.alpha) * (clipped - self.mean) ** 2
        if cap is not None:  # the EMAs follow the adaptive value; the clip takes the smaller of it and the cap
            clipped = min(clipped, cap)
        return clipped if clipped < norm else None

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        import torch

        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        clip_to = self.target(norm)
        if clip_to is not None:
            self.clipped += 1
            torch._foreach_mul_(grads, clip_to / (norm + 1e-6))
