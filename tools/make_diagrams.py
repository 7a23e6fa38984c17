"""Draw the diagrams the notebooks show (matplotlib boxes and arrows) into images/: python tools/make_diagrams.py"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

IMAGES = Path(__file__).resolve().parents[1] / "images"
TEXT, DENOISE, VAE, DATA = "#cfe3ff", "#ffe2c2", "#d6f2d0", "#f2f2f2"


def box(ax, x, y, w, h, text, color, fontsize=10, weight="normal", style="round,pad=0.02,rounding_size=0.08",
        ls="-"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=style, fc=color, ec="#333333", lw=1.2, ls=ls))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, weight=weight)


def arrow(ax, a, b, text=None, color="#333333", rad=0.0, ls="-", offset=(0, 0.12), fontsize=8.5):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.4, color=color,
                                 connectionstyle=f"arc3,rad={rad}", ls=ls))
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=fontsize, color="#444444", style="italic")


def sd_overview(path: Path) -> None:
    """Stable Diffusion at inference: text encoder -> UNet + scheduler loop in latent space -> VAE decoder."""
    fig, ax = plt.subplots(figsize=(12.5, 5.6))
    ax.set_xlim(0, 12.5)
    ax.set_ylim(0, 5.6)
    ax.axis("off")

    # 1. text path (top row)
    box(ax, 0.1, 4.3, 2.3, 0.8, '"a small red circle\nin the top left"', DATA, 9.5)
    box(ax, 3.0, 4.3, 1.6, 0.8, "tokenizer\n(BPE)", TEXT, 9.5)
    box(ax, 5.3, 4.3, 2.3, 0.8, "CLIP text encoder\n(transformer)", TEXT, 10)
    arrow(ax, (2.4, 4.7), (3.0, 4.7))
    arrow(ax, (4.6, 4.7), (5.3, 4.7), "ids\n(1, 77)", offset=(0, -0.62), fontsize=8)
    # 2. denoising loop (middle)
    ax.add_patch(FancyBboxPatch((2.75, 0.7), 6.1, 2.75, boxstyle="round,pad=0.02,rounding_size=0.15",
                                fc="#fff8f0", ec="#d08a3a", lw=1.5, ls="--"))
    ax.text(5.8, 0.8, "repeat for t = T ... 1  (20-50 steps)", ha="center", fontsize=9.5, color="#b0651a",
            weight="bold")
    box(ax, 0.1, 1.9, 2.0, 0.9, "random noise\nlatents $z_T$\n(1, 4, 64, 64)", DATA, 9)
    box(ax, 3.1, 1.9, 2.2, 1.1, "UNet\npredicts noise\n$\\epsilon_\\theta(z_t, t, c)$", DENOISE, 10)
    box(ax, 6.3, 1.9, 2.2, 1.1, "scheduler\n$z_t \\rightarrow z_{t-1}$\nDDPM, DDIM, DPM++", DENOISE, 10)
    arrow(ax, (2.1, 2.35), (3.1, 2.35))
    arrow(ax, (5.3, 2.45), (6.3, 2.45), "$\\epsilon$", offset=(0, 0.05))
    arrow(ax, (7.4, 1.9), (4.2, 1.9), rad=-0.45)
    ax.text(5.8, 1.05, "$z_{t-1}$ becomes the next $z_t$", ha="center", fontsize=8.5, color="#444444", style="italic")
    arrow(ax, (5.6, 4.3), (4.6, 3.0))
    ax.text(5.3, 3.62, "text embeddings $c$ (1, 77, 768), read by the UNet's cross-attention",
            ha="left", fontsize=8.5, color="#444444", style="italic")
    # guidance note
    ax.text(5.8, 3.2, "classifier-free guidance: $\\epsilon = \\epsilon_u + s\\,(\\epsilon_c - \\epsilon_u)$",
            ha="center", fontsize=8.5, color="#444444")
    # 3. decoder (right)
    box(ax, 9.3, 1.9, 1.4, 1.1, "VAE\ndecoder", VAE, 10)
    box(ax, 11.1, 1.9, 1.3, 1.1, "image\n(512, 512, 3)", DATA, 9)
    arrow(ax, (8.5, 2.45), (9.3, 2.45), "$z_0$", offset=(0, 0.05))
    arrow(ax, (10.7, 2.45), (11.1, 2.45))
    ax.text(10.0, 1.55, "x8 upsampling: 64 -> 512", ha="center", fontsize=8.5, color="#444444")
    # training-only encoder
    box(ax, 9.3, 0.1, 1.4, 0.7, "VAE encoder\n(training, img2img)", VAE, 8, ls="--")
    arrow(ax, (11.75, 1.9), (10.7, 0.45), ls="--", rad=-0.2)
    arrow(ax, (9.3, 0.45), (8.5, 1.0), ls="--", rad=-0.1)
    # legend
    for i, (c, name) in enumerate([(TEXT, "1  text encoder: words -> vectors"),
                                   (DENOISE, "2  UNet + scheduler: denoise in latent space"),
                                   (VAE, "3  VAE: latents <-> pixels")]):
        ax.add_patch(FancyBboxPatch((8.6, 5.05 - 0.42 * i), 0.3, 0.26, boxstyle="round,pad=0.01", fc=c, ec="#333333"))
        ax.text(9.05, 5.18 - 0.42 * i, name, va="center", fontsize=9.5)
    ax.set_title("Stable Diffusion: from a prompt to an image", fontsize=13, weight="bold", loc="left")
    fig.savefig(path, dpi=120, bbox_inches="tight", facecolor="white")
    plt.close(fig)


if __name__ == "__main__":
    sd_overview(IMAGES / "00_sd_overview.png")
    print("wrote", IMAGES / "00_sd_overview.png")
