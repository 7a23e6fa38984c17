# %% [markdown]
# # 02 · The reverse process: learning to remove noise
#
# {{COLAB_BADGE}}
#
# **What you will learn**
#
# 1. The **reverse process** p_θ(x_{t−1} | x_t), and why the variational bound on the likelihood collapses to a
#    plain regression, **L_simple: predict the noise**.
# 2. That a noise predictor is a **score** estimate in disguise: ε = −√(1−ᾱ_t) · ∇ log q(x_t).
# 3. A denoiser trained in seconds on a 2-D toy distribution: its score field next to the exact one, and sampling trajectories.
# 4. A small pixel-space diffusion model on Shapes, sampled with **DDPM 1000 steps, DDIM 50 and DPM-Solver++ 20** from the same noise.
# 5. Why pixel space does not scale to 512×512, by counting what one UNet call costs: the motivation for latents.

# %% [setup]

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from sdlearn import schedules
from sdlearn.device import seed_everything
from sdlearn.viz import save_figure

torch.set_num_threads(1)  # small models: one thread is as fast and repeatable
g = seed_everything(0)
T = 1000
beta = schedules.make_betas("linear", T, 1e-4, 0.02)  # the DDPM paper's schedule
alpha = 1 - beta
alpha_bar = schedules.alpha_bar(beta)

# %% [markdown]
# ## 1. Running the chain backwards
#
# Notebook 01 destroyed images with q(x_t | x_{t−1}). To *generate*, we start from pure noise x_T ~ N(0, I)
# and walk back with learned Gaussian steps (Ho et al. 2020, Eq. 1):
#
# $$p_\theta(x_{t-1} \mid x_t) = \mathcal N\big(x_{t-1};\ \mu_\theta(x_t, t),\ \sigma_t^2 I\big).$$
#
# Chained together these steps define the model's joint distribution over the whole trajectory, and the forward
# process is a chain too (Eq. 1 and 2):
#
# $$p_\theta(x_{0:T}) = p(x_T)\prod_{t=1}^{T} p_\theta(x_{t-1}\mid x_t), \qquad
#   q(x_{1:T}\mid x_0) = \prod_{t=1}^{T} q(x_t \mid x_{t-1}), \quad q(x_t\mid x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I).$$
#
# This is a **VAE with T latent variables** x₁ … x_T of the data's own size: q is the encoder, except that it has
# no parameters (DDPM fixes the β_t; they could be learned, but need not be), and p_θ is the decoder, run T times.
# Why may the reverse step be Gaussian at all? Because each forward step adds only a little noise: for small β_t
# the true reverse of a Gaussian step is, to good approximation, Gaussian again (Sohl-Dickstein et al. 2015).
# The likelihood p_θ(x₀) = ∫ p_θ(x_{0:T}) dx_{1:T} is intractable, so, exactly as notebook 03 does for one
# latent, we bound it with Jensen's inequality (Eq. 3):
#
# $$\mathbb E\big[-\log p_\theta(x_0)\big] \le \mathbb E_q\Big[-\log \frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)}\Big]
#   = \mathbb E_q\Big[-\log p(x_T) - \sum_{t\ge 1}\log\frac{p_\theta(x_{t-1}\mid x_t)}{q(x_t\mid x_{t-1})}\Big] =: L.$$
#
# (The KL divergence and the ELBO are derived step by step in notebook 03; here we only need that a KL between
# two Gaussians is a closed-form number.) What should μ_θ aim for? If we also knew x₀, the backwards step would be exactly Gaussian: Bayes' rule on
# the forward process gives the **posterior** (Eq. 6–7)
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal N\Big(\tilde\mu_t = \tfrac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}x_0
#   + \tfrac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t,\ \ \tilde\beta_t = \tfrac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t\Big).$$
#
# The variational bound on −log p_θ(x₀) (Eq. 5) is a sum of KL divergences between this posterior and
# p_θ(x_{t−1} | x_t). Between two Gaussians with the same variance, the KL is just a scaled squared
# distance of the means: L_{t−1} = ‖μ̃_t − μ_θ‖² / 2σ_t² + const.
#
# Now write x₀ through the noise that made x_t, x₀ = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t. The posterior mean becomes
# μ̃_t = (x_t − β_t/√(1−ᾱ_t) · ε)/√α_t (Eq. 11): **everything in it is known except ε**. So let the network
# predict ε, and each KL term becomes a weighted noise regression. Let us confirm the algebra numerically.

# %%
t = 300
x0 = torch.randn(5, generator=g)
eps = torch.randn(5, generator=g)
x_t = alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * eps
posterior_mean = (alpha_bar[t - 1].sqrt() * beta[t] / (1 - alpha_bar[t]) * x0
                  + alpha[t].sqrt() * (1 - alpha_bar[t - 1]) / (1 - alpha_bar[t]) * x_t)  # Eq. 7
mean_from_eps = (x_t - beta[t] / (1 - alpha_bar[t]).sqrt() * eps) / alpha[t].sqrt()  # Eq. 11
print("max |Eq. 7 - Eq. 11| =", f"{float((posterior_mean - mean_from_eps).abs().max()):.0e}")
assert torch.allclose(posterior_mean, mean_from_eps, atol=1e-5)

# %% [markdown]
# Substituting Eq. 11 into the KL gives L_{t−1} = w_t ‖ε − ε_θ(x_t, t)‖² with
# w_t = β_t² / (2σ_t² α_t (1−ᾱ_t)) (Eq. 12). Ho et al. found that **dropping w_t** works better:
#
# $$L_\text{simple} = \mathbb E_{t, x_0, \varepsilon}\ \big\|\varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\varepsilon,\ t)\big\|^2 \quad (14).$$
#
# Why? With σ_t² = β̃_t the weight simplifies to w_t = β_t / (2 α_t (1 − ᾱ_{t−1})): it is largest for the first,
# nearly noise-free steps, where denoising is easy (at t = 2: β₂/(2·β₁) ≈ 0.6; at t = T: β_T/2 ≈ 0.01, a factor of
# about 60). Uniform weights move the model's effort to the large t where the image content is decided.

# %%
beta_tilde = (1 - alpha_bar[:-1]) / (1 - alpha_bar[1:]) * beta[1:]  # posterior variances for t = 2..T
w = beta[1:] ** 2 / (2 * beta_tilde * alpha[1:] * (1 - alpha_bar[1:]))
fig, ax = plt.subplots(figsize=(7, 3))
ax.semilogy(np.arange(2, T + 1), w.numpy())
ax.set(title="weight of each step in the variational bound (L_simple: all 1)", xlabel="t", ylabel="w_t")
save_figure(fig, "02_elbo_weights.png")
plt.show()
w_simplified = beta[1:] / (2 * alpha[1:] * (1 - alpha_bar[:-1]))
assert torch.allclose(w, w_simplified, rtol=1e-3)
print(f"w_2 / w_1000 = {float(w[0] / w[-1]):.0f}")
assert 50 < w[0] / w[-1] < 70

# %% [markdown]
# ## 2. The noise predictor is a score
#
# For x_t = √ᾱ x₀ + √(1−ᾱ) ε, the score of the noised data is ∇ log q(x_t | x₀) = −ε/√(1−ᾱ_t), and averaging over
# the x₀ that could have produced x_t (Tweedie's formula) gives
#
# $$\nabla_{x_t} \log q(x_t) = -\frac{\mathbb E[\varepsilon \mid x_t]}{\sqrt{1-\bar\alpha_t}}
#   \quad\Longrightarrow\quad \varepsilon_\theta(x_t, t) \approx -\sqrt{1-\bar\alpha_t}\ \nabla \log q(x_t).$$
#
# The best L2 predictor of ε *is* E[ε | x_t], so a trained noise predictor points, scaled, down the
# log-density's slope: towards the data. We can see this on a 2-D distribution whose noised score we
# can write down exactly: a mixture of 8 Gaussians on a ring. Noising a Gaussian mixture gives another
# Gaussian mixture, with means √ᾱ μ_k and variances ᾱ s² + (1 − ᾱ).

# %%
K, radius, s = 8, 1.5, 0.1
mus = radius * torch.stack([torch.cos(2 * math.pi * torch.arange(K) / K), torch.sin(2 * math.pi * torch.arange(K) / K)], 1)


def sample_data(n, gen):
    return mus[torch.randint(0, K, (n,), generator=gen)] + s * torch.randn(n, 2, generator=gen)


def exact_score(x, t):
    """∇ log q_t(x) for the noised mixture: responsibility-weighted pulls towards each noised mean."""
    ab = alpha_bar[t]
    means, var = ab.sqrt() * mus, ab * s**2 + (1 - ab)  # (K, 2), scalar
    diff = means[None] - x[:, None]  # (N, K, 2)
    logits = -(diff**2).sum(-1) / (2 * var)  # (N, K)
    resp = torch.softmax(logits, dim=1)
    return (resp[..., None] * diff).sum(1) / var  # (N, 2)


class ToyDenoiser(nn.Module):
    """eps_theta(x, t) for 2-D points: an MLP on (x, sin/cos features of t)."""

    def __init__(self, hidden=128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 + 16, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x, t):
        t = torch.as_tensor(t).float().expand(x.shape[0])  # (N,)
        freqs = torch.exp(-math.log(1000) * torch.arange(8) / 8)  # (8,)
        temb = torch.cat([(t[:, None] * freqs).sin(), (t[:, None] * freqs).cos()], 1)  # (N, 16)
        return self.net(torch.cat([x, temb], 1))


toy = ToyDenoiser()
opt = torch.optim.Adam(toy.parameters(), lr=2e-3)
start = time.time()
losses = []
for step in range(2500):  # L_simple, exactly Eq. 14
    x0 = sample_data(512, g)
    tt = torch.randint(0, T, (512,), generator=g)
    eps = torch.randn(512, 2, generator=g)
    loss = ((toy(schedules.q_sample(x0, tt, eps, alpha_bar), tt) - eps) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
toy.eval()
print(f"trained in {time.time() - start:.1f} s, final loss {np.mean(losses[-200:]):.2f}")

# %% [markdown]
# The learned field −ε_θ/√(1−ᾱ_t) next to the exact score, at a low and a high noise level, and how well they agree
# (cosine similarity of the arrows, weighted by where the noised data actually is):

# %%
grid1d = torch.linspace(-2.5, 2.5, 15)
grid = torch.stack(torch.meshgrid(grid1d, grid1d, indexing="xy"), -1).reshape(-1, 2)  # (225, 2)
fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
agreement = {}
for ax, t in zip(axes, [100, 400]):
    with torch.no_grad():
        learned = -toy(grid, t) / (1 - alpha_bar[t]).sqrt()
        pts = schedules.q_sample(sample_data(4000, g), t, torch.randn(4000, 2, generator=g), alpha_bar)
        cos = nn.functional.cosine_similarity(-toy(pts, t), exact_score(pts, t), dim=1)
    agreement[t] = float(cos.mean())
    exact = exact_score(grid, t)
    ax.scatter(*pts[:1500].T, s=2, c="lightgray")
    ax.quiver(*grid.T, *exact.T, color="tab:blue", alpha=0.6, angles="xy", label="exact score")
    ax.quiver(*grid.T, *learned.T, color="tab:red", alpha=0.6, angles="xy", label="−ε_θ / √(1−ᾱ)")
    ax.set(title=f"t = {t}: ᾱ = {float(alpha_bar[t]):.2f}, agreement {agreement[t]:.2f}", aspect="equal")
    ax.legend(loc="lower left", fontsize=8)
save_figure(fig, "02_score_field.png")
plt.show()
print({t: round(a, 2) for t, a in agreement.items()})
assert min(agreement.values()) > 0.8

# %% [markdown]
# ## 3. Sampling: following the score back to the data
#
# Sampling runs the reverse chain with the trained ε_θ. `sdlearn.schedulers` holds the samplers (the
# same step-for-step as diffusers'); `sample_loop` is the loop every pipeline runs:
# `x = noise * init_noise_sigma; for t in timesteps: x = step(model(x, t), t, x)`.
# DDPM is stochastic (fresh noise each step, 1000 steps); DDIM with η = 0 is deterministic and can take
# big strides (here 50), so its trajectories are smooth curves.

# %%
from sdlearn.schedulers import DDIM, DDPM, DPMSolverPP, sample_loop

toy_config = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False)
noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
paths = {}
for name, sched, n in [("DDPM, 1000 steps", DDPM(**toy_config), 1000), ("DDIM, 50 steps", DDIM(**toy_config), 50)]:
    final, path = sample_loop(toy, sched, noise, n, generator=torch.Generator().manual_seed(2), progress=False,
                              return_trajectory=True)
    paths[name] = (final, torch.stack(path))  # (steps + 1, N, 2)

fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
ring = sample_data(2000, g)
for ax, (name, (final, path)) in zip(axes, paths.items()):
    ax.scatter(*ring.T, s=2, c="lightgray", label="data")
    for i in range(8):  # a few paths; DDPM's are random walks, drawn every 10th step
        ax.plot(*path[:: 10 if len(path) > 100 else 1, i].T, lw=0.8, alpha=0.8)
    ax.scatter(*final.T, s=2, c="black", label="samples")
    ax.set(title=name, aspect="equal", xlim=(-3.2, 3.2), ylim=(-3.2, 3.2))
    ax.legend(loc="lower left", fontsize=8, markerscale=4)
save_figure(fig, "02_toy_trajectories.png")
plt.show()


def on_ring(x):
    """Fraction of samples within 4 standard deviations of some mixture mean."""
    return float(((x[:, None] - mus[None]).norm(dim=-1).min(1).values < 4 * s).float().mean())


for name, (final, _) in paths.items():
    print(f"{name}: {on_ring(final):.0%} of samples land on a mode")
assert all(on_ring(final) > 0.8 for final, _ in paths.values())

# %% [markdown]
# ## 4. A pixel-space diffusion model on Shapes
#
# The same recipe on images: a small convolutional UNet (`sdlearn.toys.PixelUNet`, 0.39 M parameters)
# predicts ε for 32×32 Shapes images. Here are a few live training steps, each exactly Eq. 14; the full run
# (`python -m sdlearn train pixel --seed 0`, 10,000 steps of 128 images, EMA weights) took about 3 minutes on
# a GPU, and its weights ship with sdlearn (1.6 MB).

# %%
# NBVAL_IGNORE_OUTPUT
from sdlearn.toys import PixelUNet, load_pixel_model
from sdlearn.train.pixel import shapes_images, train_step

images = shapes_images(64, size=32, seed=0)  # (64, 3, 32, 32) in [-1, 1]
fresh = PixelUNet()
opt = torch.optim.AdamW(fresh.parameters(), lr=2e-3)
gen = torch.Generator().manual_seed(0)
for step in range(8):
    loss = train_step(fresh, images[torch.randint(0, 64, (16,), generator=gen)], alpha_bar, gen)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: L_simple = {loss.item():.3f}")

# %%
model = load_pixel_model()
pixel_config = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
samplers = [("DDPM", DDPM(**pixel_config, clip_sample=True), 1000),
            ("DDIM", DDIM(**pixel_config, clip_sample=True), 50),
            ("DPM-Solver++", DPMSolverPP(**pixel_config, thresholding=True), 20)]
noise = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))  # the same x_T for all three
results, seconds = {}, {}
for name, sched, n in samplers:
    start = time.time()
    results[name] = sample_loop(model, sched, noise, n, generator=torch.Generator().manual_seed(3), progress=False)
    seconds[name] = time.time() - start

# %%
# NBVAL_IGNORE_OUTPUT
for name, sched, n in samplers:
    print(f"{name:13s} {n:5d} UNet calls  {seconds[name]:6.1f} s  ({1000 * seconds[name] / n:.0f} ms per call)")

# %%
from sdlearn.data import to_pil

fig, axes = plt.subplots(3, 6, figsize=(10, 5.4))
for row, (name, sched, n) in enumerate(samplers):
    for col in range(6):
        axes[row, col].imshow(to_pil(results[name][col].clamp(-1, 1)))
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
    axes[row, 0].set_ylabel(f"{name}\n{n} steps", fontsize=9)
fig.suptitle("same starting noise, three samplers")
save_figure(fig, "02_pixel_samplers.png")
plt.show()

def looks_like_shapes(x):
    """Per image: a plain background (the median colour) covering 60-99% of the pixels, and something else on it."""
    x = x.clamp(-1, 1)
    background = x.flatten(2).median(dim=2).values  # (N, 3): most pixels are background
    far = (x - background[:, :, None, None]).norm(dim=1) > 0.3  # (N, 32, 32): pixels off the background colour
    return (far.float().mean((1, 2)) > 0.01) & (far.float().mean((1, 2)) < 0.4)


print(f"training images: {int(looks_like_shapes(shapes_images(6, 32, seed=1)).sum())}/6 pass the check, "
      f"pure noise: {int(looks_like_shapes(noise).sum())}/6")
for name in results:
    print(f"{name}: {int(looks_like_shapes(results[name]).sum())}/6 images look like a shape on a plain background")
assert sum(int(looks_like_shapes(r).sum()) for r in results.values()) >= 15 and not looks_like_shapes(noise).any()

# %% [markdown]
# All three start from the same x_T. DDIM (η = 0) and DPM-Solver++ are both solvers of the same deterministic
# ODE, so they land on nearly the same pictures (compare them column by column); DPM-Solver++ needs only 20 calls
# because it is second-order in log-SNR time. DDPM injects fresh noise at every one of its 1000 steps, so it
# ends up at different, equally plausible images: same distribution, different samples.
# Its x₀ guesses are kept in range by *dynamic thresholding* (`thresholding=True`), which pixel-space models
# need: at t = T the linear schedule has σ = √((1−ᾱ)/ᾱ) ≈ 157, so tiny errors in ε become huge errors in x₀.
#
# ## 5. sdlearn holds the same (and diffusers agrees)
#
# One DDPM step by hand (posterior mean Eq. 7 + √β̃ z), sdlearn's `DDPM.step` and diffusers' `DDPMScheduler.step`:

# %%
import diffusers

ours, theirs = DDPM(**pixel_config, clip_sample=False), diffusers.DDPMScheduler(**pixel_config, clip_sample=False)
ours.set_timesteps(1000)
theirs.set_timesteps(1000)
x, t = noise[:2], 500
with torch.no_grad():
    eps_pred = model(x, t)
z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
x0_hat = (x - (1 - alpha_bar[t]).sqrt() * eps_pred) / alpha_bar[t].sqrt()
by_hand = (alpha_bar[t - 1].sqrt() * beta[t] / (1 - alpha_bar[t]) * x0_hat
           + alpha[t].sqrt() * (1 - alpha_bar[t - 1]) / (1 - alpha_bar[t]) * x) + beta_tilde[t - 1].sqrt() * z
sdlearn_step = ours.step(eps_pred, t, x, generator=torch.Generator().manual_seed(9)).prev_sample
diffusers_step = theirs.step(eps_pred, t, x, generator=torch.Generator().manual_seed(9)).prev_sample
assert torch.allclose(by_hand, sdlearn_step, atol=1e-5) and torch.allclose(sdlearn_step, diffusers_step, atol=1e-5)
print("by hand, sdlearn and diffusers agree to within 1e-5")

# %% [markdown]
# ## 6. Why not do this at 512×512?
#
# Every sampling step is one UNet call, and a UNet call's cost grows with the number of pixels, faster than
# linearly once self-attention is involved (its score matrix has (H·W)² entries). Count the floating-point
# operations of Stable Diffusion's own UNet (860 M parameters, built on PyTorch's `meta` device: shapes only,
# no memory, no arithmetic) for one call at the latent size it uses, 64×64, and at larger sizes up to the
# 512×512 it would need in pixel space.

# %%
from torch.utils.flop_counter import FlopCounterMode

sd_unet_config = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                      block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
with torch.device("meta"):
    sd_unet = diffusers.UNet2DConditionModel(**sd_unet_config)
print(f"SD UNet: {sum(p.numel() for p in sd_unet.parameters()) / 1e6:.0f} M parameters")

tflops = {}
for side in (64, 128, 256, 512):
    x = torch.empty(1, 4, side, side, device="meta")
    context = torch.empty(1, 77, 768, device="meta")
    with FlopCounterMode(display=False) as counter:
        sd_unet(x, torch.tensor(999, device="meta"), encoder_hidden_states=context)
    tflops[side] = counter.get_total_flops() / 1e12
    print(f"{side:4d}x{side:<4d} one UNet call: {tflops[side]:9.2f} TFLOP   ({tflops[side] / tflops[64]:6.0f}x the 64x64 cost)")
del sd_unet
assert 0.7 < tflops[64] < 0.9 and tflops[512] / tflops[64] > 64

# %% [markdown]
# One call at 64×64 is already ~0.8 TFLOP (×2 with classifier-free guidance, ×50 steps). At 512×512 the same
# network would cost over 64× more per call (the 8×8 = 64-fold pixel count) and far more than that, because the
# attention at the highest resolution is quadratic in the 262,144 positions. That is the argument of
# Rombach et al. (2022): run the diffusion in the 64×64×4 latent space of an autoencoder that compresses a
# 512×512×3 image 48-fold, and decode only once at the end. Notebook 03 builds that autoencoder.

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
sides = list(tflops)
ax.loglog([s * s for s in sides], [tflops[s] for s in sides], "o-", label="SD UNet, measured")
ax.loglog([s * s for s in sides], [tflops[64] * (s / 64) ** 2 for s in sides], "--", label="∝ pixels (no attention growth)")
ax.set(xlabel="positions H×W", ylabel="TFLOP per UNet call", title="cost of one denoising step vs resolution")
ax.legend(fontsize=8)
save_figure(fig, "02_unet_cost.png")
plt.show()

# %% [markdown]
# ## Exercises
#
# **1.** Using only `alpha_bar`, turn the pixel model's noise prediction `eps_pred` at t = 500 (computed above)
# into its guess of the clean image x₀, and compare with what `DDIM.step` reports as `pred_original_sample`.

# %%
# your answer (one possible solution)
x0_guess = (noise[:2] - (1 - alpha_bar[500]).sqrt() * eps_pred) / alpha_bar[500].sqrt()

# %%
ddim = DDIM(**pixel_config, clip_sample=False)
ddim.set_timesteps(20)
assert torch.allclose(x0_guess, ddim.step(eps_pred, 500, noise[:2]).pred_original_sample, atol=1e-4)
print("correct!")

# %% [markdown]
# **2.** For data that is a single Gaussian N(0, 0.5² I) in 2-D, the noised density is also Gaussian.
# Write the *exact* ε that an ideal noise predictor would output at the point x = (1, −1) and t = 200
# (hint: ε = −√(1−ᾱ) · score, and the score of N(0, v I) at x is −x / v).

# %%
# your answer (one possible solution)
t2 = 200
v = alpha_bar[t2] * 0.25 + (1 - alpha_bar[t2])
eps_ideal = (1 - alpha_bar[t2]).sqrt() * torch.tensor([1.0, -1.0]) / v

# %%
# check: the ideal predictor is E[eps | x_t]; estimate it by regression on samples
x0s = 0.5 * torch.randn(200000, 2, generator=torch.Generator().manual_seed(0))
es = torch.randn(200000, 2, generator=torch.Generator().manual_seed(1))
xts = schedules.q_sample(x0s, t2, es, alpha_bar)
slope = (xts * es).sum(0) / (xts * xts).sum(0)  # E[eps | x_t] is linear in x_t for Gaussians
assert torch.allclose(eps_ideal, slope * torch.tensor([1.0, -1.0]), atol=0.02)
print("correct!", eps_ideal.numpy().round(3))

# %% [markdown]
# **3.** At the highest resolution, self-attention compares every position with every other. How many times more
# attention scores does a 512×512 grid need than a 64×64 grid?

# %%
# your answer (one possible solution)
answer_3 = (512 * 512) ** 2 // (64 * 64) ** 2

# %%
assert answer_3 == 4096
print("correct!", answer_3)
