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
# **Timestep convention (the same as notebook 01).** In the mathematics t counts the steps 1, …, T as Ho et al.
# do, and figure titles and printed step numbers use this t. Python arrays count from 0, so `beta[t - 1]` is β_t
# and `alpha_bar[t - 1]` is ᾱ_t; the schedulers' `timesteps` (diffusers' convention) are these 0-based indices:
# scheduler timestep 999 is t = T = 1000.
#
# ## 1. Running the chain backwards
#
# Notebook 01 destroyed images with q(x_t | x_{t−1}). To *generate*, we start from pure noise x_T ~ N(0, I)
# and walk back with learned Gaussian steps. Ho et al. (2020) write the model and the forward process as
# (Eq. 1 and 2)
#
# $$p_\theta(x_{0:T}) = p(x_T)\prod_{t=1}^{T} p_\theta(x_{t-1}\mid x_t), \quad
#   p_\theta(x_{t-1} \mid x_t) = \mathcal N\big(x_{t-1};\ \mu_\theta(x_t, t),\ \Sigma_\theta(x_t, t)\big),$$
# $$q(x_{1:T}\mid x_0) = \prod_{t=1}^{T} q(x_t \mid x_{t-1}), \quad q(x_t\mid x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I).$$
#
# DDPM does not learn the covariance: it fixes Σ_θ(x_t, t) = σ_t² I, with σ_t² = β_t or β̃_t (below; Sec. 3.2).
# This is a **VAE with T latent variables** x₁ … x_T of the data's own size: q is the encoder, except that it has
# no parameters (DDPM fixes the β_t; they could be learned, but need not be), and p_θ is the decoder, run T times.
# Why may the reverse step be Gaussian at all? Because each forward step adds only a little noise: for small β_t
# the true reverse of a Gaussian step is, to good approximation, Gaussian again (Sohl-Dickstein et al. 2015).
#
# ### A primer: the KL divergence and the ELBO
#
# Two facts are all this notebook needs (notebook 03 develops them at length for an autoencoder).
#
# * The **KL divergence** of q from p is D_KL(q ‖ p) = E_{x~q}[log q(x) − log p(x)]. It is ≥ 0, and 0 only when
#   q = p (Jensen: −D_KL = E_q log(p/q) ≤ log E_q(p/q) = log 1 = 0). For two Gaussians in d dimensions it is a
#   closed-form number: D_KL(N(μ₁, s₁²I) ‖ N(μ₂, s₂²I)) = ‖μ₁ − μ₂‖²/(2s₂²) + (d/2)(s₁²/s₂² − 1 − log(s₁²/s₂²)).
#   With equal variances only the first term is left: a **scaled squared distance of the means**.
# * The **ELBO** (evidence lower bound). For any latent z and any distribution q(z | x),
#   log p(x) = log E_{q(z|x)}[p(x, z)/q(z | x)] ≥ E_{q(z|x)}[log p(x, z) − log q(z | x)], again by Jensen (log is
#   concave). The gap is exactly D_KL(q(z | x) ‖ p(z | x)). So we can *train* by maximising the bound, which needs
#   only samples of q and values of p(x, z), never the intractable integral p(x) = ∫ p(x, z) dz.
#
# The cell below checks the Gaussian KL formula against a Monte-Carlo average of log q − log p.

# %%
def kl_gauss(mu1, s1, mu2, s2):
    """D_KL(N(mu1, s1^2 I) || N(mu2, s2^2 I)) for d-dimensional means (the closed form above)."""
    d = mu1.numel()
    return ((mu1 - mu2) ** 2).sum() / (2 * s2**2) + d / 2 * (s1**2 / s2**2 - 1 - math.log(s1**2 / s2**2))


mu1, mu2, s1, s2 = torch.tensor([0.3, -1.0]), torch.tensor([0.0, 0.5]), 0.8, 1.2
xs = mu1 + s1 * torch.randn(400000, 2, generator=g, dtype=torch.float64)  # samples of q
log_q = -((xs - mu1) ** 2).sum(1) / (2 * s1**2) - 2 * math.log(s1)  # the 2 pi terms cancel in the difference
log_p = -((xs - mu2) ** 2).sum(1) / (2 * s2**2) - 2 * math.log(s2)
kl_mc, kl_closed = float((log_q - log_p).mean()), float(kl_gauss(mu1, s1, mu2, s2))
print(f"KL: Monte Carlo {kl_mc:.3f}, closed form {kl_closed:.3f}")
assert abs(kl_mc - kl_closed) < 0.01

# %% [markdown]
# ### From the bound (Eq. 3) to a sum of KLs (Eq. 5)
#
# Here the latents are z = x_{1:T} and the "encoder" is the fixed q(x_{1:T} | x₀), so the ELBO reads (Eq. 3)
#
# $$\mathbb E\big[-\log p_\theta(x_0)\big] \le \mathbb E_q\Big[-\log \frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)}\Big]
#   = \mathbb E_q\Big[-\log p(x_T) - \sum_{t\ge 1}\log\frac{p_\theta(x_{t-1}\mid x_t)}{q(x_t\mid x_{t-1})}\Big] =: L.$$
#
# Every term compares a *backward* step of p_θ with a *forward* step of q, which point in opposite directions.
# Turn the forward steps around with Bayes' rule. The chain is Markov, so q(x_t | x_{t−1}) = q(x_t | x_{t−1}, x₀), and
#
# $$q(x_t\mid x_{t-1}, x_0) = \frac{q(x_{t-1}\mid x_t, x_0)\; q(x_t\mid x_0)}{q(x_{t-1}\mid x_0)} \qquad (t \ge 2).$$
#
# Put this into the terms t ≥ 2 and keep t = 1 apart:
#
# $$L = \mathbb E_q\Big[-\log p(x_T) - \sum_{t=2}^{T}\log\frac{p_\theta(x_{t-1}\mid x_t)}{q(x_{t-1}\mid x_t, x_0)}
#   - \sum_{t=2}^{T}\log\frac{q(x_{t-1}\mid x_0)}{q(x_t\mid x_0)} - \log\frac{p_\theta(x_0\mid x_1)}{q(x_1\mid x_0)}\Big].$$
#
# The third sum **telescopes**: log q(x₁|x₀) − log q(x₂|x₀) + log q(x₂|x₀) − … − log q(x_T|x₀) = log q(x₁|x₀) − log q(x_T|x₀).
# Its log q(x₁|x₀) cancels the denominator of the last term, and its −log q(x_T|x₀) joins −log p(x_T). Each
# remaining E_q[log q/p] is a KL divergence (the primer), which gives Eq. 5:
#
# $$L = \mathbb E_q\Big[\underbrace{D_\mathrm{KL}\big(q(x_T\mid x_0)\,\|\,p(x_T)\big)}_{L_T}
#   + \sum_{t>1}\underbrace{D_\mathrm{KL}\big(q(x_{t-1}\mid x_t, x_0)\,\|\,p_\theta(x_{t-1}\mid x_t)\big)}_{L_{t-1}}
#   \underbrace{-\log p_\theta(x_0\mid x_1)}_{L_0}\Big].$$
#
# L_T has no parameters (q(x_T | x₀) ≈ N(0, I) = p(x_T)). Each L_{t−1} compares p_θ's step with the **posterior**
# q(x_{t−1} | x_t, x₀): the backwards step if we also knew x₀. It is Gaussian, by Bayes on Gaussians (Eq. 6–7):
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal N\Big(\tilde\mu_t = \tfrac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}x_0
#   + \tfrac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t,\ \ \tilde\beta_t = \tfrac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t\Big).$$
#
# Both Gaussians in L_{t−1} have fixed variances, so by the primer the KL is a scaled squared distance of the
# means: L_{t−1} = E_q ‖μ̃_t − μ_θ(x_t, t)‖² / 2σ_t² + C (Eq. 8).
#
# Now write x₀ through the noise that made x_t, x₀ = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t. The posterior mean becomes
# μ̃_t = (x_t − β_t/√(1−ᾱ_t) · ε)/√α_t (inside Eq. 10): **everything in it is known except ε**. So let the network
# predict ε, μ_θ(x_t, t) = (x_t − β_t/√(1−ᾱ_t) · ε_θ(x_t, t))/√α_t (Eq. 11), and each KL term becomes a weighted
# noise regression. Let us confirm the algebra numerically, at t = 300.

# %%
t = 300  # the paper's t: beta_t = beta[t - 1], alpha_bar_t = alpha_bar[t - 1]
ab_t, ab_prev, beta_t, alpha_t = alpha_bar[t - 1], alpha_bar[t - 2], beta[t - 1], alpha[t - 1]
x0 = torch.randn(5, generator=g)
eps = torch.randn(5, generator=g)
x_t = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * eps
posterior_mean = (ab_prev.sqrt() * beta_t / (1 - ab_t) * x0
                  + alpha_t.sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t)  # Eq. 7
mean_from_eps = (x_t - beta_t / (1 - ab_t).sqrt() * eps) / alpha_t.sqrt()  # Eq. 10
print("max |Eq. 7 - Eq. 10| =", f"{float((posterior_mean - mean_from_eps).abs().max()):.0e}")
assert torch.allclose(posterior_mean, mean_from_eps, atol=1e-5)

# %% [markdown]
# Substituting Eq. 10 and 11 into the KL gives L_{t−1} = w_t ‖ε − ε_θ(x_t, t)‖² with
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


# %% [markdown]
# Train it with L_simple (Eq. 14) for 2,500 steps of 512 points: a few seconds.

# %%
toy = ToyDenoiser()
opt = torch.optim.Adam(toy.parameters(), lr=2e-3)
start = time.time()
losses = []
for step in range(2500):  # L_simple, exactly Eq. 14
    x0 = sample_data(512, g)
    tt = torch.randint(0, T, (512,), generator=g)  # scheduler timesteps t - 1, for t = 1..T
    eps = torch.randn(512, 2, generator=g)
    loss = ((toy(schedules.q_sample(x0, tt, eps, alpha_bar), tt) - eps) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
toy.eval()
print(f"trained in {time.time() - start:.1f} s, final loss {np.mean(losses[-200:]):.2f}")

# %% [markdown]
# The learned field next to the exact score, at a low and a high noise level, and how well they agree
# (cosine similarity of the arrows, weighted by where the noised data actually is). Both are drawn in the
# units of ε, as −ε_θ(x, t) and √(1−ᾱ_t)·∇ log q_t(x), with one arrow scale for all four fields, so arrow
# lengths can be compared within and across the panels: at t = 400 the pull is gentler and points at the
# ring's centre more than at single modes.

# %%
grid1d = torch.linspace(-2.5, 2.5, 15)
grid = torch.stack(torch.meshgrid(grid1d, grid1d, indexing="xy"), -1).reshape(-1, 2)  # (225, 2)
fig, axes = plt.subplots(1, 2, figsize=(11, 5.4))
agreement = {}
arrows = dict(angles="xy", scale_units="xy", scale=14, width=0.004)  # ONE scale: 14 units of -eps per axis unit
for ax, t in zip(axes, [100, 400]):  # the paper's t; the model and the tables take t - 1
    ab_t = alpha_bar[t - 1]
    with torch.no_grad():
        learned = -toy(grid, t - 1)  # -eps_theta = sqrt(1 - ab) * learned score
        pts = schedules.q_sample(sample_data(4000, g), t - 1, torch.randn(4000, 2, generator=g), alpha_bar)
        cos = nn.functional.cosine_similarity(-toy(pts, t - 1), exact_score(pts, t - 1), dim=1)
    agreement[t] = float(cos.mean())
    exact = (1 - ab_t).sqrt() * exact_score(grid, t - 1)  # the same units: sqrt(1 - ab) * exact score
    ax.scatter(*pts[:1500].T, s=3, c="gray", alpha=0.5, label="noised data x_t")
    q = ax.quiver(*grid.T, *exact.T, color="tab:blue", alpha=0.7, label="exact: √(1−ᾱ)·∇log q_t", **arrows)
    ax.quiver(*grid.T, *learned.T, color="tab:red", alpha=0.7, label="learned: −ε_θ(x, t)", **arrows)
    ax.quiverkey(q, 0.97, 1.03, 2, "|−ε| = 2", labelpos="W", coordinates="axes", fontproperties={"size": 8})
    ax.set_title(f"t = {t}: ᾱ = {float(ab_t):.2f}, agreement {agreement[t]:.2f}", loc="left", fontsize=10)
    ax.set(aspect="equal",
           xlabel="x₁ (data units)", ylabel="x₂ (data units)", xlim=(-2.8, 2.8), ylim=(-2.8, 2.8))
    ax.legend(loc="lower left", fontsize=8, markerscale=4)
fig.suptitle("score fields, both drawn as −ε (= √(1−ᾱ_t) × score) with the same arrow scale in both panels")
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

base_config = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
toy_config = dict(base_config, clip_sample=False)
noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
paths = {}
for name, sched, n in [("DDPM, 1000 steps", DDPM(**toy_config), 1000), ("DDIM, 50 steps", DDIM(**toy_config), 50)]:
    final, path = sample_loop(toy, sched, noise, n, generator=torch.Generator().manual_seed(2), progress=False,
                              return_trajectory=True)
    paths[name] = (final, torch.stack(path))  # (steps + 1, N, 2)

fig, axes = plt.subplots(1, 2, figsize=(11, 5.4))
ring = sample_data(2000, g)
for ax, (name, (final, path)) in zip(axes, paths.items()):
    ax.scatter(*ring.T, s=2, c="lightgray", label="training data")
    every = 10 if len(path) > 100 else 1  # DDPM's paths are random walks: drawn every 10th step
    for i in range(8):
        ax.plot(*torch.cat([path[::every, i], path[-1:, i]]).T, lw=1, alpha=0.9, color="tab:orange", zorder=3,
                label="8 trajectories" if i == 0 else None)
    ax.scatter(*final.T, s=2, c="black", label="samples x₀ (all 2,000)")
    ax.scatter(*path[0, :8].T, s=30, marker="x", color="tab:green", zorder=4, label="their start x_T")
    ax.scatter(*path[-1, :8].T, s=30, marker="o", facecolors="none", edgecolors="tab:red", zorder=4,
               label="their end x₀")
    ax.set(title=name, aspect="equal", xlim=(-3.2, 3.2), ylim=(-3.2, 3.2),
           xlabel="x₁ (data units)", ylabel="x₂ (data units)")
    ax.legend(loc="lower left", fontsize=8, markerscale=2)
fig.suptitle("sampling the 8-Gaussian ring from the same starting noise")
save_figure(fig, "02_toy_trajectories.png")
plt.show()


def on_ring(x):
    """Fraction of samples within 4 standard deviations of some mixture mean."""
    return float(((x[:, None] - mus[None]).norm(dim=-1).min(1).values < 4 * s).float().mean())


for name, (final, _) in paths.items():
    print(f"{name}: {on_ring(final):.0%} of samples land on a mode")
assert all(on_ring(final) > 0.8 for final, _ in paths.values())

# %% [markdown]
# ### The update rules of DDIM and DPM-Solver++
#
# Both samplers first turn the noise prediction into a guess of the clean data,
# x̂₀ = (x_t − √(1−ᾱ_t) ε_θ(x_t, t))/√ᾱ_t, and then move from the current step t to the next one visited, s < t.
#
# **DDIM** with η = 0 (Song et al. 2021, Eq. 12) re-noises the guess to level s with the *same* predicted noise:
#
# $$x_s = \sqrt{arlpha_s}\,\hat x_0 + \sqrt{1-arlpha_s}\;arepsilon_	heta(x_t, t).$$
#
# **DPM-Solver++ (2M)** (Lu et al. 2022b, Algorithm 2) writes α_t = √ᾱ_t, σ_t = √(1−ᾱ_t) and steps in the
# half-log-SNR λ_t = log(α_t/σ_t), with h = λ_s − λ_t > 0:
#
# $$x_s = rac{\sigma_s}{\sigma_t}\,x_t - lpha_sig(e^{-h} - 1ig)\,D, \qquad
#   D = \Big(1 + rac{1}{2r}\Big)\hat x_0^{(t)} - rac{1}{2r}\,\hat x_0^{(t')}, \quad r = rac{h'}{h},$$
#
# where t′ is the step visited before t and h′ = λ_t − λ_{t′}. On the first step (no history) and the last, D = x̂₀:
# that first-order step *is* DDIM, since e^{−h} = α_t σ_s/(σ_t α_s) turns it into σ_s ε̂ + α_s x̂₀. The second-order
# D extrapolates x̂₀ linearly in λ from the last two guesses, at no extra model call.
# The cell checks these formulas against `sdlearn.schedulers.DDIM.step` and `DPMSolverPP.step` on toy points.

# %%
x = noise[:6]  # (6, 2) toy points at t = T
ddim = DDIM(**toy_config, timestep_spacing="trailing")  # "trailing": start at timestep 999, i.e. t = T
ddim.set_timesteps(50)
t_, s_ = int(ddim.timesteps[0]), int(ddim.timesteps[1])  # scheduler timesteps (0-based)
with torch.no_grad():
    e = toy(x, t_)
x0_hat = (x - (1 - alpha_bar[t_]).sqrt() * e) / alpha_bar[t_].sqrt()
ddim_by_hand = alpha_bar[s_].sqrt() * x0_hat + (1 - alpha_bar[s_]).sqrt() * e
assert torch.allclose(ddim.step(e, t_, x).prev_sample, ddim_by_hand, atol=1e-5)

dpm = DPMSolverPP(**base_config)
dpm.set_timesteps(20)
ts = [int(v) for v in dpm.timesteps[:3]]  # t', t, s: three consecutive visited timesteps
a_, sg = alpha_bar[ts].sqrt(), (1 - alpha_bar[ts]).sqrt()  # alpha and sigma at each
lam = torch.log(a_ / sg)  # half log-SNR
r = (lam[1] - lam[0]) / (lam[2] - lam[1])  # h' / h, used by the second step
xs, guesses = [x], []
for k in range(2):  # step 1: first order (no history); step 2: second order
    with torch.no_grad():
        e = toy(xs[-1], ts[k])
    guesses.append((xs[-1] - sg[k] * e) / a_[k])  # x0_hat at this step
    h = lam[k + 1] - lam[k]
    D = guesses[-1] if k == 0 else (1 + 1 / (2 * r)) * guesses[-1] - 1 / (2 * r) * guesses[-2]
    xs.append(sg[k + 1] / sg[k] * xs[-1] - a_[k + 1] * (torch.exp(-h) - 1) * D)
    ours = dpm.step(e, ts[k], xs[-2]).prev_sample
    assert torch.allclose(ours, xs[-1], atol=1e-4), k
first_order_is_ddim = a_[1] * guesses[0] + sg[1] * (xs[0] - a_[0] * guesses[0]) / sg[0]
assert torch.allclose(xs[1], first_order_is_ddim, atol=1e-4)
print("DDIM and DPM-Solver++ (first- and second-order steps) match the formulas to within 1e-4")

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
pixel_config = base_config
clip = dict(thresholding=True)  # with sample_max_value = 1 (the default) this is exactly x0_hat.clamp(-1, 1)


@torch.no_grad()
def ddim_clipped(sched, x, n):
    """DDIM with the step taken from the clipped x0_hat AND the eps it implies, as DPM-Solver++ does."""
    sched.set_timesteps(n)
    for t in sched.timesteps:
        x = sched.step(model(x, t), t, x, use_clipped_model_output=True).prev_sample
    return x


samplers = [("DDPM", DDPM(**pixel_config, clip_sample=False, **clip), 1000),
            ("DDIM", DDIM(**pixel_config, clip_sample=False, timestep_spacing="trailing", **clip), 50),
            ("DPM-Solver++", DPMSolverPP(**pixel_config, **clip), 20)]
noise = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))  # the same x_T for all three
results, seconds = {}, {}
for name, sched, n in samplers:
    start = time.time()
    if name == "DDIM":
        results[name] = ddim_clipped(sched, noise, n)
    else:
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
# All three start from the same x_T, and all three keep their x₀ guesses in range the same way: x̂₀ is clipped to
# [−1, 1] (`thresholding=True`; with `sample_max_value = 1` Imagen's dynamic thresholding is plain clipping), and
# DDIM takes its step from the clipped x̂₀ *and* the ε it implies (`use_clipped_model_output=True`), which is what
# DPM-Solver++'s update does by construction, since it only uses x_t and x̂₀. Pixel-space models need this:
# at t = T the linear schedule has σ = √((1−ᾱ)/ᾱ) ≈ 157, so tiny errors in ε become huge errors in x̂₀.
#
# DDIM (η = 0) and DPM-Solver++ are both solvers of the same deterministic ODE, so, handled alike, they land on
# nearly the same pictures (compare them column by column); DPM-Solver++ needs only 20 calls because it is
# second-order in log-SNR time. DDPM injects fresh noise at every one of its 1000 steps, so it ends up at
# different, equally plausible images: same distribution, different samples. The distances say the same:

# %%
def rms(a, b):
    """Per image root-mean-square difference, (N,)."""
    return (a.clamp(-1, 1) - b.clamp(-1, 1)).flatten(1).pow(2).mean(1).sqrt()


d_dpm, d_ddpm = rms(results["DDIM"], results["DPM-Solver++"]), rms(results["DDIM"], results["DDPM"])
print("RMS |DDIM - DPM-Solver++| per column:", d_dpm.numpy().round(2))
print("RMS |DDIM - DDPM|         per column:", d_ddpm.numpy().round(2))
assert (d_dpm < d_ddpm).all() and d_dpm.max() < 0.2

# %% [markdown]
# ## 5. sdlearn holds the same (and diffusers agrees)
#
# One DDPM step by hand (posterior mean Eq. 7 + √β̃ z), sdlearn's `DDPM.step` and diffusers' `DDPMScheduler.step`:

# %%
import diffusers

ours, theirs = DDPM(**pixel_config, clip_sample=False), diffusers.DDPMScheduler(**pixel_config, clip_sample=False)
ours.set_timesteps(1000)
theirs.set_timesteps(1000)
x, t = noise[:2], 500  # the paper's t = 500 is scheduler timestep t - 1 = 499
ab_t, ab_prev, beta_t, alpha_t = alpha_bar[t - 1], alpha_bar[t - 2], beta[t - 1], alpha[t - 1]
with torch.no_grad():
    eps_pred = model(x, t - 1)
z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
x0_hat = (x - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()
by_hand = (ab_prev.sqrt() * beta_t / (1 - ab_t) * x0_hat
           + alpha_t.sqrt() * (1 - ab_prev) / (1 - ab_t) * x) + beta_tilde[t - 2].sqrt() * z  # beta_tilde[0] is t=2
sdlearn_step = ours.step(eps_pred, t - 1, x, generator=torch.Generator().manual_seed(9)).prev_sample
diffusers_step = theirs.step(eps_pred, t - 1, x, generator=torch.Generator().manual_seed(9)).prev_sample
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
# **1.** DDIM is a whole family of samplers. With η > 0 it adds fresh noise of standard deviation
# (Song et al. 2021, Eq. 16) σ_{t→s}(η) = η · √((1−ᾱ_s)/(1−ᾱ_t)) · √(1 − ᾱ_t/ᾱ_s) on a step from t to s < t.
# Write `ddim_sigma(t, s, eta)` using `alpha_bar` (t and s are the paper's 1-based steps). The check finds
# out what η = 1 means for single steps s = t − 1.

# %%
def ddim_sigma(t: int, s: int, eta: float) -> torch.Tensor:
    """Standard deviation of the fresh noise DDIM adds from step t to step s < t (1-based)."""
    # BEGIN SOLUTION
    ab_t, ab_s = alpha_bar[t - 1], alpha_bar[s - 1]
    return eta * ((1 - ab_s) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_s).sqrt()
    # END SOLUTION
    # STUB: return None


# %%
from sdlearn.exercises import check


def is_ddpm_at_eta_1(f):
    for t in (2, 10, 300, 1000):
        got = f(t, t - 1, 1.0)
        if got is None:
            return "ddim_sigma returned None"
        if not math.isclose(float(got) ** 2, float(beta_tilde[t - 2]), rel_tol=1e-2):  # DDPM's posterior variance
            return f"at t = {t}, s = t - 1, eta = 1: sigma^2 = {float(got) ** 2:.3g}, which is not what it should be"
    return float(f(500, 480, 0.0)) == 0.0 or "with eta = 0, DDIM is deterministic: sigma must be 0"


ok = check("Exercise 1", ddim_sigma, test=is_ddpm_at_eta_1,
           hint="ab_t = alpha_bar[t - 1] and ab_s = alpha_bar[s - 1]; then it is Eq. 16 as written. "
                "Compare sigma^2 for s = t - 1 and eta = 1 with the posterior variance beta_tilde of Eq. 7")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# With η = 1 and single steps, DDIM's noise is exactly DDPM's posterior noise √β̃_t: DDPM is DDIM with η = 1.
#
# **2.** For data that is a single Gaussian N(0, 0.5² I) in 2-D, the noised density is also Gaussian.
# Write the *exact* ε that an ideal noise predictor would output at the point x = (1, −1) and t = 200
# (hint: ε = −√(1−ᾱ) · score, and the score of N(0, v I) at x is −x / v).

# %%
t2, point = 200, torch.tensor([1.0, -1.0])
# BEGIN SOLUTION
ab2 = alpha_bar[t2 - 1]
v = ab2 * 0.25 + (1 - ab2)  # the noised variance: ab * 0.5^2 + (1 - ab)
eps_ideal = (1 - ab2).sqrt() * point / v
# END SOLUTION
# STUB: eps_ideal = None   # a tensor of shape (2,): the ideal eps_theta(x, t) at x = point


# %%
# the ideal predictor is E[eps | x_t]; estimate it by regression on samples (it is linear in x_t for Gaussians)
x0s = 0.5 * torch.randn(200000, 2, generator=torch.Generator().manual_seed(0))
es = torch.randn(200000, 2, generator=torch.Generator().manual_seed(1))
xts = schedules.q_sample(x0s, t2 - 1, es, alpha_bar)
slope = (xts * es).sum(0) / (xts * xts).sum(0)  # least squares eps ~ slope * x_t, per coordinate
ok = check("Exercise 2", eps_ideal,
           test=lambda e: torch.allclose(e, slope * point, atol=0.02) or "that is not E[eps | x_t] at this point",
           hint="first find the variance v of x_t = sqrt(ab) x0 + sqrt(1 - ab) eps when x0 ~ N(0, 0.5^2 I), "
                "with ab = alpha_bar[t2 - 1] (the paper's t2); then use the two facts in the question")
# BEGIN SOLUTION
assert ok
print(eps_ideal.numpy().round(3))
# END SOLUTION

# %% [markdown]
# **3.** At the highest resolution, self-attention compares every position with every other: one score per
# (query, key) pair and head. How many GiB (2³⁰ bytes) would the float16 attention scores of *one* self-attention
# layer with 8 heads take for *one* image, if the UNet ran on a 512×512 grid of positions instead of SD's 64×64?

# %%
# BEGIN SOLUTION
positions = 512 * 512
answer_3 = 8 * positions**2 * 2 / 2**30  # heads x queries x keys x 2 bytes
# END SOLUTION
# STUB: answer_3 = None   # a float: GiB of attention scores per layer and image at 512x512
answer_3

# %%
# build the score tensor on the meta device (shapes only, no memory) and read its size
q_meta = torch.empty(1, 8, 512 * 512, 40, dtype=torch.float16, device="meta")  # (B, heads, H*W, head_dim)
scores = q_meta @ q_meta.transpose(-1, -2)  # (B, heads, H*W, H*W)
ok = check("Exercise 3", answer_3, expected=scores.nbytes / 2**30,
           hint="the scores form a (heads, H*W, H*W) tensor; float16 is 2 bytes; 1 GiB is 2**30 bytes")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **4.** Section 1 plotted the bound's weights w_t for σ_t² = β̃_t. Ho et al. report that the other choice,
# σ_t² = β_t, samples about as well. (a) Compute its weights for t = 2, …, T as a tensor `w_beta` of shape
# (999,), index 0 being t = 2, from Eq. 12 with σ_t² = β_t. (b) Training on L_simple draws t uniformly, so
# its first 99 steps, t = 2 … 100, get 99/999 ≈ 10% of the total weight. What share of the *bound's* total
# weight Σ_t w_t do those same steps get? Store it in `share_100` (a float between 0 and 1).

# %%
# BEGIN SOLUTION
w_beta = beta[1:] ** 2 / (2 * beta[1:] * alpha[1:] * (1 - alpha_bar[1:]))   # Eq. 12, sigma_t^2 = beta_t
share_100 = float(w_beta[:99].sum() / w_beta.sum())                           # t = 2..100 are indices 0..98
# END SOLUTION
# STUB: w_beta = None      # a (999,) tensor: w_t for t = 2..T with sigma_t^2 = beta_t
# STUB: share_100 = None   # a float: the share of sum(w_beta) on the steps t = 2..100

# %%
# the weight measured, not the formula: at each t the KL of Eq. 5 between the posterior (Eq. 7, from x0)
# and p_theta with the mean of Eq. 11 (from a wrong eps_theta), divided by ||eps - eps_theta||^2
gen = torch.Generator().manual_seed(4)
w_measured = torch.empty(T - 1, dtype=torch.float64)
b64 = beta.double()                    # the schedule again in float64, so that Eq. 7 and Eq. 11 agree to
a64, ab64 = 1 - b64, torch.cumprod(1 - b64, 0)   # round-off even at t = 2, where 1 - alpha_bar is 3e-4
for t_ in range(2, T + 1):
    x0_, eps_, eps_theta = torch.randn(3, 3, generator=gen, dtype=torch.float64)   # three pixels each
    xt_ = ab64[t_ - 1].sqrt() * x0_ + (1 - ab64[t_ - 1]).sqrt() * eps_
    mu_post = (ab64[t_ - 2].sqrt() * b64[t_ - 1] / (1 - ab64[t_ - 1]) * x0_
               + a64[t_ - 1].sqrt() * (1 - ab64[t_ - 2]) / (1 - ab64[t_ - 1]) * xt_)           # Eq. 7
    mu_theta = (xt_ - b64[t_ - 1] / (1 - ab64[t_ - 1]).sqrt() * eps_theta) / a64[t_ - 1].sqrt()  # Eq. 11
    sigma = float(b64[t_ - 1].sqrt())                                                        # sigma_t^2 = beta_t
    w_measured[t_ - 2] = kl_gauss(mu_post, sigma, mu_theta, sigma) / ((eps_ - eps_theta) ** 2).sum()


def weighs_like_the_kl(w_ans):
    if not isinstance(w_ans, torch.Tensor) or w_ans.shape != (T - 1,):
        return f"w_beta must be a tensor of shape ({T - 1},), one weight per step t = 2..{T}"
    bad = ~torch.isclose(w_ans.double(), w_measured, rtol=1e-3)
    if bad.any():
        t_bad = int(bad.nonzero()[0]) + 2
        return (f"at t = {t_bad} the KL weighs ||eps - eps_theta||^2 by {float(w_measured[t_bad - 2]):.4g}, "
                f"not {float(w_ans[t_bad - 2]):.4g}")
    return True


ok = check("Exercise 4a", w_beta, test=weighs_like_the_kl,
           hint="Eq. 12 with sigma_t^2 = beta_t: beta[1:], alpha[1:] and alpha_bar[1:] are the values for t = 2..T")
ok_share = check("Exercise 4b", share_100, expected=float(w_measured[:99].sum() / w_measured.sum()), rtol=1e-3,
                 hint="sum the weights of t = 2..100 (the first 99 entries) and divide by the sum of all")
# BEGIN SOLUTION
assert ok and ok_share
print(f"the bound puts {share_100:.0%} of its weight on the first 10% of the steps; L_simple puts 10% there")
print(f"its smallest weight is at t = {int(w_beta.argmin()) + 2}; from there it rises again, to w_T = {float(w_beta[-1]):.4f}")
# END SOLUTION

# %% [markdown]
# BEGIN SOLUTION
# Either way the bound spends about a third of its weight on the first hundred, nearly noise-free steps,
# where the network only has to remove a trace of noise. L_simple hands that weight to the middle and
# late steps, where the image's content is decided: the reweighting Ho et al. found to sample better.
# END SOLUTION
