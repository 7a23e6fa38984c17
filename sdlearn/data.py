"""The Shapes world: captioned procedural images, and a few offline photos.

Every image is 64x64 RGB: one shape of a given colour and size at one of nine positions on a
3x3 grid, on a plain light background, anti-aliased (drawn at 4x and downsampled), with a little
jitter in place, size, rotation and tint. A seed decides every pixel. Captions describe the four
attributes in words, so a text-to-image model trained on them can be asked for any combination;
``HELD_OUT`` lists (shape, colour) pairs the training data never shows, for testing whether the
model composes attributes it has only seen apart.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "top left", "top center", "top right",
    "center left", "center", "center right",
    "bottom left", "bottom center", "bottom right",
)
#: (shape, colour) pairs that ShapesDataset(holdout=True) never produces.
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("circle", "yellow"), ("square", "orange"), ("triangle", "purple"),
    ("diamond", "green"), ("star", "blue"),
)

IMAGE_SIZE = 64
BACKGROUND = (242, 242, 238)
RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "orange": (245, 135, 15), "yellow": (232, 200, 20),
    "green": (40, 155, 60), "blue": (35, 85, 215), "purple": (135, 50, 175),
}
RADIUS = {"small": 8.0, "large": 13.5}   # circumradius in pixels at 64x64
_GRID = (0.24, 0.5, 0.76)                # grid line centres as a fraction of the side
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Attributes:
    shape: str
    color: str
    size: str
    position: str

    def caption(self) -> str:
        return caption(self.shape, self.color, self.size, self.position)


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def position_center(position: str, size: int = IMAGE_SIZE) -> tuple[float, float]:
    """(x, y) pixel centre of a grid position."""
    _check("position", position, POSITIONS)
    row, col = divmod(POSITIONS.index(position), 3)
    return _GRID[col] * size, _GRID[row] * size


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.pi / 4 + k * math.pi / 2) for k in range(4)]
        radii = [r * 0.92] * 4
    elif shape == "diamond":
        pts = [(k * math.pi / 2) for k in range(4)]
        radii = [r, r * 0.8, r, r * 0.8]
    elif shape == "triangle":
        pts = [(-math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
        radii = [r * 1.1] * 3
        cy += r * 0.15
    elif shape == "star":
        pts = [(-math.pi / 2 + k * math.pi / 5) for k in range(10)]
        radii = [r * 1.1 if k % 2 == 0 else r * 0.45 for k in range(10)]
    else:
        raise AssertionError(shape)
    return [(cx + rr * math.cos(a + angle), cy + rr * math.sin(a + angle)) for a, rr in zip(pts, radii)]


def render(shape: str, color: str, size: str, position: str, seed: int | None = None,
           image_size: int = IMAGE_SIZE, jitter: bool = True) -> Image.Image:
    """Draw one shape; the same arguments and seed always give the same pixels.

    ``seed=None`` (or ``jitter=False``) draws the shape exactly at its grid centre, untinted.
    """
    for name, value, allowed in (("shape", shape, SHAPES), ("color", color, COLORS),
                                 ("size", size, SIZES), ("position", position, POSITIONS)):
        _check(name, value, allowed)
    rng = np.random.default_rng(seed) if (jitter and seed is not None) else None
    s = image_size * _SUPERSAMPLE
    cx, cy = position_center(position, s)
    r = RADIUS[size] * image_size / IMAGE_SIZE * _SUPERSAMPLE
    angle, fill = 0.0, np.array(RGB[color], dtype=float)
    if rng is not None:
        cx += rng.uniform(-2, 2) * _SUPERSAMPLE * image_size / IMAGE_SIZE
        cy += rng.uniform(-2, 2) * _SUPERSAMPLE * image_size / IMAGE_SIZE
        r *= rng.uniform(0.92, 1.08)
        angle = math.radians(rng.uniform(-8, 8))
        fill = fill + rng.uniform(-12, 12, size=3)
    img = Image.new("RGB", (s, s), BACKGROUND)
    _draw(ImageDraw.Draw(img), shape, cx, cy, r, angle, fill)
    return img.resize((image_size, image_size), Image.Resampling.BOX)


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float,
          fill: np.ndarray) -> None:
    """One filled shape of circumradius ``r`` centred at (cx, cy), on the supersampled canvas."""
    fill_rgb = tuple(int(v) for v in np.clip(fill, 0, 255))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill_rgb)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=fill_rgb)


def caption(shape: str, color: str, size: str | None = None, position: str | None = None) -> str:
    """The canonical caption, e.g. ``"a small red circle in the top left"``."""
    _check("shape", shape, SHAPES)
    _check("color", color, COLORS)
    words = ["a"]
    if size is not None:
        _check("size", size, SIZES)
        words.append(size)
    words += [color, shape]
    if position is not None:
        _check("position", position, POSITIONS)
        words += ["in the", position]
    return " ".join(words)


def random_attributes(rng: np.random.Generator, holdout: bool = True) -> Attributes:
    """Uniformly random attributes; with ``holdout`` never a (shape, colour) pair in HELD_OUT."""
    while True:
        a = Attributes(SHAPES[rng.integers(len(SHAPES))], COLORS[rng.integers(len(COLORS))],
                       SIZES[rng.integers(len(SIZES))], POSITIONS[rng.integers(len(POSITIONS))])
        if not holdout or (a.shape, a.color) not in HELD_OUT:
            return a


_TEMPLATES = (
    "a {size} {color} {shape} in the {position}",
    "a {color} {shape} in the {position}",
    "a {size} {color} {shape}",
    "{size} {color} {shape}, {position}",
    "a picture of a {size} {color} {shape} in the {position}",
    "the {position} has a {size} {color} {shape}",
    "a {color} {shape}",
    "{color} {shape} {position}",
    "a drawing of a {color} {shape}, {size}, {position}",
    "{position}: {size} {color} {shape}",
)
#: Probability of each template; the canonical caption (the first) is the most common.
_TEMPLATE_P = np.array([0.4, 0.08, 0.08, 0.08, 0.08, 0.08, 0.04, 0.06, 0.05, 0.05])


def varied_caption(a: Attributes, rng: np.random.Generator) -> str:
    """A caption in one of several wordings, as real captions vary; some omit attributes."""
    template = _TEMPLATES[rng.choice(len(_TEMPLATES), p=_TEMPLATE_P)]
    return template.format(size=a.size, color=a.color, shape=a.shape, position=a.position)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [-1, 1], the range Stable Diffusion's VAE uses."""
    x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32).copy())  # (H, W, 3) in [0, 255]
    return x.permute(2, 0, 1) / 127.5 - 1.0                                          # (3, H, W) in [-1, 1]


def to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> PIL RGB."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).cpu().numpy())


class ShapesDataset(torch.utils.data.Dataset):
    """``length`` captioned Shapes images; item ``i`` is the same for the same ``seed``.

    Returns ``(image, caption)`` with image a (3, 64, 64) tensor in [-1, 1]. ``varied=True``
    words captions in varied templates; ``holdout=True`` excludes the HELD_OUT pairs.
    ``dataset.attributes(i)`` tells what item ``i`` shows.
    """

    def __init__(self, length: int = 10_000, seed: int = 0, holdout: bool = True,
                 varied: bool = True, image_size: int = IMAGE_SIZE):
        self.length, self.seed, self.holdout = length, seed, holdout
        self.varied, self.image_size = varied, image_size

    def __len__(self) -> int:
        return self.length

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i])

    def attributes(self, i: int) -> Attributes:
        return random_attributes(self._rng(i), self.holdout)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = self._rng(i)
        a = random_attributes(rng, self.holdout)
        img = render(a.shape, a.color, a.size, a.position, seed=int(rng.integers(2**31)),
                     image_size=self.image_size)
        text = varied_caption(a, rng) if self.varied else a.caption()
        return to_tensor(img), text


# ---------------------------------------------------------------------- Shapes world 2: scenes
#: How two objects of a scene relate; a caption names one, or joins them with "and".
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
#: Plain backgrounds, none of them an object colour. "white" is the single-object world's background.
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray")
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {"white": BACKGROUND, "black": (28, 28, 32), "gray": (128, 128, 124)}
MIN_SEPARATION = IMAGE_SIZE / 4          # along a relation's axis, drawn centres differ by at least this
_SLACK = 4.0                             # a drawn triangle's or star's centroid sits up to ~3 px off its centre
_MARGIN = 4.0                            # pixels between two objects' circumcircles: no overlap, even jittered


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene: what it is and where its centre is (pixels of the 64x64 image)."""
    shape: str
    color: str
    size: str
    x: float
    y: float

    @property
    def radius(self) -> float:
        return RADIUS[self.size]


@dataclass(frozen=True)
class Scene:
    """One or two objects on a plain background; ``relation`` says how the first relates to the
    second (one of RELATIONS, or "and" when the caption names no relation)."""
    objects: tuple[SceneObject, ...]
    background: str = "white"
    relation: str = "and"

    def caption(self, **leave_out: bool) -> str:
        return scene_caption(self, **leave_out)


def _check_relation(first: SceneObject, second: SceneObject, relation: str) -> bool:
    """Whether ``first RELATION second`` holds unambiguously: centres a quarter-image apart on the
    relation's axis (with room for a drawn shape's centroid to sit a few pixels off its centre),
    and further apart on that axis than on the other, so that no other relation describes it too."""
    if relation == "and":
        return True
    dx, dy = second.x - first.x, second.y - first.y           # image y grows downwards
    along, across = {"to the left of": (dx, dy), "to the right of": (-dx, dy), "above": (dy, dx),
                     "below": (-dy, dx)}[relation]
    return along >= MIN_SEPARATION + _SLACK and along > abs(across) + _SLACK


def relation_holds(scene: Scene) -> bool:
    """Two objects: the scene's relation holds unambiguously and they don't overlap."""
    if len(scene.objects) == 1:
        return True
    a, b = scene.objects
    apart = math.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius + _MARGIN
    return apart and _check_relation(a, b, scene.relation)


def random_scene(rng: np.random.Generator, n_objects: int | None = None, holdout: bool = True) -> Scene:
    """A random scene of one or two objects (``n_objects`` None: either, equally likely) on a
    random background; two objects get a random relation (or "and") that their places satisfy.
    With ``holdout`` no object is a (shape, colour) pair in HELD_OUT."""
    n = int(rng.integers(1, 3)) if n_objects is None else n_objects
    if n not in (1, 2):
        raise ValueError(f"n_objects must be 1 or 2 (or None); got {n_objects!r}")
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]

    def thing() -> tuple[str, str, str]:
        a = random_attributes(rng, holdout)
        return a.shape, a.color, a.size
    if n == 1:
        shape, color, size = thing()
        cx, cy = position_center(POSITIONS[rng.integers(len(POSITIONS))])
        return Scene((SceneObject(shape, color, size, cx, cy),), background)
    relation = (*RELATIONS, "and")[rng.integers(len(RELATIONS) + 1)]
    (s1, c1, z1), (s2, c2, z2) = thing(), thing()
    while True:                                               # rejection sampling: ~3 tries on average
        lo1, lo2 = RADIUS[z1] + 1, RADIUS[z2] + 1
        a = SceneObject(s1, c1, z1, *rng.uniform(lo1, IMAGE_SIZE - lo1, size=2))
        b = SceneObject(s2, c2, z2, *rng.uniform(lo2, IMAGE_SIZE - lo2, size=2))
        scene = Scene((a, b), background, relation)
        if relation_holds(scene):
            return scene


def render_scene(scene: Scene, seed: int | None = None, image_size: int = IMAGE_SIZE) -> Image.Image:
    """Draw a scene; the same scene and seed always give the same pixels. With a seed each object
    gets the single-object world's jitter in size, rotation and tint (not in place: places are the
    scene's)."""
    _check("background", scene.background, BACKGROUNDS)
    if not 1 <= len(scene.objects) <= 2:
        raise ValueError(f"a scene has 1 or 2 objects; got {len(scene.objects)}")
    rng = np.random.default_rng(seed) if seed is not None else None
    s = image_size * _SUPERSAMPLE
    scale = _SUPERSAMPLE * image_size / IMAGE_SIZE
    img = Image.new("RGB", (s, s), BACKGROUND_RGB[scene.background])
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        for name, value, allowed in (("shape", o.shape, SHAPES), ("color", o.color, COLORS), ("size", o.size, SIZES)):
            _check(name, value, allowed)
        r, angle, fill = o.radius * scale, 0.0, np.array(RGB[o.color], dtype=float)
        if rng is not None:
            r *= rng.uniform(0.92, 1.08)
            angle = math.radians(rng.uniform(-8, 8))
            fill = fill + rng.uniform(-12, 12, size=3)
        _draw(draw, o.shape, o.x * scale, o.y * scale, r, angle, fill)
    return img.resize((image_size, image_size), Image.Resampling.BOX)


def _noun_phrase(o: SceneObject, size: bool, color: bool, shape: bool) -> str:
    words = ["a"] + ([o.size] if size else []) + ([o.color] if color else []) + [o.shape if shape else "shape"]
    return " ".join(words)


def grid_position(o: SceneObject) -> str | None:
    """The grid position (one of POSITIONS) an object is centred on, or None if it is off the grid
    (two-object scenes place objects freely; a single object sits on the grid, as in Shapes world 1)."""
    for name in POSITIONS:
        cx, cy = position_center(name)
        if abs(o.x - cx) < 0.5 and abs(o.y - cy) < 0.5:
            return name
    return None


def scene_caption(scene: Scene, size: bool = True, color: bool = True, shape: bool = True,
                  relation: bool = True, background: bool = True, position: bool = True) -> str:
    """The caption of a scene, e.g. ``"a small red circle to the left of a large blue square on a
    black background"``; each keyword ``False`` leaves that attribute out (it then varies).
    A single object on the grid reads as Shapes world 1 does, place included:
    ``"a large red circle in the top left on a gray background"``."""
    phrases = [_noun_phrase(o, size, color, shape) for o in scene.objects]
    text = phrases[0]
    if len(phrases) == 2:
        joiner = scene.relation if (relation and scene.relation != "and") else "and"
        text = f"{phrases[0]} {joiner} {phrases[1]}"
    elif position and grid_position(scene.objects[0]) is not None:
        text += f" in the {grid_position(scene.objects[0])}"
    if background:
        text += f" on a {scene.background} background"
    return text


def varied_scene_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A scene caption that leaves attributes out at random, so that an unnamed attribute comes to
    mean "any": sizes often, the background half the time, colour or shape now and then. A single
    object on the grid takes one of Shapes world 1's wordings (``varied_caption``)."""
    color, shape = rng.random() < 0.85, rng.random() < 0.9
    if len(scene.objects) == 1 and grid_position(scene.objects[0]) is not None:
        o = scene.objects[0]
        text = varied_caption(Attributes(o.shape, o.color, o.size, grid_position(o)), rng)
        if not color:
            text = re.sub(rf"\b{o.color} ", "", text)
        if not shape:
            text = re.sub(rf"\b{o.shape}\b", "shape", text)
        return text + (f" on a {scene.background} background" if rng.random() < 0.5 else "")
    return scene_caption(scene, size=rng.random() < 0.5, color=color, shape=shape,
                         relation=rng.random() < 0.9, background=rng.random() < 0.5)


def _mentioned(text: str, names: dict[str, tuple[str, ...]]) -> dict[str, str]:
    found = {}
    for name, values in names.items():
        hits = [v for v in values if re.search(rf"\b{v}\b", text)]
        if hits:
            found[name] = max(hits, key=len)   # "top center" also contains "center": the longest is meant
    return found


@functools.lru_cache(maxsize=65536)
def parse_caption(text: str) -> tuple[tuple[dict[str, str], ...], str, str | None]:
    """What a caption states: (one dict per object of the attributes it names, the relation
    ("and" for one object or none named), the background or None). Any wording of
    ``varied_caption`` / ``varied_scene_caption`` parses; e.g. ``"a red circle above a square"`` ->
    ``({"color": "red", "shape": "circle"}, {"shape": "square"}), "above", None``."""
    background = None
    m = re.search(r" on an? (\w+) background$", text)
    if m:
        background, text = m.group(1), text[:m.start()]
    words = {"shape": SHAPES, "color": COLORS, "size": SIZES}
    for joiner in (*RELATIONS, "and"):
        if f" {joiner} " in text:
            first, second = text.split(f" {joiner} ", 1)
            return (_mentioned(first, words), _mentioned(second, words)), joiner, background
    return (_mentioned(text, {**words, "position": POSITIONS}),), "and", background


def caption_holds(text: str, scene: Scene) -> bool:
    """Whether a caption is true of a scene: as many objects as it names, each with every attribute
    it states (a place only for a single object on the grid), the relation holding between them as
    ``relation_holds`` checks it (either object may come first for "and"), and the background if named."""
    phrases, relation, background = parse_caption(text)
    if len(phrases) != len(scene.objects) or (background is not None and background != scene.background):
        return False

    def fits(stated: dict[str, str], o: SceneObject) -> bool:
        return all((grid_position(o) if k == "position" else getattr(o, k)) == v for k, v in stated.items())
    if len(phrases) == 1:
        return fits(phrases[0], scene.objects[0])
    a, b = scene.objects
    return any(fits(phrases[0], first) and fits(phrases[1], second) and _check_relation(first, second, relation)
               for first, second in ((a, b), (b, a)))


class SceneDataset(torch.utils.data.Dataset):
    """``length`` captioned scenes (Shapes world 2); item ``i`` is the same for the same ``seed``.

    Returns ``(image, caption)``, image a (3, 64, 64) tensor in [-1, 1]; ``dataset.scene(i)`` tells
    what item ``i`` shows. ``two_objects`` is the fraction of two-object scenes (a curriculum can
    raise it from 0)."""

    def __init__(self, length: int = 10_000, seed: int = 0, two_objects: float = 0.5,
                 holdout: bool = True, varied: bool = True):
        if not 0.0 <= two_objects <= 1.0:
            raise ValueError(f"two_objects must be a fraction in [0, 1]; got {two_objects!r}")
        self.length, self.seed, self.two_objects = length, seed, two_objects
        self.holdout, self.varied = holdout, varied

    def __len__(self) -> int:
        return self.length

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i, 2])

    def scene(self, i: int) -> Scene:
        rng = self._rng(i)
        return random_scene(rng, 2 if rng.random() < self.two_objects else 1, self.holdout)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = self._rng(i)
        scene = random_scene(rng, 2 if rng.random() < self.two_objects else 1, self.holdout)
        img = render_scene(scene, seed=int(rng.integers(2**31)))
        return to_tensor(img), (varied_scene_caption(scene, rng) if self.varied else scene.caption())


PHOTOS = ("chelsea", "astronaut", "coffee", "grace_hopper")


def sample_photo(name: str = "chelsea") -> Image.Image:
    """An offline sample photo as PIL RGB: scikit-image's chelsea (a cat), astronaut, coffee, or
    matplotlib's grace_hopper. Nothing is downloaded: both packages ship these files."""
    _check("photo", name, PHOTOS)
    if name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return Image.open(f).convert("RGB")
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover - scikit-image is in requirements.txt
        raise ImportError("sample photos need scikit-image: pip install scikit-image") from e
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
