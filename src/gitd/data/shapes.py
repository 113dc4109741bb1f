"""The built-in stand-in dataset: procedural scenes of coloured shapes with true, varied captions.

There is no Flickr30K or COCO offline, so ``make_shapes`` writes a compositional image-caption
dataset in the BLIP format that every gitd command reads. Each image shows one to three objects
(10 shapes, 10 colours, 3 sizes, a 3x3 grid of positions) on one of 8 background colours with one
of 5 textures; each gets five captions that differ in wording, order and level of detail, all
generated from the scene that was drawn, so they are true by construction.

Determinism: every image is drawn from a random stream seeded by ``(seed, split, index)`` only,
so the bytes of every file are the same for the same settings whatever the number of workers,
the chunking or an interrupted run that is resumed.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gitd import __version__
from gitd.errors import MAX_SEED, ConfigError, GitdError, environment_error
from gitd.log import get_logger, progress
from gitd.outdir import Inputs, OutputFolder
from gitd.settings import Interval, check
from gitd.store import atomic_write_json, atomic_write_text, read_json, temp_prefix, to_json
from gitd.workers import sigint_deferred, stop_pool

log = get_logger("data.shapes")

# Bump when a change alters any image or caption for the same settings: it is part of the
# settings a resumed run must match, so old images are never mixed with new ones.
GENERATOR_VERSION = 1

DEFAULT_TRAIN = 1000
DEFAULT_TEST = 200
DEFAULT_SIZE = 128
MIN_SIZE = 32
MAX_SIZE = 4096
MAX_IMAGES = 10_000_000
SPLITS = ("train", "test")
_SPLIT_KEYS = {"train": 1, "test": 2}
# Drawing at 3x and box-filtering down anti-aliases every edge for little cost at these sizes.
_SUPERSAMPLE = 3

# name -> (RGB, words a caption may use for it)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((215, 35, 40), ("red",)),
    "orange": ((245, 135, 25), ("orange",)),
    "yellow": ((248, 212, 35), ("yellow",)),
    "green": ((45, 165, 65), ("green",)),
    "blue": ((35, 85, 215), ("blue",)),
    "purple": ((135, 55, 175), ("purple", "violet")),
    "pink": ((245, 125, 185), ("pink",)),
    "brown": ((125, 78, 40), ("brown",)),
    "white": ((246, 246, 246), ("white",)),
    "black": ((22, 22, 22), ("black",)),
}
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "grey": ((128, 128, 128), ("grey", "gray")),
    "white": ((236, 236, 232), ("white",)),
    "black": ((30, 30, 32), ("black", "dark")),
    "beige": ((222, 206, 170), ("beige", "sand-coloured")),
    "navy": ((28, 38, 92), ("navy", "navy blue", "dark blue")),
    "light blue": ((165, 200, 235), ("light blue", "pale blue")),
    "dark green": ((30, 78, 48), ("dark green", "forest green")),
    "lavender": ((198, 182, 226), ("lavender", "pale purple")),
}
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "star": ("star",),
    "ring": ("ring", "donut"),
    "diamond": ("diamond", "rhombus"),
    "hexagon": ("hexagon",),
    "cross": ("cross", "plus sign"),
    "heart": ("heart",),
    "crescent": ("crescent", "crescent moon"),
}
SIZES: dict[str, tuple[float, tuple[str, ...]]] = {
    # radius as a fraction of the image side
    "small": (0.09, ("small", "little", "tiny")),
    "medium": (0.13, ("medium", "medium-sized", "mid-sized")),
    "large": (0.18, ("large", "big")),
}
TEXTURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # texture -> (adjectives, nouns for terse captions)
    "plain": (("plain", "solid", "flat"), ("background", "backdrop")),
    "gradient": (("gradient", "shaded", "fading"), ("gradient",)),
    "striped": (("striped",), ("stripes",)),
    "checkered": (("checkered", "checked", "chequered"), ("checks", "checkerboard")),
    "dotted": (("dotted", "polka-dot", "spotted"), ("dots", "polka dots")),
}
# (row, col) of the 3x3 grid -> (phrases for "X is <phrase>", terse label)
POSITIONS: dict[tuple[int, int], tuple[tuple[str, ...], str]] = {
    (0, 0): (("in the top left corner", "at the top left", "in the upper left"), "top left"),
    (0, 1): (("at the top", "near the top", "at the top centre"), "top"),
    (0, 2): (("in the top right corner", "at the top right", "in the upper right"), "top right"),
    (1, 0): (("on the left", "on the left side", "at the left"), "left"),
    (1, 1): (("in the centre", "in the middle", "at the centre"), "centre"),
    (1, 2): (("on the right", "on the right side", "at the right"), "right"),
    (2, 0): (("in the bottom left corner", "at the bottom left", "in the lower left"),
             "bottom left"),
    (2, 1): (("at the bottom", "near the bottom", "at the bottom centre"), "bottom"),
    (2, 2): (("in the bottom right corner", "at the bottom right", "in the lower right"),
             "bottom right"),
}
_N_OBJECTS_WEIGHTS = (0.25, 0.4, 0.35)  # one, two, three objects
_MIN_CONTRAST = 110.0  # RGB distance between an object's colour and its background's


def _rng_for(seed: int, split: str, index: int, stream: int) -> random.Random:
    state = np.random.SeedSequence([seed, _SPLIT_KEYS[split], index, stream]).generate_state(4)
    return random.Random(int.from_bytes(state.astype("<u4").tobytes(), "little"))


def _distance(a, b) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def make_scene(seed: int, split: str, index: int) -> dict[str, Any]:
    """The scene of one image: background and objects, with everything captions may mention."""
    rng = _rng_for(seed, split, index, 0)
    bg_name = rng.choice(sorted(BACKGROUNDS))
    texture = rng.choice(list(TEXTURES))
    bg_rgb = BACKGROUNDS[bg_name][0]
    n = rng.choices((1, 2, 3), weights=_N_OBJECTS_WEIGHTS)[0]
    usable = [c for c in COLOURS if _distance(COLOURS[c][0], bg_rgb) >= _MIN_CONTRAST]
    kinds: list[tuple[str, str]] = []
    while len(kinds) < n:  # no two objects share both colour and shape: captions stay unambiguous
        kind = (rng.choice(usable), rng.choice(list(SHAPES)))
        if kind not in kinds:
            kinds.append(kind)
    cells = rng.sample(sorted(POSITIONS), n)
    objects: list[dict[str, Any]] = []
    for attempt in range(30):
        sizes = [rng.choice(list(SIZES)) if attempt < 29 else "small" for _ in range(n)]
        objects = []
        for (colour, shape), cell, size in zip(kinds, cells, sizes):
            r = SIZES[size][0]
            lo, hi = r + 0.02, 1.0 - r - 0.02
            x = min(max((cell[1] + 0.5) / 3 + rng.uniform(-0.04, 0.04), lo), hi)
            y = min(max((cell[0] + 0.5) / 3 + rng.uniform(-0.04, 0.04), lo), hi)
            objects.append({"shape": shape, "colour": colour, "size": size,
                            "row": cell[0], "col": cell[1], "position": POSITIONS[cell][1],
                            "x": round(x, 4), "y": round(y, 4), "r": r,
                            "angle": round(rng.uniform(-15.0, 15.0), 2)})
        # Objects may touch but never hide much of each other.
        if all(math.hypot(a["x"] - b["x"], a["y"] - b["y"]) >= 0.95 * (a["r"] + b["r"])
               for i, a in enumerate(objects) for b in objects[i + 1:]):
            break
    return {"background": {"colour": bg_name, "texture": texture}, "objects": objects}


# --- drawing ---------------------------------------------------------------------------------

def _tone(rgb, amount: float) -> tuple[int, int, int]:
    """A second shade of a background colour: lighter on dark ones, darker on light ones."""
    light = sum(rgb) / 3 > 110
    target = 0 if light else 255
    return tuple(int(round(c + (target - c) * amount)) for c in rgb)  # type: ignore[return-value]


def _draw_background(bg: dict[str, Any], side: int, rng: random.Random) -> Image.Image:
    base = BACKGROUNDS[bg["colour"]][0]
    tone = _tone(base, rng.uniform(0.18, 0.3))
    texture = bg["texture"]
    if texture == "gradient":
        t = np.linspace(0.0, 1.0, side, dtype=np.float32)
        if rng.random() < 0.5:
            t = t[::-1]
        ramp = np.asarray(base, np.float32) + t[:, None] * (np.asarray(tone, np.float32)
                                                            - np.asarray(base, np.float32))
        ramp = np.round(ramp).astype(np.uint8)  # round the ramp, not the whole image: 4x faster
        arr = np.broadcast_to(ramp[:, None, :], (side, side, 3))
        if rng.random() < 0.5:
            arr = arr.transpose(1, 0, 2)
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    img = Image.new("RGB", (side, side), base)
    draw = ImageDraw.Draw(img)
    if texture == "striped":
        width = max(2, int(side * rng.uniform(0.05, 0.1)))
        offset = rng.randrange(2 * width)
        vertical = rng.random() < 0.5
        for start in range(-2 * width + offset, side, 2 * width):
            box = ((start, 0, start + width - 1, side) if vertical
                   else (0, start, side, start + width - 1))
            draw.rectangle(box, fill=tone)
    elif texture == "checkered":
        cell = max(2, int(side * rng.uniform(0.08, 0.15)))
        for i in range(0, side, cell):
            for j in range(0, side, cell):
                if (i // cell + j // cell) % 2:
                    draw.rectangle((j, i, j + cell - 1, i + cell - 1), fill=tone)
    elif texture == "dotted":
        step = max(4, int(side * rng.uniform(0.08, 0.13)))
        rad = max(1, int(step * rng.uniform(0.15, 0.25)))
        for row, i in enumerate(range(step // 2, side + step, step)):
            shift = step // 2 if row % 2 else 0
            for j in range(step // 2 - shift, side + step, step):
                draw.ellipse((j - rad, i - rad, j + rad, i + rad), fill=tone)
    return img


def _rotate(points, cx, cy, angle_deg):
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]


def _polygon(shape: str, r: float) -> list[tuple[float, float]]:
    """Vertices around (0, 0), y down, sized so shapes of one size class look equally big."""
    if shape == "square":
        h = r * 0.85
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "diamond":
        return [(0, -r), (0.62 * r, 0), (0, r), (-0.62 * r, 0)]
    if shape == "triangle":
        return [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a)) + 0.12 * r)
                for a in (-90, 30, 150)]
    if shape == "star":
        return [((r if k % 2 == 0 else 0.45 * r) * math.cos(math.radians(-90 + 36 * k)),
                 (r if k % 2 == 0 else 0.45 * r) * math.sin(math.radians(-90 + 36 * k)))
                for k in range(10)]
    if shape == "hexagon":
        return [(r * math.cos(math.radians(60 * k)), r * math.sin(math.radians(60 * k)))
                for k in range(6)]
    if shape == "cross":
        a, w = r * 0.95, r * 0.34
        return [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w),
                (-a, w), (-a, -w), (-w, -w)]
    if shape == "heart":
        pts = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x * r / 16.5, -(y + 2.5) * r / 16.5))
        return pts
    raise ValueError(shape)


def _shape_mask(obj: dict[str, Any], side: int) -> tuple[Image.Image, tuple[int, int]]:
    """An L mask of one object in a local box, and where the box goes on the canvas."""
    r = obj["r"] * side
    cx, cy = obj["x"] * side, obj["y"] * side
    x0, y0 = int(math.floor(cx - r * 1.1)), int(math.floor(cy - r * 1.1))
    box = int(math.ceil(r * 2.2)) + 2
    mask = Image.new("L", (box, box), 0)
    draw = ImageDraw.Draw(mask)
    lx, ly = cx - x0, cy - y0
    shape = obj["shape"]
    if shape == "circle":
        draw.ellipse((lx - r, ly - r, lx + r, ly + r), fill=255)
    elif shape == "ring":
        draw.ellipse((lx - r, ly - r, lx + r, ly + r), fill=255)
        inner = r * 0.55
        draw.ellipse((lx - inner, ly - inner, lx + inner, ly + inner), fill=0)
    elif shape == "crescent":
        draw.ellipse((lx - r, ly - r, lx + r, ly + r), fill=255)
        a = math.radians(obj["angle"])
        ox, oy = lx + 0.45 * r * math.cos(a), ly + 0.45 * r * math.sin(a) - 0.15 * r
        rr = r * 0.85
        draw.ellipse((ox - rr, oy - rr, ox + rr, oy + rr), fill=0)
    else:
        angle = obj["angle"] + (30.0 if shape == "hexagon" else 0.0)
        draw.polygon(_rotate(_polygon(shape, r), lx, ly, angle), fill=255)
    return mask, (x0, y0)


def render_scene(scene: dict[str, Any], size: int, rng: random.Random) -> Image.Image:
    """Draw a scene as a ``size`` x ``size`` RGB image (anti-aliased by supersampling)."""
    side = size * _SUPERSAMPLE
    img = _draw_background(scene["background"], side, rng)
    # Larger objects first, so a small one that touches a large one stays fully visible.
    for obj in sorted(scene["objects"], key=lambda o: -o["r"]):
        base = COLOURS[obj["colour"]][0]
        fill = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in base)
        mask, origin = _shape_mask(obj, side)
        img.paste(fill, (origin[0], origin[1], origin[0] + mask.width, origin[1] + mask.height),
                  mask)
    return img.reduce(_SUPERSAMPLE)


# --- captions --------------------------------------------------------------------------------

def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


class _Captioner:
    """Writes captions for one scene; each builder chooses its own wording and detail."""

    def __init__(self, scene: dict[str, Any], rng: random.Random):
        self.scene = scene
        self.objs = scene["objects"]
        self.n = len(self.objs)
        self.rng = rng
        # Lone objects need more detail per caption or different images would share captions.
        self.p_detail = 1.0 if self.n == 1 else 0.5

    def pick(self, options):
        return self.rng.choice(options)

    def flag(self, p: float | None = None) -> bool:
        return self.rng.random() < (self.p_detail if p is None else p)

    def order(self) -> list[dict[str, Any]]:
        objs = list(self.objs)
        self.rng.shuffle(objs)
        return objs

    def noun(self, obj, *, size: bool, article: bool = True) -> str:
        words = [self.pick(SIZES[obj["size"]][1])] if size else []
        words += [self.pick(COLOURS[obj["colour"]][1]), self.pick(SHAPES[obj["shape"]])]
        phrase = " ".join(words)
        return _article(phrase) if article else phrase

    def where(self, obj) -> str:
        return self.pick(POSITIONS[(obj["row"], obj["col"])][0])

    def background(self, *, texture: bool | None = None) -> str:
        bg = self.scene["background"]
        colour = self.pick(BACKGROUNDS[bg["colour"]][1])
        noun = self.pick(("background", "backdrop"))
        if texture is None:
            texture = self.flag(0.6)
        if not texture:
            return _article(f"{colour} {noun}")
        adj = self.pick(TEXTURES[bg["texture"]][0])
        if self.flag(0.5):
            return _article(f"{adj} {colour} {noun}")
        return _article(f"{colour} {adj} {noun}")

    def relation(self, a, b) -> str:
        """A true spatial relation of a to b (their grid cells always differ)."""
        vert = "above" if a["row"] < b["row"] else "below" if a["row"] > b["row"] else None
        horiz = ("to the left of" if a["col"] < b["col"] else
                 "to the right of" if a["col"] > b["col"] else None)
        options = [x for x in (vert, horiz) if x]
        if vert and horiz:
            options.append(f"{vert} and {horiz}")
        if not vert:
            options += ["next to", "beside"]
        return self.pick(options)

    def item(self, obj, *, position: bool | None = None, size: bool | None = None) -> str:
        size = self.flag() if size is None else size
        phrase = self.noun(obj, size=size)
        if self.flag() if position is None else position:
            phrase += " " + self.where(obj)
        return phrase

    # Builders: each returns one caption mentioning every object's colour and shape.

    def listing(self) -> str:
        items = [self.item(o) for o in self.order()]
        if self.flag(0.8 if self.n > 1 else 1.0):
            link = self.pick(("on", "against", "over"))
            return f"{_join(items)} {link} {self.background()}"
        return _join(items)

    def related(self) -> str:
        objs = self.order()
        if self.n == 1:
            o = objs[0]
            return f"{self.noun(o, size=True)} {self.where(o)} of {self.background()}"
        a, b = objs[0], objs[1]
        text = f"{self.noun(a, size=self.flag())} {self.relation(a, b)} {self.noun(b, size=self.flag())}"
        if self.n == 3:
            c = objs[2]
            text += self.pick((", and ", " with ", ", plus ")) + self.item(c, position=True)
        if self.flag(0.6):
            text += f" on {self.background()}"
        return text

    def counted(self) -> str:
        things = self.pick(("shapes", "objects", "figures"))
        bg = self.background()
        if self.n == 1:
            head = f"a single {things[:-1]} on {bg}"
        else:
            head = f"{('two', 'three')[self.n - 2]} {things} on {bg}"
        return f"{head}: {_join([self.item(o) for o in self.order()])}"

    def verbal(self) -> str:
        objs = self.order()
        verb = self.pick(("sits", "is", "is placed", "appears", "rests"))
        if self.n == 1:
            o = objs[0]
            return f"{self.noun(o, size=self.flag(0.7))} {verb} {self.where(o)} of {self.background(texture=True)}"
        a, b = objs[0], objs[1]
        text = f"{self.noun(a, size=self.flag())} {verb} {self.relation(a, b)} {self.noun(b, size=self.flag())}"
        if self.n == 3:
            c = objs[2]
            text += f" while {self.noun(c, size=self.flag())} {self.pick(('sits', 'is'))} {self.where(c)}"
        return text

    def terse(self) -> str:
        parts = []
        for o in self.order():
            label = self.noun(o, size=self.flag(0.4 if self.n > 1 else 0.7), article=False)
            parts.append(f"{label} {POSITIONS[(o['row'], o['col'])][1]}")
        bg = self.scene["background"]
        parts.append(f"{self.pick(BACKGROUNDS[bg['colour']][1])} "
                     f"{self.pick(TEXTURES[bg['texture']][1])}")
        return ", ".join(parts)

    def described(self) -> str:
        intro = self.pick(("an image of", "a picture of", "a drawing of",
                           "a simple illustration of", "a graphic showing"))
        items = [self.item(o) for o in self.order()]
        return f"{intro} {_join(items)} on {self.background()}"

    def background_first(self) -> str:
        items = [self.item(o) for o in self.order()]
        if self.flag(0.5):
            return f"on {self.background()}, {_join(items)}"
        bg = self.background()
        return f"{bg} with {_join(items)}"

    def there_is(self) -> str:
        items = [self.item(o) for o in self.order()]
        verb = "there is" if self.n == 1 else "there are"
        return f"{verb} {_join(items)} on {self.background()}"

    BUILDERS = ("listing", "related", "counted", "verbal", "terse", "described",
                "background_first", "there_is")

    def captions(self, k: int = 5) -> list[str]:
        out: list[str] = []
        builders = list(self.BUILDERS)
        self.rng.shuffle(builders)
        attempts = 0
        while len(out) < k:
            caption = getattr(self, builders[attempts % len(builders)])()
            attempts += 1
            if caption not in out:
                out.append(caption)
            if attempts > 200:  # cannot happen with 8 distinct builders; guards a future edit
                raise RuntimeError("could not write distinct captions")
        return out


def make_captions(scene: dict[str, Any], rng: random.Random, k: int = 5) -> list[str]:
    return _Captioner(scene, rng).captions(k)


def make_item(seed: int, split: str, index: int, size: int) -> tuple[dict, list[str], Image.Image]:
    """One example: its scene, its five captions and its image (separate random streams)."""
    scene = make_scene(seed, split, index)
    captions = make_captions(scene, _rng_for(seed, split, index, 1))
    image = render_scene(scene, size, _rng_for(seed, split, index, 2))
    return scene, captions, image


# --- writing ---------------------------------------------------------------------------------

_IMAGE_RE = re.compile(r"^(train|test)_\d+\.png$")


def _image_name(split: str, index: int, width: int) -> str:
    return f"images/{split}_{index:0{width}d}.png"


def _render_chunk(task: tuple) -> list[tuple[dict, list[str]]]:
    out_dir, split, start, stop, seed, size, width, reuse = task
    out_dir = Path(out_dir)
    results = []
    for index in range(start, stop):
        scene = make_scene(seed, split, index)
        captions = make_captions(scene, _rng_for(seed, split, index, 1))
        path = out_dir / _image_name(split, index, width)
        if not (reuse and path.exists()):
            image = render_scene(scene, size, _rng_for(seed, split, index, 2))
            # A temporary name then os.replace: a killed run never leaves half a PNG under the
            # final name. No fsync per file: 100k fsyncs would dominate the run time.
            tmp = path.with_name(f"{temp_prefix(path)}shapes.tmp")
            try:
                image.save(tmp, format="PNG")  # PIL writes no timestamp chunk: same bytes
                os.replace(tmp, path)
            except OSError as exc:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                raise GitdError(f"{path}: cannot write ({exc.strerror or exc}); re-run the same "
                                "command to resume") from exc
        results.append((scene, captions))
    return results


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _readme(settings: dict[str, Any]) -> str:
    return (
        "# gitd shapes: a procedural image-caption dataset\n\n"
        f"Written by `gitd shapes` (gitd {__version__}, generator version "
        f"{settings['generator_version']}) with seed {settings['seed']}, "
        f"{settings['train']} training and {settings['test']} test images of "
        f"{settings['size']}x{settings['size']} pixels.\n\n"
        "- `train.json`, `test.json`: BLIP format, `[{\"image\": \"images/...png\", "
        "\"caption\": [5 strings]}]`, image paths relative to this folder.\n"
        "- `scenes.jsonl`: what each image shows (background, objects with shape, colour, size, "
        "grid cell and centre), one line per image, train then test.\n"
        "- `info.json`: settings and vocabulary.\n\n"
        "Every image shows 1 to 3 coloured shapes on a textured background; its five captions "
        "are generated from the drawn scene and are therefore true. The same settings always "
        "give byte-identical files.\n"
    )


def make_shapes(out: str | Path, *, train: int = DEFAULT_TRAIN, test: int = DEFAULT_TEST,
                size: int = DEFAULT_SIZE, seed: int = 0, workers: int | None = None) -> dict:
    """Write the shapes dataset to ``out`` and return a summary.

    Files: ``out/images/{train,test}_NNNNNN.png``, ``out/train.json`` and ``out/test.json``
    (BLIP format), ``out/scenes.jsonl``, ``out/info.json`` and ``out/README.md``. A re-run with
    the same settings keeps the images already written (a run killed part way resumes); with
    other settings every image is redrawn.
    """
    check("train", train, Interval(int, 1, MAX_IMAGES))
    check("test", test, Interval(int, 1, MAX_IMAGES))
    check("size", size, Interval(int, MIN_SIZE, MAX_SIZE))
    check("seed", seed, Interval(int, 0, MAX_SEED))
    workers = (_default_workers() if workers is None
               else check("workers", workers, Interval(int, 1, 1024)))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder")
    # Refuses a folder gitd did not write; removes temporary files a killed run left.
    folder = OutputFolder.prepare(out, command="shapes", inputs=Inputs())
    images = out / "images"
    try:
        images.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise environment_error(out, exc, action="create the output folder") from exc

    settings = {"generator": "gitd.shapes", "generator_version": GENERATOR_VERSION,
                "seed": seed, "size": size, "train": train, "test": test}
    marker = out / ".shapes-settings.json"
    previous = read_json(marker)
    reuse = previous is not None and {k: previous.get(k) for k in ("generator_version", "seed",
                                                                     "size")} == {
        k: settings[k] for k in ("generator_version", "seed", "size")}
    counts = {"train": train, "test": test}
    width = max(6, len(str(max(train, test) - 1)))
    wanted = {_image_name(split, i, width).split("/")[1]
              for split in SPLITS for i in range(counts[split])}
    # Images of other settings must go before the marker says these settings: otherwise a run
    # killed part way would later resume over a mix of old and new images. Images beyond the
    # counts asked for go too, so the folder holds exactly this dataset. The folder's marker
    # says it is gitd shapes' own, so these names are its own images.
    for old in images.iterdir():
        if _IMAGE_RE.match(old.name) and (not reuse or old.name not in wanted):
            old.unlink(missing_ok=True)
    atomic_write_json(marker, settings)
    tasks = []
    for split in SPLITS:
        n = counts[split]
        chunk = max(16, min(500, -(-n // (workers * 8))))
        for start in range(0, n, chunk):
            tasks.append((str(out), split, start, min(n, start + chunk), seed, size, width,
                          reuse))

    started = time.perf_counter()
    results: list[list[tuple[dict, list[str]]] | None] = [None] * len(tasks)
    bar = progress(total=train + test, desc="shapes", unit="img")
    try:
        if workers == 1 or len(tasks) == 1:
            for i, task in enumerate(tasks):
                results[i] = _render_chunk(task)
                bar.update(task[3] - task[2])
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
                try:
                    with sigint_deferred():  # workers are forked here; Ctrl-C is ours
                        futures = {pool.submit(_render_chunk, task): i
                                   for i, task in enumerate(tasks)}
                    for future in as_completed(futures):
                        i = futures[future]
                        results[i] = future.result()
                        bar.update(tasks[i][3] - tasks[i][2])
                except KeyboardInterrupt:
                    stop_pool(pool)
                    raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - started

    annotations: dict[str, list[dict]] = {split: [] for split in SPLITS}
    scene_lines = []
    for task, chunk_results in zip(tasks, results):
        split, start = task[1], task[2]
        for index, (scene, captions) in enumerate(chunk_results, start):
            name = _image_name(split, index, width)
            annotations[split].append({"image": name, "caption": captions})
            scene_lines.append(to_json({"split": split, "index": index, "image": name,
                                        "scene": scene}, indent=None))
    for split in SPLITS:
        atomic_write_json(out / f"{split}.json", annotations[split])
    atomic_write_text(out / "scenes.jsonl", "\n".join(scene_lines) + "\n")
    info = dict(settings, gitd_version=__version__, images_folder="images",
                files={"train": "train.json", "test": "test.json", "scenes": "scenes.jsonl"},
                vocabulary={"shapes": list(SHAPES), "colours": list(COLOURS),
                            "sizes": list(SIZES), "backgrounds": list(BACKGROUNDS),
                            "textures": list(TEXTURES),
                            "positions": [v[1] for v in POSITIONS.values()]},
                captions_per_image=5)
    atomic_write_json(out / "info.json", info)
    atomic_write_text(out / "README.md", _readme(settings))
    folder.record_files()
    log.info("shapes: %d train + %d test images in %.1f s", train, test, elapsed)
    return {"out": str(out), "train": train, "test": test, "size": size, "seed": seed,
            "train_json": str(out / "train.json"), "test_json": str(out / "test.json"),
            "seconds": round(elapsed, 2)}
