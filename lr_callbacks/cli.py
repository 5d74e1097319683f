"""The ``python -m lr_callbacks`` command line: preview a schedule before training.

``plot`` draws a schedule as the same image that :class:`~lr_callbacks.LRSchedule` writes to
TensorBoard as ``lr_schedule/plan`` at fit start, and prints the same table of key steps as its
``lr_schedule/summary``. A preset is named with its arguments as options, in the units the callback takes::

    python -m lr_callbacks plot cosine --steps 1000 --warmup 5% --end 0.1 -o plan.png
    python -m lr_callbacks plot wsd --steps 20000 --warmup "500 steps" --decay 20% --peak-lr 3e-4
    python -m lr_callbacks plot step --epochs 30 --steps-per-epoch 390 --every "10 epochs" --gamma 0.1
    python -m lr_callbacks plot --transformers cosine --num-warmup-steps 100 --steps 1000
    python -m lr_callbacks plot --config config.yaml --peak-lr 3e-4   # the LRSchedule of a LightningCLI config
    python -m lr_callbacks plot cosine --help        # the preset's own arguments and their defaults
    python -m lr_callbacks presets                   # every preset and its arguments

Option values are read as: ``none``, ``true``/``false``, numbers, comma-separated lists (``--momentum
0.85,0.95``, ``--milestones "10 epochs,20 epochs"``), otherwise strings. ``--peak-lr`` takes one LR, or a
``name=lr`` per parameter group (repeat it) to see the groups together, as LRSchedule shows them. ``-o``
writes a new file: an existing one is kept unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import inspect
import io
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from lr_callbacks.core.durations import Epochs, Run
from lr_callbacks.schedule.plan import by_schedule, plan_image, plan_table, plan_tables, sample_steps
from lr_callbacks.schedule.presets import PRESETS, preset
from lr_callbacks.schedule.shapes import Schedule
from lr_callbacks.schedule.transformers import TRANSFORMERS_ARGUMENTS, TransformersSchedule

__all__ = ["main"]

_PROG = "python -m lr_callbacks"


class UsageError(Exception):
    """A mistake in the command line; ``main`` prints it after the usage and exits with status 2."""


def parse_value(text: str) -> Any:
    """Read an option's value: ``none``, a bool, a number, a comma-separated list, else the string itself.

    >>> parse_value("5%"), parse_value("0.1"), parse_value("3"), parse_value("none"), parse_value("true")
    ('5%', 0.1, 3, None, True)
    >>> parse_value("0.85,0.95"), parse_value("10 epochs,20 epochs")
    ((0.85, 0.95), ('10 epochs', '20 epochs'))
    """
    if "," in text:
        return tuple(parse_value(part.strip()) for part in text.split(",") if part.strip())
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _as_tuple(text: str) -> Any:
    """For an argument that takes a list: one value is a list of one (``--milestones "10 epochs"``)."""
    value = parse_value(text)
    return value if isinstance(value, tuple) or value is None else (value,)


def parse_peak_lrs(values: Sequence[str] | None) -> dict[str, float]:
    """``--peak-lr`` values to ``{group: lr}``: one bare LR names the group ``group0``, as LRSchedule does.

    >>> parse_peak_lrs(None), parse_peak_lrs(["3e-4"]), parse_peak_lrs(["body=0.1", "head=0.01"])
    ({'group0': 1.0}, {'group0': 0.0003}, {'body': 0.1, 'head': 0.01})

    Raises:
        UsageError: for a value that is not an LR > 0, a name that is empty or holds ``,`` (one ``--peak-lr``
            per group), a name given twice, or a bare LR beside named ones.
    """
    if not values:
        return {"group0": 1.0}
    peaks: dict[str, float] = {}
    for value in values:
        name, equals, number = value.partition("=")
        if not equals:
            name, number = "", value
        elif not name.strip() or "=" in number or "," in name:
            raise UsageError(
                f"--peak-lr: {value!r} is not one name=lr; repeat --peak-lr for each group, e.g. "
                "--peak-lr body=0.1 --peak-lr head=0.01"
            )
        if (not name and len(values) > 1) or name in peaks:
            raise UsageError(
                f"--peak-lr: give one LR, or one name=lr per parameter group with distinct names; got {list(values)}"
            )
        try:
            lr = float(number)
        except ValueError:
            raise UsageError(f"--peak-lr: {value!r} is not an LR; write e.g. --peak-lr 3e-4 or body=0.1") from None
        if not 0 < lr < math.inf:
            raise UsageError(f"--peak-lr must be a finite LR > 0, got {value!r}")
        peaks[name or "group0"] = lr
    return peaks


def _whole_number(text: str) -> int:
    """A count of steps as typed: ``1000``, or ``1e3`` as a duration takes ``'1e3 steps'`` (``int`` refused it as
    "invalid int value" without the fix).

    >>> _whole_number("1e3"), _whole_number(" 20 "), _whole_number("-5")
    (1000, 20, -5)

    Raises:
        argparse.ArgumentTypeError: for a value that is not a whole number (argparse names the option).
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not number.is_integer():
        raise argparse.ArgumentTypeError(f"must be a whole number of optimizer steps, got {text!r}; e.g. 1000 or 1e3")
    return int(number)


def _option_help(default: Any) -> str:
    text = f"default: {default!r}" if default is not inspect.Parameter.empty else "required"
    return text.replace("%", "%%")  # argparse formats help strings with %


def _schedule_options(parser: argparse.ArgumentParser, schedule: str | None, transformers: str | None) -> None:
    """Add the chosen preset's (or transformers scheduler's) own arguments as ``--name`` options."""
    if schedule is not None and schedule in PRESETS:
        group = parser.add_argument_group(f"arguments of the {schedule!r} preset")
        for name, parameter in inspect.signature(PRESETS[schedule]).parameters.items():
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
            kind = _as_tuple if isinstance(parameter.default, tuple) else parse_value
            group.add_argument(
                *flags,
                dest=f"arg_{name}",
                metavar="VALUE",
                type=kind,
                default=argparse.SUPPRESS,  # not given: the preset's default; a typed `none` is passed on
                help=_option_help(parameter.default),
            )
    elif transformers is not None and transformers in TRANSFORMERS_ARGUMENTS:
        group = parser.add_argument_group(f"arguments of transformers' {transformers!r} scheduler")
        arguments = {"num_warmup_steps": 0, **TRANSFORMERS_ARGUMENTS[transformers]}
        for name, default in arguments.items():
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
            group.add_argument(
                *flags,
                dest=f"arg_{name}",
                metavar="VALUE",
                type=parse_value,
                default=argparse.SUPPRESS,
                help=_option_help(default),
            )


_PLOT_USAGE = (
    f"{_PROG} plot SCHEDULE [options]\n       {_PROG} plot --transformers NAME [options]\n"
    f"       {_PROG} plot --config YAML [options]"
)


def _plot_parser(schedule: str | None = None, transformers: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{_PROG} plot",
        usage=_PLOT_USAGE,
        description="Draw a schedule before training, as LRSchedule's lr_schedule/plan image, and print "
        "the LR at its key steps.",
        epilog=f"presets: {', '.join(PRESETS)}. transformers names: {', '.join(TRANSFORMERS_ARGUMENTS)}. "
        f"Give a preset to see its arguments: {_PROG} plot cosine --help",
    )
    parser.add_argument("schedule", nargs="?", help="a preset name (see `presets`)")
    parser.add_argument("--transformers", metavar="NAME", help="a transformers scheduler name, instead of a preset")
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="a LightningCLI config: plot the LRSchedule in its trainer.callbacks, as LightningCLI builds it; "
        "the run's length defaults to its trainer.max_steps (or max_epochs × --steps-per-epoch)",
    )
    parser.add_argument(
        "--steps", type=_whole_number, help="optimizer steps in the run (trainer.estimated_stepping_batches)"
    )
    parser.add_argument("--epochs", type=float, help="epochs in the run, with --steps-per-epoch, instead of --steps")
    parser.add_argument(
        "--steps-per-epoch", type=_whole_number, help="optimizer steps per epoch (for durations in epochs)"
    )
    parser.add_argument(
        "--peak-lr", action="append", metavar="LR|NAME=LR", help="the peak LR (default 1: the multiplier itself)"
    )
    parser.add_argument(
        "-o", "--output", metavar="PNG", help="write the plan image to this new PNG file (add --force to replace one)"
    )
    parser.add_argument("--force", action="store_true", help="let -o/--output overwrite an existing file")
    _schedule_options(parser, schedule, transformers)
    return parser


def build_schedule(args: argparse.Namespace) -> Schedule:
    """The schedule named on the command line, built with its arguments.

    Raises:
        UsageError: for no schedule or both forms, an unknown name, or an argument the schedule rejects.
    """
    kwargs = {k[len("arg_") :]: v for k, v in vars(args).items() if k.startswith("arg_")}  # the ones given
    given = 3 - [args.schedule, args.transformers, args.config].count(None)
    if given != 1:
        raise UsageError(
            "name one schedule: a preset (e.g. `plot cosine`), `--transformers NAME` or `--config YAML`"
            + (", not several" if given else "; none was given")
        )
    if args.schedule is not None and args.schedule not in PRESETS:
        raise UsageError(
            f"unknown preset {args.schedule!r}; choose one of: {', '.join(PRESETS)} "
            f"(`{_PROG} presets` lists their arguments)"
        )
    if args.transformers in TRANSFORMERS_ARGUMENTS:
        options = ["num_warmup_steps", *TRANSFORMERS_ARGUMENTS[args.transformers]]
    else:  # every argument of the preset: a message may name one not given (`end` or `gamma`, for exponential)
        options = list(inspect.signature(PRESETS[args.schedule]).parameters) if args.schedule in PRESETS else []
    try:
        if args.transformers is not None:
            if args.transformers not in TRANSFORMERS_ARGUMENTS:
                raise ValueError(
                    f"unknown transformers scheduler {args.transformers!r}; "
                    f"choose one of: {', '.join(TRANSFORMERS_ARGUMENTS)}"
                )
            warmup = kwargs.pop("num_warmup_steps", 0)
            return TransformersSchedule(args.transformers, warmup, tuple(sorted(kwargs.items())))
        return preset(args.schedule, **kwargs)
    except (ValueError, TypeError) as error:
        raise UsageError(_as_flags(str(error), options)) from None


def _as_flags(message: str, names: Sequence[str]) -> str:
    """The schedule's message with each of its arguments spelled as its option, as typed.

    >>> _as_flags("Cosine: `end` must be >= 0, got -1", ["end", "warmup"])
    'Cosine: --end must be >= 0, got -1'
    >>> _as_flags("wsd: unknown `decay_shape` 'square'", ["decay_shape"])
    "wsd: unknown --decay-shape 'square'"
    """
    for name in names:
        message = message.replace(f"`{name}`", f"--{name.replace('_', '-')}")
    return message


def build_run(args: argparse.Namespace, trainer: dict[str, Any] | None = None) -> Run:
    """The run's length from ``--steps``, or ``--epochs`` × ``--steps-per-epoch`` rounded up, as a duration of
    ``'<E> epochs'`` is.

    With a config's ``trainer`` section and neither option given, the length Lightning's
    ``estimated_stepping_batches`` gives: the shorter of its ``max_steps`` (if > 0) and its ``max_epochs`` ×
    ``--steps-per-epoch``, whichever of the two is known. With ``max_steps`` and ``max_epochs`` but no
    ``--steps-per-epoch``, ``max_steps`` is planned and a note on stderr says that the epochs may end the run sooner.

    Raises:
        UsageError: when the length is missing, given twice, or not positive, or the config's ``max_steps`` or
            ``max_epochs`` is not a number, or its ``max_epochs`` alone (no ``max_steps``) has no
            ``--steps-per-epoch``.
    """
    per_epoch = args.steps_per_epoch
    if trainer and args.steps is None and args.epochs is None:
        max_steps = _trainer_number(trainer, "max_steps", int)
        max_epochs = _trainer_number(trainer, "max_epochs", float)
        steps = max_steps if max_steps is not None and max_steps > 0 else None
        epochs = max_epochs if max_epochs is not None and max_epochs != -1 else None  # -1: no limit, as Lightning
        if epochs is not None and not 0 < epochs < math.inf:  # was reported as "--epochs must be ...", not typed
            raise UsageError(
                f"--config: trainer.max_epochs must be > 0 (or -1: no limit), got {max_epochs!r}; "
                "or give the run's length: --steps N"
            )
        if epochs is not None and steps is None and per_epoch is None:
            raise UsageError(
                f"--config: trainer.max_epochs ({epochs:g}) counts the run in epochs: give --steps-per-epoch M "
                "(optimizer steps per epoch) to count its steps, or the run's length: --steps N"
            )
        if epochs is not None and per_epoch is not None and (steps is None or epochs * per_epoch < steps):
            args.epochs = epochs
        elif steps is not None:
            args.steps = steps
            if epochs is not None:
                print(
                    f"note: planned trainer.max_steps ({steps}); trainer.max_epochs ({epochs:g}) may end the run "
                    "sooner: give --steps-per-epoch to plan the shorter of the two",
                    file=sys.stderr,
                )
    if per_epoch is not None and per_epoch < 1:
        raise UsageError(f"--steps-per-epoch must be >= 1, got {per_epoch}")
    if (args.steps is None) == (args.epochs is None):
        raise UsageError("give the run's length: --steps N, or --epochs E with --steps-per-epoch M (not both)")
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError(f"--steps must be >= 1, got {args.steps}")
        return Run(total_steps=args.steps, steps_per_epoch=per_epoch)
    if per_epoch is None:
        raise UsageError("--epochs needs --steps-per-epoch to count the run's optimizer steps")
    if not 0 < args.epochs < math.inf:
        raise UsageError(f"--epochs must be a finite number > 0, got {args.epochs:g}")
    epochs = Epochs(args.epochs).to_steps(Run(steps_per_epoch=per_epoch))  # as a duration of as many epochs
    return Run(total_steps=max(epochs, 1), steps_per_epoch=per_epoch)


def _trainer_number(trainer: dict[str, Any], key: str, kind: type[int] | type[float]) -> Any:
    """The config's ``trainer.<key>``, or None; refused unless it is a number of ``kind`` (an int is a float)."""
    value = trainer.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, kind)):
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"--config: trainer.{key} must be {what}, got {value!r}")
    return value


def plan_curves(
    schedules: dict[str, Schedule], run: Run, peaks: dict[str, float], points: int = 1000
) -> dict[str, tuple[list[int], list[float]]]:
    """Each group's planned LR at up to ``points`` steps, sampled as :meth:`LRSchedule.plan` samples them.

    >>> plan_curves({"group0": Linear()}, Run(total_steps=4), {"group0": 2.0})
    {'group0': ([0, 1, 2, 3], [2.0, 1.5, 1.0, 0.5])}
    """
    steps = sample_steps(max(run.total_steps or 1, 1), points)
    return {name: (steps, [peak * schedules[name].multiplier(k, run) for k in steps]) for name, peak in peaks.items()}


def load_config(path: str) -> tuple[Any, dict[str, Any]]:
    """The ``LRSchedule`` in a LightningCLI config's ``trainer.callbacks``, built as LightningCLI builds it
    (with jsonargparse), and the config's ``trainer`` section. A config of the whole CLI, whose ``fit`` holds the
    ``trainer``, is read as LightningCLI reads it for ``fit``.

    Raises:
        UsageError: for a file that cannot be read, a ``trainer`` that is not a mapping, ``callbacks`` that are not
            a list, no or several LRSchedule callbacks, or a bad value.
    """
    import yaml

    from lr_callbacks.schedule.callback import LRSchedule

    try:
        from jsonargparse import ArgumentParser
    except ImportError:
        raise UsageError("--config needs jsonargparse, as LightningCLI does: pip install 'lr_callbacks[cli]'") from None
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.safe_load(file) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UsageError(f"--config: cannot read {path}: {error}") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config: {path} must be a LightningCLI config (a mapping), got {type(config).__name__}")
    if "trainer" not in config and isinstance(config.get("fit"), dict):  # `python main.py --config it.yaml fit`
        config = config["fit"]
    trainer = config.get("trainer") or {}
    if not isinstance(trainer, dict):
        raise UsageError(
            f"--config: `trainer` in {path} must be a mapping of Trainer arguments, got {type(trainer).__name__}"
        )
    callbacks = trainer.get("callbacks") or []
    if isinstance(callbacks, dict):
        callbacks = [callbacks]
    elif not isinstance(callbacks, list):
        raise UsageError(
            f"--config: trainer.callbacks in {path} must be a list of callbacks, got {callbacks!r}; "
            "write each as `- class_path: ...`"
        )
    paths = [str(c.get("class_path")) if isinstance(c, dict) else str(c) for c in callbacks]
    found = [c for c, p in zip(callbacks, paths) if p.rsplit(".", 1)[-1] == "LRSchedule"]
    if len(found) != 1:
        raise UsageError(
            f"--config: {path} must have one LRSchedule in trainer.callbacks, it has {len(found)} "
            f"(callbacks: {', '.join(paths) or 'none'})"
        )
    _refuse_unknown_init_args(found[0], path, LRSchedule)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--callback", type=LRSchedule)
    try:
        namespace = parser.parse_object({"callback": found[0]})
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
        return instantiate(namespace).callback, trainer
    except Exception as error:  # jsonargparse wraps the constructor's error; show its message
        raise UsageError(f"--config: the LRSchedule in {path} cannot be built: {error}") from None


def _refuse_unknown_init_args(callback: Any, path: str, kind: type) -> None:
    """Refuse what LightningCLI would refuse in the LRSchedule's ``init_args``, naming the fix. A preset's arguments
    written beside ``schedule`` (the Python form, ``LRSchedule("cosine", warmup="5%")``) were reported as
    jsonargparse reports them, "Option 'warmup' is not accepted", without saying that they go in ``preset_args``.

    Raises:
        UsageError: for a key that is not one of LRSchedule's own arguments.
    """
    init_args = callback.get("init_args") if isinstance(callback, dict) else None
    if not isinstance(init_args, dict):
        return
    own = [n for n, p in inspect.signature(kind).parameters.items() if p.kind is not p.VAR_KEYWORD]
    unknown = [key for key in init_args if key not in own]
    if not unknown:
        return
    schedule = init_args.get("schedule", "cosine")
    takes = inspect.signature(PRESETS[schedule]).parameters if isinstance(schedule, str) and schedule in PRESETS else {}
    where = f"--config: the LRSchedule in {path} has {', '.join(map(repr, unknown))} in its init_args"
    if all(key in takes for key in unknown):
        given = ", ".join(f"{key}: {init_args[key]}" for key in unknown)
        raise UsageError(
            f"{where}; LightningCLI takes a preset's arguments in preset_args: write "
            f"init_args: {{schedule: {schedule}, preset_args: {{{given}}}}}"
        )
    raise UsageError(f"{where}, which LRSchedule does not take; its arguments are: {', '.join(own)}")


def group_schedules(callback: Any, peaks: dict[str, float]) -> tuple[dict[str, Schedule], dict[str, float]]:
    """Each group's schedule and peak under a configured LRSchedule: its ``group_schedules`` and ``peak_lrs``.

    A group with a peak in the config's ``peak_lrs`` is planned with it, named on the command line or not. A
    ``--peak-lr NAME=LR`` stands for the optimizer's LR of that group, which ``peak_lrs`` replaces at fit start;
    so where the two differ the config's is planned, as the run will use it, and a note on stderr says so
    (refusing would make the user type a value that the run ignores; silently dropping it would hide that).

    Raises:
        UsageError: when the config gives a group its own schedule but neither it nor ``--peak-lr`` its peak.
    """
    named = callback.group_schedules  # the configuration, as LRSchedule resolves it at fit start
    overrides = callback.peak_overrides
    unknown = sorted(set(named) - set(overrides) - set(peaks))
    if unknown:
        raise UsageError(
            f"the config gives the groups {', '.join(map(repr, unknown))} their own schedule; name every such "
            f"group with its configured LR: --peak-lr NAME=LR (e.g. --peak-lr {unknown[0]}=0.001)"
        )
    for name, peak in overrides.items():
        if name in peaks and peaks[name] != peak:
            print(
                f"note: plotting {name}={peak:g} from the config's peak_lrs, not --peak-lr {name}={peaks[name]:g}: "
                "LRSchedule replaces the optimizer's LR with it at fit start",
                file=sys.stderr,
            )
    peaks = {**peaks, **overrides}
    schedules = {name: named.get(name, callback.schedule) for name in peaks}
    return schedules, peaks


def _plot(argv: list[str]) -> int:
    parser, args = _parse_plot(argv)
    try:
        schedules, peaks, run = _resolve_plot(args)
        length = f"{run.total_steps} optimizer steps"
        if args.output:  # written before the table is printed, so that a failure leaves no table behind
            _write_image(args.output, plan_image(plan_curves(schedules, run, peaks), f"LR plan ({length})"))
    except UsageError as error:
        parser.error(str(error))
    print(_plan_text(schedules, peaks, run, length))
    if args.output:
        print(f"\nwrote {args.output}")
    return 0


def _write_image(path: str, image: Any) -> None:
    """Encode ``image`` as a PNG in memory, then write it to ``path``.

    Raises:
        UsageError: when the file cannot be written (the OS's reason).
    """
    from PIL import Image

    encoded = io.BytesIO()
    Image.fromarray(image).save(encoded, format="PNG")
    try:
        with open(path, "wb") as file:
            file.write(encoded.getvalue())
    except OSError as error:
        raise UsageError(f"-o/--output: cannot write {path}: {error.strerror or error}") from None


def _parse_plot(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse ``plot``'s arguments; the preset comes first (``plot cosine --steps 1000 ...``), so its own options
    are added to the parser before the rest is parsed. An unknown option exits with the ones that are known."""
    name = argv[0] if argv and not argv[0].startswith("-") else None
    probe = argparse.ArgumentParser(prog=f"{_PROG} plot", usage=_PLOT_USAGE, add_help=False)
    probe.add_argument("--transformers")
    probe.add_argument("--config")
    known = probe.parse_known_args(argv)[0]
    parser = _plot_parser(name, known.transformers)
    args, unknown = parser.parse_known_args(argv)
    if args.schedule != name:  # a stray value, e.g. of an unknown option
        unknown.append(args.schedule)
    if unknown:
        takes = [a.option_strings[0] for a in parser._actions if a.dest.startswith("arg_")]
        what = f"the {name!r} preset" if name else f"transformers' {known.transformers!r}"
        if takes:
            hint = f"; {what} takes: {', '.join(takes)}"
        elif known.config:
            hint = "; with --config the schedule's arguments come from the file"
        else:
            hint = "; name the schedule first: plot SCHEDULE ..."
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return parser, args


_NEGATIVE_VALUE = re.compile(r"^-\.?\d")  # no option starts so: every one is a name


def _join_negative_values(arguments: list[str]) -> list[str]:
    """``--option -3e-4`` as ``--option=-3e-4``: argparse reads a negative value other than a plain number (in
    scientific notation, or with a unit: ``--warmup -5%``) as an option, and says only "expected one argument";
    joined, the value reaches the option's own check.

    >>> _join_negative_values(["plot", "--peak-lr", "-3e-4", "--warmup", "-5%", "-o", "x.png"])
    ['plot', '--peak-lr=-3e-4', '--warmup=-5%', '-o', 'x.png']
    """
    joined: list[str] = []
    for argument in arguments:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and _NEGATIVE_VALUE.match(argument):
            joined[-1] = f"{joined[-1]}={argument}"
        else:
            joined.append(argument)
    return joined


def _check_output(path: str | None, force: bool) -> None:
    """Refuse an image path that cannot be written, or an existing file without ``force``, before anything is
    printed."""
    if path is None:
        return
    if not path.strip():
        raise UsageError("-o/--output: give a file name, e.g. -o plan.png")
    if os.path.isdir(path):
        raise UsageError(f"-o/--output: {path!r} is a directory; give a file name in it, e.g. {path}/plan.png")
    if not path.lower().endswith(".png"):
        raise UsageError(f"-o/--output: the image is a PNG; give the file a .png name (got {path!r})")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"-o/--output: the folder {folder!r} does not exist; create it, or write the image elsewhere")
    if os.path.lexists(path) and not force:
        raise UsageError(f"-o/--output: {path} exists; choose another name, or pass --force to overwrite it")


def _resolve_plot(args: argparse.Namespace) -> tuple[dict[str, Schedule], dict[str, float], Run]:
    """Each group's schedule and peak, and the run, as ``LRSchedule`` resolves them at fit start.

    Raises:
        UsageError: for options that do not go together, or a schedule that does not fit the run.
    """
    peaks = parse_peak_lrs(args.peak_lr)
    _check_output(args.output, args.force)
    trainer: dict[str, Any] = {}
    if args.config is not None and args.schedule is None and args.transformers is None:
        callback, trainer = load_config(args.config)
        schedules, peaks = group_schedules(callback, peaks)
    else:
        schedules = dict.fromkeys(peaks, build_schedule(args))
    run = build_run(args, trainer)
    reference = next(iter(peaks.values()))  # the optimizer's lr, which LRSchedule divides absolute floors by
    for name, schedule in schedules.items():
        if isinstance(schedule, TransformersSchedule):
            try:
                schedules[name] = schedule.bound_to(reference)
            except ValueError as error:  # a polynomial's lr_end at or above the peak
                raise UsageError(f"{error} (--peak-lr here)") from None
    for schedule in {id(s): s for s in schedules.values()}.values():
        _check_fits(schedule, run)
    return schedules, peaks, run


def _check_fits(schedule: Schedule, run: Run) -> None:
    """``schedule.check`` on the run, its error as a UsageError; one that only the epoch length would fix names
    ``--steps-per-epoch`` (the option that gives it here).

    Raises:
        UsageError: when the schedule does not fit the run.
    """
    error = _misfit(schedule, run)
    if error is None:
        return
    if run.steps_per_epoch is None and _misfit(schedule, Run(total_steps=run.total_steps, steps_per_epoch=1)) is None:
        raise UsageError(
            f"{schedule.describe()} has a duration in epochs, which needs the epoch length: pass "
            "--steps-per-epoch M (optimizer steps per epoch), or give the duration in steps, e.g. '500 steps'"
        )
    raise UsageError(f"the schedule does not fit this run: {error}")


def _misfit(schedule: Schedule, run: Run) -> Exception | None:
    """Why ``schedule`` does not fit ``run`` (``schedule.check``'s error), or ``None`` when it does."""
    try:
        schedule.check(run.total_steps, run)
    except (ValueError, TypeError) as error:
        return error
    return None


def _plan_text(schedules: dict[str, Schedule], peaks: dict[str, float], run: Run, length: str) -> str:
    """The run and the table of key steps; with several schedules one table each, as ``lr_schedule/summary``."""
    run_line = f"Run: {length}" + (f", {run.steps_per_epoch} per epoch" if run.steps_per_epoch else "")
    groups = [(name, schedules[name], peak) for name, peak in peaks.items()]
    grouped = by_schedule(groups)
    if len(grouped) == 1:
        ((schedule, _),) = grouped
        return f"{schedule.describe()}\n{run_line}\n\n{plan_table(schedule, run, peaks)}"
    return f"{run_line}\n\n{plan_tables(groups, run)}"


def _presets(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{_PROG} presets", description="List the presets and their arguments.")
    parser.parse_args(argv)
    for name, builder in PRESETS.items():
        summary = re.sub(r":\w+:`~?(?:lr_callbacks\.)?([^`]+)`", r"\1", (inspect.getdoc(builder) or "").splitlines()[0])
        summary = summary.replace("``", "`")  # `every` stays a name: "Multiply by gamma every every" before
        options = [
            f"--{key.replace('_', '-')} {_shown(p.default)}" for key, p in inspect.signature(builder).parameters.items()
        ]
        print(f"{name}: {summary}\n    " + "  ".join(options))
        needs = _needs(name)
        if needs:  # defaults that do not make a schedule alone (before, shown as if they did: --milestones '')
            print(f"    needs: {needs}")
    print(f"\ntransformers names (plot --transformers NAME): {', '.join(TRANSFORMERS_ARGUMENTS)}")
    return 0


def _needs(name: str) -> str | None:
    """What the preset ``name`` needs besides its defaults (its own message), or ``None`` when they make a schedule.

    >>> _needs("cosine") is None, _needs("multistep")
    (True, 'MultiStep: `milestones` must not be empty; for no decay use Constant()')
    """
    try:
        preset(name)
    except ValueError as error:
        return str(error)
    return None


def _shown(value: Any) -> str:
    """A default as it would be typed on the command line."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(_shown(v) for v in value) or "''"
    if isinstance(value, str) and " " in value:
        return repr(value)
    return str(value)


_COMMANDS = {
    "plot": (_plot, "draw a schedule before training and print the LR at its key steps"),
    "presets": (_presets, "list the presets and their arguments"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    >>> main(["plot", "linear", "--steps", "4"])
    Linear()
    Run: 4 optimizer steps
    <BLANKLINE>
    | step | group0 |
    |---:|---:|
    | 0 | 1 |
    | 1 | 0.75 |
    | 2 | 0.5 |
    | 3 | 0.25 |
    0
    """
    arguments = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="lr_callbacks from the command line. Run a command with --help for its options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, summary) in _COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    if not arguments or arguments[0] not in _COMMANDS:
        parser.parse_args(arguments[:1])  # --help, or an error naming the valid commands
        parser.error(f"choose a command: {', '.join(_COMMANDS)}")
    command, _ = _COMMANDS[arguments[0]]
    try:
        status = command(arguments[1:])
        sys.stdout.flush()
    except BrokenPipeError:  # stdout closed early (`| head`): as Python's docs advise (signal, "Note on SIGPIPE")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not fail again
        return 1
    return status
