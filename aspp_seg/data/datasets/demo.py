"""The built-in demo: a procedural street-scene data set in the exact Cityscapes layout,
generated on first use; `aspp_seg.data.datamodules.DemoDataModule` generates it and
reads it as Cityscapes.

Its classes, palette, label encodings and scan are Cityscapes' (`cityscapes`); it has
no ``--format`` of its own, predictions on it are scored with ``--format cityscapes``.

Every scene is a list of labelled polygons painted back to front, as Cityscapes'
own `*_gtFine_polygons.json` files are. The label image is rasterised from those
polygons the way cityscapesscripts' `json2labelImg` does (PIL, in order, background
"unlabeled"), and the RGB image fills each polygon with a class texture.

Colour alone does not give the answer: every instance draws its colour from wide,
overlapping per-class ranges, so a per-pixel colour classifier does poorly; the class
shows in texture (window grids, paving tiles, foliage speckle, lane marks), in shape
and in position, which is what a convnet has to learn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from aspp_seg.data.datasets import EvalFormat, cityscapes
from aspp_seg.data.datasets.cityscapes import NAME_TO_LABEL_ID
from aspp_seg.errors import ConfigError, DataError

CLASSES = cityscapes.CLASSES
"""Cityscapes' 19 classes; the demo draws 9 of them (sky, building, road, sidewalk,
vegetation, car, pole, traffic sign, person) and the ego vehicle (void)."""

PALETTE = cityscapes.PALETTE

FORMATS: tuple[EvalFormat, ...] = ()
"""None of its own: its files are Cityscapes files (``--format cityscapes``)."""

# --- the generator ---

Polygon = list[tuple[int, int]]

CITIES = {"train": ("aachen", "bremen"), "val": ("frankfurt",), "test": ("berlin",)}

# Mean RGB per class; each instance adds N(0, COLOUR_SPREAD) per channel, so the
# ranges overlap heavily.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "sky": (150, 160, 175),
    "building": (135, 120, 115),
    "road": (110, 108, 115),
    "sidewalk": (140, 132, 128),
    "vegetation": (105, 125, 95),
    "car": (115, 110, 135),
    "pole": (120, 120, 122),
    "traffic sign": (150, 140, 110),
    "person": (130, 105, 100),
    "ego vehicle": (60, 60, 65),
}
COLOUR_SPREAD = 30.0


@dataclass(frozen=True)
class Scene:
    """One generated frame: its size and its labelled polygons, back to front."""

    height: int
    width: int
    objects: list[tuple[str, Polygon]]


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 14) -> Polygon:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(round(cx + rx * np.cos(a)), round(cy + ry * np.sin(a))) for a in t]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    x0, y0, x1, y1 = round(x0), round(y0), round(x1), round(y1)
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def make_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Draws a random street layout: sky, buildings, trees, road, pavements, objects."""
    h, w = height, width
    objs: list[tuple[str, Polygon]] = []
    horizon = rng.uniform(0.38, 0.55) * h
    objs.append(("sky", _rect(0, 0, w - 1, horizon + 2)))

    # Buildings: a row of blocks standing on the horizon.
    x = -rng.uniform(0, 0.1) * w
    while x < w:
        bw = rng.uniform(0.12, 0.35) * w
        top = rng.uniform(0.05, 0.7) * horizon
        if rng.random() < 0.85:
            objs.append(("building", _rect(x, top, x + bw, horizon + 2)))
        x += bw + rng.uniform(0, 0.05) * w

    # Trees: clusters of round crowns near the horizon.
    for _ in range(rng.integers(0, 4)):
        cx, cy = rng.uniform(0, w), horizon - rng.uniform(0.0, 0.25) * h
        r = rng.uniform(0.05, 0.12) * h
        for _ in range(rng.integers(1, 4)):
            objs.append(
                ("vegetation", _ellipse(cx + rng.normal(0, r), cy + rng.normal(0, r / 2), r, r))
            )

    # Ground: pavements on both sides, road in perspective between them.
    objs.append(("sidewalk", _rect(0, horizon, w - 1, h - 1)))
    vanish = rng.uniform(0.35, 0.65) * w
    half_top = rng.uniform(0.02, 0.08) * w
    left_bottom = rng.uniform(-0.2, 0.15) * w
    right_bottom = rng.uniform(0.85, 1.2) * w
    road = [
        (round(vanish - half_top), round(horizon)),
        (round(vanish + half_top), round(horizon)),
        (round(right_bottom), h - 1),
        (round(left_bottom), h - 1),
    ]
    objs.append(("road", road))

    def road_x(y: float, t: float) -> float:
        """x on the road at height y, t in [0, 1] from its left to its right edge."""
        s = (y - horizon) / (h - 1 - horizon)
        left = (vanish - half_top) + s * (left_bottom - (vanish - half_top))
        right = (vanish + half_top) + s * (right_bottom - (vanish + half_top))
        return left + t * (right - left)

    # Poles with signs, standing on the pavements.
    for _ in range(rng.integers(1, 5)):
        base_y = rng.uniform(horizon + 0.1 * h, h - 2)
        side = rng.choice([0.0, 1.0])
        bx = road_x(base_y, side) + (-1 if side == 0 else 1) * rng.uniform(0.02, 0.12) * w
        scale = (base_y - horizon) / (h - horizon)
        pw = max(4.0, 0.02 * w * (0.5 + scale))
        ph = (0.3 + 0.5 * scale) * h
        top = base_y - ph
        objs.append(("pole", _rect(bx - pw / 2, top, bx + pw / 2, base_y)))
        if rng.random() < 0.8:
            s = max(10.0, 0.1 * h * (0.6 + scale))
            if rng.random() < 0.5:
                objs.append(
                    ("traffic sign", _rect(bx - s / 2, top - s / 2, bx + s / 2, top + s / 2))
                )
            else:
                objs.append(("traffic sign", _ellipse(bx, top, s / 2, s / 2, n=10)))

    # Cars on the road, far ones first.
    for y in sorted(rng.uniform(horizon + 0.08 * h, h - 2, size=rng.integers(0, 4))):
        scale = (y - horizon) / (h - horizon)
        cw, ch = (0.15 + 0.35 * scale) * w * 0.6, (0.06 + 0.25 * scale) * h
        cx = road_x(y, rng.uniform(0.2, 0.8))
        objs.append(("car", _rect(cx - cw / 2, y - ch, cx + cw / 2, y - 0.2 * ch)))
        objs.append(("car", _rect(cx - 0.35 * cw, y - 1.45 * ch, cx + 0.35 * cw, y - ch + 1)))
        for wx in (cx - 0.3 * cw, cx + 0.3 * cw):
            objs.append(("car", _ellipse(wx, y - 0.2 * ch, 0.12 * cw, 0.2 * ch, n=10)))

    # People on the pavements.
    for _ in range(rng.integers(1, 5)):
        y = rng.uniform(horizon + 0.1 * h, h - 2)
        scale = (y - horizon) / (h - horizon)
        side = rng.choice([0.0, 1.0])
        px = road_x(y, side) + (-1 if side == 0 else 1) * rng.uniform(0.03, 0.2) * w
        ph = (0.2 + 0.4 * scale) * h
        pw = max(6.0, 0.35 * ph)
        objs.append(("person", _ellipse(px, y - 0.45 * ph, pw / 2, 0.42 * ph)))
        objs.append(("person", _ellipse(px, y - 0.95 * ph, pw / 3, pw / 3, n=10)))

    # Sometimes the ego vehicle's bonnet: void, ignored in loss and metrics.
    if rng.random() < 0.3:
        hood = rng.uniform(0.04, 0.1) * h
        objs.append(("ego vehicle", _ellipse(w / 2, h - 1 + hood, 0.7 * w, 2 * hood, n=24)))
    return Scene(height, width, objs)


def rasterise_labels(scene: Scene) -> np.ndarray:
    """labelId map (H x W, uint8) painted like cityscapesscripts' json2labelImg."""
    img = Image.new("L", (scene.width, scene.height), NAME_TO_LABEL_ID["unlabeled"])
    draw = ImageDraw.Draw(img)
    for name, polygon in scene.objects:
        draw.polygon(polygon, fill=NAME_TO_LABEL_ID[name])
    return np.asarray(img)


def _texture(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """H x W x 3 float texture for one instance of class `name`."""
    base = np.array(CLASS_COLOURS[name], dtype=np.float32) + rng.normal(0, COLOUR_SPREAD, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    shade = np.zeros((h, w), np.float32)
    if name == "sky":
        shade += 40 * (1 - yy / h) - 20
    elif name == "building":
        period = rng.integers(5, 10)
        win = ((yy.astype(int) % period) < period // 2) & ((xx.astype(int) % period) < period // 2)
        shade += np.where(win, rng.choice([-45, 45]), 0)
    elif name == "vegetation":
        shade += rng.normal(0, 30, (h, w))
    elif name == "road":
        lane = (np.abs(xx - rng.uniform(0.4, 0.6) * w) < 1.5) & ((yy.astype(int) // 6) % 2 == 0)
        shade += np.where(lane, 70, 0)
    elif name == "sidewalk":
        tile = rng.integers(6, 10)
        shade += np.where((yy.astype(int) % tile == 0) | (xx.astype(int) % tile == 0), -40, 0)
    elif name == "car":
        shade += np.where((yy.astype(int) // 3) % 2 == 0, 20, -20)
    elif name == "pole":
        shade += 25 * np.sin(xx)
    elif name == "traffic sign":
        shade += 60
    elif name == "person":
        shade += np.where(yy % 8 < 4, 15, -15)
    img += shade[..., None]
    return img


def render_image(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """RGB image (H x W x 3, uint8): each polygon filled with its class texture."""
    h, w = scene.height, scene.width
    img = np.zeros((h, w, 3), np.float32)
    for name, polygon in scene.objects:
        mask_img = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask_img).polygon(polygon, fill=1)
        mask = np.asarray(mask_img, dtype=bool)
        if mask.any():
            img[mask] = _texture(rng, name, h, w)[mask]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def polygons_json(scene: Scene) -> dict:
    """The scene in Cityscapes' `*_gtFine_polygons.json` format."""
    return {
        "imgHeight": scene.height,
        "imgWidth": scene.width,
        "objects": [
            {"label": name, "polygon": [list(p) for p in polygon]}
            for name, polygon in scene.objects
        ],
    }


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
