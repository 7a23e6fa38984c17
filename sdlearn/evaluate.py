"""Measuring images: the Shapes attribute reader, prompt-following accuracy, PSNR.

A text-to-image model "follows the prompt" on Shapes when the shape, colour, size and position
that one can *read* from its image are the ones the caption asked for. ``read_attributes`` reads
them from any 64x64 image (a render, a VAE reconstruction, a generated sample):

1. **Foreground.** The background colour is the median of the image border; each pixel's
   distance from it, divided by the shape colour's distance, is its coverage ``alpha`` in [0, 1]
   (an anti-aliased edge pixel ``p = c*fg + (1-c)*bg`` gets exactly ``alpha = c``). No fixed colour
   thresholds, so slight colour shifts, blur and background noise move ``alpha`` only a little.
2. **Colour**: the mean colour of the core pixels (the most distant from the background),
   named by the nearest palette colour in CIELAB (lightness down-weighted: generators and VAEs
   shift lightness more than hue).
3. **Position**: the coverage-weighted centroid, on the 3x3 grid whose cell borders lie halfway
   between the grid centres of ``sdlearn.data``.
4. **Size**: the shape's circumradius (farthest covered pixel from the centroid), which is what
   the renderer scales; a threshold on area would fail, since a large star covers less area than
   a small circle. The threshold is measured on clean renders, not typed in (``size_threshold``).
5. **Shape**: a small CNN (``ShapeClassifier``) on the coverage map, cropped around the centroid
   and rescaled by the circumradius (so it sees every shape at one scale), trained on augmented
   renders by ``python -m sdlearn train reader --seed 0``; weights ship in ``assets/reader/``.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from sdlearn import ASSETS_DIR, data
from sdlearn.data import COLORS, POSITIONS, SHAPES, SIZES, Attributes

READER_DIR: Path = ASSETS_DIR / "reader"
CROP = 32          # side of the coverage crop the shape classifier sees
CROP_MARGIN = 1.3  # crop half-width = CROP_MARGIN * circumradius
ATTRIBUTES = ("shape", "color", "size", "position")


# ---------------------------------------------------------------------------------------------
# input handling


def to_batch(images: torch.Tensor | Image.Image | Sequence[Image.Image]) -> torch.Tensor:
    """A (B, 3, 64, 64) float tensor in [-1, 1] from a tensor of that shape or 64x64 PIL images."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, torch.Tensor):
        x = images.detach().float().cpu()
        if x.dim() == 3:
            x = x[None]
    elif isinstance(images, (list, tuple)) and all(isinstance(im, Image.Image) for im in images):
        if len(images) == 0:
            raise ValueError("images is empty; pass at least one image")
        x = torch.stack([data.to_tensor(im) for im in images])
    else:
        raise TypeError(f"images must be a (B, 3, 64, 64) tensor in [-1, 1] or a list of PIL images, "
                        f"got {type(images).__name__}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2:] != (data.IMAGE_SIZE, data.IMAGE_SIZE):
        raise ValueError(f"images must have shape (B, 3, {data.IMAGE_SIZE}, {data.IMAGE_SIZE}), "
                         f"got {tuple(x.shape)}")
    return x.clamp(-1, 1)


# ---------------------------------------------------------------------------------------------
# foreground, colour, position, size


def foreground(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coverage ``alpha`` (B, H, W) in [0, 1], shape colour (B, 3) and background colour (B, 3).

    ``x`` is (B, 3, H, W) in [-1, 1]; colours are returned in the same range.
    """
    B, _, H, W = x.shape
    border = torch.cat([x[:, :, :2].flatten(2), x[:, :, -2:].flatten(2),
                        x[:, :, 2:-2, :2].flatten(2), x[:, :, 2:-2, -2:].flatten(2)], dim=2)
    bg = border.median(dim=2).values                                   # (B, 3, N) -> (B, 3)
    d = (x - bg[:, :, None, None]).norm(dim=1)                         # (B, H, W) distance from bg
    d_top = d.flatten(1).topk(12, dim=1).values[:, -1]                 # (B,) robust maximum distance
    core = d >= 0.7 * d_top[:, None, None]                             # (B, H, W) clearly the shape
    w = core[:, None].float()                                          # (B, 1, H, W)
    fg = (x * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3))                   # (B, 3, H, W) -> (B, 3) mean
    d_fg = (fg - bg).norm(dim=1).clamp_min(1e-3)                       # (B,)
    alpha = (d / d_fg[:, None, None]).clamp(0, 1)                      # (B, H, W)
    return alpha, fg, bg


def _srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> CIELAB (D65), the colour space where distance ~ perceived difference."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / torch.tensor([0.95047, 1.0, 1.08883])
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp_min(1e-8) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_LAB_WEIGHT = torch.tensor([0.5, 1.0, 1.0])  # lightness counts half as much as hue/chroma


def read_color(fg: torch.Tensor) -> list[str]:
    """Name shape colours (B, 3) in [-1, 1] by the nearest palette colour in CIELAB."""
    palette = torch.tensor([data.RGB[c] for c in COLORS], dtype=torch.float32) / 255  # (6, 3)
    lab = _srgb_to_lab((fg + 1) / 2)                                                 # (B, 3)
    dist = ((lab[:, None] - _srgb_to_lab(palette)[None]) * _LAB_WEIGHT).norm(dim=-1)  # (B, 6)
    return [COLORS[i] for i in dist.argmin(dim=1).tolist()]


def _solid(alpha: torch.Tensor) -> torch.Tensor:
    """Pixels at least half covered whose 3x3 neighbourhood is mostly covered too (drops specks)."""
    m = (alpha > 0.5).float()[:, None]                                     # (B, 1, H, W)
    return (F.avg_pool2d(m, 3, stride=1, padding=1, count_include_pad=False) > 0.4)[:, 0] & (m[:, 0] > 0)


def centroid_and_radius(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage-weighted centroid (B, 2) as (x, y) pixels, and circumradius (B,) in pixels."""
    B, H, W = alpha.shape
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    w = ((alpha - 0.25) / 0.5).clamp(0, 1)            # ramp centred at 1/2: background noise -> 0
    mass = w.sum(dim=(1, 2)).clamp_min(1e-6)
    cx = (w * xs).sum(dim=(1, 2)) / mass
    cy = (w * ys).sum(dim=(1, 2)) / mass
    dist = ((xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2).sqrt()  # (B, H, W)
    radius = (dist * _solid(alpha)).flatten(1).max(dim=1).values + 0.5            # (B,)
    return torch.stack([cx, cy], dim=1), radius


def read_position(center: torch.Tensor) -> list[str]:
    """Grid position of centroids (B, 2): cell borders halfway between the grid centres."""
    grid = torch.tensor(data._GRID) * data.IMAGE_SIZE
    edges = (grid[1:] + grid[:-1]) / 2                                 # (2,) pixel borders
    col = torch.bucketize(center[:, 0].contiguous(), edges)
    row = torch.bucketize(center[:, 1].contiguous(), edges)
    return [POSITIONS[3 * r + c] for r, c in zip(row.tolist(), col.tolist())]


@functools.lru_cache(maxsize=1)
def size_threshold() -> float:
    """Circumradius (pixels) between small and large, measured on un-jittered renders of every
    shape: the geometric mean of the largest "small" and the smallest "large" radius read."""
    def radii(size: str) -> torch.Tensor:
        x = torch.stack([data.to_tensor(data.render(s, "blue", size, "center")) for s in SHAPES])
        return centroid_and_radius(foreground(x)[0])[1]
    return float((radii("small").max() * radii("large").min()).sqrt())


def read_size(radius: torch.Tensor) -> list[str]:
    return [SIZES[int(r > size_threshold())] for r in radius.tolist()]


# ---------------------------------------------------------------------------------------------
# shape


class ShapeClassifier(nn.Module):
    """A small CNN: coverage crop (B, 1, 32, 32) -> shape logits (B, len(SHAPES))."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        c = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1, stride=2), nn.SiLU())
        self.features = nn.Sequential(block(1, c // 2), block(c // 2, c), block(c, 2 * c))  # 32 -> 4
        self.head = nn.Linear(2 * c * 16, len(SHAPES))

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        h = self.features(crop)                     # (B, 1, 32, 32) -> (B, 2c, 4, 4)
        return self.head(h.flatten(1))              # (B, 2c*16) -> (B, 5)


def shape_crops(alpha: torch.Tensor, center: torch.Tensor, radius: torch.Tensor,
                scale: torch.Tensor | None = None, angle: torch.Tensor | None = None) -> torch.Tensor:
    """Crop coverage maps (B, H, W) to (B, 1, CROP, CROP) around ``center``, half-width
    ``CROP_MARGIN * radius`` (times ``scale``, rotated by ``angle``: training augmentations)."""
    B, H, W = alpha.shape
    half = CROP_MARGIN * radius.clamp(4, H / 2) * (1 if scale is None else scale)   # (B,) pixels
    cos, sin = (torch.ones(B), torch.zeros(B)) if angle is None else (angle.cos(), angle.sin())
    theta = torch.zeros(B, 2, 3)                     # affine map crop coords -> image coords in [-1, 1]
    theta[:, 0, 0], theta[:, 0, 1] = cos * half / (W / 2), -sin * half / (W / 2)
    theta[:, 1, 0], theta[:, 1, 1] = sin * half / (H / 2), cos * half / (H / 2)
    theta[:, 0, 2] = center[:, 0] / (W / 2) - 1
    theta[:, 1, 2] = center[:, 1] / (H / 2) - 1
    grid = F.affine_grid(theta, (B, 1, CROP, CROP), align_corners=False)
    return F.grid_sample(alpha[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@functools.lru_cache(maxsize=1)
def load_shape_classifier(folder: str | None = None) -> ShapeClassifier:
    """The bundled shape classifier (``assets/reader/``), in eval mode."""
    from sdlearn.weights import load_file

    folder = Path(folder) if folder is not None else READER_DIR
    weights = folder / "shape_classifier.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} missing: train it with `python -m sdlearn train reader --seed 0`")
    config = json.loads((folder / "config.json").read_text())
    if tuple(config["shapes"]) != SHAPES:
        raise ValueError(f"reader was trained for shapes {config['shapes']}, sdlearn.data has {SHAPES}")
    model = ShapeClassifier(width=config["width"])
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# public API


@torch.no_grad()
def read_attributes(images: torch.Tensor | Sequence[Image.Image]) -> list[Attributes]:
    """Read shape, colour, size and position from Shapes images.

    ``images``: a (B, 3, 64, 64) tensor in [-1, 1] or a list of 64x64 PIL images.
    """
    x = to_batch(images)
    alpha, fg, _ = foreground(x)
    center, radius = centroid_and_radius(alpha)
    logits = load_shape_classifier()(shape_crops(alpha, center, radius))
    shapes = [SHAPES[i] for i in logits.argmax(dim=1).tolist()]
    return [Attributes(*a) for a in zip(shapes, read_color(fg), read_size(radius), read_position(center))]


def attribute_accuracy(images: torch.Tensor | Sequence[Image.Image] | Sequence[Attributes],
                       attributes: Sequence[Attributes]) -> dict[str, float]:
    """Fraction of images whose read shape, colour, size, position match ``attributes``, and
    ``"all"``: the fraction with all four right. ``images`` may also be already read attributes."""
    read = list(images) if (isinstance(images, (list, tuple)) and images
                            and isinstance(images[0], Attributes)) else read_attributes(images)
    if len(read) != len(attributes):
        raise ValueError(f"got {len(read)} images but {len(attributes)} attributes; they must match")
    acc = {k: sum(getattr(r, k) == getattr(a, k) for r, a in zip(read, attributes)) / len(read)
           for k in ATTRIBUTES}
    acc["all"] = sum(r == a for r, a in zip(read, attributes)) / len(read)
    return acc


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None,
         data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), over the whole batch.

    ``a``, ``b``: tensors of one shape, in [-1, 1] by default (``data_range=2``). ``mask``
    (broadcastable to ``a``, 1 = counted) restricts the MSE to some pixels, e.g. the foreground,
    since on Shapes the flat background otherwise dominates the score.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    err = (a.detach().float() - b.detach().float()) ** 2
    if mask is None:
        mse = err.mean()
    else:
        w = torch.broadcast_to(mask.detach().float().to(err.device), err.shape)
        if w.sum() == 0:
            raise ValueError("mask selects no pixels")
        mse = (err * w).sum() / w.sum()
    return float(10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-12)))


# ---------------------------------------------------------------------------------------------
# prompt following of a text-to-image model


def random_prompts(n: int, seed: int = 0, held_out: bool = False) -> list[Attributes]:
    """``n`` random attribute sets to prompt with, the same for the same ``seed``.

    ``held_out=False``: uniform over the combinations the model was trained on (never a pair in
    ``data.HELD_OUT``). ``held_out=True``: only the HELD_OUT (shape, colour) pairs, with random size
    and position: combinations the model never saw a caption or image of.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    rng = np.random.default_rng([seed, 7])
    if not held_out:
        return [data.random_attributes(rng, holdout=True) for _ in range(n)]
    pairs = [data.HELD_OUT[i] for i in rng.integers(len(data.HELD_OUT), size=n)]
    return [Attributes(shape, color, SIZES[rng.integers(len(SIZES))], POSITIONS[rng.integers(len(POSITIONS))])
            for shape, color in pairs]


def prompt_following(pipe, attributes: Sequence[Attributes], seed: int = 0, batch_size: int = 50,
                     progress: bool = True, prompts: Sequence[str] | None = None, **sampler_kwargs) -> dict:
    """Prompt a text-to-image pipeline with the canonical caption of each attribute set (or with
    ``prompts[i]``) and read the images back: the fraction right per attribute, ``"all"`` four
    right, and the cost.

    The noise of prompt ``i`` is seed ``seed + i`` (see ``generate``). ``sampler_kwargs`` go to
    ``pipe.text_to_image`` (``num_inference_steps``, ``guidance_scale``, ``scheduler``, ...).

    Returns ``{"shape", "color", "size", "position", "all": accuracies in [0, 1], "n": images,
    "seconds_per_image": wall time, "read": the attributes read from each image}``.
    """
    attributes = list(attributes)
    if not attributes or not all(isinstance(a, Attributes) for a in attributes):
        raise TypeError("attributes must be a non-empty sequence of sdlearn.data.Attributes "
                        "(e.g. from random_prompts)")
    prompts = [a.caption() for a in attributes] if prompts is None else list(prompts)
    if len(prompts) != len(attributes):
        raise ValueError(f"prompts has {len(prompts)} captions for {len(attributes)} attribute sets")
    images, seconds = generate(pipe, prompts, seed, batch_size, progress, "prompt_following", **sampler_kwargs)
    read = read_attributes(images * 2 - 1)
    acc = attribute_accuracy(read, attributes)
    return {**acc, "n": len(attributes), "seconds_per_image": seconds / len(attributes), "read": read}


def generate(pipe, prompts: Sequence[str], seed: int = 0, batch_size: int = 50, progress: bool = True,
             desc: str = "generating", **sampler_kwargs) -> tuple[torch.Tensor, float]:
    """Images (n, 3, H, W) in [0, 1] for ``prompts`` and the wall seconds they took. Prompt ``i``
    starts from the latents ``randn`` draws from ``torch.Generator().manual_seed(seed + i)``, so its
    image does not depend on the batch it lands in and every sampler / guidance scale starts from
    the same noise; stochastic samplers draw their per-step noise from one generator seeded with
    ``seed`` (reproducible for a given ``batch_size``)."""
    from tqdm.auto import tqdm

    from sdlearn.device import randn

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    for key in ("prompt", "seed", "generator", "latents", "output_type"):
        if key in sampler_kwargs:
            raise ValueError(f"{desc} sets {key!r} itself; pass only sampler options "
                             "(num_inference_steps, guidance_scale, scheduler, negative_prompt, ...)")
    cfg = pipe.unet.config
    latent_shape = (cfg["out_channels"], cfg["sample_size"], cfg["sample_size"])      # (4, h, w)
    step_noise = torch.Generator().manual_seed(seed)
    shown, pipe.progress_bar = getattr(pipe, "progress_bar", True), False
    images, start = [], time.perf_counter()
    try:
        for lo in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc=desc):
            batch = list(prompts[lo:lo + batch_size])
            z_T = torch.stack([randn(latent_shape, torch.Generator().manual_seed(seed + lo + j))
                               for j in range(len(batch))])                            # (b, 4, h, w)
            images.append(pipe.text_to_image(batch, latents=z_T, generator=step_noise, output_type="pt",
                                             **sampler_kwargs))                      # (b, 3, H, W) in [0, 1]
    finally:
        pipe.progress_bar = shown
    return torch.cat(images), time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# scenes (Shapes world 2): one or two objects on a plain background


@dataclass(frozen=True)
class SceneReading:
    """What ``read_scene`` finds in one image: the background's name and each object's shape,
    colour and size with its centre (x, y) in pixels, largest object first."""
    background: str
    objects: tuple[tuple[Attributes, float, float], ...]   # (attributes, x, y); attributes.position unused

    def find(self, shape: str | None, color: str | None) -> int | None:
        """Index of the first object with this shape and colour (None = any), or None."""
        for k, (a, _, _) in enumerate(self.objects):
            if (shape is None or a.shape == shape) and (color is None or a.color == color):
                return k
        return None


def read_background(bg: torch.Tensor) -> list[str]:
    """Name background colours (B, 3) in [-1, 1] by the nearest of ``data.BACKGROUNDS``."""
    palette = torch.tensor([data.BACKGROUND_RGB[b] for b in data.BACKGROUNDS], dtype=torch.float32) / 127.5 - 1
    return [data.BACKGROUNDS[i] for i in torch.cdist(bg, palette).argmin(dim=1).tolist()]


def _components(mask: np.ndarray, min_area: int) -> list[np.ndarray]:
    """Connected regions (8-neighbour) of a boolean (H, W) mask with at least ``min_area`` pixels,
    largest first. A flood fill small enough to read: Shapes images have at most a few regions."""
    H, W = mask.shape
    seen = np.zeros_like(mask)
    regions = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pixels = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < H and 0 <= u < W and mask[v, u] and not seen[v, u]:
                        seen[v, u] = True
                        stack.append((v, u))
        if len(pixels) >= min_area:
            region = np.zeros_like(mask)
            region[tuple(np.array(pixels).T)] = True
            regions.append(region)
    return sorted(regions, key=lambda r: -int(r.sum()))


@torch.no_grad()
def read_scene(images: torch.Tensor | Sequence[Image.Image], max_objects: int = 3,
               min_area: int = 12) -> list[SceneReading]:
    """Read a scene: the background, then each object (a connected region of pixels that differ
    from it). Each object is cut out, recomposed on the single-object world's background at the
    image centre, and read by ``read_attributes`` (so one shape reader serves both worlds); its
    centre is the coverage-weighted centroid in the scene. ``images`` as in ``read_attributes``."""
    x = to_batch(images)
    _, _, bg = foreground(x)                                            # (B, 3) background colour
    white = torch.tensor(data.BACKGROUND, dtype=torch.float32) / 127.5 - 1
    readings = []
    for b, name in enumerate(read_background(bg)):
        d = (x[b] - bg[b][:, None, None]).norm(dim=0)                   # (H, W) distance from background
        regions = _components((d > 0.25).numpy(), min_area)[:max_objects]
        cutouts, centres = [], []
        for region in regions:
            near = torch.from_numpy(region)[None, None].float()
            near = F.max_pool2d(near, 3, stride=1, padding=1)[0, 0] > 0  # the region and its anti-aliased rim
            core = (d >= 0.7 * d[near].max()) & near
            fg = x[b][:, core].mean(dim=1)                               # (3,) the object's colour
            alpha = ((x[b] - bg[b][:, None, None]).norm(dim=0) / (fg - bg[b]).norm().clamp_min(1e-3)).clamp(0, 1)
            alpha = alpha * near                                         # (H, W) coverage of this object only
            cx, cy = centroid_and_radius(alpha[None])[0][0].tolist()      # (1, 2) -> x, y in pixels
            shift = (round(data.IMAGE_SIZE / 2 - cy), round(data.IMAGE_SIZE / 2 - cx))
            a = torch.roll(alpha, shifts=shift, dims=(0, 1))             # centred, as a single-object render
            cutouts.append(a * fg[:, None, None] + (1 - a) * white[:, None, None])   # (3, H, W)
            centres.append((cx, cy))
        attrs = read_attributes(torch.stack(cutouts)) if cutouts else []
        readings.append(SceneReading(name, tuple((a, cx, cy) for a, (cx, cy) in zip(attrs, centres))))
    return readings


def read_relation(first: tuple[float, float], second: tuple[float, float]) -> str:
    """The relation of object ``first`` (x, y) to ``second`` along the axis where they differ most."""
    dx, dy = second[0] - first[0], second[1] - first[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def scene_correct(reading: SceneReading, scene: data.Scene, check_size: bool = False) -> dict[str, bool]:
    """Whether an image read as ``reading`` shows ``scene``: ``objects`` (exactly the asked number
    of objects, each with the asked shape and colour, and size with ``check_size``), ``relation``
    (the first object relates to the second as asked, along the axis where they differ most; true
    for "and" and one object), ``background``, and ``all``. Identical objects may match either way."""
    from itertools import permutations

    def fits(a: Attributes, o: data.SceneObject) -> bool:
        return a.shape == o.shape and a.color == o.color and (not check_size or a.size == o.size)
    n = len(scene.objects)
    matches = [p for p in permutations(range(len(reading.objects)), n)
               if all(fits(reading.objects[k][0], o) for k, o in zip(p, scene.objects))]
    objects = bool(matches) and len(reading.objects) == n
    relation = True
    if n == 2 and scene.relation != "and":
        relation = objects and any(read_relation(reading.objects[i][1:], reading.objects[j][1:]) == scene.relation
                                   for i, j in matches)
    background = reading.background == scene.background
    return {"objects": objects, "relation": relation, "background": background,
            "all": objects and relation and background}


def random_scene_prompts(n: int, seed: int = 0, n_objects: int = 2, relation: bool = True,
                         held_out: bool = False) -> list[data.Scene]:
    """``n`` random scenes to prompt with by their canonical caption (``scene.caption()``), the same
    for the same ``seed``. ``relation=False``: "and" scenes only; True: a named relation only (two
    objects). ``held_out=False``: never a HELD_OUT (shape, colour) pair; True: at least one object
    is one (a combination no training image showed)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    rng = np.random.default_rng([seed, 11])
    scenes = []
    while len(scenes) < n:
        scene = data.random_scene(rng, n_objects, holdout=not held_out)
        unseen = any((o.shape, o.color) in data.HELD_OUT for o in scene.objects)
        if (n_objects == 1 or (scene.relation != "and") == relation) and unseen == held_out:
            scenes.append(scene)
    return scenes


def scene_following(pipe, scenes: Sequence[data.Scene], prompts: Sequence[str] | None = None, seed: int = 0,
                    batch_size: int = 50, progress: bool = True, **sampler_kwargs) -> dict:
    """Prompt a pipeline with each scene's caption (or ``prompts[i]``), read every image back with
    ``read_scene`` and score it with ``scene_correct``: fractions of ``objects``, ``relation``,
    ``background`` and ``all`` right, ``swapped`` (two objects whose shapes are right but whose
    colours are each other's: an attribute-binding error), ``n``, ``seconds_per_image``, the
    ``pair`` (objects and relation right, background aside), the error kinds of ``scene_errors``
    (``one_color``, ``neglect``, ``relation_error``), ``n``, ``seconds_per_image``, the
    ``readings``, ``scores``, ``errors`` and the ``images`` (n, 3, 64, 64) in [0, 1]. Noise as in
    ``prompt_following``: prompt ``i`` starts from seed ``seed + i``."""
    scenes = list(scenes)
    prompts = [s.caption() for s in scenes] if prompts is None else list(prompts)
    if len(prompts) != len(scenes):
        raise ValueError(f"prompts has {len(prompts)} captions for {len(scenes)} scenes")
    images, seconds = generate(pipe, prompts, seed, batch_size, progress, "scene_following", **sampler_kwargs)
    readings = read_scene(images * 2 - 1)
    scores = [scene_correct(r, s) for r, s in zip(readings, scenes)]
    errors = [scene_errors(r, s) for r, s in zip(readings, scenes)]
    out = {k: float(np.mean([sc[k] for sc in scores])) for k in ("objects", "relation", "background", "all")}
    out["pair"] = float(np.mean([sc["objects"] and sc["relation"] for sc in scores]))
    out |= {k if k != "relation" else "relation_error": float(np.mean([e[k] for e in errors])) for k in errors[0]}
    return {**out, "n": len(scenes), "seconds_per_image": seconds / len(scenes),
            "readings": readings, "scores": scores, "errors": errors, "images": images}


def scene_errors(reading: SceneReading, scene: data.Scene) -> dict[str, bool]:
    """What went wrong in a two-object image, by kind: ``swapped`` (each colour on the other's
    shape), ``one_color`` (both objects drawn in one of the two asked colours: the colour leaked),
    ``neglect`` (fewer objects than asked: one was dropped), ``relation`` (both objects right but
    not in the asked relation)."""
    ok = scene_correct(reading, scene)
    asked = {o.color for o in scene.objects}
    drawn = [a.color for a, _, _ in reading.objects]
    return {"swapped": binding_swapped(reading, scene),
            "one_color": len(asked) == 2 and len(drawn) == 2 and len(set(drawn)) == 1 and drawn[0] in asked,
            "neglect": len(reading.objects) < len(scene.objects),
            "relation": ok["objects"] and not ok["relation"]}


def binding_swapped(reading: SceneReading, scene: data.Scene) -> bool:
    """Two objects of different colours and shapes drawn with each one's colour on the other's
    shape ("a red circle and a blue square" drawn as a blue circle and a red square)."""
    if len(scene.objects) != 2 or len(reading.objects) != 2:
        return False
    a, b = scene.objects
    if a.color == b.color or a.shape == b.shape:
        return False
    drawn = {(r.shape, r.color) for r, _, _ in reading.objects}
    return drawn == {(a.shape, b.color), (b.shape, a.color)}
