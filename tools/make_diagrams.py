"""Draw the diagrams the notebooks show (matplotlib boxes and arrows) into images/.

    python tools/make_diagrams.py                      # all of them
    python tools/make_diagrams.py 06_unet_u.png        # one

Run by hand (the notebooks embed the PNGs at build time; tools/nb.py does not run this)."""
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
    ax.text(5.45, 3.17, "classifier-free guidance: $\\epsilon = \\epsilon_u + s\\,(\\epsilon_c - \\epsilon_u)$",
            ha="left", fontsize=8.5, color="#444444")   # right of the CLIP arrow, which crosses y = 3.2 at x ~ 4.75
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


# ---------------------------------------------------------------------------------------------------
# notebooks 04-06: the text path, attention, the UNet
PIXELS, TOKENS, ATTN, TIME = "#ffe2c2", "#cfe3ff", "#e8d8f5", "#d6f2d0"
NOTE = "#444444"


def _canvas(w: float, h: float, title: str):
    fig, ax = plt.subplots(figsize=(w, h))
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.axis("off")
    ax.set_title(title, fontsize=13, weight="bold", loc="left")
    return fig, ax


def _note(ax, x, y, text, fontsize=8.5, ha="center", **kw):
    ax.text(x, y, text, ha=ha, va="center", fontsize=fontsize, color=NOTE, style="italic", **kw)


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def text_path(path: Path) -> None:
    """Notebook 04: prompt -> BPE ids (B, 77) -> token + position embeddings -> causal layers -> (B, 77, d)."""
    from sdlearn.tokenizer import CLIPTokenizer

    ids = CLIPTokenizer().encode("a red circle")                      # [49406, ..., 49407]
    fig, ax = _canvas(14.5, 4.4, "The text path: from a prompt to the (B, 77, d) context the UNet reads")
    box(ax, 0.1, 2.3, 1.9, 0.9, '"a red circle"', DATA, 10)
    box(ax, 2.6, 2.3, 1.7, 0.9, "BPE tokenizer", TOKENS, 10)
    box(ax, 4.9, 2.1, 2.3, 1.3, "ids (B, 77)\n" + " ".join(map(str, ids)) + "\n+ " + f"{77 - len(ids)} x pad",
        DATA, 8.5)
    box(ax, 7.8, 2.95, 2.35, 0.75, "token embedding\ntable 49,408 x d", TOKENS, 9)
    box(ax, 7.8, 1.75, 2.35, 0.75, "position embedding\ntable 77 x d (slot 0..76)", TOKENS, 9)
    ax.text(10.35, 2.72, "+", fontsize=18, ha="center", va="center")
    box(ax, 10.7, 1.9, 2.1, 1.7, "causal transformer\nL layers\n(masked self-attention\n+ MLP)\nfinal LayerNorm",
        ATTN, 9)
    box(ax, 13.2, 2.3, 1.2, 0.9, "(B, 77, d)\ncontext", DATA, 9.5, weight="bold")
    arrow(ax, (2.0, 2.75), (2.6, 2.75))
    arrow(ax, (4.3, 2.75), (4.9, 2.75))
    arrow(ax, (7.2, 3.0), (7.8, 3.3))
    arrow(ax, (7.2, 2.5), (7.8, 2.1))
    arrow(ax, (10.55, 2.75), (10.7, 2.75))
    arrow(ax, (12.8, 2.75), (13.2, 2.75))
    _note(ax, 6.05, 1.75, "start, words, end of text;\nthen padding to 77")
    _note(ax, 8.95, 1.25, "(B, 77, d) + (77, d): the same word in\ntwo slots gets two different rows")
    _note(ax, 11.75, 1.35, "token i attends to 0..i only:\nno token sees the words after it")
    # the mask, drawn small
    for i in range(5):
        for j in range(5):
            ax.add_patch(plt.Rectangle((11.2 + 0.2 * j, 0.75 - 0.2 * i), 0.18, 0.18,
                                       fc="#7a4fb0" if j <= i else "#eeeeee", ec="white"))
    _note(ax, 12.35, 0.45, "causal mask (purple: allowed)\nrows: query token\ncolumns: key token", fontsize=7.5,
          ha="left")
    _note(ax, 13.8, 1.6, "each slot's row\nhas seen its\nwhole prefix", fontsize=7.5)
    ax.text(0.1, 0.55, "SD 1.5 (CLIP ViT-L/14): d = 768, L = 12 layers.   SD 2.x (OpenCLIP ViT-H): d = 1024, L = 23 (of its 24).\n"
            "The bundled tiny model: d = 128, L = 4, with CLIP's tokenizer and 77 slots.", fontsize=9, va="center")
    _save(fig, path)


def self_vs_cross(path: Path) -> None:
    """Notebook 05: self-attention (Q, K, V from one sequence) vs cross-attention (Q from pixels, K/V from tokens)."""
    fig, ax = _canvas(14.5, 6.8, "Self-attention and cross-attention: where Q, K and V come from")

    def mat(x, y, w, h, label, shape, color):
        ax.add_patch(plt.Rectangle((x, y), w, h, fc=color, ec="#333333", lw=1.1))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + w / 2, y - 0.17, shape, ha="center", va="center", fontsize=8.5)

    for panel, (x0, title) in enumerate([(0.2, "self-attention: a sequence looks at itself"),
                                         (7.5, "cross-attention (SD 1.5, 64x64 level): pixels look at words")]):
        ax.text(x0, 6.3, title, fontsize=11, weight="bold")
    # --- self: X (N, d) -> Q, K, V (N, d) -> QK^T (N, N) -> out (N, d)
    mat(0.3, 2.6, 0.9, 2.4, "X", "(N, d)", PIXELS)
    for k, (name, y) in enumerate([("Q", 4.3), ("K", 2.95), ("V", 1.6)]):
        mat(2.3, y, 0.7, 1.1, name, "(N, d)", PIXELS)
        arrow(ax, (1.2, 3.8), (2.3, y + 0.55), f"$W_{name}$", offset=(0.05, 0.0) if k == 0 else (0.05, -0.35),
              fontsize=8.5)
    mat(3.8, 3.2, 1.5, 1.5, "$QK^\\top/\\sqrt{d}$\nsoftmax", "(N, N): rows sum to 1", ATTN)
    arrow(ax, (3.0, 4.85), (3.8, 4.3))
    arrow(ax, (3.0, 3.5), (3.8, 3.6))
    mat(5.8, 2.6, 0.9, 2.4, "out", "(N, d)", PIXELS)
    arrow(ax, (5.3, 3.95), (5.8, 3.95))
    arrow(ax, (3.0, 2.15), (5.8, 2.9), "weights x V", offset=(0.2, -0.5), rad=0.15)
    _note(ax, 3.5, 0.75, "Q, K and V are three views of the same N rows\n(words of a sentence, or pixels: attn1 in the UNet)")
    # --- cross: phi (4096, 320) -> Q; tau (77, 768) -> K, V
    ax.plot([7.2, 7.2], [0.3, 6.2], color="#bbbbbb", lw=1)
    mat(7.6, 2.4, 0.9, 3.0, "φ(z)\npixels", "(4096, 320)", PIXELS)
    mat(7.6, 0.5, 1.3, 1.1, "τ(y)\ntokens", "(77, 768)", TOKENS)
    mat(9.6, 4.2, 0.75, 1.4, "Q", "(4096, 320)", PIXELS)
    mat(9.6, 2.35, 0.75, 0.6, "K", "(77, 320)", TOKENS)
    mat(9.6, 1.1, 0.75, 0.6, "V", "(77, 320)", TOKENS)
    arrow(ax, (8.5, 4.6), (9.6, 4.9), "$W_Q$: 320 x 320", offset=(-0.2, -0.5), fontsize=8)
    arrow(ax, (8.9, 1.35), (9.6, 2.6), "$W_K$: 320 x 768", offset=(-0.65, -0.3), fontsize=8)
    arrow(ax, (8.9, 1.0), (9.6, 1.35), "$W_V$", offset=(0.0, -0.4), fontsize=8)
    mat(11.0, 3.3, 0.9, 2.1, "$QK^\\top$\n$/\\sqrt{d}$\nsoftmax", "(4096, 77)", ATTN)
    arrow(ax, (10.35, 4.9), (11.0, 4.6))
    arrow(ax, (10.35, 2.65), (11.0, 3.6))
    mat(12.8, 2.4, 0.9, 3.0, "out", "(4096, 320)", PIXELS)
    arrow(ax, (11.9, 4.35), (12.8, 4.35))
    arrow(ax, (10.35, 1.4), (12.8, 2.8), "weights x V", offset=(0.55, -0.55), rad=0.15)
    _note(ax, 12.0, 1.0, "each of the 4096 pixels gets\na mixture of the 77 words' values;\n"
          "8 heads of 40 in SD 1.5 (notebook 05, section 3)")
    _note(ax, 11.45, 5.78, "row n: where pixel n looks\nin the caption (sums to 1)", fontsize=8)
    _save(fig, path)


def multihead_split(path: Path) -> None:
    """Notebook 05: split 512 columns into 8 heads of 64, attend per head, concatenate, mix with W_O."""
    fig, ax = _canvas(14.5, 5.2, "Multi-head attention: 8 heads of 64 columns for the price of one head of 512")
    cmap = plt.get_cmap("tab10")
    # Q (6, 512) with 8 coloured strips
    for h in range(8):
        ax.add_patch(plt.Rectangle((0.4 + 0.3 * h, 1.6), 0.3, 2.0, fc=cmap(h), alpha=0.55, ec="#333333", lw=0.8))
    ax.text(1.6, 3.8, "Q (and K, V)", ha="center", fontsize=10, weight="bold")
    ax.text(1.6, 1.35, "(6, 512): columns 64h ... 64h + 63\nbelong to head h", ha="center", va="top", fontsize=8.5)
    arrow(ax, (2.95, 2.6), (3.85, 2.6), "view (6, 8, 64)\ntranspose", offset=(0, 0.15), fontsize=8)
    # 8 heads, stacked
    for h in range(8):
        y = 4.0 - 0.42 * h
        ax.add_patch(plt.Rectangle((4.9, y - 0.3), 0.3, 0.34, fc=cmap(h), alpha=0.55, ec="#333333", lw=0.8))
        ax.add_patch(plt.Rectangle((5.6, y - 0.3), 0.34, 0.34, fc=ATTN, ec="#333333", lw=0.8))
        ax.add_patch(plt.Rectangle((6.3, y - 0.3), 0.3, 0.34, fc=cmap(h), alpha=0.9, ec="#333333", lw=0.8))
        ax.text(4.75, y - 0.13, f"head {h}", ha="right", va="center", fontsize=7.5)
    ax.text(5.05, 4.35, "$Q_h$", ha="center", fontsize=9)
    ax.text(5.77, 4.35, "$P_h$", ha="center", fontsize=9)
    ax.text(6.45, 4.35, "$P_h V_h$", ha="center", fontsize=9)
    _note(ax, 5.6, 0.45, "(8, 6, 64) -> softmax($Q_h K_h^\\top/\\sqrt{64}$): (8, 6, 6)\n-> $P_h V_h$: (8, 6, 64)"
          "   one batched matmul", fontsize=8)
    arrow(ax, (6.75, 2.6), (7.55, 2.6), "transpose,\nreshape", offset=(0, 0.15), fontsize=8)
    # concat
    for h in range(8):
        ax.add_patch(plt.Rectangle((7.7 + 0.3 * h, 1.6), 0.3, 2.0, fc=cmap(h), alpha=0.9, ec="#333333", lw=0.8))
    ax.text(8.9, 3.8, "concatenated heads", ha="center", fontsize=10, weight="bold")
    ax.text(8.9, 1.35, "(6, 512)", ha="center", va="top", fontsize=8.5)
    arrow(ax, (10.2, 2.6), (10.9, 2.6))
    box(ax, 10.9, 2.1, 1.2, 1.0, "$W_O$\n512 x 512", ATTN, 10)
    arrow(ax, (12.1, 2.6), (12.7, 2.6))
    box(ax, 12.7, 1.6, 1.2, 2.0, "output\n(6, 512)\nheads\nmixed", PIXELS, 9.5)
    _note(ax, 11.5, 0.7, "parameters: the same four 512 x 512\nmatrices as a single head of 512", fontsize=8)
    _save(fig, path)


def _unet_tiny_config() -> dict:
    import json
    return json.loads((IMAGES.parent / "sdlearn" / "assets" / "tiny" / "unet" / "config.json").read_text())


def unet_u(path: Path) -> None:
    """Notebook 06: the UNet as a U, levels of SD 1.5 and the bundled tiny model, skips, where t and text enter."""
    from sdlearn.configs import SD15_UNET

    tiny = _unet_tiny_config()
    sd_ch, sd_types = SD15_UNET["block_out_channels"], SD15_UNET["down_block_types"]
    side = 64
    tiny_side, tiny_ch = tiny["sample_size"], tiny["block_out_channels"]
    fig, ax = _canvas(14.5, 9.3, "The UNet as a U (SD 1.5 at 512 x 512; the bundled tiny model in grey)")
    ys = [7.3, 5.6, 3.9, 2.2]
    for i, (c, kind) in enumerate(zip(sd_ch, sd_types)):
        s = side >> i
        attn = kind.startswith("CrossAttn")
        tiny_txt = (f"tiny: {tiny_side >> i}x{tiny_side >> i}, {tiny_ch[i]} ch" if i < len(tiny_ch)
                    else "tiny: no 4th level")
        blocks = "2 x (resnet + transformer)" if attn else "2 x resnet (no attention)"
        down = f"down_blocks.{i}: {s}x{s}, {c} ch\n{blocks}"
        up = f"up_blocks.{3 - i}: {s}x{s}, {c} ch\n3 x ({'resnet + transformer' if attn else 'resnet'})"
        for x, label in [(1.2, down), (9.3, up)]:
            box(ax, x, ys[i], 4.0, 1.05, label, DENOISE, 9.5)
            ax.text(x + 2.0, ys[i] + 0.12, tiny_txt, ha="center", fontsize=8, color="#777777")
            # where t and the text enter
            ax.add_patch(plt.Circle((x + 0.25, ys[i] + 0.8), 0.13, fc=TIME, ec="#2d7a2d"))
            ax.text(x + 0.25, ys[i] + 0.8, "t", ha="center", va="center", fontsize=8, weight="bold")
            if attn:
                ax.add_patch(plt.Circle((x + 3.75, ys[i] + 0.8), 0.13, fc=TOKENS, ec="#2b5fa8"))
                ax.text(x + 3.75, ys[i] + 0.8, "T", ha="center", va="center", fontsize=8, weight="bold")
        # skips: down level i -> up level 3 - i
        arrow(ax, (5.2, ys[i] + 0.52), (9.3, ys[i] + 0.52), f"skips: 3 maps of {s}x{s}, concatenated on channels",
              color="#8a5a2b", ls="--", offset=(0, 0.05), fontsize=8)
        if i < 3:
            arrow(ax, (2.6, ys[i]), (2.6, ys[i + 1] + 1.05), "stride-2 conv", offset=(0.75, -0.15), fontsize=8)
            arrow(ax, (11.3, ys[i + 1] + 1.05), (11.3, ys[i]), "upsample x2", offset=(-0.75, -0.15), fontsize=8)
    box(ax, 5.4, 0.45, 3.7, 1.0, "mid_block: 8x8, 1280 ch\nresnet + transformer + resnet", DENOISE, 9.5)
    ax.text(7.25, 0.57, "tiny: 2x2, 128 ch", ha="center", fontsize=8, color="#777777")
    ax.add_patch(plt.Circle((5.65, 1.25), 0.13, fc=TIME, ec="#2d7a2d"))
    ax.text(5.65, 1.25, "t", ha="center", va="center", fontsize=8, weight="bold")
    ax.add_patch(plt.Circle((8.85, 1.25), 0.13, fc=TOKENS, ec="#2b5fa8"))
    ax.text(8.85, 1.25, "T", ha="center", va="center", fontsize=8, weight="bold")
    arrow(ax, (2.6, ys[3]), (5.4, 0.95))
    arrow(ax, (9.1, 0.95), (11.3, ys[3]))
    # in and out
    box(ax, 0.1, 8.55, 2.6, 0.6, "$x_t$ (B, 4, 64, 64) -> conv_in", DATA, 9)
    box(ax, 10.9, 8.55, 3.5, 0.6, "GroupNorm, conv_out -> $\\hat\\epsilon$ (B, 4, 64, 64)", DATA, 9)
    arrow(ax, (1.8, 8.55), (1.8, ys[0] + 1.05))
    arrow(ax, (12.8, ys[0] + 1.05), (12.8, 8.55))
    # t and text sources
    box(ax, 0.1, 0.25, 2.9, 1.1, "(t): time t -> 320 sines/cosines\n-> MLP -> (B, 1280), added\nin every resnet block", TIME, 8.5)
    box(ax, 11.5, 0.25, 2.9, 1.1, "(T): text $\\tau(y)$ (B, 77, 768)\n= K and V of every\ncross-attention", TOKENS, 8.5)
    _note(ax, 6.85, 8.85, "channels 320 / 640 / 1280 / 1280 (tiny: 64 / 128 / 128);\n"
          "each down level halves the side, each up level doubles it", fontsize=8.5)
    _save(fig, path)


def unet_blocks(path: Path) -> None:
    """Notebook 06: inside a resnet block and a spatial-transformer block (SD 1.x layout)."""
    fig, ax = _canvas(14.5, 8.6, "Inside the two UNet blocks")
    ax.text(0.2, 8.0, "resnet block: where t enters", fontsize=11, weight="bold")
    ax.text(7.6, 8.0, "spatial transformer: where the text enters", fontsize=11, weight="bold")
    ax.plot([7.3, 7.3], [0.2, 8.2], color="#bbbbbb", lw=1)
    # --- resnet: a vertical chain
    steps = [("x: (B, C_in, H, W)", DATA), ("GroupNorm, SiLU", DENOISE), ("conv 3x3: C_in -> C_out", DENOISE),
             ("+  (one shift per channel)", TIME), ("GroupNorm, SiLU, dropout", DENOISE),
             ("conv 3x3: C_out -> C_out", DENOISE), ("+ x, or conv 1x1(x) if C_in != C_out", DATA), ("out: (B, C_out, H, W)", DATA)]
    ys = [7.2 - 0.92 * k for k in range(len(steps))]
    for (label, color), y in zip(steps, ys):
        box(ax, 1.2, y, 3.0, 0.6, label, color, 9)
    for a, b in zip(ys, ys[1:]):
        arrow(ax, (2.7, a), (2.7, b + 0.6))
    box(ax, 4.8, ys[3] + 0.75, 2.3, 0.9, "time embedding\n(B, 1280) after SiLU\n-> Linear -> (B, C_out)", TIME, 8.5)
    arrow(ax, (4.8, ys[3] + 0.95), (4.2, ys[3] + 0.35))
    ax.add_patch(FancyArrowPatch((1.2, ys[0] + 0.3), (1.2, ys[6] + 0.3), arrowstyle="-|>", mutation_scale=14,
                                 lw=1.3, color="#8a5a2b", ls="--", connectionstyle="arc3,rad=0.35"))
    _note(ax, 0.12, ys[4] - 0.05, "shortcut", fontsize=8, rotation=90)
    # --- spatial transformer
    steps = [("x: (B, C, H, W)", DATA), ("GroupNorm, conv 1x1 (proj_in)", ATTN),
             ("reshape: (B, H*W, C), one token per pixel", DATA),
             ("LayerNorm, self-attention (attn1) +", PIXELS),
             ("LayerNorm, cross-attention (attn2) +", TOKENS),
             ("LayerNorm, GEGLU feed-forward +", ATTN),
             ("reshape back: (B, C, H, W)", DATA), ("conv 1x1 (proj_out), + x", ATTN)]
    ys = [7.2 - 0.92 * k for k in range(len(steps))]
    for (label, color), y in zip(steps, ys):
        box(ax, 8.3, y, 3.6, 0.6, label, color, 9)
    for a, b in zip(ys, ys[1:]):
        arrow(ax, (10.1, a), (10.1, b + 0.6))
    box(ax, 12.25, ys[4] - 0.15, 2.1, 0.9, "text $\\tau(y)$\n(B, 77, 768):\nK and V", TOKENS, 8.5)
    arrow(ax, (12.25, ys[4] + 0.3), (11.9, ys[4] + 0.3))
    _note(ax, 13.3, ys[3] + 0.3, "Q, K, V from the\npixels: (HW x HW)", fontsize=8)
    _note(ax, 13.3, ys[5] + 0.3, "C -> 8C, value x GELU(gate)\n4C -> C", fontsize=8)
    _note(ax, 13.3, ys[1] + 0.3, "SD 2.x: Linear\ninstead of 1x1 conv", fontsize=8)
    _note(ax, 13.3, ys[7] + 0.3, "long residual\naround it all", fontsize=8)
    _note(ax, 7.6, ys[4] + 0.3, "each\n'+' is a\nresidual", fontsize=7.5, ha="left")
    _save(fig, path)


def families(path: Path) -> None:
    """Notebook 00: how each family of generative model draws one sample (network calls in sequence)."""
    fig, ax = _canvas(13.0, 6.9, "How each family draws one image (each orange box is one network call)")
    rows = [("VAE (2013)", 5.7), ("GAN (2014)", 4.7), ("diffusion (2015-2020)", 3.55),
            ("autoregressive (2016)", 2.35), ("flow (2016-2018)", 1.2)]
    for name, y in rows:
        ax.text(0.1, y + 0.35, name, fontsize=10, weight="bold", va="center")
    for y, net, note in ((5.7, "decoder", "an encoder exists, but only for training"),
                         (4.7, "generator", "a discriminator exists, but only for training"),
                         (1.2, "f⁻¹ (invertible)", "z = f(x) exactly: z has the image's size")):
        box(ax, 3.0, y, 1.5, 0.7, "z ~ N(0, I)", DATA, 9)       # one call: noise -> network -> image
        box(ax, 5.2, y, 1.6, 0.7, net, PIXELS, 9.5)
        box(ax, 7.5, y, 1.2, 0.7, "image x", DATA, 9)
        arrow(ax, (4.5, y + 0.35), (5.2, y + 0.35))
        arrow(ax, (6.8, y + 0.35), (7.5, y + 0.35))
        _note(ax, 10.8, y + 0.35, note)
    y = 3.55  # diffusion: x_T -> denoise -> ... -> x_0, the same network at every step
    box(ax, 3.0, y, 1.5, 0.7, "x_T ~ N(0, I)", DATA, 9)
    for x, label in ((5.0, "denoise\nt = T"), (6.6, "denoise\nt = T-1"), (8.9, "denoise\nt = 1")):
        box(ax, x, y, 1.3, 0.7, label, PIXELS, 8.5)
    ax.text(8.25, y + 0.35, "...", fontsize=14, ha="center", va="center")
    box(ax, 10.8, y, 1.2, 0.7, "image x_0", DATA, 9)
    arrow(ax, (4.5, y + 0.35), (5.0, y + 0.35))
    arrow(ax, (6.3, y + 0.35), (6.6, y + 0.35))
    arrow(ax, (10.2, y + 0.35), (10.8, y + 0.35))
    _note(ax, 7.6, y - 0.25, "one network, shared by every noise level, called once per step", fontsize=8)
    y = 2.35  # autoregressive: one value at a time, each call sees all values so far
    for i, x in enumerate((3.0, 4.9, 6.8)):
        box(ax, x, y, 1.3, 0.7, f"network\n-> value {i + 1}", PIXELS, 8.5)
    for x in (4.3, 6.2):
        arrow(ax, (x, y + 0.35), (x + 0.6, y + 0.35))
    ax.text(8.5, y + 0.35, "...", fontsize=14, ha="center", va="center")
    box(ax, 9.2, y, 1.4, 0.7, "network\n-> last value", PIXELS, 8.5)
    box(ax, 10.8, y, 1.2, 0.7, "image x", DATA, 9)
    arrow(ax, (10.6, y + 0.35), (10.8, y + 0.35))
    _note(ax, 7.6, y - 0.25, "each call sees every value drawn so far (PixelCNN: pixel by pixel, colour by colour)",
          fontsize=8)
    ax.text(0.1, 0.45, "Stable Diffusion is the diffusion row run on a VAE's small latent instead of the image "
            "(notebooks 02-03), with text entering every denoising call (notebooks 04-06).", fontsize=9,
            va="center")
    _save(fig, path)


DIAGRAMS = {
    "00_sd_overview.png": sd_overview,
    "00_families.png": families,
    "04_text_path.png": text_path,
    "05_self_vs_cross.png": self_vs_cross,
    "05_multihead_split.png": multihead_split,
    "06_unet_u.png": unet_u,
    "06_blocks.png": unet_blocks,
}

if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(IMAGES.parent))           # sdlearn from the checkout (configs, tokenizer)
    wanted = sys.argv[1:] or list(DIAGRAMS)
    unknown = [n for n in wanted if n not in DIAGRAMS]
    if unknown:
        raise SystemExit(f"unknown diagram(s) {unknown}; choose from {sorted(DIAGRAMS)}")
    for name in wanted:
        DIAGRAMS[name](IMAGES / name)
        print("wrote", IMAGES / name)
