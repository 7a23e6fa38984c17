"""Pictures for the notebooks: image grids with captions, and cross-attention heatmaps."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from sdlearn import ASSETS_DIR
from sdlearn.data import to_pil

ImageLike = Image.Image | torch.Tensor


FIGURES_ENV = "SDLEARN_FIGURES_DIR"   # set by tools/nb.py while it builds the series


def save_figure(fig, name: str, folder: str | Path | None = None) -> Path | None:
    """Keep a notebook's figure as a PNG ``name`` in ``folder``, or, by default, in the folder named
    by the environment variable ``SDLEARN_FIGURES_DIR`` (tools/nb.py sets it to the repository's
    ``images/`` while it builds the notebooks). Without either it does nothing, so a learner's run
    never writes into the checkout; an explicit ``folder`` that does not exist is skipped too.
    Returns the path written, or None."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str file name ending in .png, got {type(name).__name__}")
    if not name.endswith(".png") or Path(name).name != name:
        raise ValueError(f"name must be a file name ending in .png (no folder), got {name!r}")
    if folder is None:
        folder = os.environ.get(FIGURES_ENV)
        if not folder:
            return None
        if not Path(folder).is_dir():
            raise ValueError(f"${FIGURES_ENV} must name an existing directory, got {folder!r}")
    elif not Path(folder).is_dir():
        return None
    path = Path(folder) / name
    fig.savefig(path, dpi=80, bbox_inches="tight")
    return path


def packaged_figure(name: str) -> Path:
    """The path of a figure or result file shipped inside sdlearn (``sdlearn/assets/figures/``),
    e.g. a benchmark's stored plot that a notebook shows; found through the package, so it works
    from a pip install as well as from the repository."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (a file name in sdlearn/assets/figures/), got {type(name).__name__}")
    path = ASSETS_DIR / "figures" / name
    if Path(name).name != name or not path.is_file():
        known = sorted(p.name for p in (ASSETS_DIR / "figures").glob("*") if p.is_file())
        raise ValueError(f"name must be one of the packaged figures {known}, got {name!r}")
    return path


def as_pil_list(images: ImageLike | Sequence[ImageLike]) -> list[Image.Image]:
    """PIL images from a PIL image, a list of them, or tensors (3, H, W) / (B, 3, H, W) in [-1, 1]."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"image tensors must be (B, 3, H, W) or (3, H, W) in [-1, 1], got {tuple(images.shape)}")
        return [to_pil(x.expand(3, -1, -1)) for x in images]
    out = []
    for im in images:
        if not isinstance(im, (Image.Image, torch.Tensor)):
            raise TypeError(f"images must be PIL images or tensors in [-1, 1], got {type(im).__name__}")
        out += as_pil_list(im)
    return out


def image_grid(images: ImageLike | Sequence[ImageLike], nrow: int | None = None,
               captions: Sequence[str] | None = None, scale: int = 1, pad: int = 2,
               figsize: float = 1.6, fontsize: int = 7, row_labels: Sequence[str] | None = None):
    """Lay images out in a grid, ``nrow`` images per row (default: about square).

    Without ``captions`` (and ``row_labels``): one PIL image (each image upscaled ``scale`` times,
    ``pad`` pixels apart on white). With ``captions``: a matplotlib figure, one caption above each
    image. ``row_labels`` (one per row, figure only) are written at the left of each row.
    Tensors are read in [-1, 1] (the VAE's range): pass a pipeline's [0, 1] output as ``x * 2 - 1``.
    """
    pils = as_pil_list(images)
    n = len(pils)
    if n == 0:
        raise ValueError("images is empty")
    nrow = nrow or math.ceil(math.sqrt(n))
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    nrows = math.ceil(n / nrow)
    if row_labels is not None:
        if len(row_labels) != nrows:
            raise ValueError(f"got {nrows} rows but {len(row_labels)} row_labels")
        captions = captions if captions is not None else [""] * n
    if captions is not None:
        if len(captions) != n:
            raise ValueError(f"got {n} images but {len(captions)} captions")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(nrows, nrow, figsize=(figsize * nrow, figsize * nrows * 1.12), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, im, text in zip(axes.flat, pils, captions):
            ax.imshow(im, interpolation="nearest" if im.width <= 128 else "antialiased")
            ax.set_title(_wrap(text, 22), fontsize=fontsize)
        for ax, label in zip(axes[:, 0], row_labels or []):
            ax.axis("on")                                   # a y-label needs the axis; hide the rest of it
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_ylabel(_wrap(label, 22), fontsize=fontsize + 1, rotation=0, ha="right", va="center",
                          labelpad=6)                 # horizontal: read without turning the head
        fig.tight_layout()
        return fig
    w, h = pils[0].width * scale, pils[0].height * scale
    grid = Image.new("RGB", (nrow * w + (nrow + 1) * pad, nrows * h + (nrows + 1) * pad), "white")
    for i, im in enumerate(pils):
        r, c = divmod(i, nrow)
        grid.paste(im.convert("RGB").resize((w, h), Image.Resampling.NEAREST), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


def _wrap(text: str, width: int) -> str:
    """Break ``text`` into lines of at most ``width`` characters, at spaces; its own line breaks stay."""
    if "\n" in text:
        return "\n".join(_wrap(part, width) for part in text.split("\n"))
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def show_images(images: ImageLike | Sequence[ImageLike], captions: Sequence[str] | None = None,
                nrow: int | None = None, title: str | None = None, save: str | None = None, **kwargs):
    """Show images in a notebook as a captioned matplotlib grid; optionally save it to ``save``."""
    import matplotlib.pyplot as plt

    pils = as_pil_list(images)
    fig = image_grid(pils, nrow=nrow, captions=captions if captions is not None else [""] * len(pils), **kwargs)
    if title:
        fig.suptitle(title)
        fig.tight_layout()
    if save:
        fig.savefig(save, dpi=110, bbox_inches="tight")
    plt.show()
    return fig


def plot_attention_maps(image: ImageLike, maps: torch.Tensor | np.ndarray, tokens: Sequence[str],
                        alpha: float = 0.55, cmap: str = "jet", figsize: float = 1.8,
                        normalize: str = "each", colorbar: bool = False):
    """Overlay per-token attention maps on an image: the image, then one panel per token.

    ``maps``: (T, h, w), one map per token (any h, w: upsampled bilinearly to the image).
    Each map is drawn over a grey copy of the image, so that an object's colour does not mix with
    the colour map. ``normalize="each"``: every panel's colours span its own min..max; ``"joint"``: one colour
    scale (the min..max over all panels) for all. ``colorbar``: a colour bar beside each panel,
    in the maps' own units (for attention probabilities: the share of a pixel's attention).
    """
    import matplotlib.pyplot as plt

    img = as_pil_list(image)[0]
    maps = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).detach().float().cpu()
    if maps.dim() != 3:
        raise ValueError(f"maps must be (T, h, w), got {tuple(maps.shape)}")
    if len(tokens) != maps.shape[0]:
        raise ValueError(f"got {maps.shape[0]} maps but {len(tokens)} tokens")
    if normalize not in ("each", "joint"):
        raise ValueError(f"normalize must be 'each' or 'joint', got {normalize!r}")
    up = torch.nn.functional.interpolate(maps[:, None], size=(img.height, img.width), mode="bilinear",
                                         align_corners=False)[:, 0]                  # (T, h, w) -> (T, H, W)
    lo = up.flatten(1).min(1).values                                                 # (T,)
    hi = up.flatten(1).max(1).values
    if normalize == "joint":
        lo, hi = lo.min().expand_as(lo), hi.max().expand_as(hi)
    hi = torch.maximum(hi, lo + 1e-8)
    width = figsize * (len(tokens) + 1) * (1.3 if colorbar else 1.0)
    fig, axes = plt.subplots(1, len(tokens) + 1, figsize=(width, figsize * 1.15))
    axes = np.atleast_1d(axes)
    axes[0].imshow(img)
    axes[0].set_title("image", fontsize=8)
    gray = img.convert("L")          # the maps go over a grey copy, so the object's own colour does not mix in
    for ax, m, tok, vmin, vmax in zip(axes[1:], up, tokens, lo.tolist(), hi.tolist()):
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
        shown = ax.imshow(m.numpy(), cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
        ax.set_title(tok, fontsize=8)
        if colorbar:
            bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=7)
            bar.solids.set_alpha(1)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig
