"""``LRFinder``: an LR range test inside the user's own trainer, restored exactly; and ``find_lr``.

The callback is a thin adapter: :mod:`lr_callbacks.finder.driver` drives the steps through the trainer's
strategy, :mod:`lr_callbacks.core.snapshot` snapshots and restores, :mod:`lr_callbacks.finder.analysis`
reads the curve, and the answer goes into the shared LR model (:func:`lr_callbacks.core.lr_model.set_peak_lr`):
``LRSchedule``'s peak when it is present, otherwise the optimizer's groups *and* the user's torch scheduler
(``base_lrs``, ``initial_lr``, ``max_lr``), so that the scheduler does not throw it away.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from lr_callbacks.core.checks import check_bool, check_choice, check_int, check_number, given_arguments
from lr_callbacks.core.compat import (
    Callback,
    accumulation,
    adafactor_steps,
    exit_fit,
    is_lightning,
    move_after_finetuning,
    run_step,
)
from lr_callbacks.core.durations import Duration, parse_duration
from lr_callbacks.core.logs import log_image, log_scalars, log_text, summary_writers
from lr_callbacks.core.lr_model import (
    as_float,
    find_lr_schedule,
    paused,
    reference_lr,
    require_lr_groups,
    schedule_callback,
    set_peak_lr,
)
from lr_callbacks.core.snapshot import (
    RngState,
    TrainingSnapshot,
    attribute_generators,
    loader_generators,
    require_materialized,
)
from lr_callbacks.finder.analysis import BROAD_BOTTOM, DEFAULT_WINDOW, METHODS, MIN_POINTS, check_window, suggest_lr
from lr_callbacks.finder.driver import Batches, Driver
from lr_callbacks.finder.probe import run_probe, warmup_of
from lr_callbacks.finder.ramp import MODES, diverged, sweep_lrs
from lr_callbacks.finder.result import FinderResult, Probe, Trial
from lr_callbacks.finder.selection import (
    cost_warning,
    probe_cost_warning,
    readable_steps,
    sparse_sweep_warning,
    sweep_steps,
)
from lr_callbacks.finder.stability import hold_steps, probe_flags
from lr_callbacks.finder.trials import (
    CONFIRM_FACTORS,
    candidates,
    plan_trials,
    require_validation,
    run_of,
    run_trials,
)

if TYPE_CHECKING:
    from pytorch_lightning import LightningModule, Trainer

_OWNER = "LRFinder"

__all__ = ["LRFinder", "find_lr"]

log = logging.getLogger("lr_callbacks")

_FIT_START = "fit_start"


class LRFinder(Callback):
    """Find the peak LR with a range test inside your own trainer, then put everything back exactly.

    At fit start (and, if asked, at the start of given epochs) it raises the LR of every parameter group
    together, their ratios kept, from ``min_lr`` to ``max_lr`` over ``num_steps`` optimizer steps of your
    own training recipe (precision and ``GradScaler``, gradient accumulation, gradient clipping, DDP, FSDP2),
    recording each step's raw loss (averaged across ranks) and gradient norm. It stops early when the loss
    diverges (a rule that works for negative losses and NaN/inf; see
    :func:`~lr_callbacks.finder.ramp.diverged`) or when the data runs out. Then it restores, bit for
    bit, the parameters and buffers, gradients, optimizer and scheduler state, ``GradScaler``, torchmetrics
    states, the states of objects your module keeps that save and restore themselves (``state_dict`` and
    ``load_state_dict``: an EMA as torch_ema or diffusers keep it, which the sweep's steps update), the random
    number generators (Python, NumPy, torch, CUDA, and the ``torch.Generator``s that the data
    loaders, their samplers and datasets keep) and thus the order in which training then sees its data; nothing is
    written to disk, snapshots live in host memory. Training after the finder is exactly the training you would get
    by setting its LR by hand, unless your data keeps other random state (a sampler's NumPy generator, a streaming
    dataset's pass counter), which moves on with the sweep's passes.

    "Fit start" is ``on_train_start``: after every callback's ``on_fit_start`` (``LRSchedule`` is set up,
    ``BackboneFinetuning`` has frozen its backbone) and after a resumed run's optimizer and loops are
    restored. The sweep takes its batches from a fresh pass over the training data (with shuffling, a
    different order from the epoch's, which it leaves untouched), pass after pass if the data is short.
    With manual optimization each ``training_step`` call is one sweep step (it must return the loss), and
    the LRs of all optimizers move together. Under ``ddp_spawn`` the result lives in the worker processes.
    Under FSDP2 (``ModelParallelStrategy``) each rank snapshots and restores its own shards, and the gradient norm
    is the whole gradient's; under DeepSpeed, whose engine steps the optimizer itself, it raises.

    The curve is analysed without smoothing lag (:func:`~lr_callbacks.suggest_lr`): a suggestion, a range
    and flags. The ramp's edge is not the run's: the ramp holds each LR for one step, the run holds its peak
    for many. So a **stability probe** then replays the run's warmup from the restored state and holds the
    suggestion for ``max(20, 2 × warmup)`` steps (under a ``DivergenceWatchdog``'s cut where one is held, as the
    run after the choice trains); if the loss ends significantly above where the hold began
    (or above the loss it started from), or the gradient norm grows geometrically, or the hold ends no lower
    than the loss it started from (an LR past the edge can leave the model stuck there), it halves the
    suggestion and tries again, at most twice, and keeps the first stable hold that made progress, else the
    first stable one (flags ``probe_halved``, ``probe_stalled``, ``probe_no_progress``, ``probe_unstable``; see
    :mod:`lr_callbacks.finder.stability`).
    With ``apply=True`` the answer becomes the reference group's peak LR (the first group of the first
    optimizer; other groups keep their ratios): ``LRSchedule``'s ``peak`` if present, otherwise the optimizer's
    groups and the user's torch scheduler's ``base_lrs``/``initial_lr``/``max_lr``, as its peak (a ``OneCycleLR``
    or ``CyclicLR`` climbs to the answer, not from it: :func:`~lr_callbacks.core.lr_model.reference_lr`).

    Confirm mode (``confirm=True`` or a list of LRs) then runs trials at each candidate, each from the same
    restored state: the run's schedule compressed into the trial and cooled down at its end, scored on the
    validation loss with a standard error, the budget spent as successive halving. With ``confirm=True`` the
    candidates are the probe's answer and half of it, never more than the probe saw held; another candidate
    replaces the probe's answer only when it is better by more than 2 standard errors, and when the best two
    are within noise the candidate nearest the finder's own answer is kept (flag ``trials_inconclusive``). When
    every candidate ends worse than the state the trials began from, or diverges, none is applied (flag
    ``trials_failed``). See :mod:`lr_callbacks.finder.trials`.

    **Cost.** By default the sweep takes a quarter of the run (a tenth when you list the confirm candidates),
    at most 100 steps and, unless you list the candidates, at least one point per smoothing ``window`` of the
    range (40 steps by default: fewer cannot be read, so a short run pays for a readable sweep). In confirm
    mode the sweep, the probe and the trials share 35% of the run: the trials get what the sweep and the
    probe leave, and when that is less than 8 steps per trial none run (flag ``trials_skipped``: on runs of a
    few hundred steps the sweep and the probe take it all, and the probe's answer is applied). A sweep, probe
    and trials planned beyond 35% of the run get a warning with the numbers (the probe counted at its first
    hold, the least it costs).

    Logs ``lr_finder/loss``, ``lr_finder/lr``, ``lr_finder/grad_norm`` (x = sweep step, from 0 in every run of
    the finder: mid-fit behind the run's step, under tags of their own; see ``docs/tensorboard.md``),
    ``lr_finder/suggestion`` (the sweep's) and ``lr_finder/chosen_lr`` (the answer, after the probe and the trials;
    x = the run's step, at which Lightning logs the run's metrics: ``global_step``, or with several optimizers
    stepped by hand the training steps, which ``global_step`` counts once per optimizer), the image
    ``lr_finder/curve`` and the text ``lr_finder/summary``; a run at epoch ``e`` logs its curve under
    ``lr_finder/epoch<e>/...``. Trials: ``.../trial_lr``, ``.../trial_val_loss`` (x = trial),
    ``.../trial<k>/loss``, and ``.../start_val_loss`` (x = the run's step: the state they were compared with). A
    progress bar shows when the trainer shows one.

    On resume from a checkpoint it does not run again: its results are in its ``state_dict``. Nor does it run at
    the start of a fit resumed past step 0 from a checkpoint written without its run there (a warning says so):
    a sweep of the trained weights would move the LR in the middle of the run.

    Args:
        min_lr: the first LR of the sweep (reference group).
        max_lr: the last; the sweep usually stops before, when the loss diverges.
        num_steps: optimizer steps of the sweep (at least 8); ``None``: a quarter of the run, at least one
            point per ``window`` of the range (40 by default) and at most 100 (a tenth of the run with a list
            of confirm candidates). Fewer points than that cannot be read, and a warning says so.
        mode: ``"exponential"`` (evenly spaced on the log axis) or ``"linear"`` (over at most two decades: wider,
            it leaves too few steps below its last decade to read the curve).
        method: the suggestion rule: ``"default"``, ``"steepest"``, ``"min_div_10"`` or ``"valley"``
            (see :func:`~lr_callbacks.suggest_lr`).
        apply: write the answer into the LR; ``False`` only reports.
        at_fit_start: run when training starts.
        epochs: also run at the start of these epochs (the weights are those of that moment), after the
            fine-tuning callbacks (``BackboneFinetuning``) wherever they are listed, so that the layers they
            unfreeze at that epoch are swept with the rest. A fit resumed from a checkpoint written on the
            previous epoch's last batch enters such an epoch without Lightning's ``on_train_epoch_start``: the
            finder runs before its first batch instead, as the uninterrupted run did. An epoch the fit never starts
            (past ``max_epochs``, or past the epoch in which ``max_steps`` ends the run) is warned of at fit start.
        divergence_threshold: stop when the loss has given back this many times what it gained
            (1.0: back to where it started); ``None`` stops only on NaN/inf.
        window: the smoothing width of the analysis, in decades of LR.
        confirm: ``False``; ``True`` for trials at ×0.5 and ×1 the probe's answer; or a list of peak LRs.
        confirm_length: the last (longest) rung's trial length: ``"5%"`` of the run, ``"200 steps"``,
            ``"1 epochs"``; earlier rungs are half as long each. ``None``: all trials together take what the
            sweep and the probe leave of 35% of the run.
        probe: run the stability probe on the suggestion (also with ``confirm=True``, whose candidates it
            bounds; not with a list of candidates, which the trials test as given); ``False`` applies the
            sweep's answer as it is.
        monitor: the validation value the trials are compared on (logged or returned by
            ``validation_step``).

    Raises:
        ValueError, TypeError: at construction, for a bad argument; when it runs, for a trainer it cannot
            work with (DeepSpeed, no training data, a reference LR of 0, no validation data in confirm mode).

    Example::

        trainer = Trainer(max_epochs=10, callbacks=[LRFinder(), LRSchedule("cosine", warmup="5%")])

    >>> finder = LRFinder(num_steps=50, confirm=[1e-4, 1e-5, 1e-6], confirm_length="100 steps")
    >>> finder.result is None
    True
    """

    def __init__(
        self,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        num_steps: int | None = None,
        mode: str = "exponential",
        method: str = "default",
        apply: bool = True,
        *,
        at_fit_start: bool = True,
        epochs: Sequence[int] = (),
        divergence_threshold: float | None = 1.0,
        window: float = DEFAULT_WINDOW,
        confirm: bool | Sequence[float] = False,
        confirm_length: Duration | str | None = None,
        monitor: str = "val_loss",
        probe: bool = True,
    ) -> None:
        self._given = given_arguments(LRFinder.__init__, locals())  # for repr: what it was built with
        self.min_lr = check_number("min_lr", min_lr, low=0.0, low_open=True, owner=_OWNER)
        self.max_lr = check_number("max_lr", max_lr, low=0.0, low_open=True, owner=_OWNER)
        if self.max_lr <= self.min_lr:
            raise ValueError(f"LRFinder: `max_lr` must be above `min_lr`, got min_lr={min_lr!r}, max_lr={max_lr!r}")
        if math.isinf(self.max_lr / self.min_lr):  # a subnormal min_lr: the sweep's spacing overflowed at fit time
            decades = math.log10(self.max_lr) - math.log10(self.min_lr)
            raise ValueError(
                f"LRFinder: `min_lr` is too small for `max_lr`: from min_lr={min_lr!r} to max_lr={max_lr!r} is "
                f"{decades:.0f} decades, and max_lr / min_lr overflows a float, so the sweep's LRs cannot be computed; "
                "give a min_lr a few decades below where the model starts to learn, such as 1e-7 (the default)"
            )
        self.num_steps = None if num_steps is None else check_int("num_steps", num_steps, low=MIN_POINTS, owner=_OWNER)
        self.mode = check_choice("mode", mode, MODES, owner=_OWNER)
        if self.mode == "linear" and self.max_lr > LINEAR_SPAN * self.min_lr:
            decades = math.log10(self.max_lr / self.min_lr)
            last = (self.max_lr - self.max_lr / 10) / (self.max_lr - self.min_lr)
            raise ValueError(
                f"LRFinder: mode='linear' from min_lr={min_lr!r} to max_lr={max_lr!r} ({decades:.3g} decades) spends "
                f"{last:.0%} of its steps in the last decade and {1 - last:.0%} on the {decades - 1:.3g} below it, "
                "too few for the curve (read on a log axis) to show where the loss falls, and no answer would come; "
                f"give a range of at most {math.log10(LINEAR_SPAN):.0f} decades (e.g. min_lr="
                f"{self.max_lr / LINEAR_SPAN:.3g}), or use mode='exponential' (the default)"
            )
        _check_distinct_lrs(self.min_lr, self.max_lr, self.num_steps or MIN_POINTS, self.mode)
        self.method = check_choice("method", method, METHODS, owner=_OWNER)
        self.apply = check_bool("apply", apply, owner=_OWNER)
        self.at_fit_start = check_bool("at_fit_start", at_fit_start, owner=_OWNER)
        self.epochs = _check_epochs(epochs)
        if not self.at_fit_start and not self.epochs:
            raise ValueError("LRFinder would never run: at_fit_start=False and no `epochs`; give one of them")
        if self.at_fit_start and 0 in self.epochs:
            raise ValueError("LRFinder: epoch 0 starts at fit start; drop 0 from `epochs` or set at_fit_start=False")
        self.divergence_threshold = (
            None
            if divergence_threshold is None
            else check_number("divergence_threshold", divergence_threshold, low=0.0, low_open=True, owner=_OWNER)
        )
        self.window = check_number("window", window, low=0.0, low_open=True, owner=_OWNER)
        check_window(self.window, _OWNER)
        self.confirm = _check_confirm(confirm)
        self.confirm_length = None if confirm_length is None else _duration("confirm_length", confirm_length)
        if self.confirm_length is not None and _is_zero(self.confirm_length):
            raise ValueError(
                f"LRFinder: `confirm_length` is {self.confirm_length.describe()}: a trial of no steps tells nothing; "
                "give it a length such as '10%' or '50 steps', or leave it out for the default"
            )
        if self.confirm_length is not None and self.confirm is False:
            raise ValueError(
                f"LRFinder: `confirm_length` ({self.confirm_length.describe()}) is the length of the confirm trials, "
                "but confirm is off; pass confirm=True (or a list of LRs) to run them, or leave confirm_length out"
            )
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"LRFinder: `monitor` must be the name of a validation value, got {monitor!r}")
        if monitor != "val_loss" and self.confirm is False:
            raise ValueError(
                f"LRFinder: `monitor` ({monitor!r}) is the validation value the confirm trials are scored on, but "
                "confirm is off; pass confirm=True (or a list of LRs) to run them, or leave monitor out"
            )
        self.monitor = monitor
        self.probe = check_bool("probe", probe, owner=_OWNER)
        self._results: list[FinderResult] = []
        self._done: set[str] = set()
        self._passed: set[str] = set()  # listed epochs this fit entered past their start (resumed inside them)
        # the stage of the trainer's last setup: a state loaded outside a fit (validate, test) is not kept
        self._stage: str | None = None
        self._exit_after_run = False
        self._applied_note: str | None = None  # what the log line says of the answer's use, when find_lr runs it
        self._swept_from: float | None = None  # the reference group's peak LR before the last sweep

    # --- results ---------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"LRFinder({', '.join(f'{k}={v!r}' for k, v in self._given.items())})"

    @property
    def result(self) -> FinderResult | None:
        """The latest run's result (``None`` before the first run)."""
        return self._results[-1] if self._results else None

    @property
    def results(self) -> tuple[FinderResult, ...]:
        """Every run's result in this fit, in order (fit start, then each epoch in ``epochs``)."""
        return tuple(self._results)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self._results], "done": sorted(self._done)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not {"results", "done"} <= set(state_dict):
            raise ValueError("LRFinder: the checkpoint's state lacks 'results'/'done'; was it written by LRFinder?")
        if self._stage not in (None, "fit"):
            return  # trainer.test/validate(ckpt_path=...) loads every callback's state: not a resume
        self._results = [FinderResult.from_dict(r) for r in state_dict["results"]]
        self._done = set(state_dict["done"])

    # --- hooks -----------------------------------------------------------------------------------------

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stage = stage
        if stage == "fit":  # a new fit starts afresh; on resume, load_state_dict (called after) fills these
            self._results, self._done, self._passed = [], set(), set()
            # At an epoch's start the fine-tuning callbacks unfreeze layers and add their groups, which a sweep at
            # that epoch must train: listed first, the finder swept the frozen model (80× too high in one recipe).
            after = move_after_finetuning(trainer, self) if self.epochs else None
            if after is not None and trainer.is_global_zero:
                log.info("LRFinder: runs after %s at each epoch's start", after)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.epochs and trainer.is_global_zero:
            _warn_epochs_past_the_run(trainer, self.epochs)
        if self.at_fit_start and _FIT_START not in self._done and not self._past_fit_start(trainer):
            self._run(trainer, pl_module, _FIT_START)
        elif self._results:
            self._keep_on_resume(trainer)
        if self._exit_after_run:
            exit_fit(trainer)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        key = f"epoch{trainer.current_epoch}"
        if trainer.current_epoch in self.epochs and key not in self._done:
            self._run(trainer, pl_module, key)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """Run at a listed epoch whose start Lightning did not announce: resumed from a checkpoint written on the
        previous epoch's last batch, it restarts "mid-epoch" into this one and skips ``on_train_epoch_start``."""
        if trainer.current_epoch not in self.epochs:  # at every batch: the common case, nothing listed here
            return
        key = f"epoch{trainer.current_epoch}"
        if key in self._done or key in self._passed:
            return
        if batch_idx == 0:  # nothing of this epoch trained yet: where the uninterrupted run had its answer
            self._run(trainer, pl_module, key)
            return
        self._passed.add(key)  # the checkpoint was written inside this epoch, by a fit that did not run here
        if trainer.is_global_zero:
            warnings.warn(
                f"LRFinder: the fit resumed at batch {batch_idx} of epoch {trainer.current_epoch}, past the start "
                "where the finder runs, from a checkpoint of a fit that did not run it there; it does not run in "
                "this epoch. Resume from a checkpoint written before the epoch began, or list a later epoch",
                UserWarning,
                stacklevel=2,
            )

    def _past_fit_start(self, trainer: Any) -> bool:
        """Whether the fit resumed past its start from a checkpoint of a fit that did not run the finder there (so
        it does not run: as at a listed epoch whose start is past). Before, it swept the trained weights at the
        resume and wrote its answer over the LR the run trained at, in the middle of its schedule."""
        step = int(trainer.global_step)
        if trainer.ckpt_path is None or step == 0:
            return False
        if trainer.is_global_zero:
            warnings.warn(
                f"LRFinder: the fit resumed at step {step} from a checkpoint of a fit that did not run the finder at "
                "its start; it does not run now (a sweep of the trained weights would move the LR in the middle of "
                "the run), and the run goes on at the checkpoint's LR. To find an LR for these weights, start a new "
                "fit from them (the module's weights, without ckpt_path), or list an epoch to come in `epochs`",
                UserWarning,
                stacklevel=2,
            )
        return True

    def _keep_on_resume(self, trainer: Any) -> None:
        """A resume after the finder ran: the checkpoint's optimizer holds its answer, and so does the checkpoint's
        LRSchedule; one added on resume would take its peak from ``configure_optimizers``: give it the answer.

        A schedule resumed from its own state keeps its peaks: they hold the answer, and an LR set outside it since
        (taken as the group's new peak). Before, the answer was written over them: a group 0 frozen by an LR of 0
        after the finder ran failed the resume with a ZeroDivisionError, and one set to 0.05 after an answer of
        0.17 went back to 0.17 on resume (the other groups with it)."""
        lr = self._results[-1].chosen_lr
        schedule = find_lr_schedule(trainer)
        if not self.apply or lr is None or schedule is None or schedule._peaks_restored:
            return
        if schedule.peak_lrs[0][0] == lr:
            return
        # the schedule's plan only: the optimizer's LRs, and BackboneFinetuning's ramp, come back with the answer
        schedule._set_peak_lr(lr)
        if trainer.is_global_zero:
            log.info("LRFinder: resumed after its run; LRSchedule's peak is its answer, %.3g", lr)

    # --- one run ---------------------------------------------------------------------------------------

    def _run(self, trainer: Any, module: Any, key: str) -> None:
        require_materialized(module, "LRFinder")
        if getattr(trainer.strategy, "handles_gradient_accumulation", False):
            raise ValueError(
                f"LRFinder cannot drive the optimizer under {type(trainer.strategy).__name__}, which steps and "
                "accumulates itself (DeepSpeed); find the LR once with strategy='ddp', then set it"
            )
        require_lr_groups(trainer, "LRFinder")
        # fast_dev_run checks that the code runs, on a batch or a few: nothing to sweep (Lightning's Tuner stands aside)
        if trainer.fast_dev_run:
            log.info("LRFinder: skipped under fast_dev_run")
            self._done.add(key)
            return
        result = trainer.strategy.broadcast(self._find(trainer, module))
        self._results.append(result)
        self._done.add(key)
        self._report(trainer, result, "lr_finder" if key == _FIT_START else f"lr_finder/{key}")
        if self.apply and result.chosen_lr is not None and not _swa_drives(trainer):
            set_peak_lr(trainer, result.chosen_lr)

    def _find(self, trainer: Any, module: Any) -> FinderResult:
        schedule = find_lr_schedule(trainer)
        if schedule is not None and not schedule._handed_over:  # SWA's LR is not a change to take in
            schedule._take_changes()  # a group added at this epoch's start is swept with the others
        peaks = schedule.peak_lrs if schedule is not None else _optimizer_peaks(trainer)
        if peaks[0][0] <= 0:
            raise ValueError(
                "LRFinder: the reference group (first group of the first optimizer) has LR 0, so the other "
                "groups' ratios to it are undefined; list a group that trains first in configure_optimizers (a "
                "group frozen with LR 0 can come later, where it stays at 0), or give it a positive LR"
            )
        ratios = [[p / peaks[0][0] for p in row] for row in peaks]
        # the peak the answer replaces, as set_peak_lr reads it (a OneCycleLR's max_lr, not its start)
        self._swept_from = peaks[0][0] if schedule is not None else reference_lr(trainer)
        if self.confirm is not False:
            require_validation(trainer)  # before the sweep, not after it and the probe
        loaders = trainer.train_dataloader
        val_loaders = trainer.val_dataloaders
        started = time.perf_counter()
        with paused(trainer):
            snapshot = TrainingSnapshot.capture(trainer, module, loaders=[loaders, val_loaders])
            try:
                with Driver(trainer, module, ratios) as driver:
                    show = trainer.is_global_zero and _progress_enabled(trainer)
                    num_steps = self._sweep_length(trainer, schedule)
                    capped_from = adafactor_steps(trainer.optimizers[0])
                    lrs, losses, norms, stop = self._sweep(trainer, driver, loaders, num_steps, show)
                    if capped_from is not None and trainer.is_global_zero:
                        _warn_adafactor_cap(lrs, capped_from)
                    analysis = suggest_lr(lrs, losses, self.method, window=self.window)
                    if stop == "lr_overridden":  # the step writes the LR: as the warning says, nothing is suggested
                        # nor is the cut curve's shape read: its flags' advice (min_at_end: "raise max_lr") is moot
                        analysis = dataclasses.replace(analysis, lr=None, range=None, flags=())
                    probe: Probe | None = None
                    if self.probe and not isinstance(self.confirm, tuple) and analysis.lr is not None:
                        probe = run_probe(trainer, driver, snapshot, analysis.lr, schedule, losses)
                        first_hold = probe.warmup_steps + probe.hold_steps
                        total = run_of(trainer).total_steps
                        overrun = probe_cost_warning(total, len(lrs), first_hold, probe.steps, len(probe.attempts))
                        if overrun is not None and trainer.is_global_zero:
                            warnings.warn(overrun, UserWarning, stacklevel=2)
                    trials: tuple[Trial, ...] = ()
                    start = (math.nan, math.nan)  # the score of the state the trials start from, when they run
                    choice, flags = None, analysis.flags + _probe_flags(probe)
                    anchor = probe.lr if probe is not None else analysis.lr  # the largest LR known to hold
                    # a listed candidate's trial would run at the LR the step writes, as the sweep did: none is tried
                    lrs_to_try = candidates(self.confirm, anchor) if stop != "lr_overridden" else ()
                    if lrs_to_try:
                        spent = len(lrs) + (probe.steps if probe is not None else 0)
                        trials, chosen, start = run_trials(
                            trainer,
                            module,
                            driver,
                            snapshot,
                            lrs_to_try,
                            self.confirm_length,
                            self.monitor,
                            schedule,
                            anchor=anchor,
                            spent=spent,
                        )
                        choice = chosen.lr
                        flags += ("trials_inconclusive",) if chosen.inconclusive else ()
                        flags += ("trials_failed",) if chosen.failed else ()
                        flags += () if trials else ("trials_skipped",)
            finally:
                snapshot.restore()
        return FinderResult(
            lrs=tuple(lrs),
            losses=tuple(losses),
            grad_norms=tuple(norms),
            suggestion=analysis.lr,
            range=analysis.range,
            flags=flags,
            method=self.method,
            stop_reason=stop,
            smoothed=analysis.smoothed,
            trials=trials,
            global_step=run_step(trainer),
            epoch=int(trainer.current_epoch),
            probe=probe,
            choice=choice,
            seconds=time.perf_counter() - started,
            window=self.window,
            start_val_loss=start[0],
            start_se=start[1],
        )

    def _sweep_length(self, trainer: Any, schedule: Any = None) -> int:
        """``num_steps``, or the default that follows the run; warns when the finder would cost too much of it
        (``schedule``: the run's LRSchedule, whose warmup the probe replays; the callbacks are out of the trainer
        while the finder drives it)."""
        total = run_of(trainer).total_steps
        readable = readable_steps(self.min_lr, self.max_lr, self.window)
        listed = isinstance(self.confirm, tuple)
        steps = self.num_steps or sweep_steps(total, listed=listed, minimum=MIN_POINTS, readable=readable)
        _check_distinct_lrs(self.min_lr, self.max_lr, steps, self.mode)  # the default's length is known only now
        count = len(self.confirm) if isinstance(self.confirm, tuple) else len(CONFIRM_FACTORS) if self.confirm else 0
        plan = plan_trials(trainer, count, self.confirm_length, spent=steps) if count else []
        trials = sum(n * k for n, k in plan)  # at most: by default the probe's steps come out of the trials' share
        probe = 0
        if self.probe and not listed:  # its first hold: the replayed warmup, then the hold
            replayed, _ = warmup_of(schedule, total)
            probe = replayed + hold_steps(replayed)
            trials = max(0, trials - probe) if self.confirm is True and self.confirm_length is None else trials
        defaults = self.num_steps is None and self.confirm_length is None
        message = cost_warning(total, steps, trials, defaults=defaults, probe=probe)
        if message is not None and trainer.is_global_zero:
            warnings.warn(message, UserWarning, stacklevel=2)
        # the sweep's answer is the finder's (with a list of candidates it only breaks the trials' ties)
        sparse = (
            None
            if listed or self.num_steps is None
            else sparse_sweep_warning(steps, self.min_lr, self.max_lr, self.window)
        )
        if sparse is not None and trainer.is_global_zero:
            warnings.warn(sparse, UserWarning, stacklevel=2)
        return steps

    def _sweep(
        self, trainer: Any, driver: Driver, loaders: Any, num_steps: int, show: bool
    ) -> tuple[list[float], list[float], list[float], str]:
        plan = sweep_lrs(self.min_lr, self.max_lr, num_steps, self.mode)
        batches = Batches(loaders, trainer.num_training_batches)
        lrs: list[float] = []
        losses: list[float] = []
        norms: list[float] = []
        stop = "completed"
        bar = _progress_bar(num_steps, show)
        try:
            for index, lr in enumerate(plan):
                step_batches = batches.take(driver.accumulate)
                if trainer.strategy.reduce_boolean_decision(step_batches is None, all=False):
                    stop = "data_exhausted"
                    break
                assert step_batches is not None
                driver.set_lr(lr)
                output = driver.step(step_batches, index)
                if bar is not None:
                    bar.update(1)
                used = driver.overridden()
                if trainer.strategy.reduce_boolean_decision(used is not None, all=False):
                    stop = "lr_overridden"
                    if trainer.is_global_zero:
                        ran = f"at {used:.4g}" if used is not None else "at another LR on another rank"
                        warnings.warn(
                            f"LRFinder: the sweep set the LR to {lr:.4g}, but optimizer.step() ran {ran}: something "
                            "in the training step writes the LR (a warmup by hand in the module's optimizer_step?), "
                            "so no sweep can measure it and nothing is suggested. Leave the LR to LRSchedule (its "
                            "warmup= replaces a warmup by hand), or run the finder without that code",
                            UserWarning,
                            stacklevel=2,
                        )
                    break
                if output is None:  # training_step skipped the batch: no point, the ramp goes on
                    continue
                loss, norm, _ = trainer.strategy.reduce(output, reduce_op="mean").tolist()
                lrs.append(lr)
                losses.append(loss)
                norms.append(norm)
                if bar is not None:
                    bar.set_postfix(lr=f"{lr:.2e}", loss=f"{loss:.4g}")
                if diverged(losses, self.divergence_threshold):
                    stop = "diverged"
                    break
        finally:
            if bar is not None:
                bar.close()
            batches.close()
        return lrs, losses, norms, stop

    def _report(self, trainer: Any, result: FinderResult, prefix: str) -> None:
        for index, (lr, loss, norm) in enumerate(zip(result.lrs, result.losses, result.grad_norms)):
            log_scalars(trainer, {f"{prefix}/loss": loss, f"{prefix}/lr": lr, f"{prefix}/grad_norm": norm}, index)
        for index, trial in enumerate(result.trials):
            values = {f"{prefix}/trial_lr": trial.lr, f"{prefix}/trial_val_loss": trial.val_loss}
            log_scalars(trainer, {**values, f"{prefix}/trial_se": trial.se, f"{prefix}/trial_rung": trial.rung}, index)
            for step, loss in enumerate(trial.losses):
                log_scalars(trainer, {f"{prefix}/trial{index}/loss": loss}, step)
        if result.trials:  # what the trials were compared with (trials_failed: every candidate ended above it)
            start = {f"{prefix}/start_val_loss": result.start_val_loss, f"{prefix}/start_se": result.start_se}
            log_scalars(trainer, start, result.global_step)
        for index, attempt in enumerate(result.probe.attempts if result.probe is not None else ()):
            held = {f"{prefix}/probe_lr": attempt.lr, f"{prefix}/probe_stable": float(attempt.verdict == "stable")}
            log_scalars(trainer, {**held, f"{prefix}/probe_progressed": float(attempt.hold.progressed)}, index)
            for step, loss in enumerate(attempt.losses):
                log_scalars(trainer, {f"{prefix}/probe{index}/loss": loss}, step)
        cost = {f"{prefix}/steps_spent": float(result.steps_spent), f"{prefix}/seconds": result.seconds}
        log_scalars(trainer, cost, result.global_step)
        if result.suggestion is not None:
            log_scalars(trainer, {"lr_finder/suggestion": result.suggestion}, result.global_step)
        if result.chosen_lr is not None:  # the answer: after the probe's halvings and the trials
            log_scalars(trainer, {"lr_finder/chosen_lr": result.chosen_lr}, result.global_step)
        if summary_writers(trainer):
            log_image(trainer, "lr_finder/curve", result.image(), result.global_step)
            log_text(trainer, "lr_finder/summary", result.summary(), result.global_step)
        if trainer.is_global_zero and "flat_curve" in result.flags and result.chosen_lr is not None and result.range:
            answer, edge, steps = result.chosen_lr, result.range[1], len(result.lrs)
            # with no_clear_valley, a broad bottom: the loss may have fallen far before it (before, "no descent")
            shape = (
                f"stayed at its lowest level over more than {BROAD_BOTTOM:g} decades of LR during the {steps}-step "
                "sweep (flat_curve with no_clear_valley: a plateau, not a valley)"
                if "no_clear_valley" in result.flags
                else f"showed no descent the LR made during the {steps}-step sweep (flat_curve: within its noise)"
            )
            warnings.warn(
                f"LRFinder: the loss {shape}, so the answer "
                f"{answer:.3g} is read from where it rose ({edge:.3g}). That suits a model near its "
                "floor (fine-tuning); a model that learns too slowly for the sweep to show it (e.g. a transformer "
                "trained from scratch) may need far less: on the benchmark's patch transformer the best LR was "
                f"1/35 to 1/60 of that edge. To measure rather than read it: a longer sweep (num_steps), or trials, "
                f"e.g. confirm=({answer:.2g}, {answer / 10:.2g}, {answer / 100:.2g})",
                UserWarning,
                stacklevel=2,
            )
        if trainer.is_global_zero:
            note = self._applied_note or ("applied" if self.apply else "not applied (apply=False)")
            if self.apply and _swa_drives(trainer):
                note = "not applied: StochasticWeightAveraging drives the LR (LRSchedule handed it over)"
            note = note if result.chosen_lr is not None else "no answer, nothing applied"
            log.info("LRFinder: %s; %s", result.headline(), note)


def _warn_adafactor_cap(lrs: list[float], start: int) -> None:
    """torch's Adafactor steps with ``min(lr, 1/√t)``: say where the sweep's LR passed that cap (``start``: its step
    count before the sweep), past which the curve does not show the LR's effect."""
    past = next((k for k, lr in enumerate(lrs) if lr > 1.0 / math.sqrt(start + k + 1)), None)
    if past is None:
        return
    warnings.warn(
        f"LRFinder: torch's Adafactor steps with min(lr, 1/√t), t its step count: from sweep step {past} on (LR "
        f"{lrs[past]:.3g}) the LR was above that cap and did nothing, so the curve there does not show the LR's "
        f"effect, and neither does an answer past it. Sweep below the cap (max_lr={lrs[past]:.2g}), and keep the "
        "run's peak LR under 1/√t at the steps it is held",
        UserWarning,
        stacklevel=2,
    )


def _check_finder_names(finder_kwargs: dict[str, Any]) -> None:
    """Refuse a keyword of ``find_lr`` that is none of LRFinder's arguments, listing those it takes. Before, a typo
    (``num_step=50``) surfaced as Python's "LRFinder.__init__() got an unexpected keyword argument 'num_step'",
    which named a class the caller never called and not the arguments there are.

    Raises:
        TypeError: for an unknown name.
    """
    taken = [n for n in inspect.signature(LRFinder).parameters if n not in ("self", "epochs", "at_fit_start")]
    unknown = [name for name in finder_kwargs if name not in taken]
    if unknown:
        close = difflib.get_close_matches(unknown[0], taken, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(
            f"find_lr got the unknown argument {unknown[0]!r}{hint}; besides the fit's own it takes LRFinder's: "
            f"{', '.join(['attr_name', *taken])}"
        )


def find_lr(
    trainer: Any,
    model: Any,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    datamodule: Any = None,
    *,
    attr_name: str | None = None,
    **finder_kwargs: Any,
) -> FinderResult:
    """Run the range test outside ``fit`` (like ``Tuner.lr_find``), and return the same result as :class:`LRFinder`.

    It runs a fit that ends right after the sweep, in the very state where the callback would sweep, so
    the result is the callback's. Afterwards the model and the random number generators are as before the
    call, so a ``trainer.fit`` that follows is the one you would run without it.

    Args:
        trainer: the trainer you will train with (its precision, accumulation, clipping and strategy apply).
        model: the LightningModule.
        train_dataloaders, val_dataloaders, datamodule: as for ``trainer.fit``.
        attr_name: with ``apply=True``, the model attribute (or ``hparams`` key) that
            ``configure_optimizers`` reads the LR from; by default ``lr`` or ``learning_rate``.
        **finder_kwargs: :class:`LRFinder`'s arguments. ``apply`` here means: set the chosen LR on the
            model's attribute (default ``False``: only report), and scale an ``LRSchedule``'s ``peak_lrs`` for
            named groups with it, so they keep the ratio the sweep measured; ``epochs`` and ``at_fit_start`` do
            not apply. An attribute that drives another group than the reference (``lr`` for the head, the
            backbone, first, at ``lr / 100``) is scaled as the sweep scaled that group, so the next fit trains
            every group at the LR the callback would apply.

    Returns:
        The :class:`~lr_callbacks.FinderResult`.

    Raises:
        ValueError: if the trainer already has an LRFinder or runs with ``fast_dev_run``, for
            ``epochs``/``at_fit_start``, or with ``apply=True`` when the model has no such attribute.
        TypeError: for a ``trainer`` that is no Lightning ``Trainer``, a keyword LRFinder does not take, or an
            ``attr_name`` that is no name (not a non-empty string).
        RuntimeError: if no sweep ran in this process: the fit ended before training started, or the
            strategy ran it in other processes, from which the result cannot come back; under ``ddp_spawn``,
            whose processes end with the fit, before any work.

    >>> import pytorch_lightning as pl, torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> class Net(pl.LightningModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.lr, self.layer = 0.1, torch.nn.Linear(4, 1)
    ...     def training_step(self, batch, batch_idx):
    ...         return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
    ...     def configure_optimizers(self):
    ...         return torch.optim.SGD(self.parameters(), lr=self.lr)
    >>> _ = torch.manual_seed(0)
    >>> data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
    >>> trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    >>> model = Net()
    >>> result = find_lr(trainer, model, data, num_steps=40, apply=True)
    >>> model.lr == result.chosen_lr, result.stop_reason
    (True, 'diverged')
    """
    if not is_lightning(trainer, "Trainer"):  # before: "'Net' object has no attribute 'callbacks'"
        swapped = " (the model and the trainer are swapped)" if is_lightning(model, "Trainer") else ""
        raise TypeError(
            f"find_lr: `trainer` must be a Lightning Trainer, got a {type(trainer).__name__}{swapped}; the call is "
            "find_lr(trainer, model, train_dataloaders, ...)"
        )
    if any(isinstance(c, LRFinder) for c in trainer.callbacks):
        raise ValueError("find_lr: the trainer already has an LRFinder callback; use one or the other")
    for name in ("epochs", "at_fit_start"):
        if name in finder_kwargs:
            raise ValueError(f"find_lr runs once, before training; `{name}` is for the LRFinder callback")
    _check_finder_names(finder_kwargs)
    launcher = getattr(trainer.strategy, "launcher", None)
    if any("MultiProcessingLauncher" in cls.__name__ for cls in type(launcher).__mro__):
        raise RuntimeError(
            f"find_lr cannot bring the result back from {type(trainer.strategy).__name__}, whose processes are "
            "spawned for the fit and end with it (ddp_spawn): use strategy='ddp', or the LRFinder callback"
        )
    if trainer.fast_dev_run:  # the finder stands aside there: before, the fit ran and "no sweep ran" gave other causes
        raise ValueError(
            f"find_lr does not sweep under fast_dev_run={trainer.fast_dev_run!r}, which checks that the code runs on a "
            "batch or a few (the LRFinder stands aside there, as Lightning's Tuner does); run find_lr with a Trainer "
            "without fast_dev_run"
        )
    apply = check_bool("apply", finder_kwargs.pop("apply", False), owner="find_lr")
    if attr_name is not None and (not isinstance(attr_name, str) or not attr_name):
        # before: 3 failed with Python's "attribute name must be string", ['lr'] with "unhashable type: 'list'", and
        # "" fell back to 'lr' or 'learning_rate' without a word
        raise TypeError(
            f"find_lr: `attr_name` must be the name of the model attribute (or hparams key) that configure_optimizers "
            f"reads the LR from, such as 'lr', got {attr_name!r}; or leave it out for 'lr' or 'learning_rate'"
        )
    if attr_name is not None and not apply:
        raise ValueError(
            f"find_lr: attr_name={attr_name!r} names the attribute the answer is set on, but apply is False (the "
            "default), so nothing would be set; pass apply=True, or leave attr_name out"
        )
    finder = LRFinder(**finder_kwargs, apply=False)
    finder._exit_after_run = True
    finder._applied_note = "not applied (find_lr's apply=False)"
    if apply:
        name = _lr_attribute(model, attr_name)  # fail before the sweep, not after
        finder._applied_note = f"set on the model's {name!r}"
    # the loaders' generators, and a datamodule's, whose loaders the fit below builds and draws from
    generators = loader_generators([train_dataloaders, val_dataloaders]) + attribute_generators(datamodule)
    rng = RngState.capture(generators)
    trained_before = int(trainer.global_step)
    trainer.callbacks.append(finder)
    try:
        trainer.fit(model, train_dataloaders, val_dataloaders, datamodule)
    finally:
        trainer.callbacks.remove(finder)
        rng.restore()
    result = finder.result
    if result is None:
        raise RuntimeError(_no_sweep_reason(trainer, trained_before))
    if apply and result.chosen_lr is not None:
        name = _lr_attribute(model, attr_name)
        reference = finder._swept_from or result.chosen_lr
        if _has_attribute(model, name):
            setattr(model, name, _applied(getattr(model, name), reference, result.chosen_lr))
        hparams = getattr(model, "hparams", None)
        if hparams is not None and name in hparams:
            hparams[name] = _applied(hparams[name], reference, result.chosen_lr)
        _scale_peak_overrides(trainer, result.chosen_lr)
    return result


def _applied(value: Any, reference: float, answer: float) -> Any:
    """The LR attribute's new value: ``answer`` where it held the reference group's LR; where it drives another
    group (a head at ``lr`` over a backbone at ``lr / 100``, the reference), scaled as the sweep scaled that group."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return answer
    if math.isclose(value, reference, rel_tol=1e-9):
        return answer
    return value * (answer / reference)


def _swa_drives(trainer: Any) -> bool:
    """``LRSchedule`` has handed the LR over to ``StochasticWeightAveraging``: an answer would not reach the groups
    (before, the finder said "applied", and took SWA's LR in as the schedule's new peak)."""
    schedule = find_lr_schedule(trainer)
    return schedule is not None and bool(schedule._handed_over)


def _scale_peak_overrides(trainer: Any, answer: float) -> None:
    """Keep ``LRSchedule(peak_lrs=...)``'s groups at the ratio to the reference group that the sweep measured
    them at, as the callback does: the next fit resolves the overrides again, absolute, while the reference group
    follows the model's LR attribute."""
    schedule = schedule_callback(trainer)  # as the finished fit left it (find_lr_schedule would set it up again)
    if schedule is not None and schedule.peak_lrs:
        schedule._scale_peak_overrides(answer / schedule.peak_lrs[0][0])  # over the reference's peak in the sweep


def _has_attribute(model: Any, name: str) -> bool:
    return name in vars(model) or (hasattr(type(model), name) and not callable(getattr(type(model), name)))


def _lr_attribute(model: Any, attr_name: str | None) -> str:
    """The model attribute or ``hparams`` key holding the LR (both are set when both exist)."""
    names = [attr_name] if attr_name else ["lr", "learning_rate"]
    hparams = getattr(model, "hparams", None)
    for name in names:
        if _has_attribute(model, name) or (hparams is not None and name in hparams):
            return name
    raise ValueError(
        f"find_lr(apply=True) sets the LR on the model, but it has no attribute or hparams key "
        f"{' or '.join(map(repr, names))}; pass attr_name= the one configure_optimizers reads, or apply=False"
    )


def _probe_flags(probe: Probe | None) -> tuple[str, ...]:
    return () if probe is None else probe_flags([a.hold for a in probe.attempts])


def _optimizer_peaks(trainer: Any) -> list[list[float]]:
    return [[as_float(g.get("initial_lr", g["lr"])) for g in o.param_groups] for o in trainer.optimizers]


def _progress_enabled(trainer: Any) -> bool:
    bar = trainer.progress_bar_callback
    return bar is not None and bool(getattr(bar, "is_enabled", True))


def _progress_bar(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="LRFinder", leave=False, dynamic_ncols=True, file=sys.stderr)


def _warn_epochs_past_the_run(trainer: Any, epochs: Sequence[int]) -> None:
    """Warn, at fit start, of listed epochs the fit never starts: past ``max_epochs``, or past the epoch in which
    ``max_steps`` ends the run (epoch ``e`` starts when fewer than ``max_steps`` optimizer steps came before it).

    Before, only ``max_epochs`` was checked: ``epochs=[3]`` with ``max_steps=16`` at 8 steps an epoch ended the run
    in epoch 1, and the finder never ran at epoch 3, without a word."""
    limits: list[tuple[int, str, str]] = []  # (the last epoch that starts, the run's length, the fix)
    if trainer.max_epochs is not None and trainer.max_epochs >= 0:
        limits.append((trainer.max_epochs - 1, f"max_epochs={trainer.max_epochs}", "max_epochs"))
    batches, max_steps = trainer.num_training_batches, int(trainer.max_steps)
    if max_steps >= 0 and batches is not None and not math.isinf(batches) and batches > 0:
        before = 0  # the optimizer steps before epoch e
        for e in range(max(epochs) + 1):
            if before >= max_steps:
                lengths = {math.ceil(int(batches) / accumulation(trainer, k)) for k in range(e)}
                per_epoch = lengths.pop() if len(lengths) == 1 else None
                each = f" at {per_epoch} steps an epoch" if per_epoch is not None else ""
                limits.append((e - 1, f"max_steps={max_steps}{each}", "max_steps"))
                break
            before += math.ceil(int(batches) / accumulation(trainer, e))
    if not limits:
        return
    last, length, fix = min(limits)
    beyond = [e for e in epochs if e > last]
    if beyond:
        warnings.warn(
            f"LRFinder: epochs {beyond} are past the run's last epoch ({last}, {length}): the finder never runs at "
            f"them; give epochs within the run (at most {last}), or raise {fix}",
            UserWarning,
            stacklevel=3,
        )


def _check_epochs(epochs: Sequence[int]) -> tuple[int, ...]:
    if isinstance(epochs, (str, bytes)) or not isinstance(epochs, Sequence):
        raise TypeError(f"LRFinder: `epochs` must be a list of epoch numbers such as [3, 6], got {epochs!r}")
    return tuple(sorted({check_int(f"epochs[{i}]", e, low=0, owner=_OWNER) for i, e in enumerate(epochs)}))


def _duration(name: str, value: Duration | str) -> Duration:
    """``value`` parsed as a duration, its error naming the finder."""
    try:
        return parse_duration(value, name)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{_OWNER}: {error}") from None


def _check_distinct_lrs(min_lr: float, max_lr: float, steps: int, mode: str) -> None:
    """Refuse a range so narrow that the sweep's ``steps`` LRs cannot be told apart: neighbours closer than
    :data:`MIN_LR_GAP` (relative), while each LR is kept to 15 significant digits. Before,
    ``LRFinder(min_lr=0.01, max_lr=0.01 * (1 + 1e-15))`` was taken, swept, and the fit then failed in the analysis
    with "`lrs` must be strictly increasing", which named neither LRFinder's arguments nor the fix.

    Raises:
        ValueError: naming the range, the gap and the fix.
    """
    if mode == "linear":  # the smallest gap, relative to the LR, is the last one
        gap = (max_lr - min_lr) / (steps - 1) / max_lr
    else:
        gap = math.expm1(math.log(max_lr / min_lr) / (steps - 1))
    if gap < MIN_LR_GAP:
        raise ValueError(
            f"{_OWNER}: from min_lr={min_lr!r} to max_lr={max_lr!r} the sweep's {steps} steps are {gap:.2g} apart "
            f"(relative), below {MIN_LR_GAP:g}: an LR is kept to 15 significant digits, so steps would repeat one, "
            "and the curve needs a new LR at each step; a range test spans decades: widen the range "
            f"(e.g. max_lr={min_lr * 1e3:g}){', or give fewer num_steps' if steps > MIN_POINTS else ''}"
        )


MIN_LR_GAP = 1e-13
"""The smallest relative gap between the sweep's neighbouring LRs: each is kept to 15 significant digits
(:func:`~lr_callbacks.finder.ramp.sweep_lrs`), so closer ones could round to the same LR."""


LINEAR_SPAN = 100.0
"""The widest range, as max_lr / min_lr, that a linear ramp may cover: past it, nearly all its steps fall in the
last decade and the analysis (on a log axis) has too few points below it."""


def _is_zero(length: Duration) -> bool:
    """Whether ``length`` is nothing, whatever the run: 0 steps, 0 epochs or 0% of it."""
    return any(getattr(length, unit, None) == 0 for unit in ("steps", "epochs", "fraction"))


def _no_sweep_reason(trainer: Any, trained_before: int) -> str:
    """Why :func:`find_lr`'s fit ran no sweep, from what can be told: a trainer that has trained already goes on
    from where it stopped (at ``max_steps`` or ``max_epochs``, with nothing left to train); a fit set up to train
    nothing; a strategy that runs the fit in other processes (only where there are others)."""
    if trained_before:
        return (
            f"find_lr: no sweep ran: this trainer has trained already (global_step={trained_before}, "
            f"max_steps={trainer.max_steps}, max_epochs={trainer.max_epochs}), and a fit on it goes on from where "
            "it stopped, with nothing left to train; run find_lr with a new Trainer, before training"
        )
    reason = (
        "find_lr: no sweep ran in this process: the fit ended before training started (limit_train_batches=0, "
        "max_steps=0 or max_epochs=0?)"
    )
    if int(trainer.world_size) > 1 or getattr(trainer.strategy, "launcher", None) is not None:
        reason += (
            f", or the strategy ({type(trainer.strategy).__name__}) ran the fit in other processes, from which the "
            "result cannot come back: use strategy='ddp', or the LRFinder callback"
        )
    return reason


def _check_confirm(confirm: bool | Sequence[float]) -> bool | tuple[float, ...]:
    if isinstance(confirm, bool):
        return confirm
    if isinstance(confirm, (str, bytes)) or not isinstance(confirm, Sequence):
        raise TypeError(
            f"LRFinder: `confirm` must be True/False or a list of LRs such as [1e-4, 1e-5], got {confirm!r}"
        )
    values = tuple(
        check_number(f"confirm[{i}]", v, low=0.0, low_open=True, owner=_OWNER) for i, v in enumerate(confirm)
    )
    if len(values) < 2:
        raise ValueError(f"LRFinder: `confirm` needs at least two LRs to compare, got {list(confirm)!r}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(
            f"LRFinder: `confirm` lists {', '.join(map(repr, repeated))} more than once ({list(confirm)!r}): each "
            "trial of a repeated LR would be the same run, and comparing it with itself wastes the budget; list "
            "each LR once"
        )
    return values
