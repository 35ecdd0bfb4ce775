"""Synthetic street scenes: labelled polygons, back to front, as Cityscapes' own
``*_gtFine_polygons.json`` files are, with their label image and a rendered RGB image
(the built-in demo data set, `aspp_seg.data.datasets.demo`, writes them as files).

The label image is rasterised from the polygons the way cityscapesscripts'
`json2labelImg` does (PIL, in order, background "unlabeled"), and the RGB image fills
each polygon with a class texture. Colour alone does not give the answer: every instance
draws its colour from wide, overlapping per-class ranges, so a per-pixel colour
classifier does poorly; the class shows in texture (window grids, paving tiles, foliage
speckle, lane marks), in shape and in position, which is what a convnet has to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from aspp_seg.data.datasets.cityscapes import NAME_TO_LABEL_ID

Polygon = list[tuple[int, int]]


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
