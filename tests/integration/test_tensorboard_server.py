"""TensorBoard for real: a ``tensorboard`` server on localhost serves what the callbacks logged.

The test trains a run with the callbacks, starts the ``tensorboard`` program that ships with the package's
dependencies (``--logdir <run> --host 127.0.0.1 --port <free port>``), waits until it has loaded the run,
and reads the scalars, images and text back through TensorBoard's HTTP API, the one its web page uses.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lr_callbacks import DivergenceWatchdog, LRFinder, LRSchedule
from tests.helpers import TinyModel, loader, make_trainer, read_events, read_scalars

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY_TIMEOUT = 90.0  # seconds: a cold start imports a lot on a busy machine
SPIKE = 11  # the training step whose loss spikes (the finder's sweep, before it, has steps 0-9)


def tensorboard_program() -> str:
    """The ``tensorboard`` program beside this Python (the venv's), else the one on ``PATH``."""
    beside = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    found = beside if os.path.exists(beside) else shutil.which("tensorboard")
    if found is None:
        raise RuntimeError("the `tensorboard` program is not installed (pip install tensorboard)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A running ``tensorboard`` process and its HTTP API (``flags``: more of its command-line flags)."""

    def __init__(self, logdir: str, log_path: str, flags: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log = open(log_path, "w+b")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [tensorboard_program(), "--logdir", logdir, "--host", "127.0.0.1", "--port", str(self.port), *flags],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def get(self, path: str, **query: Any) -> bytes:
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return bytes(response.read())

    def json(self, path: str, **query: Any) -> Any:
        return json.loads(self.get(path, **query))

    def wait_for(self, ready: Any, timeout: float = READY_TIMEOUT) -> None:
        """Poll until ``ready(self)`` is true; fail with the server's output if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.process.returncode}:\n{self.output()}")
            try:
                if ready(self):
                    return
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass  # not listening yet, or still loading
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensorboard was not ready after {timeout:g} s:\n{self.output()}")
            time.sleep(0.25)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, dict[str, Any], str]]:
    """A run trained with the callbacks, and a tensorboard server over it: ``(server, run, callbacks, root)``.

    One server for the module's tests: starting it is the slow part.
    """
    tmp_path = tmp_path_factory.mktemp("tensorboard")
    torch.manual_seed(0)  # module-scoped: set up before the per-test seeding of conftest.py
    root = str(tmp_path / "logs")
    callbacks = {
        "finder": LRFinder(min_lr=1e-4, max_lr=1.0, num_steps=10),
        "schedule": LRSchedule("cosine", warmup="3 steps", end=0.1),
        "watchdog": DivergenceWatchdog(warmup_steps=4, window=8, log_every_n_steps=1),
    }
    trainer = make_trainer(root, max_steps=12, callbacks=list(callbacks.values()))
    trainer.fit(TinyModel(loss_hook=lambda step, loss: loss * 1e6 if step == SPIKE else loss), loader())
    run = os.path.relpath(trainer.logger.log_dir, root)
    server = Server(root, str(tmp_path / "tensorboard.log"))
    images = ("lr_schedule/plan", "lr_finder/curve")
    try:
        server.wait_for(
            lambda s: (
                set(images) <= set(s.json("/data/plugin/images/tags").get(run, {}))
                and "watchdog/events/text_summary" in s.json("/data/plugin/text/tags").get(run, [])
            )
        )
        yield server, run, callbacks, root
    finally:
        server.stop()
    assert server.process.returncode is not None  # the server is gone


def served_image(server: Server, run: str, tag: str) -> np.ndarray:
    (image,) = server.json("/data/plugin/images/images", run=run, tag=tag, sample=0)
    return np.asarray(Image.open(io.BytesIO(server.get("/data/plugin/images/individualImage?" + image["query"]))))


def logged_image(root: str, tag: str) -> np.ndarray:
    (image,) = read_events(root).Images(tag)
    return np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))


def served_text(server: Server, run: str, tag: str) -> str:
    assert f"{tag}/text_summary" in server.json("/data/plugin/text/tags")[run]
    (text,) = server.json("/data/plugin/text/text", run=run, tag=f"{tag}/text_summary")
    return str(text["text"])


def test_tensorboard_serves_the_schedule_scalars_plan_and_summary(served_run) -> None:
    server, run, callbacks, root = served_run
    schedule = callbacks["schedule"]
    assert server.json("/data/runs") == [run]

    assert {"lr/body", "lr/head"} <= set(server.json("/data/plugin/scalars/tags")[run])
    served = server.json("/data/plugin/scalars/scalars", run=run, tag="lr/body")
    assert [step for _, step, _ in served] == list(range(12))
    assert [lr for _, _, lr in served] == pytest.approx([schedule.lr_at(k) for k in range(12)], rel=1e-6)
    assert [(s, v) for _, s, v in served] == read_scalars(root, "lr/body")

    shown = served_image(server, run, "lr_schedule/plan")
    assert np.array_equal(shown, logged_image(root, "lr_schedule/plan"))
    assert shown.shape[0] > 100 and shown.std() > 10  # a drawing, not a blank image

    text = served_text(server, run, "lr_schedule/summary")
    assert "Run: 12 optimizer steps." in text and "<th>body</th>" in text


def test_tensorboard_serves_the_finder_sweep_curve_and_summary(served_run) -> None:
    server, run, callbacks, root = served_run
    result = callbacks["finder"].result
    assert {"lr_finder/loss", "lr_finder/lr", "lr_finder/suggestion"} <= set(
        server.json("/data/plugin/scalars/tags")[run]
    )
    lrs = server.json("/data/plugin/scalars/scalars", run=run, tag="lr_finder/lr")
    assert [lr for _, _, lr in lrs] == pytest.approx(result.lrs, rel=1e-6)
    losses = server.json("/data/plugin/scalars/scalars", run=run, tag="lr_finder/loss")
    assert [loss for _, _, loss in losses] == pytest.approx(result.losses, rel=1e-6)
    (suggestion,) = server.json("/data/plugin/scalars/scalars", run=run, tag="lr_finder/suggestion")
    assert suggestion[2] == pytest.approx(result.suggestion, rel=1e-6)

    shown = served_image(server, run, "lr_finder/curve")
    assert np.array_equal(shown, logged_image(root, "lr_finder/curve"))
    assert shown.shape[0] > 100 and shown.std() > 10
    assert "LR finder" in served_text(server, run, "lr_finder/summary")


def test_the_schedule_summary_shows_the_peak_the_finder_chose(served_run) -> None:
    server, run, callbacks, _ = served_run
    text = served_text(server, run, "lr_schedule/summary")
    assert f"<td>{callbacks['schedule'].lr_at(3):.4g}</td>" in text


def test_tensorboard_serves_the_watchdog_statistics_and_events(served_run) -> None:
    server, run, callbacks, _ = served_run
    watchdog = callbacks["watchdog"]
    assert {(i.step, i.action) for i in watchdog.events} == {(SPIKE, "skip")}
    scalars = set(server.json("/data/plugin/scalars/tags")[run])
    assert {"watchdog/loss", "watchdog/grad_norm", "watchdog/loss_z", "watchdog/lr_scale", "watchdog/cusum"} <= scalars
    losses = server.json("/data/plugin/scalars/scalars", run=run, tag="watchdog/loss")
    assert [step for _, step, _ in losses] == list(range(12))
    assert max(losses, key=lambda row: row[2])[1] == SPIKE
    assert {lr for _, _, lr in server.json("/data/plugin/scalars/scalars", run=run, tag="watchdog/lr_scale")} == {1.0}
    text = served_text(server, run, "watchdog/events")
    assert f"<td>{SPIKE}</td>" in text and "<td>skip</td>" in text


def test_the_documented_tensorboard_command_serves_every_watchdog_event(served_run, tmp_path) -> None:
    """``docs/tensorboard.md``'s command, with its ``--samples_per_plugin``, serves every text entry. It passed
    ``text=0``, which TensorBoard's help calls "keep all" but which serves none (tensorflow/tensorboard#5550): the
    Text tab was empty, the watchdog's incidents with it."""
    _, run, callbacks, root = served_run
    with open(os.path.join(ROOT, "docs", "tensorboard.md"), encoding="utf-8") as file:
        (sampling,) = re.findall(r"^tensorboard --logdir \S+ (--samples_per_plugin \S+)", file.read(), re.MULTILINE)
    server = Server(root, str(tmp_path / "tensorboard.log"), tuple(sampling.split()))
    try:
        # the run is loaded once its last scalar is served (the text tags are listed before their entries)
        server.wait_for(lambda s: len(s.json("/data/plugin/scalars/scalars", run=run, tag="watchdog/loss")) == 12)
        served = server.json("/data/plugin/text/text", run=run, tag="watchdog/events/text_summary")
    finally:
        server.stop()
    rows = sum(entry["text"].count(f"<td>{SPIKE}</td>") for entry in served)
    assert rows == len(callbacks["watchdog"].events) > 0


def documented_tags() -> list[re.Pattern[str]]:
    """The tags in ``docs/tensorboard.md``'s tables, as patterns: ``<group>`` is one path part, ``...`` any."""
    with open(os.path.join(ROOT, "docs", "tensorboard.md"), encoding="utf-8") as file:
        cells = [line.split("|")[1] for line in file if line.startswith("| `")]
    tags = [tag for cell in cells for tag in re.findall(r"`([^`]+)`", cell)]
    return [re.compile(re.sub(r"<[^>]+>", "[^/]+", re.escape(t).replace(r"\.\.\.", ".+")) + "$") for t in tags]


def test_every_served_tag_is_documented(served_run) -> None:
    server, run, _, _ = served_run
    served = set(server.json("/data/plugin/scalars/tags")[run]) | set(server.json("/data/plugin/images/tags")[run])
    served |= {tag.removesuffix("/text_summary") for tag in server.json("/data/plugin/text/tags")[run]}
    patterns = documented_tags()
    undocumented = sorted(tag for tag in served if not any(p.match(tag) for p in patterns))
    assert undocumented == [], "add these tags to docs/tensorboard.md"
    assert len(served) >= 10
