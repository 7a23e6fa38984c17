# %% [markdown]
# # 00 · Welcome: what Stable Diffusion is, and the world we will build it in
#
# {{COLAB_BADGE}}
#
# **What you will learn**
#
# * the three parts of Stable Diffusion (a text encoder, a UNet with a scheduler, a VAE decoder)
#   and why it works in a small *latent* space instead of on pixels;
# * how this series is organised, and how to check that your environment is ready;
# * the **Shapes world**: a tiny captioned image world in which a text-to-image model can be trained
#   on a laptop CPU, and which we use in every later notebook;
# * the **attribute reader**, which reads shape, colour, size and position back out of an image, so
#   that "does the model follow the prompt?" becomes a number;
# * how to switch to the real Stable Diffusion weights on a GPU.

# %% [setup]

# %% [markdown]
# ## 1. Stable Diffusion in one picture
#
# Stable Diffusion turns a sentence into a picture in three stages, each a separate neural network:
#
# 1. **Text encoder** (CLIP's text transformer). The prompt is split into tokens and turned into one
#    vector per token: a (77, 768) matrix for SD v1. It never sees an image at generation time.
# 2. **UNet + scheduler** (the diffusion model proper). Start from pure Gaussian noise. The UNet looks
#    at the noisy *latent* and the text vectors (through cross-attention) and predicts the noise in
#    it; the scheduler removes a little of that noise. Repeat 20-50 times.
# 3. **VAE decoder**. The denoised latent is a compressed code of an image; the decoder of a
#    variational autoencoder turns it into pixels.
#
# ![Stable Diffusion overview](../images/00_sd_overview.png)
#
# Why the detour through a latent space? Diffusion models need many network evaluations per image,
# and on pixels every evaluation is expensive. The VAE shrinks each side 8x and keeps 4 channels,
# so the UNet works on far fewer numbers. Let's count instead of trusting the slogan, then check the
# count against SD v1's real VAE architecture, built on PyTorch's `meta` device (shapes only: no
# weights, no memory, no download):

# %%
import torch

from sdlearn.configs import SD_VAE
from sdlearn.vae import VAE

pixels = 512 * 512 * 3            # an SD v1 image
f, latent_channels = 8, 4         # the VAE's downsampling factor and latent channels
latent = (512 // f) * (512 // f) * latent_channels
print(f"pixels: {pixels:,}   latent: {latent:,}   -> {pixels / latent:.0f}x fewer numbers")
with torch.device("meta"):
    z = VAE.from_config(SD_VAE).encode(torch.empty(1, 3, 512, 512)).mean   # (1, 4, 64, 64), shapes only
print("SD v1's VAE encoder turns (1, 3, 512, 512) into", tuple(z.shape))
assert z.numel() == latent        # f and the channel count above are the real VAE's

# %% [markdown]
# Self-attention cost grows with the *square* of the number of positions, so at the UNet's first
# attention layer the saving is larger still (by how much is an exercise in notebook 02).
# That is the whole idea of the *latent* diffusion paper (Rombach et al., 2022): keep the diffusion
# model, move it to a compressed space where it is cheap, and pick the compression gently enough
# (f = 4 or 8) that the decoder can still restore detail.

# %% [markdown]
# ### Where diffusion sits among generative models
#
# A **discriminative** model learns p(label | image): given a picture, is it a cat? A **generative** model learns
# the distribution of the images themselves, p(image), or p(image | text), so that it can *sample* new ones.
# For images the main families appeared in this order (by their first paper):
#
# | year | family | the idea in one line |
# |---|---|---|
# | 2013 | variational autoencoder (Kingma & Welling) | decode samples of a latent z ~ N(0, I); train a lower bound on log p(x) (notebook 03) |
# | 2014 | generative adversarial network (Goodfellow et al.) | a generator fools a discriminator; sharp images in one pass |
# | 2014-2018 | normalising flows (NICE, RealNVP, Glow) | an invertible network maps noise to images; exact likelihood by the change of variables |
# | 2015, 2020 | diffusion (Sohl-Dickstein et al. 2015; DDPM, Ho et al. 2020) | learn to undo gradual noising, one small step at a time; trained on a (reweighted) lower bound (notebooks 01-02) |
# | 2016 | autoregressive pixels (PixelRNN, PixelCNN; van den Oord et al.) | exact likelihood, one value at a time: p(x) = Π p(x_i \| x_<i) |
# | 2021-2022 | text-to-image at scale: DALL-E, GLIDE, DALL-E 2, Imagen, **latent diffusion / Stable Diffusion** | condition on text, train on hundreds of millions of captioned images |
#
# How each of them *draws* an image, side by side (training is another matter: the VAE's encoder and the
# GAN's discriminator are needed only then):
#
# ![How each family draws one image: VAE, GAN and flow in one network call; diffusion one call per noise level; autoregressive one call per value](../images/00_families.png)
#
# GANs are fast to sample but their two-player training is unstable and prone to **mode collapse**: the
# generator settles on a few kinds of image that fool the discriminator and never produces the rest.
# Diffusion models are **likelihood-based**: the loss charges the model for every part of the data it fails to
# cover, so they train stably and keep the variety, and one network is shared across all noise levels. Their
# price is many network evaluations per image: the cost that latent diffusion cuts by working on small latents.
#
# "The loss charges for every part of the data a model misses", in numbers. Take data from two equal bumps,
# at −2 and +2, each with standard deviation 0.5, and two candidate models: one has collapsed onto the right
# bump, as a GAN's generator can; the other covers both. The likelihood loss, the average of −log p(x) over the data, tells them apart at once:

# %%
gen = torch.Generator().manual_seed(0)
side = torch.where(torch.rand(10_000, generator=gen) < 0.5, -2.0, 2.0)       # which bump each point is from
x = side + 0.5 * torch.randn(10_000, generator=gen)                           # (10000,) the data
bumps = torch.distributions.Normal(torch.tensor([-2.0, 2.0]), 0.5)
models = {
    "collapsed (the right bump only)": torch.distributions.Normal(2.0, 0.5),
    "covering (both bumps)": torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor([0.5, 0.5])), bumps),
}
nll = {name: -m.log_prob(x).mean().item() for name, m in models.items()}     # the likelihood loss
for name, value in nll.items():
    print(f"{name:32s} average -log p(x) = {value:6.2f}")
collapsed, covering = nll.values()
assert collapsed > 5 * covering   # the points of the missing bump cost ~32 nats each (8 sd away)

# %% [markdown]
# Every sample the collapsed model draws looks perfect, yet its loss is more than ten times worse: half the data
# sits at the other bump, 4 / 0.5 = 8 standard deviations from the only mode it produces. A likelihood-based model
# cannot settle on one mode without paying for the others. A GAN's generator is judged only through its own
# samples (does each one look real to the discriminator?), so nothing charges it for a mode it never produces.

# %% [markdown]
# ## 2. How the series is organised
#
# Each notebook builds one part from scratch, checks it against the reference implementation
# (diffusers / transformers) on identical weights, and then uses the `sdlearn` package, which holds
# the same code, from there on.
#
# | # | notebook | you build |
# |---|---|---|
# | 00 | welcome | the map (this notebook), the Shapes world, the attribute reader |
# | 01 | forward noising | beta schedules, $\bar\alpha_t$, $q(x_t \mid x_0)$ in one jump, SNR |
# | 02 | reverse process | DDPM sampling, predicting the noise, DDIM |
# | 03 | VAE & ELBO | KL divergence, the ELBO, the reparameterisation trick, SD's autoencoder |
# | 04 | CLIP text | the BPE tokenizer, the text transformer, a tiny contrastive CLIP |
# | 05 | attention | self- and cross-attention, what the words attend to |
# | 06 | UNet | time embeddings, resnet blocks, the UNet noise predictor |
# | 07 | training latent diffusion | the LDM objective, caption dropout, a live training run |
# | 08 | sampling | the full sampler, guidance, negative prompts, DDIM / DPM-Solver++ / Euler |
# | 09 | img2img & inpainting | starting from an image, repainting a masked region |
# | 10 | real Stable Diffusion | the same code with the real SD v1.5 / v2 weights (GPU) |
#
# Everything runs offline on a CPU: the pictures come from a tiny text-to-image model that
# `sdlearn` trains on the Shapes world below and ships with the package.

# %% [markdown]
# ## 3. Environment check
#
# The cell below tells you where tensors will live (`cuda`, then `mps` on Apple silicon, then `cpu`),
# which versions are installed, and whether you are online (only notebook 10 needs the internet).

# %%
# NBVAL_IGNORE_OUTPUT
import os
import platform
import socket

import diffusers
import numpy as np
import torch
import transformers

import sdlearn
from sdlearn import data, evaluate, viz
from sdlearn.device import get_device


def is_online(host: str = "huggingface.co", timeout: float = 1.5) -> bool:
    """True if the Hugging Face hub is reachable (and not switched off with HF_HUB_OFFLINE=1)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except Exception:
        return False


device = get_device()
online = is_online()
print(f"python {platform.python_version()}  torch {torch.__version__}  diffusers {diffusers.__version__}  "
      f"transformers {transformers.__version__}  sdlearn {sdlearn.__version__}")
print(f"device: {device}   CPU threads: {torch.get_num_threads()}   online: {online}")

# %% [markdown]
# ## 4. The Shapes world
#
# Training a real text-to-image model takes thousands of GPU-days. To build one that you can train
# yourself on a CPU, we need a world small enough to learn in minutes but rich enough that a caption
# really has to be *read*: one shape on a plain background, described by four attributes.

# %%
print("shapes:   ", data.SHAPES)
print("colours:  ", data.COLORS)
print("sizes:    ", data.SIZES)
print("positions:", data.POSITIONS)
n_combos = len(data.SHAPES) * len(data.COLORS) * len(data.SIZES) * len(data.POSITIONS)
print(f"{n_combos} distinct captions of the form", repr(data.caption("star", "blue", "large", "top left")))

# %% [markdown]
# A training item is a 64x64 image and a caption. Captions vary in wording and sometimes leave an
# attribute out, as real image captions do; a seed decides every pixel (small jitter in place,
# size, rotation and tint).

# %%
ds = data.ShapesDataset(length=10_000, seed=0)
items = [ds[i] for i in range(12)]
fig = viz.image_grid([x for x, _ in items], captions=[c for _, c in items], nrow=6, figsize=1.9)

# %% [markdown]
# Every (shape, colour) pair at a glance. The five pairs framed in black are **held out**: the
# training data never shows them (`data.HELD_OUT`), so in notebook 07 we can ask whether the model
# composes "yellow" and "circle", which it has only ever seen apart.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(len(data.SHAPES), len(data.COLORS), figsize=(7.2, 6.2))
for i, shape in enumerate(data.SHAPES):
    for j, color in enumerate(data.COLORS):
        ax = axes[i, j]
        ax.imshow(data.render(shape, color, "large", "center"))
        ax.set_xticks([]), ax.set_yticks([])
        held = (shape, color) in data.HELD_OUT
        for spine in ax.spines.values():
            spine.set_linewidth(3 if held else 0.5)
        if i == 0:
            ax.set_title(color, fontsize=10)
        if j == 0:
            ax.set_ylabel(shape, fontsize=10)
fig.suptitle("Shapes x colours (black frame = held out of training)")
fig.tight_layout()

# %% [markdown]
# The nine positions are the cells of a 3x3 grid, and a seed fixes the jitter: the same seed gives
# the same pixels, a different seed a slightly different drawing of the same caption.

# %%
same = [np.asarray(data.render("triangle", "red", "small", "top right", seed=s)) for s in (5, 5, 6)]
assert np.array_equal(same[0], same[1]) and not np.array_equal(same[0], same[2])
grid = viz.image_grid([data.render("circle", "blue", "small", p, seed=1) for p in data.POSITIONS],
                      nrow=3, scale=2)
grid

# %% [markdown]
# ## 5. Reading attributes back out of an image
#
# To measure whether a model follows its prompt we need the reverse of `render`: look at an image
# and say which shape, colour, size and position it shows. `sdlearn.evaluate.read_attributes` does
# this, and it must also work on *generated* images: blurry edges, slightly wrong colours, noisy
# backgrounds. It works in four steps, which we can watch on one image:
#
# 1. **Coverage.** The background colour is the median of the image border. Each pixel's distance
#    from it, divided by the shape colour's distance, is how much of the pixel the shape covers:
#    an anti-aliased edge pixel that is 30% shape gets 0.3.
# 2. **Colour** is the mean colour of the fully covered pixels, named by the nearest palette colour
#    in CIELAB, a colour space where distances match perceived differences.
# 3. **Position** is the coverage-weighted centroid, placed on the 3x3 grid; **size** is the
#    circumradius (the farthest covered pixel from the centroid).
# 4. **Shape** comes from a small CNN that looks at the coverage map cropped around the centroid and
#    rescaled by the circumradius, trained on degraded renders by `python -m sdlearn train reader`.

# %%
x = data.to_tensor(data.render("star", "orange", "small", "bottom left", seed=3))[None]   # (1, 3, 64, 64)
alpha, fg, bg = evaluate.foreground(x)              # coverage (1, 64, 64), shape and background colour
center, radius = evaluate.centroid_and_radius(alpha)
crop = evaluate.shape_crops(alpha, center, radius)   # (1, 1, 32, 32): what the shape CNN sees
print("read:", evaluate.read_attributes(x)[0])

fig, axes = plt.subplots(1, 3, figsize=(8, 2.9))
axes[0].imshow(data.to_pil(x[0]))
axes[0].add_patch(plt.Circle(center[0].tolist(), radius[0].item(), fill=False, color="k", ls="--"))
axes[0].plot(*center[0].tolist(), "k+", ms=12)
grid_centres = [data.position_center(p)[0] for p in data.POSITIONS[:3]]  # 15.4, 32, 48.6 pixels
for edge in np.add(grid_centres[1:], grid_centres[:-1]) / 2:              # cell borders, halfway between
    axes[0].axvline(edge, color="gray", lw=0.8), axes[0].axhline(edge, color="gray", lw=0.8)
axes[0].set_title(f"centroid and circumradius {radius.item():.1f}px", fontsize=9)
axes[1].imshow(alpha[0], cmap="gray_r", vmin=0, vmax=1)
axes[1].set_title("coverage alpha", fontsize=9)
axes[2].imshow(crop[0, 0], cmap="gray_r", vmin=0, vmax=1)
axes[2].set_title("the CNN's 32x32 crop", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# Why the circumradius and not the area? Because the renderer sizes every shape by its circumradius,
# and the shapes fill their circle very differently: a star covers much less of it than a circle.
# Measure both on a few hundred renders and the reason is plain to see. The threshold between small
# and large is not typed in anywhere: `evaluate.size_threshold()` measures it on clean renders.

# %%
from sdlearn.train.reader import render_batch

xs, attrs = render_batch(300, seed=11)
alphas = evaluate.foreground(xs)[0]
areas = alphas.sum(dim=(1, 2))
radii = evaluate.centroid_and_radius(alphas)[1]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for k, shape in enumerate(data.SHAPES):
    for size, marker in (("small", "o"), ("large", "^")):
        idx = [i for i, a in enumerate(attrs) if a.shape == shape and a.size == size]
        kw = dict(color=f"C{k}", marker=marker, s=14, label=f"{size} {shape}" if size == "large" else None)
        axes[0].scatter(areas[idx], [k] * len(idx), **kw)
        axes[1].scatter(radii[idx], [k] * len(idx), **kw)
axes[1].axvline(evaluate.size_threshold(), color="k", ls="--")
axes[0].set_title("area (pixels): small and large overlap across shapes", fontsize=9)
axes[1].set_title("circumradius (pixels): one threshold separates them", fontsize=9)
for ax in axes:
    ax.set_yticks(range(len(data.SHAPES)), data.SHAPES)
    ax.set_xlabel("dots: small, triangles: large", fontsize=8)
fig.tight_layout()

small_areas = areas[[a.size == "small" for a in attrs]]
large_areas = areas[[a.size == "large" for a in attrs]]
small_radii = radii[[a.size == "small" for a in attrs]]
large_radii = radii[[a.size == "large" for a in attrs]]
print(f"area:   largest small {small_areas.max():.0f} vs smallest large {large_areas.min():.0f}")
print(f"radius: largest small {small_radii.max():.1f} vs smallest large {large_radii.min():.1f}, "
      f"threshold {evaluate.size_threshold():.1f}")
assert small_areas.max() > large_areas.min()         # area alone cannot tell the sizes apart...
assert small_radii.max() < evaluate.size_threshold() < large_radii.min()   # ...the circumradius can

# %% [markdown]
# Now read the preview grid from above, and measure the reader on renders it has never seen, clean
# and degraded the way generated images are (blur, noise, colour shifts, background blotches).

# %%
read = evaluate.read_attributes(torch.stack([x for x, _ in items]))
for (_, text), r in list(zip(items, read))[:6]:
    print(f"{text!r:55} -> {r.caption()}")

# %%
from sdlearn.train.reader import augment

clean = evaluate.attribute_accuracy(xs, attrs)
degraded_x = augment(xs, torch.Generator().manual_seed(0))
degraded = evaluate.attribute_accuracy(degraded_x, attrs)
print("clean:   ", {k: round(v, 3) for k, v in clean.items()})
print("degraded:", {k: round(v, 3) for k, v in degraded.items()})
assert all(v >= 0.99 for v in clean.values())
assert degraded["all"] >= 0.95
grid = viz.image_grid(degraded_x[:8], nrow=8, scale=2)
grid

# %% [markdown]
# The same numbers on 2,000 renders per condition are in `benchmarks/RESULTS.md`
# (`python benchmarks/bench_reader.py`). From notebook 07 on, `evaluate.attribute_accuracy` scores
# generated images: "colour 97%, shape 92%" means the reader found the requested colour in 97% of
# the pictures.
#
# `evaluate.psnr(a, b, mask=None)` is the other measure we will use, for reconstructions: the
# peak signal-to-noise ratio in dB. On Shapes the flat background dominates it, so pass a foreground
# mask to score the shape alone:

# %%
img = data.to_tensor(data.render("square", "purple", "large", "center", seed=0))[None]
noisy = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
shape_mask = evaluate.foreground(img)[0][:, None] > 0.5                    # (1, 1, 64, 64)
shifted = torch.where(shape_mask, img + 0.2, img)                          # the shape gets lighter
print(f"the shape covers {shape_mask.float().mean():.0%} of the pixels")
for name, y in (("noise", noisy), ("colour shift", shifted)):
    print(f"{name:13s} PSNR {evaluate.psnr(img, y):.1f} dB   on the shape only {evaluate.psnr(img, y, shape_mask):.1f} dB")
assert evaluate.psnr(img, shifted) > evaluate.psnr(img, noisy)
assert evaluate.psnr(img, shifted, shape_mask) < evaluate.psnr(img, noisy, shape_mask)
viz.image_grid([img, noisy, shifted], nrow=3, scale=2)

# %% [markdown]
# The colour-shifted square scores a *better* PSNR than the noisy one, although its colour is
# visibly off, because only a small fraction of the pixels changed. Restricted to the shape, the
# colour shift is clearly the worse error. Keep this in mind when notebook 03 reports PSNR for the VAE.

# %% [markdown]
# ## 6. Switching to the real Stable Diffusion
#
# The same `sdlearn` code loads the real weights (about 4 GB for SD v1.5). That needs internet and,
# to be pleasant, a GPU: on Colab choose *Runtime -> Change runtime type -> T4 GPU*. Then:
#
# ```python
# from sdlearn.pipeline import StableDiffusion
# sd = StableDiffusion.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5").to("cuda")
# sd.text_to_image("a photograph of an astronaut riding a horse", seed=0)[0]
# ```
#
# The cell below does exactly that, and only when a GPU and the internet are both there; everywhere
# else (including the tests) it is skipped. Notebook 10 goes through the real model in detail.

# %%
# NBVAL_IGNORE_OUTPUT
if torch.cuda.is_available() and online:
    from sdlearn.pipeline import StableDiffusion

    sd = StableDiffusion.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5").to("cuda")
    display(sd.text_to_image("a photograph of an astronaut riding a horse", seed=0)[0])
else:
    print("no GPU or no internet: staying with the bundled tiny model (that's all the series needs)")

# %% [markdown]
# ## Exercises
#
# **1.** Render the image for the caption *"a large green star in the bottom right"* (any seed) and
# store it in `answer_1` (a PIL image). The check reads it back with the attribute reader.

# %%
# BEGIN SOLUTION
answer_1 = data.render("star", "green", "large", "bottom right", seed=0)
# END SOLUTION
# STUB: answer_1 = None   # a PIL image: data.render(shape, colour, size, position, seed=...)

# %%
from sdlearn.exercises import check, generative_families


def reads_as_asked(image):
    got = evaluate.read_attributes([image])[0]
    return got == data.Attributes("star", "green", "large", "bottom right") or f"the reader sees {got.caption()!r}"


ok = check("Exercise 1", answer_1, test=reads_as_asked,
           hint="data.render takes the shape, colour, size and position as words (see data.SHAPES, data.POSITIONS)")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **2.** How many distinct (shape, colour, size, position) combinations does the training data
# (`ShapesDataset(holdout=True)`) never show? Compute it from the vocabulary and `data.HELD_OUT`,
# store it in `answer_2`. The check counts by brute force over every combination.

# %%
# BEGIN SOLUTION
answer_2 = len(data.HELD_OUT) * len(data.SIZES) * len(data.POSITIONS)
# END SOLUTION
# STUB: answer_2 = None   # an int: how many of the combinations are never shown
answer_2

# %%
import itertools

never = sum((s, c) in data.HELD_OUT
            for s, c, _, _ in itertools.product(data.SHAPES, data.COLORS, data.SIZES, data.POSITIONS))
ok = check("Exercise 2", answer_2, expected=never,
           hint="a held-out (shape, colour) pair is never shown at any size or position")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **3.** Stable Diffusion v2 makes 768x768 images with the same VAE (f = 8, 4 latent channels). How
# many numbers does its UNet denoise per image? Store it in `answer_3`. The check runs SD's VAE
# encoder on the `meta` device, as section 1 did.

# %%
# BEGIN SOLUTION
answer_3 = (768 // 8) * (768 // 8) * 4
# END SOLUTION
# STUB: answer_3 = None   # an int: the number of latent values per 768x768 image
answer_3

# %%
with torch.device("meta"):
    z_768 = VAE.from_config(SD_VAE).encode(torch.empty(1, 3, 768, 768)).mean
ok = check("Exercise 3", answer_3, expected=z_768.numel(),
           hint="each side shrinks by f = 8, and every latent position holds 4 channels")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **4.** Make the reader fail. Find a degradation of a render (blur, noise, a colour change...) that
# makes `read_attributes` get the *colour* wrong while a person would still name it correctly, or
# explain to yourself why that is hard. Store the degraded (1, 3, 64, 64) tensor in `answer_4`; the
# check only confirms it is a valid image whose colour the reader misreads. (Hint: the reader names
# the nearest palette colour; what lies halfway between orange and red?)

# %%
base = data.to_tensor(data.render("circle", "orange", "large", "center"))[None]   # (1, 3, 64, 64) in [-1, 1]
# BEGIN SOLUTION
answer_4 = base.clone()
answer_4[:, 1][evaluate.foreground(base)[0] > 0.5] -= 0.45   # less green: orange drifts towards red
# END SOLUTION
# STUB: answer_4 = None   # a (1, 3, 64, 64) tensor in [-1, 1]: `base`, degraded


# %%
def misread_colour(x):
    if not isinstance(x, torch.Tensor) or x.shape != (1, 3, 64, 64):
        return "answer_4 must be a tensor of shape (1, 3, 64, 64)"
    if x.min() < -1 or x.max() > 1:
        return "the values must stay in [-1, 1]"
    read_as = evaluate.read_attributes(x)[0].color
    return read_as != "orange" or "the reader still reads orange"


ok = check("Exercise 4", answer_4, test=misread_colour,
           hint="move the shape's pixels a little towards another palette colour (data.COLORS)")
# BEGIN SOLUTION
assert ok
print("read as:", evaluate.read_attributes(answer_4)[0].color, "(the reader only knows six colour names)")
# END SOLUTION

# %% [markdown]
# **5.** Back to section 1's families. For each one, say (a) how many network calls, one after the
# other, it needs to sample one 64×64 RGB Shapes image, and (b) what its training objective tells you
# about log p(x): `"exact"`, a lower `"bound"`, or `"none"` (for diffusion, the variational bound that its
# loss is derived from: notebook 02 shows that L_simple reweights its terms). Take DDPM's T = 1000 steps for diffusion,
# one call per value (each colour of each pixel) for an autoregressive model like PixelCNN, and one
# pass of the invertible network for a flow. Store a dict in `answer_5`:
# `{"VAE": (calls, likelihood), "GAN": ..., "diffusion": ..., "autoregressive": ..., "flow": ...}`.

# %%
# BEGIN SOLUTION
answer_5 = {
    "VAE": (1, "bound"),                      # decode one z ~ N(0, I); trained on the ELBO
    "GAN": (1, "none"),                       # one generator pass; the adversarial loss gives no p(x)
    "diffusion": (1000, "bound"),             # one UNet call per step; its loss is an ELBO (notebook 02)
    "autoregressive": (64 * 64 * 3, "exact"), # one value at a time; p(x) = product of the conditionals
    "flow": (1, "exact"),                     # invert once; change of variables gives p(x) exactly
}
# END SOLUTION
# STUB: answer_5 = None   # a dict: family -> (network calls per image, "exact" / "bound" / "none")

# %%
families = generative_families()    # the reference, kept in sdlearn.exercises so that it is not shown here


def matches_families(answer):
    if not isinstance(answer, dict) or set(answer) != set(families):
        return f"answer_5 must be a dict with the keys {sorted(families)}"
    for name, (calls, likelihood) in families.items():
        if not isinstance(answer[name], tuple) or len(answer[name]) != 2:
            return f"answer_5[{name!r}] must be a pair (calls, likelihood)"
        if answer[name][0] != calls:
            return f"the number of calls for {name!r} is not right"
        if answer[name][1] != likelihood:
            return f"what {name!r}'s loss says about log p(x) is not right"
    return True


ok = check("Exercise 5", answer_5, test=matches_families,
           hint="(a) count the network passes in each family's row of section 1's figure; an image has "
                "3 x 64 x 64 values. "
                "(b) ask of each loss whether it is log p(x) itself, a quantity below it, or not about p(x) at all")
# BEGIN SOLUTION
assert ok
# END SOLUTION
