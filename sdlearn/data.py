"""The Shapes world: captioned procedural images, and a few offline photos.

Every image is 64x64 RGB: one shape of a given colour and size at one of nine positions on a
3x3 grid, on a plain light background, anti-aliased (drawn at 4x and downsampled), with a little
jitter in place, size, rotation and tint. A seed decides every pixel. Captions describe the four
attributes in words, so a text-to-image model trained on them can be asked for any combination;
``HELD_OUT`` lists (shape, colour) pairs the training data never shows, for testing whether the
model composes attributes it has only seen apart.
"""
from __future__ import annotations

import math
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
    fill_rgb = tuple(int(v) for v in np.clip(fill, 0, 255))
    img = Image.new("RGB", (s, s), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill_rgb)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=fill_rgb)
    return img.resize((image_size, image_size), Image.Resampling.BOX)


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
