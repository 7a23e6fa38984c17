# %% [markdown]
# # 07 · Training latent diffusion: a text-to-image model on a CPU
#
# {{COLAB_BADGE}}
#
# Every part is ready: a noise schedule (01), a denoiser and its loss (02), an autoencoder whose latents
# are 48 times smaller than the pixels (03), a text encoder (04), cross-attention (05) and the UNet (06).
# This notebook puts them together and **trains a text-to-image model**, exactly the recipe of Stable
# Diffusion, on the Shapes world.
#
# **What you will learn**
#
# 1. The latent diffusion objective **with conditioning**, L_LDM = E ‖ε − ε_θ(z_t, t, τ(y))‖², term by term.
# 2. Why the frozen VAE and text encoder let us **encode the data once** and train on cached latents,
#    and where the latent scale factor comes from (measured, not typed in).
# 3. The **training loop written out**: sample t, noise, caption dropout, predict, MSE, AdamW, EMA;
#    a live run of about a minute, its loss curve and its first samples.
# 4. The bundled model (trained by the same loop for an hour): a grid of prompts, read back and scored.
# 5. **Caption dropout**: why 10% empty captions are what makes classifier-free guidance possible,
#    and what guidance 1 vs 5 changes.

# %% [setup]

# %%
import copy
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from sdlearn import evaluate
from sdlearn.clip import CLIPTextEncoder
from sdlearn.configs import SCHEDULER_CONFIG
from sdlearn.data import COLORS, SHAPES, ShapesDataset, caption
from sdlearn.device import randn, seed_everything
from sdlearn.pipeline import TINY_MODEL_DIR, StableDiffusion
from sdlearn.schedulers import DPMSolverPP
from sdlearn.schedules import alpha_bar, make_betas, q_sample
from sdlearn.tokenizer import CLIPTokenizer
from sdlearn.train import t2i
from sdlearn.unet import UNet
from sdlearn.vae import VAE
from sdlearn.viz import image_grid, save_figure

torch.set_num_threads(1)  # small tensors: one thread is as fast and repeatable
g = seed_everything(0)

# %% [markdown]
# ## 1. The objective, with conditioning
#
# Notebook 02 trained a denoiser on pixels with the simple loss of Ho et al. (2020). Latent diffusion
# (Rombach et al. 2022) changes two things: the diffusion runs on the **latent** z₀ = E(x) of a frozen
# autoencoder (their Eq. 2, still unconditional), and the denoiser also sees the **text** y through a text
# encoder τ (their Eq. 3, the conditional objective below). In the paper τ_θ is trained together with ε_θ;
# Stable Diffusion, and we, keep a frozen, pretrained text encoder instead:
#
# $$L_{LDM} = \mathbb{E}_{z_0 = \mathcal{E}(x),\; y,\; \varepsilon \sim \mathcal{N}(0, I),\; t \sim U\{0..999\}}
# \Big[\, \big\| \varepsilon - \varepsilon_\theta\big(z_t,\ t,\ \tau(y)\big) \big\|^2 \,\Big],
# \qquad z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon .$$
#
# | symbol | what it is here | shape | trained? |
# |---|---|---|---|
# | x | a Shapes image | (3, 64, 64) | data |
# | E(x) → z₀ | the Shapes VAE's encoder (notebook 03), times its scale factor | (4, 8, 8) | frozen |
# | y → τ(y) | the caption through the tiny CLIP text encoder (notebook 04) | (77, 128) | frozen |
# | t, ᾱ_t | Stable Diffusion's `scaled_linear` schedule, 1000 steps (notebook 01) | scalar | fixed |
# | ε_θ | the UNet (notebook 06), text entering through cross-attention (notebook 05) | (4, 8, 8) | **trained** |
#
# Only ε_θ learns. Let's load the two frozen parts from the bundled model folder.

# %%
vae = VAE.from_pretrained(TINY_MODEL_DIR / "vae").eval().requires_grad_(False)
text_encoder = CLIPTextEncoder.from_pretrained(TINY_MODEL_DIR / "text_encoder").eval().requires_grad_(False)
tokenizer = CLIPTokenizer()
a_bar = alpha_bar(make_betas("scaled_linear", 1000, 0.00085, 0.012))   # (1000,) cumulative products of 1 - beta
print(f"VAE {sum(p.numel() for p in vae.parameters()) / 1e6:.1f}M parameters (frozen), "
      f"text encoder {sum(p.numel() for p in text_encoder.parameters()) / 1e6:.1f}M (frozen)")
print(f"alpha_bar: t=0 {a_bar[0]:.4f}, t=500 {a_bar[500]:.4f}, t=999 {a_bar[999]:.4f}")

# %% [markdown]
# ## 2. Encode the data once
#
# Because E and τ never change, z₀ = E(x) and τ(y) are the same at every epoch: computing them inside the
# loop would repeat the same work thousands of times. So we render a dataset, encode it **once** and keep
# the latents' mean and standard deviation (the VAE's q(z|x) = N(μ, σ²); drawing z₀ = μ + σ·n afresh at
# every step is a free augmentation), plus one text state per distinct caption. The bundled trainer
# (`sdlearn/train/t2i.py`, `cache_dataset`) does the same with 20,000 images.
#
# Captions come in varied wordings ("a small red circle in the top left", "top left: a red circle, small",
# ...), and never name one of the five held-out (shape, colour) pairs, so that we can later test whether the
# model *composes* attributes it saw only separately.

# %%
N = 640
dataset = ShapesDataset(N, seed=0, holdout=True, varied=True)
t0 = time.perf_counter()
images, captions = zip(*(dataset[i] for i in range(N)))
x = torch.stack(images)                                            # (N, 3, 64, 64) in [-1, 1]
with torch.no_grad():
    posteriors = [vae.encode(x[i:i + 160]) for i in range(0, N, 160)]         # q(z|x) per chunk
mu = torch.cat([q.mean for q in posteriors])                       # (N, 4, 8, 8)
sigma = torch.cat([q.std for q in posteriors])                     # (N, 4, 8, 8)
unique = [""] + sorted(set(captions))                              # index 0: the empty caption
caption_id = torch.tensor([unique.index(c) for c in captions])     # (N,)
with torch.no_grad():
    states = text_encoder(tokenizer(unique))                       # (U, 77) ids -> (U, 77, 128)
encode_seconds = time.perf_counter() - t0
print(f"{N} images -> latents {tuple(mu.shape)}; {len(unique)} distinct captions -> states {tuple(states.shape)}")
print(f"each image: {mu[0].numel()} latent means (+ as many stds) instead of {x[0].numel()} pixels values, "
      f"{x[0].numel() // mu[0].numel()}x fewer")
print("examples:", *[f"'{c}'" for c in captions[:3]], sep="\n  ")

# %%
# NBVAL_IGNORE_OUTPUT
print(f"rendering + encoding took {encode_seconds:.1f} s, once")

# %% [markdown]
# **Where the scale factor comes from.** The diffusion schedule assumes z₀ has about unit variance: at
# t = 999 it mixes √ᾱ = 0.07 of the signal with noise of variance 1 − ᾱ ≈ 1, which is "pure noise" only if
# the signal is not much larger than 1. The VAE's raw latents have some other spread, so Stable Diffusion
# multiplies them by a constant, 0.18215 for SD 1.x: one over the standard deviation of its latents. We
# measure ours and compare with the number stored in the VAE's config.

# %%
z_raw = mu + sigma * torch.randn(mu.shape, generator=g)            # samples of q(z|x), unscaled
measured = 1 / z_raw.std().item()
stored = vae.config["scaling_factor"]
print(f"std of raw latents {z_raw.std():.3f}  ->  1/std = {measured:.3f}; config scaling_factor = {stored:.3f}")
assert abs(measured - stored) / stored < 0.05
z0_all = z_raw * stored
print(f"scaled latents: mean {z0_all.mean():+.3f}, std {z0_all.std():.3f}")

# %% [markdown]
# ## 3. The training loop, written out
#
# One step of training, following the objective line by line:
#
# 1. pick a batch of cached latents and draw z₀ ~ q(z|x), scaled;
# 2. **caption dropout**: replace 10% of the captions by the empty caption "" (why: section 5);
# 3. pick a random step t for each example and noise ε ~ N(0, I); form z_t with q(z_t | z₀) (Ho et al. Eq. 4);
# 4. predict ε̂ = ε_θ(z_t, t, τ(y)) and take the mean squared error against ε;
# 5. AdamW step, and update an **exponential moving average** (EMA) of the weights, which is what we
#    sample from: an average over roughly the last 1/(1 − decay) steps (20 in the live run below, 1,000 for
#    the bundled model) is smoother than any single step's weights.
#
# Between `backward()` and the AdamW step sits `torch.nn.utils.clip_grad_norm_(params, 1.0)`: it measures the
# norm of the whole gradient (all parameters together as one vector) and, if it exceeds 1, scales the
# gradient down to norm 1, direction unchanged. Smaller gradients pass untouched, so it only stops a rare
# outlier batch from throwing the weights far (the bundled trainer clips at 1.0 too).
#
# For a live run we use a classroom-size UNet (channels 32/64, 1.1M parameters) and about a minute of
# training. The bundled model is the same loop with a 7M-parameter UNet for an hour.

# %%
config = t2i.unet_config(cross_attention_dim=states.shape[-1], channels=(32, 64), layers_per_block=1)
torch.manual_seed(0)
unet = UNet.from_config(config)
ema = copy.deepcopy(unet).requires_grad_(False)
opt = torch.optim.AdamW(unet.parameters(), lr=3e-3, weight_decay=0.01)
print(f"live UNet: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters, channels {config['block_out_channels']}")

STEPS, BATCH, P_DROP, EMA_DECAY = 120, 32, 0.1, 0.95

# %%
def ldm_loss(unet, gen: torch.Generator) -> torch.Tensor:
    """Steps 1-4: L_LDM on one random batch."""
    idx = torch.randint(N, (BATCH,), generator=gen)
    z0 = (mu[idx] + sigma[idx] * torch.randn(mu[idx].shape, generator=gen)) * stored   # (B, 4, 8, 8) ~ q(z|x)
    cap = caption_id[idx].clone()
    cap[torch.rand(BATCH, generator=gen) < P_DROP] = 0                                # caption dropout -> ""
    t = torch.randint(1000, (BATCH,), generator=gen)                                  # (B,) random steps
    eps = torch.randn(z0.shape, generator=gen)                                        # (B, 4, 8, 8)
    z_t = a_bar[t].sqrt()[:, None, None, None] * z0 + (1 - a_bar[t]).sqrt()[:, None, None, None] * eps
    eps_hat = unet(z_t, t, states[cap])                                               # (B, 4, 8, 8)
    return F.mse_loss(eps_hat, eps)                                                   # L_LDM on this batch


@torch.no_grad()
def update_ema(ema, model, decay: float) -> None:
    """Step 5, second half: theta_ema <- decay * theta_ema + (1 - decay) * theta."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)


def training_step(gen: torch.Generator) -> float:
    loss = ldm_loss(unet, gen)
    opt.zero_grad(set_to_none=True)                                                   # step 5: AdamW ...
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    update_ema(ema, unet, EMA_DECAY)                                                  # ... and the EMA
    return loss.item()

# %%
gen = torch.Generator().manual_seed(0)
t0 = time.perf_counter()
losses = [training_step(gen) for _ in range(STEPS)]
train_seconds = time.perf_counter() - t0
print(f"loss: first 10 steps {np.mean(losses[:10]):.2f}, last 10 steps {np.mean(losses[-10:]):.2f}")
assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{STEPS} steps of batch {BATCH} in {train_seconds:.0f} s ({STEPS / train_seconds:.1f} steps/s)")

# %% [markdown]
# **sdlearn holds the same step.** The bundled trainer calls `sdlearn.train.t2i.training_step` (steps 1-4,
# drawing from its generator in the same order) and `ema_update` (step 5's average); its `main` adds only
# a learning-rate schedule, checkpoints and multi-GPU plumbing. Same batch, same loss; same average:

# %%
cache = {"mean": mu, "std": sigma, "states": states, "caption": caption_id, "scaling_factor": torch.tensor(stored)}
with torch.no_grad():
    loss_nb = ldm_loss(unet, torch.Generator().manual_seed(1))
    loss_pkg = t2i.training_step(unet, cache, a_bar, BATCH, P_DROP, torch.Generator().manual_seed(1))
torch.testing.assert_close(loss_nb, loss_pkg)
ema_nb, ema_pkg = copy.deepcopy(ema), copy.deepcopy(ema)                   # after training: ema != unet
update_ema(ema_nb, unet, EMA_DECAY)
t2i.ema_update(ema_pkg, unet, EMA_DECAY)
assert all(torch.equal(a, b) for a, b in zip(ema_nb.parameters(), ema_pkg.parameters()))
print(f"notebook loss {loss_nb:.3f} == sdlearn.train.t2i.training_step {loss_pkg:.3f}; ema_update agrees too")

# %% [markdown]
# The same z_t, written with sdlearn's `q_sample`, is what the bundled trainer uses; both give the same numbers:

# %%
z0, eps, t = z0_all[:4], torch.randn(4, 4, 8, 8, generator=g), torch.tensor([0, 250, 500, 999])
by_hand = a_bar[t].sqrt()[:, None, None, None] * z0 + (1 - a_bar[t]).sqrt()[:, None, None, None] * eps
assert torch.allclose(by_hand, q_sample(z0, t, eps, a_bar), atol=1e-6)
print("q_sample matches the formula; the trainer's schedule:", {k: SCHEDULER_CONFIG[k] for k in
      ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "prediction_type")})

# %% [markdown]
# **What does the loss mean?** A network that always answers ε̂ = 0 scores E‖ε‖²/d = 1 (the variance of the
# noise), so 1 is the floor of knowing nothing. The loss also depends strongly on t: at large t, z_t is
# almost pure noise and ε ≈ z_t, so the noise is easy to read off; at small t the noise is a tiny
# perturbation of z₀ and to find it the model must know what a clean latent looks like. The average
# hides this, so we plot both the training curve and, at the end of the run, the loss per t.

# %%
@torch.no_grad()
def loss_per_t(model, n: int = 128, ts=(1, 10, 50, 100, 250, 500, 750, 999)) -> list[float]:
    """L_LDM at fixed t on n cached latents with their real captions (fixed noise: comparable across models)."""
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(N, (n,), generator=gen)
    z0 = (mu[idx] + sigma[idx] * torch.randn(mu[idx].shape, generator=gen)) * stored
    eps = torch.randn(z0.shape, generator=gen)
    out = []
    for t in ts:
        tt = torch.full((n,), t)
        out.append(F.mse_loss(model(q_sample(z0, tt, eps, a_bar), tt, states[caption_id[idx]]), eps).item())
    return out


T_GRID = (1, 10, 50, 100, 250, 500, 750, 999)
live_per_t = loss_per_t(ema)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(losses, lw=0.8, alpha=0.5, label="per step")
axes[0].plot(np.convolve(losses, np.ones(10) / 10, mode="valid"), lw=2, label="10-step mean")
axes[0].axhline(1.0, color="gray", ls="--", lw=1, label="ε̂ = 0 (knows nothing)")
axes[0].set(xlabel="training step", ylabel="MSE(ε̂, ε)", title="live run: training loss", ylim=(0, 1.3))
axes[0].legend(fontsize=8)
axes[1].semilogx(T_GRID, live_per_t, "o-", label=f"live UNet after {STEPS} steps")
axes[1].set(xlabel="t", ylabel="MSE(ε̂, ε)", title="loss per timestep (EMA weights)")
axes[1].legend(fontsize=8)
fig.tight_layout()
save_figure(fig, "07_live_training.png")
plt.show()

# %% [markdown]
# ### First samples from the live model
#
# The live UNet plugs into the same sampler that notebook 08 writes out (`StableDiffusion` takes any UNet):
# 20 DPM-Solver++ steps, guidance 5. After one minute of training expect blobs, some of roughly the right
# colour, on a background the model has not learned to keep clean yet (guidance amplifies a weak model's
# errors too): colour is the easiest attribute (it is most of each latent's energy), shape the hardest.

# %%
live = StableDiffusion(ema, vae, text_encoder, tokenizer, DPMSolverPP.from_config(SCHEDULER_CONFIG))
live.progress_bar = False
prompts = [caption(s, c, "large", "center") for s, c in
           [("circle", "red"), ("square", "blue"), ("triangle", "green"), ("star", "yellow"), ("diamond", "purple"), ("square", "orange")]]
live_images = live.text_to_image(prompts, num_inference_steps=20, guidance_scale=5.0, seed=0)
live_read = evaluate.read_attributes(live_images)
fig = image_grid(live_images, nrow=6, captions=[f"{p.split()[2]} {p.split()[3]}? read: {r.color}" for p, r in zip(prompts, live_read)])
fig.suptitle(f"live model after {STEPS} training steps (asked? what the reader sees)", y=1.18)
save_figure(fig, "07_live_samples.png")
plt.show()
print("colours right:", sum(r.color == p.split()[2] for r, p in zip(live_read, prompts)), "of", len(prompts))

# %% [markdown]
# ## 4. The bundled model: the same loop for an hour
#
# `python -m sdlearn train t2i --seed 0` runs this loop with a 7M-parameter UNet (channels 64/128/128,
# cross-attention at every level), 20,000 cached images, batch 128, 2,500 steps, a warm-up then cosine
# learning rate, EMA 0.999, and exports the EMA weights to `sdlearn/assets/tiny/unet/`, in diffusers'
# layout. Let's load it and compare its loss per t with our one-minute model.

# %%
pipe = StableDiffusion.tiny(device="cpu")  # the files store float16; loaded as float32
pipe.progress_bar = False
print({k: pipe.unet.config[k] for k in ("block_out_channels", "layers_per_block", "cross_attention_dim")},
      f"{sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f}M parameters")
bundled_per_t = loss_per_t(pipe.unet)
print("t:        ", *[f"{t:>6}" for t in T_GRID])
print("live:     ", *[f"{v:6.3f}" for v in live_per_t])
print("bundled:  ", *[f"{v:6.3f}" for v in bundled_per_t])
assert np.mean(bundled_per_t) < np.mean(live_per_t)

# %%
from IPython.display import Image as IPImage, display

from sdlearn.viz import packaged_figure

train_loss = packaged_figure("07_training_loss.png")   # drawn from the trainer's runs/t2i/loss.json, shipped with sdlearn
print("the bundled model's training loss (from runs/t2i/loss.json, written by the trainer):")
display(IPImage(filename=str(train_loss), width=520))

# %% [markdown]
# ### A grid of prompts, read back
#
# Every colour with every shape, large, in the centre, and 20 DPM-Solver++ steps at guidance 5. Under each
# image: what `sdlearn.evaluate.read_attributes` (notebook 00's reader) sees. The five held-out pairs
# (marked ★) never appeared in a caption or an image during training.

# %%
from sdlearn.data import HELD_OUT

grid_attrs = [(s, c) for c in COLORS for s in SHAPES]
grid_prompts = [caption(s, c, "large", "center") for s, c in grid_attrs]
grid_images = pipe.text_to_image(grid_prompts, num_inference_steps=20, guidance_scale=5.0, seed=0)
grid_read = evaluate.read_attributes(grid_images)
labels = [f"{'★ ' if (s, c) in HELD_OUT else ''}{c} {s}\nread: {r.color} {r.shape}"
          for (s, c), r in zip(grid_attrs, grid_read)]
fig = image_grid(grid_images, nrow=len(SHAPES), captions=labels, figsize=1.5)
save_figure(fig, "07_prompt_grid.png")
plt.show()
right = [(r.shape, r.color) == a for r, a in zip(grid_read, grid_attrs)]
seen = [ok for ok, a in zip(right, grid_attrs) if a not in HELD_OUT]
held = [ok for ok, a in zip(right, grid_attrs) if a in HELD_OUT]
print(f"shape and colour right: {sum(seen)}/{len(seen)} trained pairs, {sum(held)}/{len(held)} held-out pairs")

# %% [markdown]
# Size and position are words too. One prompt per position, alternating small and large:

# %%
from sdlearn.data import POSITIONS

pos_attrs = [evaluate.Attributes("star" if i % 2 else "circle", COLORS[i % 6], ("small", "large")[i % 2], p)
             for i, p in enumerate(POSITIONS)]
pos_images = pipe.text_to_image([a.caption() for a in pos_attrs], num_inference_steps=20, guidance_scale=5.0, seed=1)
pos_read = evaluate.read_attributes(pos_images)
fig = image_grid(pos_images, nrow=9, captions=[a.caption()[2:] for a in pos_attrs], figsize=1.6)
save_figure(fig, "07_positions.png")
plt.show()
acc = evaluate.attribute_accuracy(pos_read, pos_attrs)
print({k: f"{v:.0%}" for k, v in acc.items()})

# %% [markdown]
# ## 5. Caption dropout, and why it makes guidance possible
#
# In 10% of training steps the caption was replaced by "". So the *same* network learned two things:
# ε_θ(z_t, t, τ(y)), the noise given the caption, and ε_θ(z_t, t, τ("")), the noise of an image with no
# caption at all. Classifier-free guidance (Ho & Salimans 2022) combines them at sampling time:
#
# $$\hat\varepsilon = \varepsilon_\theta(z_t, t, \varnothing) + w\,\big(\varepsilon_\theta(z_t, t, y) - \varepsilon_\theta(z_t, t, \varnothing)\big)$$
#
# The difference is the direction "towards this caption and away from a generic image". w = 1 is the plain
# conditional model; w > 1 pushes further along it. Without dropout, τ("") would be an input the network
# never saw, and the unconditional branch would be garbage: no guidance.
#
# **Two ways to count w.** Ho & Salimans write the same line as ε̃ = (1 + w) ε_θ(z_t, y) − w ε_θ(z_t, ∅)
# (their Eq. 6), so **their w is ours minus 1**: their w = 0 is the plain conditional model, and our w = 5
# is their w = 4. The form above, with w = 1 meaning "no guidance", is the one Stable Diffusion's code and
# diffusers' `guidance_scale` use, and so does this series.
#
# First, what the unconditional model draws (prompt ""):

# %%
uncond = pipe.text_to_image([""] * 8, num_inference_steps=20, guidance_scale=1.0, seed=2)
fig = image_grid(uncond, nrow=8, captions=[f"{r.size} {r.color} {r.shape}" for r in evaluate.read_attributes(uncond)])
fig.suptitle('prompt "" (the 10% dropped captions taught this); under each: what the reader sees', y=1.15)
save_figure(fig, "07_unconditional.png")
plt.show()

# %% [markdown]
# Then the same prompts and the same starting noise with guidance 1 (no guidance) and 5, over 40 random
# prompts, scored by the reader:

# %%
prompts40 = evaluate.random_prompts(40, seed=7)
scores = {w: evaluate.prompt_following(pipe, prompts40, seed=0, guidance_scale=w, num_inference_steps=20,
                                       scheduler="dpm++", progress=False) for w in (1.0, 5.0)}
for w, r in scores.items():
    print(f"guidance {w}: " + ", ".join(f"{k} {r[k]:.0%}" for k in ("color", "shape", "size", "position", "all")))
assert scores[5.0]["all"] > scores[1.0]["all"]

z_T = torch.stack([randn((4, 8, 8), torch.Generator().manual_seed(i)) for i in range(6)])
pair_prompts = [a.caption() for a in prompts40[:6]]
rows = [pipe.text_to_image(pair_prompts, latents=z_T, num_inference_steps=20, guidance_scale=w) for w in (1.0, 5.0)]
fig = image_grid(rows[0] + rows[1], nrow=6, captions=[f"w=1: {p[2:]}" for p in pair_prompts] + [f"w=5: {p[2:]}" for p in pair_prompts])
save_figure(fig, "07_guidance_1_vs_5.png")
plt.show()

# %% [markdown]
# ## 6. Exercises
#
# **Exercise 1.** Write `drop_captions(ids, p, gen)` that replaces each caption index by 0 (the empty
# caption) with probability p, as the training step does, without changing `ids` in place.

# %%
def drop_captions(ids: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    # BEGIN SOLUTION
    out = ids.clone()
    out[torch.rand(len(ids), generator=gen) < p] = 0
    return out
    # END SOLUTION
    # STUB: return None   # a tensor shaped like ids: some indices set to 0, the others unchanged


# %%
from sdlearn.exercises import check


def drops_a_tenth(fn):
    ids = torch.arange(1, 20001)
    dropped = fn(ids, 0.1, torch.Generator().manual_seed(0))
    if not isinstance(dropped, torch.Tensor) or dropped.shape != ids.shape:
        return "drop_captions must return a tensor shaped like ids"
    if not torch.equal(ids, torch.arange(1, 20001)):
        return "ids changed in place: clone it first"
    if not torch.equal(dropped[dropped != 0], ids[dropped != 0]):
        return "indices that are not dropped must stay as they were"
    rate = (dropped == 0).float().mean().item()
    return abs(rate - 0.1) < 0.01 or f"{rate:.1%} of the captions were dropped, not about 10%"


ok = check("Exercise 1", drop_captions, test=drops_a_tenth,
           hint="draw one uniform number per caption from gen and zero the ones below p (in a copy)")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **Exercise 2.** Two networks that need no training: one always predicts ε̂ = z_t (reasonable at large t,
# where z_t is almost all noise), the other shrinks it first, ε̂ = √(1 − ᾱ_t)·z_t. What loss does each score
# at step t, as a function of ᾱ_t? (Hint: E[(ε̂ − ε)²] per dimension, with z₀ of mean 0 and variance 1,
# independent of ε.) The simulation below checks your formulas; compare the two at small and large t.

# %%
def loss_if_eps_hat_is_z_t(t: int) -> float:
    a = a_bar[t].item()
    # BEGIN SOLUTION
    return a + (1 - (1 - a) ** 0.5) ** 2      # z_t - eps = sqrt(a) z0 + (sqrt(1 - a) - 1) eps
    # END SOLUTION
    # STUB: return None   # a float, from a = alpha_bar_t


def loss_if_eps_hat_is_shrunk_z_t(t: int) -> float:
    a = a_bar[t].item()
    # BEGIN SOLUTION
    return a                                  # sqrt(1 - a) z_t - eps = sqrt(a (1 - a)) z0 - a eps
    # END SOLUTION
    # STUB: return None   # a float, from a = alpha_bar_t


# %%
sim_eps = torch.randn(20000, 4, generator=g)
sim_z0 = ((z0_all - z0_all.mean()) / z0_all.std()).flatten()[:80000].reshape(20000, 4)   # mean 0, variance 1


def matches_simulation(shrink: bool):
    def test(fn):
        for t in (10, 500, 999):
            z_t = q_sample(sim_z0, torch.full((20000,), t), sim_eps, a_bar)
            eps_hat = (1 - a_bar[t]).sqrt() * z_t if shrink else z_t
            simulated, formula = F.mse_loss(eps_hat, sim_eps).item(), fn(t)
            if formula is None:
                return "the function returned None"
            if abs(simulated - formula) > 0.03:
                return f"at t = {t} the simulation gives {simulated:.3f}, the formula {formula}"
        return True
    return test


ok_2a = check("Exercise 2 (eps_hat = z_t)", loss_if_eps_hat_is_z_t, test=matches_simulation(False),
              hint="write eps_hat - eps as a sum of sqrt(a) z0 and a multiple of eps; their variances add")
ok_2b = check("Exercise 2 (eps_hat = sqrt(1 - a) z_t)", loss_if_eps_hat_is_shrunk_z_t, test=matches_simulation(True),
              hint="the same expansion: the coefficient of eps becomes (1 - a) - 1")
# BEGIN SOLUTION
assert ok_2a and ok_2b
print("t:", *[f"{t:>6}" for t in (10, 500, 999)])
print("z_t:       ", *[f"{loss_if_eps_hat_is_z_t(t):6.3f}" for t in (10, 500, 999)])
print("shrunk z_t:", *[f"{loss_if_eps_hat_is_shrunk_z_t(t):6.3f}" for t in (10, 500, 999)])
# END SOLUTION

# %% [markdown]
# **Exercise 3.** Read the guidance scale back. Section 5's ε̂ is a point on the line through the
# unconditional and the conditional prediction. Given ε_u, ε_c and a guided ε̂ made with some unknown w,
# write `guidance_used(eps_uncond, eps_cond, eps_guided)` that returns w as a float. The check asks the
# pipeline's `predict_noise` (which runs one unconditional and one conditional UNet call) for guided
# predictions at scales of its choosing (above 1: at w ≤ 1 it makes only the conditional call).

# %%
def guidance_used(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, eps_guided: torch.Tensor) -> float:
    # BEGIN SOLUTION
    d = eps_cond - eps_uncond                       # the guidance direction
    return float(((eps_guided - eps_uncond) * d).sum() / (d * d).sum())   # least squares along d
    # END SOLUTION
    # STUB: return None   # a float: the w that made eps_guided


# %%
z = torch.randn(1, 4, 8, 8, generator=g)
tt = torch.tensor(500)
ctx = pipe.encode_prompt(["", "a red circle"])                         # (2, 77, 128): [uncond; cond]
with torch.no_grad():
    e_u, e_c = pipe.unet(torch.cat([z, z]), tt, ctx).chunk(2)
sched = DPMSolverPP.from_config(SCHEDULER_CONFIG)
scales = 1.5 + torch.rand(3, generator=g) * 8                          # three scales in [1.5, 9.5), drawn here


def recovers_the_scales(fn):
    for w in scales.tolist():
        got = fn(e_u, e_c, pipe.predict_noise(z, tt, ctx, w, sched))
        if got is None or abs(got - w) > 1e-3:
            return f"the pipeline used w = {w:.3f}; guidance_used returned {got}"
    return True


ok = check("Exercise 3", guidance_used, test=recovers_the_scales,
           hint="eps_guided - eps_uncond = w (eps_cond - eps_uncond): divide, or better, project onto that direction")
# BEGIN SOLUTION
assert ok
# END SOLUTION
