"""The three callbacks under FSDP2: Lightning's ``ModelParallelStrategy`` (data-parallel size 2, tensor-parallel
size 1) on 2 CPU processes with gloo, ``fully_shard`` applied in ``configure_model``.

Each test starts ``fsdp2_worker.py`` (rank 0; Lightning's launcher starts rank 1), which writes per rank what its
callbacks did and the whole weights at the end. The reference is the same model, data and callbacks in one
unsharded process, each of its batches the two ranks' batches together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from lr_callbacks import Cosine, DivergenceWatchdog, FinderResult, LRFinder
from tests.helpers import make_trainer
from tests.integration import fsdp2_worker as worker

ROOT = Path(__file__).resolve().parents[2]


def launch(scenario: str, out: Path) -> str:
    """Run ``scenario`` of ``fsdp2_worker.py`` on 2 FSDP2 ranks; its output, after checking that it exited cleanly."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    command = [sys.executable, "-m", "tests.integration.fsdp2_worker", scenario, str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    # The worker destroys its process group after the fit, so no gloo thread is left to abort the interpreter's
    # exit (``DestroyProcessGroupAtExit`` in tests/helpers.py says why).
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, output
    return output


def run_sharded(scenario: str, out: Path) -> list[dict[str, Any]]:
    """Run ``scenario`` on 2 FSDP2 ranks; their records, after checking that both wrote one."""
    output = launch(scenario, out)
    files = [out / f"rank{rank}.json" for rank in (0, 1)]
    assert all(f.exists() for f in files), output  # both ranks finished the fit (each writes at train end)
    return [json.loads(f.read_text()) for f in files]


def test_the_three_callbacks_together_agree_on_every_rank_and_follow_the_unsharded_run(tmp_path: Path) -> None:
    ranks = run_sharded("together", tmp_path / "sharded")
    assert [r["sharded"] for r in ranks] == [True, True]  # the parameters really were DTensors
    assert ranks[0] == ranks[1]  # same finder answer, LRs, decisions, scale and whole weights on both ranks
    sharded = ranks[0]
    assert sharded["finite"] and sharded["steps"] == worker.STEPS
    # the finder's restore is exact on each rank: its own shards bit for bit, no optimizer state, no gradients
    assert [r["restored"] for r in ranks] == [{"shards": True, "optimizer_state": 0, "grads": 0}] * 2
    # the watchdog's update ratio of a large group, read on a sample of each rank's shards (a fifth of them, no
    # copy of the whole shards) and summed over the ranks: the same on both, and the whole update's to sampling error
    probe = sharded["probe"]
    assert probe["copied"] <= probe["local"] // 4
    assert probe["sampled"] == pytest.approx(probe["exact"], rel=0.05)

    # the reference: one unsharded process, batches of 32 (the two ranks' 16 each), the same callbacks and faults
    callbacks = worker.together_callbacks()
    finder = next(c for c in callbacks if isinstance(c, LRFinder))
    watchdog = next(c for c in callbacks if isinstance(c, DivergenceWatchdog))
    model = worker.ValidatedDigits(optimizer="sgd", lr=0.1, faults=worker.TOGETHER_FAULTS)
    trainer = make_trainer(tmp_path / "single", max_steps=worker.STEPS, logger=False, callbacks=callbacks)
    trainer.fit(model, DataLoader(worker.data(), batch_size=2 * worker.BATCH), worker.val_loader())
    assert finder.result is not None

    # the finder: the loss averaged over the ranks and the norm of the whole gradient from the shards are the
    # unsharded run's, up to float error; so is the answer
    result = sharded["finder"]
    assert result["suggestion"] == pytest.approx(finder.result.suggestion, rel=1e-9)
    assert result["losses"] == pytest.approx(list(finder.result.losses), rel=1e-5)
    assert result["grad_norms"] == pytest.approx(list(finder.result.grad_norms), rel=1e-5)
    # confirm mode: each trial from the same restored shards, judged on the validation loss (both ranks' data)
    trials = [(t["lr"], t["val_loss"]) for t in result["trials"]]
    assert trials == [(t.lr, pytest.approx(t.val_loss, rel=1e-5)) for t in finder.result.trials]
    assert len(trials) == 2 and FinderResult.from_dict(result).chosen_lr == finder.result.chosen_lr
    # the LR of every step (the sweep's, then the schedule's with the watchdog's scale)
    assert sharded["lrs"] == pytest.approx(model.seen_lrs, rel=1e-9)
    # the watchdog: the same incidents at the same steps, the same scale. The six spikes are a bad batch's (the
    # weights are clean on the reference batch, evaluated on the shards): skipped, no rollback, no LR cut
    events = [[e.step, e.signal.value, e.action.value] for e in watchdog.events]
    assert [e[:3] for e in sharded["events"]] == events
    assert [30, "non_finite", "skip"] in events
    spikes = [e for e in events if 45 <= e[0] <= 50]
    assert {e[0] for e in spikes} == set(range(45, 51)) and all(e[2] == "skip" for e in spikes), events
    assert not any(e[2] in ("rollback", "lower_lr", "halt") for e in events), events
    assert sharded["scale"] == watchdog.scale == 1.0
    single = {name: p.detach().flatten().tolist() for name, p in model.named_parameters()}
    assert sharded["weights"].keys() == single.keys()
    for name, values in single.items():
        assert sharded["weights"][name] == pytest.approx(values, rel=1e-4, abs=1e-5), name


def load_distributed(path: Path) -> dict[str, Any]:
    """A distributed checkpoint (a directory of shards) as one whole state, read without a process group."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    assert path.is_dir() and (path / ".metadata").exists() and (path / "meta.pt").exists()
    whole = path.with_name(path.name + ".pt")
    dcp_to_torch_save(path, whole)
    state: dict[str, Any] = torch.load(whole, weights_only=False)
    return state


@pytest.mark.parametrize("snapshot", ["host", "disk"])
def test_a_fault_on_one_rank_halts_both_at_the_same_step_with_a_distributed_checkpoint(
    tmp_path: Path, snapshot: str
) -> None:
    """With ``snapshot="disk"`` each rank keeps its shards in a file of its own; before, the strategy wrote a
    distributed checkpoint (a folder) that the first rollback could not read (``IsADirectoryError``)."""
    ranks = run_sharded("halt" if snapshot == "host" else "halt-disk", tmp_path)
    assert not (tmp_path / "watchdog-snapshots").exists()  # the files and the folders made for them are gone
    assert ranks[0] == ranks[1]  # rank 1's faults decided on both: same incidents, same stop, same weights
    record = ranks[0]
    events = [tuple(e[:3]) for e in record["events"]]
    assert events[0] == (15, "non_finite", "skip")
    assert [action for _, _, action in events].count("rollback") == 1
    assert events[-1][2] == "halt" and record["halt_reason"] and record["finite"]
    assert record["steps"] == events[-1][0] + 1 < worker.STEPS  # both stopped right after the halting step

    # the halt checkpoint went through the strategy's distributed checkpointing: a directory of shards, holding
    # the last good state, which the run also ends with (restored on both ranks, no update after the halt)
    saved = load_distributed(Path(record["halt_path"]))
    for name, values in record["weights"].items():
        assert saved["state_dict"][name].flatten().tolist() == values, name
    momentum = saved["optimizer_0"]["state"]
    assert len(momentum) == 4 and all(bool(torch.isfinite(s["momentum_buffer"]).all()) for s in momentum.values())

    # a checkpoint written while the first incident was open (after step 26) holds the same clean snapshot,
    # each rank's shards of weights and of the optimizer's state, not the live ones
    during = load_distributed(tmp_path / "during" / "epoch=0-step=27.ckpt")
    for name, values in record["weights"].items():
        assert during["state_dict"][name].flatten().tolist() == values, name
    for name, state in momentum.items():
        assert torch.equal(during["optimizer_0"]["state"][name]["momentum_buffer"], state["momentum_buffer"]), name
    meta = torch.load(tmp_path / "during" / "epoch=0-step=27.ckpt" / "meta.pt", weights_only=False)
    own = next(state for key, state in meta["callbacks"].items() if key.startswith("DivergenceWatchdog"))
    assert own["live"] is None  # the live shards are not kept (rank 0 alone writes this file)

    # and a fit resumed from it (in the same processes) starts at its step from those weights on both ranks
    resumed = [json.loads((tmp_path / f"resumed{rank}.json").read_text()) for rank in (0, 1)]
    assert resumed[0] == resumed[1] and resumed[0]["step"] == 27
    assert resumed[0]["weights"] == record["weights"]


def test_a_resume_after_the_strategys_set_up_restores_the_callbacks_as_on_one_device(tmp_path: Path) -> None:
    # ModelParallelStrategy restores the callbacks' state after on_fit_start, where LRSchedule sets up its plan
    launch("resume", tmp_path)
    full, resumed = (
        [json.loads((tmp_path / f"{name}{r}.json").read_text()) for r in (0, 1)] for name in ("full", "resumed")
    )
    assert full[0] == full[1] and resumed[0] == resumed[1]
    planned = [0.1 * Cosine()(k, total_steps=20) * (0.5 if k >= 5 else 1.0) for k in range(20)]
    assert full[0] == pytest.approx(planned, rel=1e-9)  # halved from step 5
    assert resumed[0] == pytest.approx(full[0][10:], rel=1e-12)  # steps 10-19 at the scale the checkpoint held

    # and where the watchdog resolved its settings against the run: the resumed fit's (12 steps, snapshot_every=5,
    # max_data_skips=7, recover_after 50% of it, snapshot="off": no rollback), as on one device or under DDP, not
    # the checkpoint's 6-step fit's (2, 3, 3 steps, rollbacks). Before, the loaded state kept the checkpoint's
    settings = [json.loads((tmp_path / f"settings{r}.json").read_text()) for r in (0, 1)]
    assert settings[0] == settings[1]
    assert settings[0] == {
        "step": 3,
        "snapshot_every": 5,
        "recover_steps": 6,
        "data_budget": 7,
        "can_roll_back": False,
    }

    # an LRSchedule added on resume says that its plan moves the LR from the checkpoint's (0.1, the SGD's own) to
    # cosine's at step 3 of 12 (0.08536), once (rank 0), as on one device. Before, nothing was said: the distributed
    # checkpoint's optimizer states are loaded in place, and the hook that read their LRs got none
    said = [json.loads((tmp_path / f"said{r}.json").read_text()) for r in (0, 1)]
    resumed_without = [m for m in said[0] if "from a checkpoint written without LRSchedule" in m]
    assert len(resumed_without) == 1 and "LR 0.1 there" in resumed_without[0] and "0.08536" in resumed_without[0]
    assert said[1] == []
