"""The built-in demo: a procedural street-scene data set in the exact Cityscapes layout,
generated on first use; `aspp_seg.data.datamodules.DemoDataModule` generates it and
reads it as Cityscapes.

Its classes, palette, label encodings and scan are Cityscapes' (`cityscapes`); it has
no ``--format`` of its own, predictions on it are scored with ``--format cityscapes``.

Every frame is a synthetic street scene (`aspp_seg.data.scenes`): labelled polygons,
written as Cityscapes' own ``*_gtFine_polygons.json`` with the label image rasterised from
them and the rendered RGB image. This file is the data set around them: its files, their
settings, and generating them safely.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from aspp_seg.data.datasets import EvalFormat, cityscapes
from aspp_seg.data.scenes import make_scene, polygons_json, rasterise_labels, render_image
from aspp_seg.errors import ConfigError, DataError

CLASSES = cityscapes.CLASSES
"""Cityscapes' 19 classes; the demo draws 9 of them (sky, building, road, sidewalk,
vegetation, car, pole, traffic sign, person) and the ego vehicle (void)."""

PALETTE = cityscapes.PALETTE

FORMATS: tuple[EvalFormat, ...] = ()
"""None of its own: its files are Cityscapes files (``--format cityscapes``)."""

# --- the generator ---

CITIES = {"train": ("aachen", "bremen"), "val": ("frankfurt",), "test": ("berlin",)}

MARKER = ".complete"
"""Written last by the generator: JSON ``{"generator": ..., "settings": {...}}``."""
PENDING = ".generating"
"""Written first and removed last: a folder holding it is an interrupted generation."""
GENERATOR = "aspp-seg synthetic demo"
DEFAULT_SETTINGS: dict[str, int] = {
    "num_train": 240,
    "num_val": 60,
    "num_test": 0,
    "height": 128,
    "width": 256,
    "seed": 0,
}
"""The generator's settings when nothing else is asked for (`generate_demo_cityscapes`)."""
_MINIMUM = {"num_train": 1, "num_val": 0, "num_test": 0, "height": 1, "width": 1, "seed": 0}
FRAME = 19
"""Frame number of every generated file name (``<city>_<seq>_000019_...``)."""
OWN_SUFFIXES = ("leftImg8bit.png", "gtFine_labelIds.png", "gtFine_polygons.json")
DERIVED_SUFFIXES = ("gtFine_labelTrainIds.png",)
"""Files made from the generated labels (``aspp-seg prepare-cityscapes``): stale once
the set is regenerated, so they go with it."""
_OWNED = re.compile(
    rf"^[a-z]+_\d{{6}}_{FRAME:06d}_"
    rf"({'|'.join(re.escape(s) for s in OWN_SUFFIXES + DERIVED_SUFFIXES)})$"
)
"""File names a set generated with unrecorded settings (an older aspp-seg) may own."""


def check_settings(settings: dict[str, int]) -> None:
    """Raises ConfigError naming a generator setting that is unknown or out of range."""
    for name, value in settings.items():
        if name not in _MINIMUM:
            raise ConfigError(
                f"demo generator setting {name!r} is unknown; allowed: {', '.join(_MINIMUM)}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < _MINIMUM[name]:
            raise ConfigError(f"data.{name}={value!r} must be an integer >= {_MINIMUM[name]}")


def holds_demo(root: str | Path) -> bool:
    """Whether `root` holds a demo data set, complete or interrupted."""
    root = Path(root)
    return (root / MARKER).is_file() or (root / PENDING).is_file()


def check_demo_root(root: str | Path) -> None:
    """Refuses a `root` the generator must not write into.

    Raises:
        DataError: `root` is a file, or a non-empty folder that holds no demo data set
            (e.g. a real data set): nothing in it is touched.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root={root} is a file; the demo data set needs a folder")
    if root.is_dir() and not holds_demo(root) and next(root.iterdir(), None) is not None:
        raise DataError(
            f"data.root={root} is a non-empty folder without a demo data set (no {MARKER}); "
            "the demo generates its files only into a new or empty folder, so point "
            "data.root elsewhere, or use the data module that fits the files in it"
        )


def generated_settings(root: str | Path) -> dict[str, int] | None:
    """The settings a complete demo data set under `root` was generated with.

    Returns:
        The settings; ``{}`` for a set written by an aspp-seg that did not record them;
        None when `root` holds no complete demo set.
    """
    marker = Path(root) / MARKER
    if not marker.is_file() or (Path(root) / PENDING).is_file():
        return None
    try:
        content = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return {}  # the older plain-text marker
    settings = content.get("settings") if isinstance(content, dict) else None
    return dict(settings) if isinstance(settings, dict) else {}


def _stems(settings: dict[str, int]) -> list[tuple[str, str, str]]:
    """(split, city, stem) of every frame generated with `settings`."""
    full = {**DEFAULT_SETTINGS, **settings}
    stems = []
    for split in ("train", "val", "test"):
        cities = CITIES[split]
        for i in range(full[f"num_{split}"]):
            city = cities[i % len(cities)]
            stems.append((split, city, f"{city}_{i // len(cities):06d}_{FRAME:06d}"))
    return stems


def planned_files(root: str | Path, settings: dict[str, int]) -> list[Path]:
    """The files `generate_demo_cityscapes` writes under `root` with `settings`."""
    root = Path(root)
    files = []
    for split, city, stem in _stems(settings):
        files.append(root / "leftImg8bit" / split / city / f"{stem}_{OWN_SUFFIXES[0]}")
        files += [root / "gtFine" / split / city / f"{stem}_{s}" for s in OWN_SUFFIXES[1:]]
    return files


def _recorded_settings(root: Path) -> dict[str, int] | None:
    """The settings the marker (or, for an interrupted run, the pending marker) records;
    None when neither records any."""
    for name in (PENDING, MARKER):
        try:
            content = json.loads((root / name).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        settings = content.get("settings") if isinstance(content, dict) else None
        if isinstance(settings, dict):
            return dict(settings)
    return None


def generated_files(root: str | Path) -> list[Path]:
    """The files the generator owns under `root`: those its recorded settings wrote
    (images, labels, polygons), the labelTrainIds derived from them, and the markers.
    Other files, even in its city folders, are not listed.

    A set whose markers record no settings (an older aspp-seg) owns the files named as
    the generator names them (``<city>_<seq>_000019_<suffix>``) in its city folders.
    """
    root = Path(root)
    found = [root / name for name in (MARKER, PENDING) if (root / name).is_file()]
    settings = _recorded_settings(root)
    if settings is not None:
        for split, city, stem in _stems(settings):
            top = root / "leftImg8bit" / split / city
            gt = root / "gtFine" / split / city
            candidates = [top / f"{stem}_{OWN_SUFFIXES[0]}"]
            candidates += [gt / f"{stem}_{s}" for s in OWN_SUFFIXES[1:] + DERIVED_SUFFIXES]
            found += [p for p in candidates if p.is_file()]
        return found
    for split, cities in CITIES.items():
        for top in ("leftImg8bit", "gtFine"):
            for city in cities:
                folder = root / top / split / city
                if folder.is_dir():
                    found += sorted(
                        p for p in folder.iterdir() if p.is_file() and _OWNED.match(p.name)
                    )
    return found


def remove_generated(root: str | Path) -> int:
    """Deletes `generated_files` and the folders they leave empty; returns the count."""
    root = Path(root)
    files = generated_files(root)
    for path in files:
        path.unlink()
    for split, cities in CITIES.items():
        for top in ("leftImg8bit", "gtFine"):
            folders = [root / top / split / city for city in cities]
            for folder in (*folders, root / top / split, root / top):
                if folder.is_dir() and next(folder.iterdir(), None) is None:
                    folder.rmdir()
    return len(files)


def generate_demo_cityscapes(
    root: str | Path,
    *,
    num_train: int = DEFAULT_SETTINGS["num_train"],
    num_val: int = DEFAULT_SETTINGS["num_val"],
    num_test: int = DEFAULT_SETTINGS["num_test"],
    height: int = DEFAULT_SETTINGS["height"],
    width: int = DEFAULT_SETTINGS["width"],
    seed: int = DEFAULT_SETTINGS["seed"],
) -> Path:
    """Writes a synthetic data set in the Cityscapes layout under `root`.

    Files per frame: ``leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png``
    and, under ``gtFine/{split}/{city}/``, ``..._gtFine_labelIds.png`` and
    ``..._gtFine_polygons.json``. The marker ``.complete`` is written last and records
    the settings (JSON), so an interrupted generation is redone rather than used
    half-written, and a set made with other settings is recognised. A demo set already
    under `root` is replaced (only `generated_files`).

    Returns:
        The root folder.

    Raises:
        DataError: `root` is a non-empty folder without a demo set (see `check_demo_root`),
            or a file the new set would write is there but not the generator's; nothing
            is changed.
        ConfigError: a setting is out of range.
    """
    root = Path(root)
    settings = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "height": height,
        "width": width,
        "seed": seed,
    }
    check_settings(settings)
    check_demo_root(root)
    owned = set(generated_files(root)) if holds_demo(root) else set()
    foreign = [p for p in planned_files(root, settings) if p.exists() and p not in owned]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise DataError(
            f"data.root={root}: {foreign[0]}{more} was not written by the demo generator, "
            "but the new set would write it; move it away or point data.root elsewhere "
            "(nothing was changed)"
        )
    if owned:
        remove_generated(root)
    root.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"generator": GENERATOR, "settings": settings}, indent=2) + "\n"
    (root / PENDING).write_text(record)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        cities = CITIES[split]
        for i in range(count):
            city = cities[i % len(cities)]
            stem = f"{city}_{i // len(cities):06d}_{FRAME:06d}"
            scene = make_scene(rng, height, width)
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render_image(rng, scene)).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(rasterise_labels(scene)).save(gt_dir / f"{stem}_gtFine_labelIds.png")
            (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps(polygons_json(scene)))
    (root / MARKER).write_text(record)
    (root / PENDING).unlink()
    return root


def is_generated(root: str | Path) -> bool:
    """Whether a complete demo data set exists under `root`."""
    return generated_settings(root) is not None


def settings_to_generate(root: str | Path, requested: dict[str, int]) -> dict[str, int] | None:
    """What to (re)generate with so that `root` holds the `requested` demo set.

    Args:
        root: the demo folder.
        requested: the settings asked for; those not given keep the existing set's
            value (or the default).

    Returns:
        The full settings to generate with, or None when the set under `root` was
        generated with `requested` already. A set whose marker records no settings
        (written by an older aspp-seg) always counts as differing.
    """
    existing = generated_settings(root)
    if existing and all(existing.get(k) == v for k, v in requested.items()):
        return None
    return {**DEFAULT_SETTINGS, **(existing or {}), **requested}


def ensure_demo(root: str | Path, requested: dict[str, int]) -> Path:
    """Generates the demo set under `root` unless it is there with `requested` settings;
    says so in one line when it replaces a set generated with other settings."""
    root = Path(root)
    check_settings(requested)
    check_demo_root(root)
    settings = settings_to_generate(root, requested)
    if settings is None:
        return root
    existing = generated_settings(root)
    if existing is None:
        print(f"aspp-seg: generating the synthetic demo data set in {root} ...")
    else:
        was = ", ".join(f"{k}={v}" for k, v in existing.items()) or "unrecorded settings"
        now = ", ".join(f"{k}={v}" for k, v in settings.items() if existing.get(k) != v)
        print(
            f"aspp-seg: regenerating the demo data set in {root} (was {was}; now {now}); "
            "only its generated files are replaced"
        )
    return generate_demo_cityscapes(root, **settings)
