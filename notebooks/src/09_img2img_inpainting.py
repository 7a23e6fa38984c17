# %% [markdown]
# # 09 · Image-to-image and inpainting: one sampler, three starting points
#
# {{COLAB_BADGE}}
#
# **What you will learn**
#
# 1. The lecture's **three architectures** (text-to-image, image-to-image, inpainting) are one
#    denoising loop with three different starts, written here as one short function.
# 2. **SDEdit**: what `strength` really sets (the step the loop starts from, so how much of the
#    input's signal survives in the starting latent), with a slider, a strength strip and a
#    survival curve measured on Shapes.
# 3. **Masks made in code**, and why a mask lives on the 8x8 latent grid, not on pixels.
# 4. **Repainting a shape** with an ordinary 4-channel UNet by **latent blending**, written out
#    step by step and checked equal to `sdlearn`'s `inpaint`.
# 5. Why the decoded picture changes a little *outside* the mask anyway, and the one-line fix.
# 6. The **9 input channels** of Stable Diffusion's inpainting UNet, shape by shape, and how it was
#    initialised from the 4-channel model.

# %% [setup]

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdlearn import data
from sdlearn.data import RADIUS, position_center, render, to_pil, to_tensor
from sdlearn.device import quiet_hub_loading, randn, seed_everything
from sdlearn.evaluate import psnr, read_attributes
from sdlearn.pipeline import StableDiffusion
from sdlearn.schedules import alpha_bar, make_betas
from sdlearn.unet import UNet
from sdlearn.viz import save_figure

# Section 6 builds diffusers' pipeline: hide its loading progress bars and transformers' notice about
# torchvision (a log record, dropped by its message; every other warning still shows).
quiet_hub_loading()

# %%
torch.set_num_threads(1)  # small tensors: one thread is as fast and repeatable
seed_everything(0)
sd = StableDiffusion.tiny(device="cpu")   # the bundled Shapes model: 64x64 images, 8x8x4 latents
sd.progress_bar = False
sched = sd.scheduler                      # DPM-Solver++ (2M), SD's noise schedule
STEPS, GUIDANCE = 20, 5.0
print(type(sched).__name__, "| UNet input channels:", sd.unet.config["in_channels"],
      "| latent scale factor:", round(sd.scaling_factor, 5))

# %% [markdown]
# ## 1. Three architectures, one loop
#
# The lecture draws three diagrams. In code they differ only in **where the denoising loop starts**
# and **what it is told at each step**:
#
# | | starting latent | at every step |
# |---|---|---|
# | text-to-image | pure noise z_T ~ N(0, I) | predict ε with the prompt (CFG), step |
# | image-to-image (SDEdit) | the image's latent z_0 noised to step t_s: z_t = √ᾱ z_0 + √(1−ᾱ) ε | same |
# | inpainting (4-channel UNet) | noise | same, then **paste the known region back**, noised to the current level |
#
# Below is that whole table as one function. It uses only the pieces earlier notebooks built: the
# VAE encoder and decoder (03), the text encoder (04), the UNet's guided noise prediction (06-08)
# and the scheduler's `add_noise` (the forward process q(z_t | z_0) of 01) and `step` (02).

# %%
@torch.no_grad()
def generate(prompt, image=None, strength=1.0, mask=None, seed=0, steps=STEPS, guidance=GUIDANCE,
             trace=None):
    """Text-to-image (image=None), SDEdit (image), or inpainting by latent blending (image + mask)."""
    g = torch.Generator().manual_seed(seed)
    context = torch.cat([sd.encode_prompt([""]), sd.encode_prompt([prompt])])  # (2, 77, 128): [uncond; cond]
    sched.set_timesteps(steps)
    n_run = int(steps * strength)                        # SDEdit runs only the last `strength` of the steps
    sched.set_begin_index(steps - n_run)
    timesteps = sched.timesteps[steps - n_run:]
    if image is None:                                    # text-to-image: z_T ~ N(0, I)
        z = randn((1, 4, 8, 8), g) * sched.init_noise_sigma
    else:
        z0 = sd.encode_image(to_tensor(image)[None], g)  # (1, 3, 64, 64) -> (1, 4, 8, 8), a sample of q(z|x)
        noise = randn(z0.shape, g)                       # (1, 4, 8, 8)
        if mask is not None and strength == 1.0:         # inpainting from scratch: start from pure noise
            z = noise * sched.init_noise_sigma
        else:                                            # q(z_t | z_0) at the first step we run
            z = sched.add_noise(z0, noise, timesteps[:1])
    if mask is not None:
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255)[None, None]   # (1, 1, 64, 64)
        m = F.interpolate((m >= 0.5).float(), size=z.shape[-2:])                      # (1, 1, 8, 8)
    for i, t in enumerate(timesteps):
        eps = sd.predict_noise(z, t, context, guidance, sched)   # eps_u + w (eps_c - eps_u)
        z = sched.step(eps, t, z).prev_sample                    # z_t -> z_{t-1}
        if mask is not None:                                     # latent blending
            last = i == len(timesteps) - 1
            known = z0 if last else sched.add_noise(z0, noise, timesteps[i + 1:i + 2])
            z = m * z + (1 - m) * known                          # invent the hole, keep the rest
        if trace is not None:
            trace.append(z.clone())
    return sd.decode_latents(z)                                  # (1, 4, 8, 8) -> (1, 3, 64, 64) in [-1, 1]


# %% [markdown]
# A red circle in the centre is our input; we ask for a **blue** one, three ways. A mask for the
# third is made in section 3; here it is simply the middle 32x32 pixels.

# %%
source = render("circle", "red", "large", "center", seed=1)
box = np.zeros((64, 64), np.uint8)
box[16:48, 16:48] = 255
box = Image.fromarray(box, "L")
prompt = "a large blue circle in the center"
traces = {name: [] for name in ("text-to-image", "image-to-image (0.6)", "inpainting")}
outputs = {
    "text-to-image": generate(prompt, seed=3, trace=traces["text-to-image"]),
    "image-to-image (0.6)": generate(prompt, source, strength=0.6, seed=3, trace=traces["image-to-image (0.6)"]),
    "inpainting": generate(prompt, source, mask=box, seed=3, trace=traces["inpainting"]),
}
fig, axes = plt.subplots(3, 7, figsize=(10, 4.6))
box_outline = np.asarray(box) / 255                                   # (64, 64), 1 inside the mask
for row, (name, trace) in zip(axes, traces.items()):
    row[0].imshow(source if name != "text-to-image" else np.full((64, 64, 3), 255, np.uint8))
    row[0].set_ylabel(name, fontsize=8)
    picks = np.linspace(0, len(trace) - 1, 5).round().astype(int)
    for ax, k in zip(row[1:6], picks):
        ax.imshow(to_pil(sd.decode_latents(trace[k])[0]))            # decoded z_t: still noisy mid-way
        ax.set_title(f"step {k + 1}/{len(trace)}", fontsize=7)
    row[6].imshow(to_pil(outputs[name][0]))
    row[6].set_title("result", fontsize=7)
    for ax in row:
        ax.set_xticks([])
        ax.set_yticks([])
        if name == "inpainting":                                      # the mask: repainted inside, kept outside
            ax.contour(box_outline, levels=[0.5], colors="k", linewidths=1, linestyles="--")
axes[0, 0].set_title("input", fontsize=7)
fig.suptitle(f"one loop, three starts: \"{prompt}\" (inpainting row: the mask dashed)", fontsize=9)
fig.tight_layout()
save_figure(fig, "09_three_architectures.png")
plt.show()

# %% [markdown]
# Text-to-image runs all 20 steps from noise; image-to-image at strength 0.6 runs only the last 12,
# starting from a latent that holds the red circle's layout (its first decoded step is still too
# noisy to show it); inpainting runs all 20 but re-imposes the unmasked part (outside the dashed box)
# after every step. Mid-way its decoded latents still show coloured smudges outside the box: the pasted-back known
# region is noised to the current step too, and only at the last step is it the input's own latent.
#
# **sdlearn holds the same.** `sd.text_to_image`, `sd.image_to_image` and `sd.inpaint` are this
# loop (and agree with diffusers' `StableDiffusionPipeline`, `StableDiffusionImg2ImgPipeline` and
# `StableDiffusionInpaintPipeline` on identical weights: `tests/test_pipeline.py`). Same seed, same
# random draws in the same order, so the same pixels:

# %%
ours = {
    "text-to-image": sd.text_to_image(prompt, seed=3, output_type="pt"),
    "image-to-image (0.6)": sd.image_to_image(prompt, source, strength=0.6, seed=3, output_type="pt"),
    "inpainting": sd.inpaint(prompt, source, box, seed=3, output_type="pt"),
}
for name in ours:
    err = float((ours[name] - (outputs[name] + 1) / 2).abs().max())
    print(f"{name:22s} notebook == sdlearn (to 1e-5): {err < 1e-5}")
    assert err < 1e-5

# %% [markdown]
# ## 2. SDEdit: what `strength` sets
#
# SDEdit (Meng et al. 2022) says: to edit an image, **noise it part of the way** and let the model
# denoise it back *towards the prompt*. Noise wipes out fine detail first and coarse layout last
# (notebook 01), so a little noise lets the prompt change colours and texture while the layout
# survives; a lot of noise leaves the model free to change everything.
#
# With N sampler steps, strength s runs the last ⌊sN⌋ of them, so the loop starts at timestep
# t_s = `timesteps[N − ⌊sN⌋]`, and the starting latent is z_{t_s} = √ᾱ_{t_s} z_0 + √(1−ᾱ_{t_s}) ε.
# The share of the input that survives is the **signal coefficient √ᾱ_{t_s}**; its square over
# the noise's square is the signal-to-noise ratio ᾱ/(1−ᾱ).

# %%
cfg = sched.config
a_bar = alpha_bar(make_betas(cfg["beta_schedule"], cfg["num_train_timesteps"], cfg["beta_start"], cfg["beta_end"]))
sched.set_timesteps(STEPS)
all_t = sched.timesteps.clone()
strengths = np.round(np.arange(0, 1.0001, 0.05), 2)


def start_timestep(strength):
    """The timestep SDEdit starts from with STEPS steps (None: strength too small to run any step)."""
    n_run = int(STEPS * strength)
    return None if n_run == 0 else int(all_t[STEPS - n_run])


rows = []
for s in strengths:
    t = start_timestep(s)
    signal = 1.0 if t is None else float(a_bar[t].sqrt())
    rows.append((s, int(STEPS * s), t, signal))
for s, n, t, signal in rows[::4]:
    print(f"strength {s:.2f}: {n:2d} of {STEPS} steps run, start t = {t}, signal kept sqrt(a_bar) = {signal:.3f}")

t06 = start_timestep(0.6)
assert t06 == int(all_t[8]) and abs(float(a_bar[t06].sqrt()) - rows[12][3]) < 1e-9
print(f"\nstrength 0.6 starts at t = {t06}: the input keeps {float(a_bar[t06].sqrt()):.0%} of its amplitude "
      f"and the noise has {float((1 - a_bar[t06]).sqrt()):.0%}; SNR = {float(a_bar[t06] / (1 - a_bar[t06])):.2f}")

# %% [markdown]
# The strength strip: the red circle, prompt "a large blue **square**". Strength 0 is the VAE
# round trip; at 1.0 the input is all but gone. With this small model the change comes early: by
# strength 0.2 (4 of 20 steps) the circle is already a blue square. The measured curve below
# shows how early, and why.

# %%
edit_prompt = "a large blue square in the center"
strip_s = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
strip = [sd.image_to_image(edit_prompt, source, strength=s, seed=0)[0] for s in strip_s]
read = read_attributes(strip)
fig, axes = plt.subplots(1, len(strip) + 1, figsize=(13, 1.9))
axes[0].imshow(source)
axes[0].set_title("input", fontsize=8)
for ax, s, im, r in zip(axes[1:], strip_s, strip, read):
    ax.imshow(im)
    ax.set_title(f"s={s}\n{r.color} {r.shape}", fontsize=7)
for ax in axes:
    ax.axis("off")
fig.suptitle(f'SDEdit strength strip: "{edit_prompt}"', fontsize=9)
fig.tight_layout()
save_figure(fig, "09_strength_strip.png")
plt.show()
assert (read[0].color, read[0].shape) == ("red", "circle")     # strength 0: the VAE round trip
assert read[-1].color == "blue"                                   # strength 1: the prompt wins

# %% [markdown]
# **A slider.** Move it and watch (the cell below it draws one setting so the stored notebook shows
# something without a running kernel).

# %%
def show_strength(strength=0.6, prompt=edit_prompt, seed=0):
    out = sd.image_to_image(prompt, source, strength=strength, seed=seed)[0]
    n = int(STEPS * strength)
    fig, axes = plt.subplots(1, 2, figsize=(4, 2.2))
    axes[0].imshow(source)
    axes[0].set_title("input", fontsize=8)
    axes[1].imshow(out)
    axes[1].set_title(f"strength {strength:.2f}: {n}/{STEPS} steps", fontsize=8)
    for ax in axes:
        ax.axis("off")
    plt.show()


# %%
# NBVAL_IGNORE_OUTPUT
try:
    import ipywidgets as widgets
    widgets.interact(show_strength,
                     strength=widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, continuous_update=False),
                     prompt=widgets.Text(value=edit_prompt, continuous_update=False),
                     seed=widgets.IntSlider(value=0, min=0, max=20, continuous_update=False))
except ImportError:
    print("ipywidgets is not installed: call show_strength(...) yourself")

# %%
show_strength(0.5)

# %% [markdown]
# **How much survives, measured.** 10 random Shapes images, each asked for a **new colour and a
# new shape** (same size and place in the prompt). For each strength: PSNR of the output to the
# input, and the share of outputs whose colour, shape and position read as the prompt's.

# %%
rng = np.random.default_rng(0)
inputs, prompts, targets = [], [], []
for k in range(10):
    a = data.random_attributes(rng)
    new = data.Attributes(data.SHAPES[(data.SHAPES.index(a.shape) + 1 + k % 4) % 5],
                          data.COLORS[(data.COLORS.index(a.color) + 1 + k % 5) % 6], a.size, a.position)
    inputs.append(render(a.shape, a.color, a.size, a.position, seed=100 + k))
    targets.append(new)
    prompts.append(new.caption())
x_in = torch.stack([to_tensor(im) for im in inputs])              # (10, 3, 64, 64)
curve_s = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]
curve = {"psnr": [], "colour": [], "shape": [], "position": []}
for s in curve_s:
    y = sd.image_to_image(prompts, inputs, strength=s, seed=1, output_type="pt") * 2 - 1
    r = read_attributes(y)
    curve["psnr"].append(psnr(y, x_in))
    for key in ("colour", "shape", "position"):
        attr = "color" if key == "colour" else key
        curve[key].append(float(np.mean([getattr(a, attr) == getattr(b, attr) for a, b in zip(r, targets)])))
signal = [1.0 if start_timestep(s) is None else float(a_bar[start_timestep(s)].sqrt()) for s in curve_s]

# %%
fig, ax = plt.subplots(1, 2, figsize=(9.5, 3))
ax[0].plot(curve_s, curve["psnr"], "o-", label="PSNR to the input")
ax[0].set(xlabel="strength", ylabel="PSNR (dB)", title="what survives: pixels")
ax2 = ax[0].twinx()
ax2.plot(curve_s, signal, "k:", label="signal kept at the start, sqrt(a_bar)")
ax2.set_ylim(0, 1.05)
ax2.set_ylabel("sqrt(a_bar) at the first step run")
fig.legend(loc="upper center", bbox_to_anchor=(0.3, 0.87), fontsize=7)
for key in ("colour", "shape", "position"):
    ax[1].plot(curve_s, curve[key], "o-", label=f"{key} as the prompt says")
ax[1].set(xlabel="strength", ylabel="fraction of 10 images", title="what the prompt gets")
ax[1].legend(fontsize=7)
fig.tight_layout()
save_figure(fig, "09_strength_curve.png")
plt.show()
print("strength          ", curve_s)
print("PSNR (dB)         ", [round(v, 1) for v in curve["psnr"]])
for key in ("colour", "shape"):
    print(f"{key:6s} as prompted", [round(v, 1) for v in curve[key]])
assert curve["psnr"][0] > 30 and curve["psnr"][0] > curve["psnr"][-1] + 10
assert curve["colour"][-1] > curve["colour"][0] and curve["shape"][-1] > curve["shape"][0]
assert curve["position"][-1] >= 0.8          # the prompt names the same place: it stays

# %% [markdown]
# The picture changes at a surprisingly small strength: strength 0.05 runs a single step, from
# t = 48 (DPM-Solver's "leading" spacing with 20 steps puts the last step there), where the noise
# is only about a fifth of the signal, yet with this model the colour can already follow the prompt.
# Why? Noise is added with the same size to all four latent channels, but the channels are not
# equally large: the spreads below show that one of them is smaller than that noise, so whatever
# it carries is decided afresh by the model even at the lowest strength. A plausible reading (not
# shown here channel by channel) is that this small channel carries much of the colour, while the
# shape, carried by larger channels, needs more strength to change. The position, which the prompt
# keeps, stays.

# %%
z_inputs = sd.encode_image(x_in, torch.Generator().manual_seed(0))           # (10, 4, 8, 8)
spread = z_inputs.transpose(0, 1).flatten(1).std(dim=1)                       # (4,) per-channel std
noise_48 = float((1 - a_bar[int(all_t[-1])]).sqrt())
print(f"noise std at t = {int(all_t[-1])}: {noise_48:.2f}; latent channel stds:", [round(float(v), 2) for v in spread])
assert spread.min() < noise_48 < spread.max()

# %% [markdown]
# ## 3. Masks made in code, on the latent grid
#
# The UNet works on the 8x8 latent, so the pipeline shrinks the mask to 8x8 (nearest neighbour:
# each latent cell takes the value of **one** pixel, the top-left one of its 8x8 block). A mask
# drawn on pixels is therefore rounded to whole cells, and a thin or unaligned mask can lose a
# cell or gain one. We draw masks the way the model sees them: a box around the object, grown by
# a margin and **snapped outward to multiples of 8**.
#
# How big? A shape's circumradius is `RADIUS[size]` (8 or 13.5 px), ×1.08 size jitter, ±2 px
# position jitter, and a star's or triangle's tip reaches 1.1 r. So the object fits in a disc of
# radius 1.1·1.08·r + 2·√2 ≈ 1.19 r + 2.8 px around its grid centre; we add one more pixel.

# %%
CELL = sd.vae_scale_factor            # 8 pixels per latent cell


def object_mask(position, size, extra=1.0):
    """A white box over the neighbourhood of an object at (position, size), snapped to latent cells."""
    cx, cy = position_center(position)
    reach = 1.1 * 1.08 * RADIUS[size] + 2 * np.sqrt(2) + extra        # pixels from the grid centre
    lo = lambda v: int(np.floor(max(v - reach, 0) / CELL) * CELL)     # noqa: E731  snap outward
    hi = lambda v: int(np.ceil(min(v + reach, 64) / CELL) * CELL)     # noqa: E731
    m = np.zeros((64, 64), np.uint8)
    m[lo(cy):hi(cy), lo(cx):hi(cx)] = 255
    return Image.fromarray(m, "L")


def latent_mask(mask):
    """What the pipeline does with a mask: (64, 64) -> (8, 8), nearest neighbour."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255)[None, None]
    return F.interpolate((m >= 0.5).float(), size=(8, 8))[0, 0]


disc = np.zeros((64, 64), np.uint8)                                    # a naive mask: a disc of radius 16
yy, xx = np.mgrid[:64, :64] + 0.5
disc[(xx - 32) ** 2 + (yy - 32) ** 2 <= 16 ** 2] = 255
disc = Image.fromarray(disc, "L")
snapped = object_mask("center", "large")

# %% [markdown]
# Each mask three ways: on the image, on the 8x8 latent grid (one cell = 8 pixels; the grid lines are
# the cell borders), and what rounding to cells gains or loses.

# %%
fig, axes = plt.subplots(2, 3, figsize=(8.5, 6))
for row, (name, m) in zip(axes, (("disc, radius 16", disc), ("object_mask, snapped", snapped))):
    row[0].imshow(source, extent=(0, 64, 64, 0))
    row[0].imshow(np.asarray(m), alpha=0.45, cmap="gray", extent=(0, 64, 64, 0))
    row[0].set_title(f"{name}\non the image", fontsize=9)
    row[1].imshow(latent_mask(m), cmap="gray", vmin=0, vmax=1, extent=(0, 64, 64, 0))  # one cell = 8 px
    row[1].set_title("8x8 latent mask", fontsize=9)
    change = np.kron(latent_mask(m).numpy(), np.ones((8, 8))) - np.asarray(m) / 255
    row[2].imshow(change, cmap="bwr", vmin=-1, vmax=1, extent=(0, 64, 64, 0))
    if np.abs(change).max() < 0.01:                                   # already on the grid: say so, not a blank
        row[2].text(32, 32, "no pixel gained\nor lost", ha="center", va="center", fontsize=9)
    row[2].set_title("latent (upsampled) - pixel mask\nred: gained, blue: lost", fontsize=9)
    for ax in row:
        ax.set_xticks(range(0, 65, 16))                               # labels every 16 px ...
        ax.set_yticks(range(0, 65, 16))
        ax.set_xticks(range(0, 65, 8), minor=True)                    # ... grid lines at every cell border
        ax.set_yticks(range(0, 65, 8), minor=True)
        ax.tick_params(labelsize=8)
        ax.grid(which="both", alpha=0.3)
    row[0].set_ylabel("pixels", fontsize=8)
fig.tight_layout()
save_figure(fig, "09_masks.png")
plt.show()
lost = float(((np.asarray(disc) > 127) & (np.kron(latent_mask(disc).numpy(), np.ones((8, 8))) < 0.5)).mean() * 64 * 64)
print(f"the disc loses {lost:.0f} of its {int((np.asarray(disc) > 127).sum())} pixels on the latent grid; "
      f"the snapped box loses none:",
      bool((np.kron(latent_mask(snapped).numpy(), np.ones((8, 8))) == np.asarray(snapped) / 255).all()))

# %% [markdown]
# Every jittered render of every shape, size and position must fit inside its mask, otherwise the
# kept region would hold a piece of the old object. Checked on 900 renders:

# %%
inside = []
for k in range(900):
    a = data.random_attributes(np.random.default_rng([7, k]), holdout=False)
    im = np.asarray(render(a.shape, a.color, a.size, a.position, seed=k), dtype=np.float32)
    ink = np.abs(im - np.array(data.BACKGROUND)).sum(-1) > 3                 # any visible colour
    inside.append(bool((np.asarray(object_mask(a.position, a.size))[ink] == 255).all()))
print(f"object inside its mask: {np.mean(inside):.1%} of 900 renders")
assert all(inside)

# %% [markdown]
# ## 4. Repainting a shape
#
# Now the real use: keep the picture, change one object. Below, eight objects are each repainted
# to a new colour or a new shape by the prompt alone; the read attributes are under each result.

# %%
cases = [("circle", "red", "large", "center", "a large blue circle in the center"),
         ("square", "green", "large", "top left", "a large purple square in the top left"),
         ("star", "yellow", "large", "bottom right", "a large red star in the bottom right"),
         ("triangle", "blue", "small", "center right", "a small orange triangle in the center right"),
         ("diamond", "purple", "large", "bottom center", "a large yellow diamond in the bottom center"),
         ("circle", "orange", "large", "top right", "a large orange square in the top right"),
         ("square", "blue", "small", "center", "a small blue star in the center"),
         ("triangle", "green", "large", "center left", "a large green circle in the center left")]
images = [render(s, c, z, p, seed=200 + k) for k, (s, c, z, p, _) in enumerate(cases)]
masks = [object_mask(p, z) for _, _, z, p, _ in cases]
repainted = sd.inpaint([c[4] for c in cases], images, torch.stack(
    [torch.from_numpy(np.asarray(m, dtype=np.float32) / 255)[None] for m in masks]), seed=0)
read = read_attributes(repainted)
fig, axes = plt.subplots(2, len(cases), figsize=(13, 3.6))
for k, (case, im, m, out, r) in enumerate(zip(cases, images, masks, repainted, read)):
    axes[0, k].imshow(im)
    axes[0, k].imshow(np.asarray(m), alpha=0.25, cmap="gray")
    axes[0, k].set_title(f"{case[2]} {case[1]} {case[0]}", fontsize=7)
    axes[1, k].imshow(out)
    axes[1, k].set_title(f'"{case[4][2:].split(" in ")[0]}"\nread: {r.color} {r.shape}', fontsize=7)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("inpainting with the 4-channel Shapes model (top: the input, with what is kept darkened; "
             "the bright square is the mask)", fontsize=9)
fig.tight_layout()
save_figure(fig, "09_repaint.png")
plt.show()
wanted = [c[4].split(" in ")[0].split()[-2:] for c in cases]                   # [colour, shape]
follows = np.mean([[r.color, r.shape] == w for r, w in zip(read, wanted)])
print(f"follows the prompt (colour and shape read back): {follows:.0%} of {len(cases)}")
assert follows >= 0.75

# %% [markdown]
# ## 5. Latent blending, step by step, and what it keeps
#
# Zoom into one repaint. After each scheduler step, the latent is cut in two: inside the mask we
# keep what the model made; outside we put back **the input's latent noised to the level the loop
# has just reached** (the same noise ε at every step, as diffusers does). The known region is
# therefore always at the same *noise level* as the hole. At the last step the known region is z_0
# itself, so the kept latents are **exactly** the input's.
#
# Matching noise levels does not by itself make the hole fit. **RePaint** (Lugmayr et al. 2022) studied
# this replacement with an unconditional pixel-space DDPM (there the known part is noised afresh at every
# step) and found that naive replacement gives a hole whose texture matches its surroundings but whose
# content is often semantically wrong: the known part is re-drawn each step without regard to what the
# model has generated in the hole. Their fix, **resampling**, jumps back: the combined x_{t−1} is noised
# forward again, by j steps at once, to x_{t−1+j} with q(x_{t−1+j} | x_{t−1}), and denoised back down; each
# stretch is resampled r times (r = 10 resamplings of jump length j = 10 in their experiments), so that the generated part has
# time to harmonise with the kept part. `sdlearn`'s `inpaint` (like diffusers' 4-channel blending) makes a
# single pass without resampling; with a prompt that names the new object and a mask snapped around it,
# section 4's single pass already followed the prompt in all 8 cases.

# %%
trace = []
out = generate(cases[0][4], images[0], mask=masks[0], seed=0, trace=trace)
ref = sd.inpaint(cases[0][4], images[0], masks[0], seed=0, output_type="pt")
assert float((ref - (out + 1) / 2).abs().max()) < 1e-5                         # the notebook's loop = sdlearn

z0 = sd.encode_image(to_tensor(images[0])[None], torch.Generator().manual_seed(0))
m8 = latent_mask(masks[0])
kept = trace[-1][0][:, m8 == 0]
print(f"final latent outside the mask vs the input's z_0: max difference {float((kept - z0[0][:, m8 == 0]).abs().max()):.1e}")
assert torch.equal(kept, z0[0][:, m8 == 0])

picks = [0, 4, 9, 14, 19]
fig, axes = plt.subplots(2, len(picks), figsize=(8, 3.5))
for ax_top, ax_bot, k in zip(axes[0], axes[1], picks):
    ax_top.imshow(to_pil(sd.decode_latents(trace[k])[0]))
    ax_top.set_title(f"after step {k + 1}", fontsize=8)
    ax_bot.imshow(trace[k][0, 3], cmap="RdBu", vmin=-3, vmax=3, extent=(0, 64, 64, 0))  # one latent channel
    ax_bot.contour(np.arange(64) + 0.5, np.arange(64) + 0.5, np.kron(m8.numpy(), np.ones((8, 8))),
                   levels=[0.5], colors="k", linewidths=1)
for ax in axes.flat:
    ax.axis("off")
axes[1, 0].set_title("latent channel 3\n(mask outlined)", fontsize=7)
fig.tight_layout()
save_figure(fig, "09_latent_blending.png")
plt.show()

# %% [markdown]
# **But the pixels outside the mask still move.** The latents outside are exact, yet the decoded
# image is not: the VAE decoder is not local. Its GroupNorm layers normalise with statistics of
# the *whole* latent and its middle block has self-attention over all positions, so a new colour in
# the hole shifts colours elsewhere a little (our Shapes VAE, which only ever saw one object per
# image, is especially prone to this: it tints the background towards the new colour). Measure
# PSNR outside the mask: against the input, and against the input's own VAE round trip (the best
# the decoder could do).
#
# The fix used in practice (diffusers' `apply_overlay`, "paste back" in UIs) is one line in pixel
# space: out = m·out + (1−m)·input.

# %%
x_imgs = torch.stack([to_tensor(im) for im in images])                         # (8, 3, 64, 64)
y_imgs = torch.stack([to_tensor(im) for im in repainted])
m_px = torch.stack([torch.from_numpy(np.asarray(m, dtype=np.float32) / 255)[None] for m in masks])  # (8, 1, 64, 64)
outside = (1 - m_px).expand_as(x_imgs)
round_trip = sd.image_to_image([""] * len(images), images, strength=0.0, seed=0, output_type="pt") * 2 - 1
pasted = m_px * y_imgs + (1 - m_px) * x_imgs
print(f"PSNR outside the mask: decoded {psnr(y_imgs, x_imgs, outside):.1f} dB | the input's own VAE round trip "
      f"{psnr(round_trip, x_imgs, outside):.1f} dB | after paste-back: identical to the input "
      f"({torch.equal(pasted * outside, x_imgs * outside)})")
print("attributes after paste-back:", np.mean([[r.color, r.shape] == w for r, w in zip(read_attributes(pasted), wanted)]))

# %% [markdown]
# ## 6. The inpainting UNet: 9 input channels
#
# Latent blending works with any model but the model never *knows* there is a hole: it only sees
# a latent whose outside happens to match the input. Stable Diffusion's inpainting models
# (`sd-v1-5-inpainting`, `stable-diffusion-2-inpainting`) instead **tell** the UNet, by feeding it
# 4 + 1 + 4 = 9 channels at every step:
#
# | channels | what | shape here |
# |---|---|---|
# | 0-3 | the noisy latent z_t (what is being denoised) | (B, 4, 8, 8) |
# | 4 | the mask, shrunk to the latent grid (1 = repaint) | (B, 1, 8, 8) |
# | 5-8 | the VAE latent of the **masked image** (hole filled with 0 = grey) | (B, 4, 8, 8) |
#
# Only the first convolution changes: `conv_in` takes 9 channels instead of 4. Everything after it
# is the same network. Let's build one with the Shapes model's architecture and follow the shapes.

# %%
cfg9 = dict(sd.unet.config) | {"in_channels": 9}
torch.manual_seed(0)
unet9 = UNet.from_config(cfg9).eval()
mask_t = m_px[:1]                                                      # (1, 1, 64, 64), 1 = repaint
x = x_imgs[:1]                                                         # (1, 3, 64, 64)
g = torch.Generator().manual_seed(0)
z_t = randn((1, 4, 8, 8), g)                                           # noise: the start of the loop
m_lat = F.interpolate(mask_t, size=(8, 8))                             # (1, 1, 64, 64) -> (1, 1, 8, 8)
masked_latent = sd.encode_image(x * (mask_t < 0.5), g)                 # (1, 3, 64, 64) -> (1, 4, 8, 8)
unet_in = torch.cat([z_t, m_lat, masked_latent], dim=1)                # (1, 4 + 1 + 4, 8, 8)
for name, v in (("z_t", z_t), ("mask", m_lat), ("masked-image latent", masked_latent), ("UNet input", unet_in)):
    print(f"{name:20s} {tuple(v.shape)}")
print(f"{'conv_in.weight':20s} {tuple(unet9.conv_in.weight.shape)}   (out, in = 9, 3, 3)")
h = unet9.conv_in(unet_in)
print(f"{'after conv_in':20s} {tuple(h.shape)}   <- from here on, the same UNet as text-to-image")
with torch.no_grad():
    eps = unet9(unet_in, all_t[0], sd.encode_prompt([cases[0][4]]))
print(f"{'predicted eps':20s} {tuple(eps.shape)}   (4 channels: only z_t is denoised)")

# %% [markdown]
# **How was it trained?** Runwayml's inpainting model started from the ordinary text-to-image
# weights, with the 5 new input channels of `conv_in` **set to zero**. With zeros there, the
# 9-channel UNet computes exactly what the 4-channel one does, so fine-tuning (on images with
# random masks) starts from a working model and only has to learn to use the new channels. We do
# the same surgery and check it:

# %%
state = sd.unet.state_dict()
w4 = state["conv_in.weight"]                                                   # (64, 4, 3, 3)
state["conv_in.weight"] = torch.cat([w4, torch.zeros(w4.shape[0], 5, *w4.shape[2:])], dim=1)  # (64, 9, 3, 3)
unet9.load_state_dict(state, strict=True)
t, ctx = all_t[5], sd.encode_prompt([cases[0][4]])
with torch.no_grad():
    same = (unet9(unet_in, t, ctx) - sd.unet(z_t, t, ctx)).abs().max()
print("zero-initialised 9-channel UNet == the 4-channel one (to 1e-5):", float(same) < 1e-5)
assert float(same) < 1e-5

# %% [markdown]
# Before that fine-tuning, such a model ignores the mask and the masked image entirely, and
# `inpaint` with it is plain text-to-image: the 9-channel path does **no** blending, it trusts the
# UNet to keep the outside. That is why the 4-channel blending trick exists for models that were
# never fine-tuned for inpainting.

# %%
sd9 = StableDiffusion(unet9, sd.vae, sd.text_encoder, sd.tokenizer, sched)
sd9.progress_bar = False
z_nine = sd9.inpaint(cases[1][4], images[1], masks[1], seed=0, output_type="latent")     # (1, 4, 8, 8)
z_four = sd.inpaint(cases[1][4], images[1], masks[1], seed=0, output_type="latent")
z_input = sd.encode_image(to_tensor(images[1])[None], torch.Generator().manual_seed(0))
keep = latent_mask(masks[1]) == 0                                                       # (8, 8) outside
rms = [float((z - z_input)[..., keep].pow(2).mean().sqrt()) for z in (z_nine, z_four)]
print(f"latents outside the mask, RMS difference from the input's: 9-channel zero-initialised {rms[0]:.2f}"
      f" | 4-channel with blending {rms[1]:.2f}")
assert rms[1] == 0 and rms[0] > 0.1

# %% [markdown]
# **diffusers agrees.** On the same (random) 9-channel weights, diffusers'
# `StableDiffusionInpaintPipeline` and `sdlearn`'s `inpaint` give the same image from the same
# generator.

# %%
from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionInpaintPipeline,  # noqa: E402
                       UNet2DConditionModel)
from transformers import CLIPTextModel  # noqa: E402
from transformers import CLIPTokenizer as HFTokenizer  # noqa: E402

from sdlearn.pipeline import TINY_MODEL_DIR  # noqa: E402

torch.manual_seed(1)
unet9 = UNet.from_config(cfg9).eval()                                          # random: the mask channels matter
theirs_unet = UNet2DConditionModel.from_config(cfg9)
theirs_unet.load_state_dict(unet9.state_dict())                                # same keys, same tensors
theirs_vae = AutoencoderKL.from_config(dict(sd.vae.config))
theirs_vae.load_state_dict(sd.vae.state_dict())
theirs = StableDiffusionInpaintPipeline(
    vae=theirs_vae.eval(), unet=theirs_unet.eval(),
    text_encoder=CLIPTextModel.from_pretrained(TINY_MODEL_DIR / "text_encoder", torch_dtype=torch.float32).eval(),
    tokenizer=HFTokenizer.from_pretrained(TINY_MODEL_DIR / "tokenizer"),
    scheduler=DPMSolverMultistepScheduler.from_config(dict(sched.config)),
    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
theirs.set_progress_bar_config(disable=True)
sd9 = StableDiffusion(unet9, sd.vae, sd.text_encoder, sd.tokenizer, sched)
sd9.progress_bar = False
kw = dict(num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np")
ref = theirs(cases[1][4], image=images[1], mask_image=masks[1], height=64, width=64,
             generator=torch.Generator().manual_seed(2), **kw).images
got = sd9.inpaint(cases[1][4], images[1], masks[1], generator=torch.Generator().manual_seed(2), **kw)
print("sdlearn == diffusers' StableDiffusionInpaintPipeline (9-channel UNet) to 1e-4:", bool(np.abs(got - ref).max() < 1e-4))
assert np.abs(got - ref).max() < 1e-4   # same float32 arithmetic in a different order: ~1e-6 per step

# %% [markdown]
# ## Exercises
#
# **1. SDEdit's start.** With 30 DPM-Solver steps and strength 0.35, how many steps run, and from
# which timestep? (Hint: `sched.set_timesteps(30)`; the loop runs the *last* steps.)

# %%
# BEGIN SOLUTION
sched.set_timesteps(30)
n_run_answer = int(30 * 0.35)
t_start_answer = int(sched.timesteps[30 - n_run_answer])
# END SOLUTION
# STUB: n_run_answer = None     # an int: how many denoising steps run
# STUB: t_start_answer = None   # an int: the timestep of the first step that runs
n_run_answer, t_start_answer

# %%
from sdlearn.exercises import check

seen = []
sd.image_to_image("a red circle", source, strength=0.35, num_inference_steps=30, seed=0, output_type="latent",
                  callback=lambda i, t, z: seen.append(int(t)))
ok = check("Exercise 1", (n_run_answer, t_start_answer), expected=(len(seen), seen[0]),
           hint="int(steps * strength) steps run: the last ones of sched.timesteps after set_timesteps(30)")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **2. A mask for two objects.** Write `two_object_mask(a, b)` that returns one PIL "L" mask
# covering the neighbourhoods of two `Attributes` `a` and `b`, on the latent grid.

# %%
def two_object_mask(a, b):
    # BEGIN SOLUTION
    m = np.maximum(np.asarray(object_mask(a.position, a.size)), np.asarray(object_mask(b.position, b.size)))
    return Image.fromarray(m, "L")
    # END SOLUTION
    # STUB: return None   # a PIL image, mode "L", 64x64: white where the model may paint


# %%
def covers_both(fn):
    a, b = data.Attributes("star", "red", "small", "top left"), data.Attributes("circle", "blue", "small", "center right")
    m = fn(a, b)
    if not (isinstance(m, Image.Image) and m.mode == "L" and m.size == (64, 64)):
        return "two_object_mask must return a 64x64 PIL image in mode 'L'"
    pix = np.asarray(m) / 255
    if not (np.kron(latent_mask(m).numpy(), np.ones((8, 8))) == pix).all():
        return "the mask is not aligned to the 8x8 latent cells"
    for at in (a, b):
        ink = np.abs(np.asarray(render(at.shape, at.color, at.size, at.position, seed=3), np.float32)
                     - np.array(data.BACKGROUND)).sum(-1) > 3
        if not (pix[ink] == 1).all():
            return f"the {at.shape} sticks out of the mask"
    return pix.mean() <= 0.5 or "the mask covers more than half the image: too generous"


ok = check("Exercise 2", two_object_mask, test=covers_both,
           hint="object_mask(position, size) from section 3 makes one; combine two with np.maximum")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **3. The blend.** Write `blend(z, known, m)`: one line of latent blending (m = 1 where the model
# paints). Then say what `sd.inpaint` returns for an all-black mask (set `black_mask_gives` to
# `"text-to-image"`, `"the VAE round trip"` or `"the input exactly"`).

# %%
def blend(z, known, m):
    # BEGIN SOLUTION
    return m * z + (1 - m) * known
    # END SOLUTION
    # STUB: return None   # a tensor shaped like z


# BEGIN SOLUTION
black_mask_gives = "the VAE round trip"
# END SOLUTION
# STUB: black_mask_gives = None   # one of the three strings above

# %%
gz = torch.Generator().manual_seed(0)
z, known = torch.randn(2, 4, 8, 8, generator=gz), torch.randn(2, 4, 8, 8, generator=gz)
mm = (torch.rand(2, 1, 8, 8, generator=gz) > 0.5).float()
ok_3a = check("Exercise 3 (blend)", blend, test=lambda fn: torch.equal(fn(z, known, mm), torch.where(mm.bool(), z, known)),
              hint="where m is 1 take z, where it is 0 take known")
black = Image.new("L", (64, 64), 0)
out = sd.inpaint("a red circle", source, black, num_inference_steps=4, seed=0, output_type="pt")   # (1, 3, 64, 64)
candidates = {"text-to-image": sd.text_to_image("a red circle", num_inference_steps=4, seed=0, output_type="pt"),
              "the VAE round trip": sd.image_to_image("a red circle", source, strength=0.0, seed=0, output_type="pt"),
              "the input exactly": to_tensor(source)[None] / 2 + 0.5}                                     # in [0, 1]
ok_3b = check("Exercise 3 (black mask)", black_mask_gives,
              test=lambda s: s in candidates and torch.equal(out, candidates[s]) or f"{s!r} is not what inpaint returned",
              hint="compare sd.inpaint(..., black mask) with each candidate; which latent is kept where the mask is 0?")
# BEGIN SOLUTION
assert ok_3a and ok_3b
# END SOLUTION
