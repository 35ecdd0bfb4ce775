"""From the command line's words to each run's plan: what `experiments.table1` runs.

- the run syntax: ``dl1``, ``dl1@seed=1``, ``segnet@steps=60`` (`parse_run`), ``--seeds``
  (`expand_runs`);
- the ``--grid`` axes, their levels and cells (`parse_axis`, `grid_cells`);
- the overrides each run gets after ``--config``: ``--overlay`` files without the net
  keys its builder does not take (`overlay_for`), the budget (`budget_overrides`), the
  data (`data_overrides`);
- `RunPlan`: one run with all of that, its config parsed (`plan_runs`).

`experiments.runner` trains, evaluates and reads the runs these plans describe.
"""

from __future__ import annotations

import functools
import itertools
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from aspp_seg.data.io import write_file
from aspp_seg.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BUDGETS = ("full", "tiny", "<steps>")
TINY_STEPS = 4

# A tiny budget shrinks what exists in the config's net builder: these keys, if taken.
TINY_NET = {"backbone": "resnet10t", "pretrained": "false", "channels": "16"}


def config_path(name: str) -> Path:
    """``dl1`` -> ``configs/dl1.yaml``; a path to a YAML file is taken as it is."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS.glob("*.yaml") if not p.stem.startswith("_"))
        raise ConfigError(f"--configs {name}: no {path}; known configs: {', '.join(known)}")
    return path


@dataclass(frozen=True)
class RunSpec:
    """One run: a config, optionally with its own seed or step budget.

    Attributes:
        label: the run's name and folder (``dl1``, ``dl1_seed1``, ``segnet_steps60``).
        config: the config as given: a name in ``configs/`` (``dl1``) or a YAML path.
        seed: ``seed_everything`` for this run; None: the config's own.
        steps: this run's step budget; None: ``--budget``.
    """

    label: str
    config: str
    seed: int | None = None
    steps: int | None = None


def parse_run(text: str) -> RunSpec:
    """``dl1``, ``dl1@seed=1``, ``segnet@steps=60`` (options may be combined)."""
    config, *options = text.split("@")
    label, settings = Path(config).stem, {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in ("seed", "steps") or not value.isdigit():
            raise ConfigError(f"--configs {text}: {option!r} is not seed=<int> or steps=<int>")
        settings[key] = int(value)
        label += f"_{key}{value}"
    return RunSpec(label, config, settings.get("seed"), settings.get("steps"))


def expand_runs(configs: Sequence[str], seeds: Sequence[int] = ()) -> list[RunSpec]:
    """The runs of ``--configs`` and ``--seeds``: every config once per seed (labels
    ``<config>_seed<S>``), or as given when there are no seeds."""
    texts = []
    for text in configs:
        if seeds and "@seed=" in text:
            raise ConfigError(f"--configs {text}: give seeds with @seed= or --seeds, not both")
        texts += [f"{text}@seed={s}" for s in seeds] if seeds else [text]
    specs = [parse_run(text) for text in texts]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise ConfigError(f"--configs: runs {', '.join(twice)} are given twice")
    return specs


@dataclass(frozen=True)
class Level:
    """One level of a ``--grid`` axis: what it sets in every run of its cells.

    Attributes:
        axis: the axis' name (``image_size``, ``aspp_input``, ``budget``).
        name: the level's name (``360x480``, ``23x30``, ``920``); with the axis it names
            the level's folder, ``<axis>=<name>``.
        setting: (key, value as given) of a setting axis (``data.init_args.image_size``,
            ``[360,480]``), as on the aspp-seg command line.
        overlay: the level's YAML file of an overlay axis, layered after ``--overlay``
            (None: the level adds nothing).
        budget: the level's ``--budget`` on the ``budget`` axis.
    """

    axis: str
    name: str
    setting: tuple[str, str] | None = None
    overlay: Path | None = None
    budget: str | None = None

    @property
    def folder(self) -> str:
        return f"{self.axis}={self.name}"


@dataclass(frozen=True)
class Cell:
    """One cell of the grid, a level of each axis; with no ``--grid``, the one cell of
    no levels, whose folder is ``--out`` itself."""

    levels: tuple[Level, ...] = ()

    @property
    def name(self) -> str:
        """``image_size=360x480`` (``/`` between axes); empty without a grid."""
        return "/".join(level.folder for level in self.levels)

    def out(self, root: Path) -> Path:
        """The cell's folder: an ordinary ``--out`` folder of the runner."""
        return root.joinpath(*(level.folder for level in self.levels))

    @property
    def budget(self) -> str | None:
        return next((lv.budget for lv in self.levels if lv.budget is not None), None)


_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
# runner options that a setting axis would bypass (the budget decides when a run is done)
_NOT_SETTINGS = {"trainer.max_steps": "--grid budget=N1,N2",
                 "trainer.max_epochs": "--grid budget=N1,N2",
                 "seed_everything": "--seeds"}  # fmt: skip


def split_levels(text: str) -> list[str]:
    """``[176,240],[360,480]`` -> ``["[176,240]", "[360,480]"]``: split at the commas
    outside brackets, braces and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _value_name(value: str, option: str) -> str:
    """A setting's value as a folder name: ``[360,480]`` -> ``360x480``, ``0.05``."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    items = parsed if isinstance(parsed, list) else [parsed]
    words = {True: "true", False: "false", None: "null"}
    name = "x".join(words.get(v, str(v)) if isinstance(v, bool | None) else str(v)
                    for v in items)  # fmt: skip
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{option}: the value {value!r} makes no folder name; give the "
                          "axis as NAME=LEVEL:FILE,... with an overlay file per level")  # fmt: skip
    return name


def parse_axis(text: str) -> list[Level]:
    """One ``--grid`` axis: ``KEY=V1,V2,...`` (a setting, one value per level),
    ``NAME=L1:FILE1,L2:FILE2,...`` (an overlay file per level; ``L1:`` adds none) or
    ``budget=N1,N2,...`` (the runs' step budget per level).

    Raises:
        ConfigError: the axis does not parse, names a missing file or repeats a level.
    """
    option = f"--grid {text}"
    axis, sep, rest = text.partition("=")
    if not sep or not axis or not rest:
        raise ConfigError(f"{option}: expected KEY=V1,V2 or NAME=LEVEL:FILE,LEVEL:FILE")
    if axis in _NOT_SETTINGS:
        raise ConfigError(f"{option}: {axis} is the runner's to set; use {_NOT_SETTINGS[axis]}")
    items = [item.strip() for item in split_levels(rest)]
    overlays = [re.fullmatch(r"([A-Za-z0-9_.+-]+):(.*)", item) for item in items]
    levels = []
    if all(overlays) and "." not in axis:
        if not _NAME.fullmatch(axis):
            raise ConfigError(f"{option}: the axis name {axis!r} makes no folder name")
        for match in overlays:
            name, file = match.group(1), match.group(2).strip()
            if file and not Path(file).is_file():
                raise ConfigError(f"{option}: level {name}: no such file {file}")
            levels.append(Level(axis, name, overlay=Path(file) if file else None))
    elif axis == "budget":
        for item in items:
            budget_overrides(item, set())  # a budget the runner knows, or ConfigError
            levels.append(Level(axis, item, budget=item))
    else:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", axis):
            raise ConfigError(f"{option}: {axis!r} is not a setting's key (data.init_args.x)")
        if any(overlays):
            raise ConfigError(f"{option}: give every level as LEVEL:FILE, or none")
        name = axis.rpartition(".")[2]
        levels = [Level(name, _value_name(item, option), setting=(axis, item))
                  for item in items]  # fmt: skip
    names = [level.name for level in levels]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"{option}: every level needs a name of its own, got {names}")
    return levels


def grid_cells(axes: Sequence[str]) -> list[Cell]:
    """The cells of ``--grid``: the cartesian product of its axes, the first axis
    outermost; without axes, one cell (``--out`` itself)."""
    parsed = [parse_axis(text) for text in axes]
    names = [levels[0].axis for levels in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"--grid: axes {', '.join(names)}: each axis once")
    return [Cell(tuple(levels)) for levels in itertools.product(*parsed)]


def group_name(spec: RunSpec) -> str:
    """The config a run is a seed of: its label without the seed (``dl1``,
    ``segnet_steps60``); runs of one group are compared as seeds of one another."""
    name = Path(spec.config).stem
    return f"{name}_steps{spec.steps}" if spec.steps else name


def overlay_for(
    overlay: Path, net_parameters: set[str], label: str, out: Path, *, write: bool = True
) -> Path:
    """`overlay` without the ``model.net.init_args`` keys that the net builder does not
    take, written to the run's folder when something was left out (else `overlay`).
    ``write=False`` (``--dry-run``): written to a temporary folder instead."""
    try:
        settings = yaml.safe_load(overlay.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"--overlay {overlay}: cannot be read as YAML ({error})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"--overlay {overlay}: expected a mapping of settings")
    nested = settings.get("model", {}).get("net", {}).get("init_args", {})
    dotted = {k.removeprefix("model.net.init_args.").split(".")[0]: k for k in settings
              if k.startswith("model.net.init_args.")}  # fmt: skip
    dropped = sorted({*nested, *dotted} - net_parameters)
    if not dropped:
        return overlay
    for key in dropped:
        nested.pop(key, None)
        settings.pop(dotted.get(key, ""), None)
    if write:
        print(f"[table1] {label}: its net takes no {', '.join(dropped)}; left out of "
              f"{overlay.name}")  # fmt: skip
        path = out / "runs" / label / f"overlay_{overlay.name}"
    else:  # --dry-run writes nothing under --out, but the config must still parse
        path = Path(tempfile.mkdtemp(prefix="table1-dry-run-")) / f"overlay_{overlay.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, yaml.safe_dump(settings, sort_keys=False))
    return path


@functools.cache
def _net_parameters(path: Path) -> set[str]:
    """Keyword arguments of the config's ``model.net`` builder."""
    import importlib
    import inspect

    from aspp_seg.cli.config import read_config

    class_path = read_config(["--config", str(path)]).model.net.class_path
    module, _, name = class_path.rpartition(".")
    try:
        builder = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return set()
    return set(inspect.signature(builder).parameters)


def budget_overrides(budget: str, net_parameters: set[str]) -> list[str]:
    """CLI overrides for a training budget.

    Args:
        budget: ``full`` (the config's own schedule), ``tiny`` (a few steps of a small
            net: a smoke test whose numbers mean nothing) or a number of steps.
        net_parameters: what the config's net builder accepts.
    """
    if budget == "full":
        return []
    if budget == "tiny":
        args = ["--trainer.max_steps", str(TINY_STEPS), "--trainer.max_epochs", "1",
                "--trainer.limit_val_batches", "2", "--trainer.num_sanity_val_steps", "0",
                "--trainer.log_every_n_steps", "1",
                "--data.init_args.batch_size", "2",
                "--data.init_args.num_workers", "0"]  # fmt: skip
        for key, value in TINY_NET.items():
            if key in net_parameters:
                args += [f"--model.net.init_args.{key}", value]
        return args
    if budget.isdigit() and int(budget) > 0:
        return ["--trainer.max_steps", budget, "--trainer.max_epochs", "-1"]
    raise ConfigError(f"--budget {budget!r} is not one of {', '.join(BUDGETS)}")


def budget_steps(budget: str) -> int | None:
    """The optimizer steps a finished run of `budget` has; None for ``full`` (the
    config's schedule: a run that exits without error is finished)."""
    if budget == "tiny":
        return TINY_STEPS
    return int(budget) if budget.isdigit() else None


def data_overrides(data: str | None, out: Path, budget: str, *, check: bool = True) -> list[str]:
    """CLI overrides that point a config at ``demo`` (synthetic) or a Cityscapes root.
    ``check=False`` (``--collect``, which reads the records): the root need not exist."""
    if data is None:
        return []
    if data == "demo":
        size = ["64", "128", "8", "4"] if budget == "tiny" else ["128", "256", "240", "60"]
        return ["--data.class_path", "aspp_seg.data.DemoDataModule",
                "--data.init_args.root", str(out / "demo_data"),
                "--data.init_args.crop_size", "null",
                "--data.init_args.height", size[0], "--data.init_args.width", size[1],
                "--data.init_args.num_train", size[2],
                "--data.init_args.num_val", size[3]]  # fmt: skip
    root = Path(data)
    if not root.is_dir() and check:
        raise ConfigError(f"--data {data}: not a folder; give the data set's root or 'demo'")
    return ["--data.init_args.root", str(root.resolve())]


@dataclass(frozen=True)
class RunPlan:
    """A run as the sweep handles it: what to train and evaluate, and where.

    Attributes:
        spec: the run as given on the command line.
        config: its config file.
        overrides: settings after ``--config`` (overlays, data, budget, seed, --set).
        out: the sweep's output folder.
        budget: ``full``, ``tiny`` or a number of steps.
        wandb_group: also log to W&B in this group.
        error: why the run cannot start (its config does not parse), or None.
        demo: (root, settings) of the synthetic demo set the run reads, or None.
    """

    spec: RunSpec
    config: Path
    overrides: tuple[str, ...]
    out: Path
    budget: str
    wandb_group: str | None = None
    error: str | None = None
    demo: tuple[str, tuple[tuple[str, int], ...]] | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def folder(self) -> Path:
        return self.out / "runs" / self.label

    @property
    def steps(self) -> int | None:
        return budget_steps(self.budget)


def plan_runs(
    specs: Sequence[RunSpec], args, out: Path, *, write: bool = True, cell: Cell | None = None
) -> list[RunPlan]:  # fmt: skip
    """One `RunPlan` per run of `cell` (its folder: `out`); each config is parsed here
    with all its overrides, so that one that does not parse is a failed run (the others
    go on).

    The overrides, later ones winning: ``--overlay``, the cell's overlay files, the data
    and budget, the seed, ``--set``, the cell's settings. A cell's overlay or setting
    under ``model.net.init_args`` that the config's net builder does not take is left out
    for that config (as `overlay_for` does), and said so.
    """
    from aspp_seg.cli.config import read_config

    cell = cell or Cell()
    extra = [f"--{item}" for item in args.set]
    level_budget = cell.budget or args.budget
    data = data_overrides(args.data, out, level_budget, check=not args.collect)  # one demo set
    files = [*args.overlay, *(lv.overlay for lv in cell.levels if lv.overlay is not None)]
    settings = [lv.setting for lv in cell.levels if lv.setting is not None]
    plans = []
    for spec in specs:
        config = config_path(spec.config)
        budget = str(spec.steps) if spec.steps else level_budget
        demo, error = None, None
        try:
            parameters = _net_parameters(config)
            overlays = [overlay_for(Path(o), parameters, spec.label, out, write=write)
                        for o in files]  # fmt: skip
            taken = [(k, v) for k, v in settings if _net_key(k) in (None, *parameters)]
            if write and len(taken) < len(settings):
                left = ", ".join(k for k, v in settings if (k, v) not in taken)
                print(f"[table1] {spec.label}: its net takes no {left}; left out", flush=True)
            overrides = (
                *(arg for o in overlays for arg in ("--config", str(o))),
                *data,
                *budget_overrides(budget, parameters),
                *(["--seed_everything", str(spec.seed)] if spec.seed is not None else []),
                *extra,
                *(f"--{key}={value}" for key, value in taken),
            )  # fmt: skip
            demo = _demo_set(read_config(["--config", str(config), *overrides]).data)
        except ConfigError as failed:
            overrides, error = (), str(failed)
        plans.append(RunPlan(spec, config, tuple(overrides), out, budget, args.wandb_group,
                             error, demo))  # fmt: skip
    return plans


def _net_key(key: str) -> str | None:
    """``model.net.init_args.aspp.init_args.rates`` -> ``aspp``; None for other keys."""
    prefix = "model.net.init_args."
    return key.removeprefix(prefix).split(".")[0] if key.startswith(prefix) else None


def _demo_set(data) -> tuple[str, tuple[tuple[str, int], ...]] | None:
    """(root, generator settings) of a parsed ``data`` section that is the demo set."""
    if not str(data.class_path).endswith("DemoDataModule"):
        return None
    keys = ("num_train", "num_val", "height", "width", "seed")
    settings = tuple((k, data.init_args[k]) for k in keys if data.init_args.get(k) is not None)
    return str(Path(data.init_args.root).resolve()), settings
