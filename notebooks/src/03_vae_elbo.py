# %% [markdown]
# # 03 · The variational autoencoder and the ELBO
#
# {{COLAB_BADGE}}
#
# Stable Diffusion does not denoise pixels: it denoises the **latent** of an autoencoder, a 64×64×4 tensor
# instead of a 512×512×3 image, 48 times fewer numbers. This notebook builds that autoencoder's idea.
#
# **What you will learn**
#
# 1. Why a plain autoencoder's code cannot be *sampled*, and how a **variational** autoencoder fixes it (trained live, in seconds).
# 2. The **KL divergence**: closed form against Monte Carlo, its asymmetry, and when it is zero.
# 3. The **ELBO**, derived step by step and checked numerically on a model where log p(x) is known exactly.
# 4. The **score-function** estimator against the **reparameterisation trick**: measured gradient variance.
# 5. Why the encoder outputs log σ² rather than σ.
# 6. Stable Diffusion's VAE: f = 8, 4 channels, where the scale factor 0.18215 comes from, and our bundled
#    Shapes VAE (its latent channels, reconstructions, interpolation), plus how much detail each f keeps.

# %% [setup]

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sdlearn.data import COLORS, RGB, SHAPES, render, to_pil, to_tensor
from sdlearn.device import seed_everything
from sdlearn.vae import DiagonalGaussian
from sdlearn.viz import save_figure

torch.set_num_threads(1)  # small tensors: one thread is as fast and repeatable
g = seed_everything(0)

# %% [markdown]
# ## 1. Autoencoder vs variational autoencoder
#
# An **autoencoder** squeezes an image x through a narrow code z = enc(x) and learns to rebuild it,
# x̂ = dec(z). Like a zip file, it is a compressor. But nothing asks the codes to fill any particular
# region: they can sit anywhere, at any scale, with holes between them. Pick a random z and decode it,
# and you may land in a hole: a blend that looks like no training image.
#
# A **variational** autoencoder (Kingma & Welling, 2013) makes the encoder output a *distribution*
# q(z|x) = N(μ(x), σ²(x)), decodes a *sample* of it, and adds a penalty, the KL divergence from q(z|x) to a
# fixed prior p(z) = N(0, I). The sampling noise turns each code from a point into a blob (nearby codes must
# decode alike), and the KL pulls the codes to the scale of the prior, so z ~ N(0, I) should decode to
# something that looks like data. We train both, with a 2-D code so that we can look at it, on
# 16×16 Shapes images (one large shape of one of 5 kinds and 6 colours, centred).

# %%
rng = np.random.default_rng(0)
attrs = [(SHAPES[rng.integers(5)], COLORS[rng.integers(6)]) for _ in range(1200)]   # large, centred: shape and colour vary
data = torch.stack([to_tensor(render(sh, co, "large", "center", seed=i)) for i, (sh, co) in enumerate(attrs)])  # (1200, 3, 64, 64)
small = F.avg_pool2d(data, 4).flatten(1)                                                     # (1200, 3*16*16)
print(small.shape)

# %% [markdown]
# The model: two small MLPs. For the VAE the encoder outputs 2 × 2 numbers, the mean and the log-variance of
# q(z|x); `forward` decodes a reparameterised sample and returns the KL to N(0, I) (both explained in sections 2-5).

# %%
class TinyAE(nn.Module):
    """MLP autoencoder with a 2-D code; ``variational=True`` makes it a VAE."""

    def __init__(self, variational: bool, d: int = 768, hidden: int = 256, latent: int = 2):
        super().__init__()
        self.variational = variational
        self.enc = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent if variational else latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, d))

    def forward(self, x, generator=None):
        h = self.enc(x)
        if not self.variational:
            return self.dec(h), h, torch.zeros(())
        q = DiagonalGaussian(h[:, :, None, None])                          # mean, log-variance: (B, 2, 1, 1) each
        z = q.sample(generator).flatten(1)                                 # (B, 2): a sample of q(z|x)
        return self.dec(z), q.mean.flatten(1), q.kl().mean()              # KL(q(z|x) || N(0, I)), batch mean

# %% [markdown]
# Training minimises the negative ELBO of section 3: a reconstruction error plus the KL (zero for the autoencoder).

# %%
def fit(model, steps=1500, snapshot_at=(), seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    snapshots = {}
    for step in range(steps + 1):
        if step in snapshot_at:
            with torch.no_grad():
                snapshots[step] = model(small[:8], torch.Generator().manual_seed(0))[0]
        if step == steps:
            break
        x = small[torch.randint(len(small), (64,), generator=gen)]
        x_hat, _, kl = model(x, gen)
        loss = 10 * (x_hat - x).pow(2).sum(1).mean() + kl  # -ELBO for a Gaussian decoder (sigma^2 = 0.05), up to a constant
        opt.zero_grad()
        loss.backward()
        opt.step()
    return snapshots


torch.manual_seed(0)
ae, vae_2d = TinyAE(variational=False), TinyAE(variational=True)
fit(ae)
snapshots = fit(vae_2d, snapshot_at=(0, 20, 200, 1500))

# %% [markdown]
# Reconstructions of the VAE improving as it trains (rows: step 0, 20, 200, 1500; top row: the originals):

# %%
def to_img(v):  # (768,) in [-1, 1] -> (16, 16, 3) in [0, 1]
    return ((v.detach().view(3, 16, 16).permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()


rows = [("original", small[:8])] + [(f"step {s}", snapshots[s]) for s in sorted(snapshots)]
fig, axes = plt.subplots(len(rows), 8, figsize=(8, 1.1 * len(rows)))
for r, (name, imgs) in enumerate(rows):
    for c in range(8):
        axes[r, c].imshow(to_img(imgs[c]))
        axes[r, c].set_xticks([]); axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
fig.suptitle("the 2-D VAE learning to reconstruct")
save_figure(fig, "03_vae_training.png")
errors = {s: float((snapshots[s] - small[:8]).pow(2).mean()) for s in sorted(snapshots)}
assert errors[1500] < errors[200] < errors[0]
print({s: round(e, 3) for s, e in errors.items()})

# %% [markdown]
# Now the point of the VAE. Left: where each model puts the 1200 codes (each dot has the colour of its image's
# shape), with the 2σ circle of the prior N(0, I). Right: what each decoder makes of 16 samples z ~ N(0, I), and,
# over 200 such samples, their mean RMS distance to the nearest of the 1200 real images (in pixel units of [-1, 1]: smaller looks more
# like data).

# %%
with torch.no_grad():
    codes_ae = ae.enc(small)                          # (1200, 2)
    codes_vae = vae_2d.enc(small)[:, :2]              # the means mu(x)
    z_prior = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    from_prior = {"autoencoder": ae.dec(z_prior), "VAE": vae_2d.dec(z_prior)}
mean_colour = np.array([RGB[co] for _, co in attrs]) / 255   # dot colour = the shape's colour


def nearest_distance(x):
    """RMS distance from each decoded sample to its nearest real image: small = looks like data."""
    return torch.cdist(x, small).min(dim=1).values / math.sqrt(small.shape[1])


fig, axes = plt.subplots(2, 2, figsize=(11, 7), gridspec_kw={"width_ratios": [1, 1.6]})
for r, (name, codes) in enumerate([("autoencoder", codes_ae), ("VAE", codes_vae)]):
    ax = axes[r, 0]
    ax.scatter(codes[:, 0], codes[:, 1], c=mean_colour, s=6)
    ax.scatter(z_prior[:16, 0], z_prior[:16, 1], marker="x", color="k", s=25, label="the 16 samples z ~ N(0, I) on the right")
    ax.add_patch(plt.Circle((0, 0), 2, fill=False, ls="--", color="k", label="2σ circle of the prior N(0, I)"))
    ax.set(xlim=(-3, 3), ylim=(-3, 3), xlabel="code z₁", ylabel="code z₂", aspect="equal",
           title=f"{name}: 1200 codes " + ("z = enc(x)" if name == "autoencoder" else "μ(x)"))
    grid = np.concatenate([np.concatenate([to_img(v) for v in from_prior[name][i * 8:(i + 1) * 8]], 1) for i in range(2)], 0)
    axes[r, 1].imshow(grid)
    axes[r, 1].set_title(f"{name}: decoded samples z ~ N(0, I); nearest-image distance "
                         f"{float(nearest_distance(from_prior[name]).mean()):.2f}")
    axes[r, 1].axis("off")
fig.tight_layout(rect=(0, 0.05, 1, 1))
fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower left", fontsize=8, ncol=2)
save_figure(fig, "03_ae_vs_vae.png")
d_ae, d_vae = float(nearest_distance(from_prior["autoencoder"]).mean()), float(nearest_distance(from_prior["VAE"]).mean())
print(f"code std: autoencoder {float(codes_ae.std()):.1f}, VAE {float(codes_vae.std()):.1f}")
assert d_vae < d_ae   # the VAE's prior samples land nearer real images than the AE's
assert abs(d_ae - 0.22) < 0.02 and abs(d_vae - 0.13) < 0.02 and float(codes_vae.std()) > float(codes_ae.std())  # the text below

# %% [markdown]
# What this small demo shows, and what it does not. Both models put one cluster of codes per *colour*: with two
# numbers per image and a pixel loss, colour is what matters most, and both decoders make the same blurry blob
# whatever the shape (a real VAE has far more latent numbers). The autoencoder's clusters are small islands with
# empty sea between them: that is what "holes" means here, and prior samples that fall in the sea decode to
# washed-out blends (distance 0.22). The VAE's codes are not packed tighter around the origin (their std is 1.0,
# the prior's; the autoencoder's happen to be 0.7): its clusters are stretched into strips and the gaps between
# them are narrower, so more prior samples land on something that decodes to a plausible picture (distance 0.13).
# The KL did not make the codes fill N(0, I) perfectly, and a few strips stick out beyond 2σ.

# %% [markdown]
# ## 2. The KL divergence
#
# KL(P‖Q) = ∫ p(x) log(p(x)/q(x)) dx = E_{x~P}[log p(x) − log q(x)]: how many extra nats it costs, on average, to
# describe draws from P with a code built for Q. For two 1-D Gaussians the integral has a closed form,
#
# KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) = log(σ₂/σ₁) + (σ₁² + (μ₁ − μ₂)²) / (2σ₂²) − ½,
#
# and the expectation can always be estimated by **Monte Carlo**: draw x from P and average the log ratio.
# We check both on the lecture's two pairs.

# %%
def kl_gauss(m1, s1, m2, s2):
    """KL(N(m1, s1^2) || N(m2, s2^2)) in closed form."""
    return math.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5


def log_normal(x, m, s):
    return -0.5 * math.log(2 * math.pi) - math.log(s) - (x - m) ** 2 / (2 * s ** 2)


def kl_monte_carlo(m1, s1, m2, s2, n=200_000, seed=0):
    x = m1 + s1 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return float((log_normal(x, m1, s1) - log_normal(x, m2, s2)).mean())


pairs = [(0.0, 1.0, 1.0, 3.0), (-4.0, 3.1, -4.0, 3.0)]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
xs = np.linspace(-14, 10, 600)
for ax, (m1, s1, m2, s2) in zip(axes, pairs):
    exact, mc = kl_gauss(m1, s1, m2, s2), kl_monte_carlo(m1, s1, m2, s2)
    reverse = kl_gauss(m2, s2, m1, s1)
    print(f"P=N({m1}, {s1}^2), Q=N({m2}, {s2}^2): KL(P||Q) closed {exact:.5f}, Monte Carlo {mc:.5f}; KL(Q||P) {reverse:.5f}")
    assert abs(exact - mc) < 0.01 * max(exact, 0.01)
    assert abs(exact - reverse) > 0.03 * exact    # not symmetric
    ax.plot(xs, np.exp(log_normal(xs, m1, s1)), label=f"p: N({m1:g}, {s1:g}²)")
    ax.plot(xs, np.exp(log_normal(xs, m2, s2)), label=f"q: N({m2:g}, {s2:g}²)")
    ax.set_title(f"KL(p‖q) = {exact:.5f}, KL(q‖p) = {reverse:.5f}")
    ax.legend()
save_figure(fig, "03_kl_pairs.png")
assert kl_gauss(1.5, 0.7, 1.5, 0.7) == 0.0      # zero when P = Q ...
grid_kl = [kl_gauss(m, s, 0, 1) for m in np.linspace(-2, 2, 21) for s in np.linspace(0.25, 3, 12)]
assert min(grid_kl) == 0.0 and sum(k < 1e-12 for k in grid_kl) == 1   # ... and only then (on this grid)

# %% [markdown]
# The second pair is almost the same distribution (σ 3.1 vs 3) and its KL is about 0.001 nats (and 5% different
# in the other direction), while a shift of
# the mean by 1 and a threefold wider Q cost 0.71 nats. Note the asymmetry: KL(P‖Q) ≠ KL(Q‖P), so the KL is
# not a distance in the metric sense; it is ≥ 0 (Gibbs' inequality) and zero only when P = Q.
#
# ## 3. The ELBO, step by step
#
# **Why "latent"?** x is *observed*: the pixels we have. z is *latent*, hidden: the causes we never see directly
# (which shape, which colour, where), of which the image is only a projection. Plato's prisoners in the cave see
# shadows on a wall and must infer the objects that cast them; an encoder does the same inference, from pixels
# back to causes. A latent-variable model says: draw z ~ p(z), then x ~ p_θ(x|z). The likelihood of an image is
# p_θ(x) = ∫ p_θ(x, z) dz, an integral over every latent: intractable for a neural decoder. Bayes would give
# p_θ(x) = p_θ(x, z) / p_θ(z|x) for any z, but the true posterior p_θ(z|x) needs p_θ(x) itself: a chicken and egg
# problem. So we bring in an *approximate* posterior q_φ(z|x) (the encoder) and rewrite log p_θ(x):
#
# | step | expression | why |
# |---|---|---|
# | 1 | log p_θ(x) = log p_θ(x) · ∫ q_φ(z\|x) dz | multiply by 1: a density integrates to 1 |
# | 2 | = ∫ q_φ(z\|x) log p_θ(x) dz = E_q[log p_θ(x)] | log p_θ(x) does not depend on z; definition of expectation |
# | 3 | = E_q[log (p_θ(x, z) / p_θ(z\|x))] | chain rule: p(x, z) = p(z\|x) p(x) |
# | 4 | = E_q[log (p_θ(x, z) q_φ(z\|x) / (q_φ(z\|x) p_θ(z\|x)))] | multiply by 1 = q/q inside the log |
# | 5 | = E_q[log (p_θ(x, z) / q_φ(z\|x))] + E_q[log (q_φ(z\|x) / p_θ(z\|x))] | log of a product = sum of logs |
# | 6 | = **ELBO** + KL(q_φ(z\|x) ‖ p_θ(z\|x)) | definition of the KL divergence |
#
# The KL term is ≥ 0, so log p_θ(x) ≥ ELBO: the ELBO is an **evidence lower bound**, tight exactly when q equals the
# true posterior (like a salary: total pay = base + a bonus that is never negative, so total ≥ base).
# Splitting p_θ(x, z) = p_θ(x|z) p(z) inside the ELBO gives the form we train with (Kingma & Welling, eq. 3):
# ELBO = E_q[log p_θ(x|z)] − KL(q_φ(z|x) ‖ p(z)): reconstruct well, stay close to the prior.
#
# **Numeric check.** In a *linear-Gaussian* model everything is known in closed form: z ~ N(0, 1),
# x|z ~ N(wz + b, s²), so p(x) = N(b, w² + s²) and the true posterior is N(w(x − b)/(w² + s²), s²/(w² + s²)).
# We check identity 6 for a deliberately wrong q, and that the bound is tight at the true posterior.

# %%
w, b, s, x_obs = 2.0, 0.5, 0.8, 3.0
log_px = log_normal(x_obs, b, math.sqrt(w ** 2 + s ** 2))                    # exact evidence
post_mean, post_std = w * (x_obs - b) / (w ** 2 + s ** 2), math.sqrt(s ** 2 / (w ** 2 + s ** 2))


def elbo_monte_carlo(q_mean, q_std, n=400_000, seed=0):
    """E_q[log p(x, z) - log q(z)] by sampling z ~ q."""
    z = q_mean + q_std * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    log_joint = log_normal(x_obs, w * z + b, s) + log_normal(z, 0.0, 1.0)
    return float((log_joint - log_normal(z, q_mean, q_std)).mean())


q_mean, q_std = 0.5, 0.6                                                      # a wrong guess
elbo = elbo_monte_carlo(q_mean, q_std)
gap = kl_gauss(q_mean, q_std, post_mean, post_std)
print(f"log p(x) = {log_px:.4f};  ELBO = {elbo:.4f};  KL(q || p(z|x)) = {gap:.4f};  ELBO + KL = {elbo + gap:.4f}")
assert abs(elbo + gap - log_px) < 5e-3 and elbo < log_px
assert abs(elbo_monte_carlo(post_mean, post_std) - log_px) < 1e-9            # q = true posterior: the bound is tight

means = np.linspace(-0.5, 2.5, 61)
fig, ax = plt.subplots(figsize=(6.5, 3.2))
ax.plot(means, [elbo_monte_carlo(m, post_std, n=20_000) for m in means], label="ELBO (q = N(m, σ_post²))")
ax.axhline(log_px, color="k", ls="--", label="log p(x)")
ax.axvline(post_mean, color="gray", ls=":", label="true posterior mean")
ax.set(xlabel="mean m of q", ylabel="nats", title="the ELBO touches log p(x) only at the true posterior")
ax.legend()
save_figure(fig, "03_elbo_bound.png")
plt.show()

# %% [markdown]
# ### Climbing the ELBO
#
# Training *maximises* the ELBO: step the parameters **along** its gradient (gradient ascent). Optimisers are
# written to minimise, so in practice we descend on the loss Q = −ELBO, with the (stochastic) gradient-descent
# update w := w − η ∇Q(w), the gradient averaged over a minibatch. Kingma & Welling's recipe for the gradient:
# write the sample as a deterministic function of the parameters and outside noise, z = g(φ, ε) = μ + σ ε with
# ε ~ N(0, 1), and average the one-sample estimate L̃ = log p(x, z) − log q_φ(z|x) over a few ε. Section 4 shows
# why this beats the alternative. Here φ = (μ, log σ²) of q starts at the wrong guess above, and SGD moves q onto
# the true posterior, where the ELBO meets log p(x):

# %%
phi = torch.tensor([q_mean, math.log(q_std ** 2)], dtype=torch.float64, requires_grad=True)  # (mu, log sigma^2)
opt = torch.optim.SGD([phi], lr=0.02)                             # w := w - lr * grad
eps_gen = torch.Generator().manual_seed(0)
elbo_hats, path = [], [(q_mean, q_std)]
for step in range(1500):
    eps = torch.randn(16, generator=eps_gen, dtype=torch.float64)  # a minibatch of 16 noise draws
    mu, logvar = phi
    z = mu + torch.exp(0.5 * logvar) * eps                       # z = g(phi, eps): reparameterised
    log_q = -0.5 * math.log(2 * math.pi) - 0.5 * logvar - 0.5 * eps ** 2   # log N(z; mu, sigma^2)
    elbo_hat = (log_normal(x_obs, w * z + b, s) + log_normal(z, 0.0, 1.0) - log_q).mean()   # average of L~
    opt.zero_grad()
    (-elbo_hat).backward()                                        # ascend the ELBO = descend on -ELBO
    opt.step()
    elbo_hats.append(elbo_hat.item())
    path.append((phi[0].item(), math.exp(0.5 * phi[1].item())))
fit_mean, fit_std = path[-1]
print(f"q after SGD: mean {fit_mean:.3f}, std {fit_std:.3f} | true posterior: mean {post_mean:.3f}, std {post_std:.3f}")
print(f"ELBO over the last 100 steps {np.mean(elbo_hats[-100:]):.4f} vs log p(x) {log_px:.4f}")
assert abs(fit_mean - post_mean) < 0.05 and abs(fit_std - post_std) < 0.03
assert abs(np.mean(elbo_hats[-100:]) - log_px) < 0.02 < log_px - np.mean(elbo_hats[:10])

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].semilogx(np.arange(1, len(elbo_hats) + 1), elbo_hats, lw=0.6, label="minibatch ELBO estimate")
axes[0].axhline(log_px, color="k", ls="--", label="log p(x)")
axes[0].set(xlabel="SGD step", ylabel="nats", ylim=(log_px - 3, log_px + 0.5), title="climbing the ELBO")
axes[0].legend()
axes[1].plot(*zip(*path), lw=1)
axes[1].plot(q_mean, q_std, "o", label="start (the wrong guess)")
axes[1].plot(post_mean, post_std, "k*", ms=12, label="true posterior")
axes[1].set(xlabel="mean of q", ylabel="std of q", title="the path of q")
axes[1].legend()
save_figure(fig, "03_elbo_sgd.png")
plt.show()

# %% [markdown]
# ## 4. Gradients through a sample: score function vs reparameterisation
#
# To train the encoder we need ∇_φ E_{z~q_φ}[f(z)]. The sampling step blocks backpropagation. Two estimators:
#
# * **score function** (REINFORCE): ∇_φ E_q[f(z)] = E_q[f(z) ∇_φ log q_φ(z)]. Unbiased and needs no gradient of f,
#   but f(z) multiplies a noisy factor and its variance is large.
# * **reparameterisation**: write z = μ + σ·ε with ε ~ N(0, 1) drawn *outside* the model; then
#   ∇_φ E_ε[f(μ + σε)] = E_ε[∇_φ f(μ + σε)], an ordinary backprop through f.
#
# Both estimate the same number. We measure their variance for f(z) = (z − 3)², q = N(μ = 1, σ = 0.5), gradient with
# respect to μ (true value 2(μ − 3) = −4), averaging L samples per estimate.

# %%
mu0, sigma0, target = 1.0, 0.5, 3.0
true_grad = 2 * (mu0 - target)
f = lambda z: (z - target) ** 2  # noqa: E731


def estimates(L, repeats=2000, seed=0):
    """``repeats`` independent L-sample gradient estimates of d/dmu E[f(z)] with each estimator."""
    mu = torch.full((repeats, 1), mu0, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(repeats, L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = mu + sigma0 * eps                                            # reparameterised: gradient flows through z
    (reparam,) = torch.autograd.grad(f(z).mean(1).sum(), mu)
    z_blocked = z.detach()                                           # score function: no gradient through f
    log_q = -((z_blocked - mu) ** 2) / (2 * sigma0 ** 2)             # log N(z; mu, sigma^2) + const
    (score,) = torch.autograd.grad((f(z_blocked) * log_q).mean(1).sum(), mu)
    return score.squeeze(1), reparam.squeeze(1)


Ls = [1, 4, 16, 64, 256]
stats = {L: estimates(L) for L in Ls}
var_score = [float(stats[L][0].var()) for L in Ls]
var_reparam = [float(stats[L][1].var()) for L in Ls]
for L, vs, vr in zip(Ls, var_score, var_reparam):
    print(f"L={L:>3}: mean score {float(stats[L][0].mean()):+.2f}, reparam {float(stats[L][1].mean()):+.2f} "
          f"(true {true_grad:+.0f}); variance score {vs:8.3f}, reparam {vr:.4f}, ratio {vs / vr:.0f}x")
    assert abs(float(stats[L][1].mean()) - true_grad) < 0.05 and abs(float(stats[L][0].mean()) - true_grad) < 1.0
    assert vs > 100 * vr                                             # two orders of magnitude
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.loglog(Ls, var_score, "o-", label="score function")
ax.loglog(Ls, var_reparam, "s-", label="reparameterisation")
ax.set(xlabel="samples L per estimate", ylabel="variance of the gradient estimate",
       title="same gradient, very different noise")
ax.legend()
save_figure(fig, "03_gradient_variance.png")
plt.show()

# %% [markdown]
# Both fall as 1/L (they are averages), but the score-function estimator is about 126 times noisier at every L:
# two orders of magnitude, and the gap grows when f is large far from its minimum. That is why the VAE samples as
# z = μ + σ·ε: a tiny change of the encoder's μ or σ moves z smoothly, and backpropagation can follow it.
#
# ## 5. Why the encoder outputs log σ²
#
# A variance must be positive; a linear layer outputs any real number. Predicting **log σ²** and exponentiating
# makes every output valid, and spreads tiny and huge variances evenly (σ² = 10⁻⁶ and 1 are just −13.8 and 0).
# Predicting σ directly needs a clamp, and one gradient step can push it through zero. (The sample z = μ + σε would
# still be a sample for σ < 0, since ε is symmetric; what breaks is everything that reads σ as a standard deviation:
# the KL's log σ, and σ = 0 on the way there.)

# %%
sigma_direct, logvar = torch.tensor(0.3, requires_grad=True), torch.tensor(math.log(0.3 ** 2), requires_grad=True)
loss_direct = sigma_direct ** 2 * 20                   # some loss that wants a small variance
loss_log = torch.exp(logvar) * 20
loss_direct.backward(); loss_log.backward()
lr = 0.1
sigma_next = sigma_direct.item() - lr * sigma_direct.grad.item()
sigma_via_logvar = math.exp(0.5 * (logvar.item() - lr * logvar.grad.item()))
print(f"after one step: sigma = {sigma_next:+.2f} (invalid), via logvar: sigma = {sigma_via_logvar:.3f} (still valid)")
assert sigma_next < 0 < sigma_via_logvar

# %% [markdown]
# Keep stepping, with the same loss and learning rate. Parametrised directly, each step multiplies σ by
# 1 − lr · 40 = −3: a step size above 1/40 already flips its sign, and above 2/40 (ordinary gradient descent
# diverging) it also grows. Through log σ² every iterate is a valid σ, and it shrinks towards 0 without
# crossing it (slowly: 0.30 → 0.20 in 7 steps, printed below the figure):

# %%
steps = range(8)
direct, via_log = [0.3], [math.log(0.3 ** 2)]
for _ in steps[1:]:
    direct.append(direct[-1] - lr * 40 * direct[-1])                  # d(20 sigma^2)/d sigma = 40 sigma
    via_log.append(via_log[-1] - lr * 20 * math.exp(via_log[-1]))     # d(20 exp(lv))/d lv = 20 sigma^2
sigma_from_log = [math.exp(0.5 * lv) for lv in via_log]
fig, ax = plt.subplots(figsize=(6.4, 4.2))
ax.axhspan(-1e4, 0, color="#f4cccc", alpha=0.6, label="σ < 0: not a standard deviation")
ax.plot(steps, direct, "o-", color="C3", label="σ as the output (σ ← σ − lr · 40σ)")
ax.plot(steps, sigma_from_log, "s-", color="C0", label="log σ² as the output, σ = exp(½ log σ²)")
ax.set_yscale("symlog", linthresh=0.01)
ax.set_ylim(-1e4, 1e4)
ax.set(xlabel="gradient step (loss 20 σ², lr 0.1)", ylabel="σ (symmetric log scale)",
       title="the same loss, two parametrisations")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1, frameon=False)
ax.annotate(f"σ = {sigma_from_log[-1]:.2f}", (steps[-1], sigma_from_log[-1]), textcoords="offset points",
            xytext=(-8, 10), ha="right", fontsize=8, color="C0")
fig.tight_layout()
save_figure(fig, "03_logvar_steps.png")
plt.show()
print("sigma via log sigma^2, step by step:", " ".join(f"{v:.3f}" for v in sigma_from_log))
assert all(s > 0 for s in sigma_from_log) and all(b < a for a, b in zip(sigma_from_log, sigma_from_log[1:]))
assert sum(d < 0 for d in direct) >= 3 and abs(direct[-1]) > 100 * abs(direct[0])

# %% [markdown]
# ## 6. sdlearn holds the same: `sdlearn.vae.VAE` (= diffusers' `AutoencoderKL`)
#
# Stable Diffusion's autoencoder is a convolutional VAE: resnet blocks and stride-2 convolutions shrink the image
# f = 2³ = 8 times per side, a self-attention block mixes the lowest resolution, and the encoder's last conv
# outputs 2 × 4 channels: the mean and the log-variance of q(z|x). `sdlearn.vae` writes it out in ~300 lines with
# the same parameter names as diffusers, so the same weights give the same numbers. Its posterior's `.kl()` is
# the closed form of section 2, summed over latent elements, against N(0, I).

# %%
from diffusers import AutoencoderKL

from sdlearn.configs import SD_VAE
from sdlearn.vae import VAE, DiagonalGaussian

config = {**SD_VAE, "block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8}  # SD geometry, narrow
torch.manual_seed(0)
theirs = AutoencoderKL(**config).eval()
ours = VAE.from_config(dict(theirs.config)).eval()
ours.load_state_dict(theirs.state_dict())                       # same keys: strict load works
x = to_tensor(render("star", "red", "small", "top left", seed=0)).unsqueeze(0)   # (1, 3, 64, 64)
with torch.no_grad():
    post_ours, post_theirs = ours.encode(x), theirs.encode(x).latent_dist
    diff = (ours.decode(post_ours.mean) - theirs.decode(post_theirs.mean).sample).abs().max()
print("latent", tuple(post_ours.mean.shape), "| max |difference| of the decoded images:", f"{float(diff):.0e}")
assert diff < 1e-5
m, lv = post_ours.mean, post_ours.logvar
by_hand = sum(kl_gauss(float(a), math.exp(0.5 * float(c)), 0.0, 1.0) for a, c in zip(m.flatten(), lv.flatten()))
assert abs(by_hand - float(post_ours.kl())) < 1e-3 * max(1.0, by_hand)

# %% [markdown]
# ### SD's VAE and its scale factor
#
# With SD's config (channels 128-256-512-512, two resnets per block) the model has 83.7M parameters and maps
# 512×512×3 = 786,432 numbers to 64×64×4 = 16,384: 48× fewer. We count the parameters without allocating them
# (on the `meta` device).
#
# The latents of the trained SD VAE have a standard deviation of about 5.5. Diffusion adds noise of std 1, so the
# latents are multiplied by `scaling_factor` = 1 / std before diffusion and divided by it before decoding; the
# authors measured the std on a batch of training latents: 1 / 5.49 ≈ 0.18215. We derive our Shapes VAE's factor
# the same way.

# %%
with torch.device("meta"):
    sd_vae = VAE.from_config(SD_VAE)
n_params = sum(p.numel() for p in sd_vae.parameters())
f_sd = sd_vae.downsample_factor
print(f"SD VAE: {n_params / 1e6:.1f}M parameters, f = {f_sd}; 512x512x3 -> {512 // f_sd}x{512 // f_sd}x4, "
      f"{512 * 512 * 3 // (64 * 64 * 4)}x fewer numbers; 1/0.18215 = {1 / 0.18215:.2f}")
assert f_sd == 8 and round(n_params / 1e6, 1) == 83.7

# %% [markdown]
# A **shape trace** through SD's encoder, again on the `meta` device (shapes, no memory, no time). Each of the first
# three blocks ends in a stride-2 3×3 convolution (padded by one pixel on the right and bottom only) that halves
# the side; the fourth keeps 64×64; the mid-block's self-attention mixes all 64×64 = 4,096 positions; the last
# convolutions produce 8 channels, the mean and log-variance of 4 latent channels.

# %%
trace = []
enc = sd_vae.encoder
stages = ([("conv_in", enc.conv_in)] + [(f"down_blocks[{i}]", b) for i, b in enumerate(enc.down_blocks)]
          + [("mid_block (self-attention)", enc.mid_block), ("conv_out", enc.conv_out), ("quant_conv", sd_vae.quant_conv)])
hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: trace.append((name, tuple(out.shape))))
         for name, m in stages]
with torch.no_grad():
    post_sd = sd_vae.encode(torch.empty(1, 3, 512, 512, device="meta"))
for h in hooks:
    h.remove()
print(f"{'image x':28s} (1, 3, 512, 512)")
for name, shape in trace:
    print(f"{name:28s} {shape}")
print(f"{'mean, logvar of q(z|x)':28s} {tuple(post_sd.mean.shape)} each; z ~ q(z|x), times 0.18215, goes to the UNet")
assert [shape for _, shape in trace] == [(1, 128, 512, 512), (1, 128, 256, 256), (1, 256, 128, 128), (1, 512, 64, 64),
                                         (1, 512, 64, 64), (1, 512, 64, 64), (1, 8, 64, 64), (1, 8, 64, 64)]

# %% [markdown]
# ## 7. The bundled Shapes VAE
#
# The tiny text-to-image model in this course uses a VAE with SD's geometry, 64×64×3 → 8×8×4, trained on Shapes
# renders by `python -m sdlearn train vae --seed 0` (foreground-weighted L1 + MSE with an edge term, KL weight 1e-6;
# 3,000 steps of 16 images: about 40 minutes on 2 CPU cores, 2 minutes on a GPU).
# It ships in `sdlearn/assets/tiny/vae/` and loads in sdlearn and diffusers alike. We derive its scale factor from
# 400 renders and compare with the one stored in its config.

# %%
from sdlearn.evaluate import foreground, read_attributes
from sdlearn.evaluate import psnr as evaluate_psnr
from sdlearn.train.vae import ShapesStream

TINY_VAE = Path(__import__("sdlearn").__file__).parent / "assets" / "tiny" / "vae"
vae = VAE.from_pretrained(TINY_VAE)
train_like = torch.stack([ShapesStream(400, seed=0)[i] for i in range(400)])
with torch.no_grad():
    z = vae.encode(train_like).sample(torch.Generator().manual_seed(0))          # (400, 4, 8, 8)
derived = 1 / float(z.std())
print(f"latent std {float(z.std()):.2f} -> scaling factor {derived:.3f}; stored in config.json: {vae.scaling_factor}")
assert abs(derived - vae.scaling_factor) / vae.scaling_factor < 0.05
print("scaled latents: std", round(float((z * vae.scaling_factor).std()), 2))

# %% [markdown]
# **How this squares with section 1.** SD's VAE, and ours, are VAEs in name more than in spirit: the KL term is
# weighted by about 10⁻⁶ (LDM's "KL-reg"), just enough to stop the latents from drifting to huge values. So q(z|x)
# is nowhere near N(0, I): the latents have a standard deviation of 2.93 here and about 5.5 in SD, and nobody ever
# decodes a sample z ~ N(0, I). The job that the prior N(0, I) did in section 1, saying which latents are
# plausible, is done by the **diffusion model**: it *is* the learned prior over latents, and the VAE only has to
# compress and decompress well. The scale factor exists because of this: the latents are far from unit variance,
# and diffusion's noise schedule assumes data of std about 1, so they are multiplied by 1/std first.

# %% [markdown]
# Reconstructions of renders the VAE never saw. The hard cases are small stars and small squares: their points
# and corners are a pixel or two, and one latent pixel covers 8×8 image pixels. We read the attributes back from
# each reconstruction with `sdlearn.evaluate.read_attributes` and compare with the original, and report the PSNR
# twice, as notebook 00 promised: over the whole image, where the flat background is easy and dominates, and
# over the shape's own pixels (`evaluate.psnr` with a foreground mask).

# %%
held = ShapesStream(40, seed=10_000, p_small=1.0)                       # small shapes only: the hard cases
x = torch.stack([held[i] for i in range(40)])
with torch.no_grad():
    posterior = vae.encode(x)
    x_hat = vae.decode(posterior.mode()).clamp(-1, 1)
psnr = 10 * torch.log10(4 / (x_hat - x).pow(2).mean())                 # peak 2 (range [-1, 1]): 10 log10(2^2 / MSE)
shape_mask = foreground(x)[0][:, None] > 0.5                            # (40, 1, 64, 64): the shape's pixels
psnr_shape = evaluate_psnr(x, x_hat, shape_mask)
same = [a == b for a, b in zip(read_attributes(x), read_attributes(x_hat))]
print(f"PSNR {float(psnr):.1f} dB on whole images, {psnr_shape:.1f} dB on the shapes alone "
      f"({float(shape_mask.float().mean()):.0%} of the pixels); attributes unchanged in {sum(same)}/{len(same)}")
assert abs(float(psnr) - evaluate_psnr(x, x_hat)) < 0.01 and psnr_shape < float(psnr)   # the flat background flatters
assert psnr > 30 and psnr_shape > 20 and sum(same) >= 38

fig, axes = plt.subplots(2, 10, figsize=(13, 3))
for c in range(10):
    for r, imgs in enumerate((x, x_hat)):
        axes[r, c].imshow(to_pil(imgs[c]))
        axes[r, c].axis("off")
axes[0, 0].set_title("original", loc="left")
axes[1, 0].set_title("reconstruction", loc="left")
save_figure(fig, "03_shapes_reconstructions.png")
plt.show()

# %% [markdown]
# What does the latent look like? Each of the 4 channels is an 8×8 image; the shape is visible in them as a
# blob in the right place, and the channels encode colour and shape differently.

# %%
fig, axes = plt.subplots(3, 5, figsize=(11, 6.6))
for c in range(4):
    lim = float(posterior.mean[:3, c].abs().max())                 # per channel, symmetric: 0 is white
    for r in range(3):
        im = axes[r, c + 1].imshow(posterior.mean[r, c].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0, c + 1].set_title(f"channel {c}")
    fig.colorbar(im, ax=axes[:, c + 1], orientation="horizontal", shrink=0.9, pad=0.04, label="latent value")
for r in range(3):
    axes[r, 0].imshow(to_pil(x[r]))
    for ax in axes[r]:
        ax.set_xticks([]); ax.set_yticks([])
axes[0, 0].set_title("image (64×64)")
fig.suptitle("the 4 latent channels (8×8 each, mean of q(z|x), unscaled) of three held-out images")
save_figure(fig, "03_latent_channels.png")
plt.show()

# %% [markdown]
# **Interpolation in latent space.** Decoding points on the straight line between two latents. The VAE was never
# asked to make the in-between latents meaningful, and it shows: the path cross-fades rather than morphs, one reason
# why the *diffusion* model, not the VAE, is what generates images.

# %%
a = to_tensor(render("circle", "red", "large", "top left", seed=1)).unsqueeze(0)
b = to_tensor(render("square", "blue", "large", "bottom right", seed=2)).unsqueeze(0)
with torch.no_grad():
    za, zb = vae.encode(a).mode(), vae.encode(b).mode()
    ts = torch.linspace(0, 1, 7)
    path = vae.decode(torch.cat([(1 - t) * za + t * zb for t in ts])).clamp(-1, 1)
fig, axes = plt.subplots(1, 7, figsize=(12, 2))
for ax, img, t in zip(axes, path, ts):
    ax.imshow(to_pil(img)); ax.set_title(f"t = {t:.2f}"); ax.axis("off")
save_figure(fig, "03_latent_interpolation.png")
assert (path[0] - a[0]).abs().mean() < 0.02 and (path[-1] - b[0]).abs().mean() < 0.02

# %% [markdown]
# ## 8. How much does f cost? (Figure 1 of the LDM paper, small)
#
# `benchmarks/bench_vae_photos.py` trains three small KL-VAEs with f = 4, 8 and 16 (4 latent channels each) on random
# crops of three photos and measures PSNR on a fourth, held-out photo. Less downsampling keeps more detail, but
# leaves the diffusion model more numbers to handle: LDM chose f = 4 to 8 as the sweet spot, SD f = 8.
#
# The paper's Figure 1 (pictures from DIV2K at 512² px; numbers computed on ImageNet-val) reports PSNR and **R-FID**, the Fréchet
# Inception distance between the set of reconstructions and the set of originals (lower is more realistic).
# Its three autoencoders disagree between the two measures: VQGAN (f = 16) loses more pixels than DALL-E's f = 8
# model yet looks far more real, because its adversarial loss keeps textures sharp where exact detail is gone.
# (Our stored result, made on a GPU in about 5 minutes, ships with sdlearn and is printed below the paper's.)

# %%
import json

from sdlearn.viz import packaged_figure

paper = [("LDM's own", 4, 27.4, 0.58), ("DALL-E", 8, 22.8, 32.01), ("VQGAN", 16, 19.9, 4.98)]
for name, f_, db, rfid in paper:
    print(f"paper  f = {f_:>2} ({name:12s}): PSNR {db} dB, R-FID {rfid}")
rows = json.loads(packaged_figure("03_photo_f.json").read_text())   # written by benchmarks/bench_vae_photos.py
for r in rows:
    print(f"ours   f = {r['f']:>2}: latent {r['latent']:>8}, compression {r['compression']:>3}x, "
          f"held-out PSNR {r['psnr_held_out']} dB")
assert [r["psnr_held_out"] for r in rows] == sorted((r["psnr_held_out"] for r in rows), reverse=True)

# %% [markdown]
# Drawn as separate points, not a line: the paper's three are *different* autoencoders (different losses,
# codebooks, data), so f is not the only thing that changes between them. Ours share one recipe and differ in f
# (and so in size), which makes their trend a fairer picture of what f alone costs.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for name, f_, db, rfid in paper:
    axes[0].plot(f_, db, "s", color="C0", ms=8, label="LDM paper (3 different autoencoders)" if f_ == 4 else None)
    axes[0].annotate(name, (f_, db), textcoords="offset points", xytext=(8, 4), fontsize=8)
    axes[1].plot(f_, rfid, "s", color="C0", ms=8)
    axes[1].annotate(name, (f_, rfid), textcoords="offset points", xytext=(8, 4), fontsize=8)
for r in rows:
    axes[0].plot(r["f"], r["psnr_held_out"], "o", color="C1", ms=8, label="ours (one recipe, f varied)" if r["f"] == 4 else None)
    axes[0].annotate(f"{r['compression']}x fewer numbers", (r["f"], r["psnr_held_out"]), textcoords="offset points",
                     xytext=(8, -10), fontsize=8, color="C1")
axes[0].set(xscale="log", xlabel="downsampling factor f (per side)", ylabel="PSNR (dB, higher = more detail)",
            title="PSNR (paper: ImageNet-val; ours: one held-out photo)", xlim=(3, 40), ylim=(11, 29))
axes[1].set(xscale="log", xlabel="downsampling factor f (per side)", ylabel="R-FID (lower = more realistic)",
            title="paper's R-FID (no line: different models)", xlim=(3, 40), ylim=(-2, 36))
for ax in axes:
    ax.set_xticks([4, 8, 16], ["4", "8", "16"])
    ax.minorticks_off()
axes[0].legend(fontsize=8, loc="lower left")
fig.tight_layout()
save_figure(fig, "03_photo_f.png")
plt.show()

# %% [markdown]
# ## Exercises
#
# **1.** Compute KL(N(2, 0.5²) ‖ N(0, 1)) with the closed form of section 2 (a float, in nats).

# %%
# BEGIN SOLUTION
answer_1 = kl_gauss(2.0, 0.5, 0.0, 1.0)
# END SOLUTION
# STUB: answer_1 = None   # a float: KL(N(2, 0.5^2) || N(0, 1)) in nats
answer_1

# %%
from sdlearn.exercises import check

zs = np.linspace(-8.0, 12.0, 400_001)                          # the integral of section 2, on a fine grid
p_z = np.exp(log_normal(zs, 2.0, 0.5))
kl_numeric = float(np.sum(p_z * (log_normal(zs, 2.0, 0.5) - log_normal(zs, 0.0, 1.0))) * (zs[1] - zs[0]))
ok = check("Exercise 1", answer_1, expected=kl_numeric,
           hint="plug m1 = 2, s1 = 0.5, m2 = 0, s2 = 1 into the closed form of section 2; "
                "kl_monte_carlo(2.0, 0.5, 0.0, 1.0) gives a noisy value to compare with")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **2.** A VAE's KL term need not be against N(0, I). Write `kl_diagonal(mean_q, logvar_q, mean_p, logvar_p)`:
# KL(q ‖ p) for two diagonal Gaussians given by means and log-variances (tensors of shape (B, C, H, W)),
# summed over C, H, W, one value per batch item. Against mean_p = 0, logvar_p = 0 it must equal
# `DiagonalGaussian.kl()`. (Start from the 1-D closed form of section 2: what are log(s2 / s1) and s1² / s2² in
# terms of log-variances?)

# %%
def kl_diagonal(mean_q, logvar_q, mean_p, logvar_p):
    # BEGIN SOLUTION
    var_q, var_p = logvar_q.exp(), logvar_p.exp()
    per_element = 0.5 * (logvar_p - logvar_q + (var_q + (mean_q - mean_p) ** 2) / var_p - 1)
    return per_element.sum(dim=(1, 2, 3))                          # (B, C, H, W) -> (B,)
    # END SOLUTION
    # STUB: return None   # a tensor of shape (B,)


# %%
def kl_diagonal_ok(fn):
    gen = torch.Generator().manual_seed(5)
    mq, lq, mp, lp = (torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64) for _ in range(4))
    got = fn(mq, lq, mp, lp)
    if not isinstance(got, torch.Tensor) or got.shape != (2,):
        return "kl_diagonal must return a tensor with one value per batch item, shape (2,)"
    q_dist, p_dist = torch.distributions.Normal(mq, (0.5 * lq).exp()), torch.distributions.Normal(mp, (0.5 * lp).exp())
    want = torch.distributions.kl_divergence(q_dist, p_dist).sum(dim=(1, 2, 3))
    if not torch.allclose(got, want, rtol=1e-6):
        return f"got {got.tolist()}, but torch.distributions says {want.tolist()}"
    posterior = DiagonalGaussian(torch.cat([mq, lq], dim=1))
    zeros = torch.zeros_like(mq)
    return torch.allclose(fn(mq, lq, zeros, zeros), posterior.kl()) or "against N(0, I) it differs from .kl()"


ok = check("Exercise 2", kl_diagonal, test=kl_diagonal_ok,
           hint="with s = exp(logvar / 2), log(s2 / s1) = (logvar_p - logvar_q) / 2; apply section 2's closed form "
                "elementwise to the tensors, then .sum(dim=(1, 2, 3))")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **3.** Stable Diffusion v1 generates a 768×512 (height × width) image. What shape is the latent the UNet denoises
# (batch 1), and how many numbers does it hold?

# %%
# BEGIN SOLUTION
answer_3 = (1, 4, 768 // 8, 512 // 8)
n_latent = answer_3[1] * answer_3[2] * answer_3[3]
# END SOLUTION
# STUB: answer_3 = None   # a tuple (batch, channels, height, width)
# STUB: n_latent = None   # an int: how many numbers the latent holds

# %%
with torch.no_grad():
    probe = sd_vae.encode(torch.empty(1, 3, 768, 512, device="meta")).mean   # SD's VAE on the meta device: shapes only
ok = check("Exercise 3", (answer_3, n_latent), expected=(tuple(probe.shape), probe.numel()),
           hint="f = 8 per side and 4 latent channels; the number of numbers is the product of the shape")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **4.** Section 1 said that the autoencoder's code space has *holes*: codes that decode to no image like the
# data. Find the deepest one. Among the codes inside the prior's 2σ circle (‖z‖ ≤ 2), find a code `hole` (a
# tensor of shape (2,)) that the **autoencoder** decodes as far as possible from every real image, measured by
# section 1's `nearest_distance`. A search over a grid of codes is fine. The check accepts a code at least 90%
# as deep as the deepest it finds itself, then looks at the same disk through the VAE's decoder.

# %%
# BEGIN SOLUTION
side = torch.linspace(-2, 2, 41)
candidates = torch.cartesian_prod(side, side)                     # (1681, 2): a grid over the square
candidates = candidates[candidates.norm(dim=1) <= 2]              # keep the disk
with torch.no_grad():
    depth = nearest_distance(ae.dec(candidates))                  # how far each decoded code is from the data
hole = candidates[depth.argmax()]
# END SOLUTION
# STUB: hole = None   # a tensor of shape (2,): a code with norm <= 2 that ae.dec decodes far from every image

# %%
disk_side = torch.linspace(-2, 2, 61)
disk = torch.cartesian_prod(disk_side, disk_side)
disk = disk[disk.norm(dim=1) <= 2]                                # (2821, 2): the codes of the 2-sigma disk
with torch.no_grad():
    depth_ae, depth_vae = nearest_distance(ae.dec(disk)), nearest_distance(vae_2d.dec(disk))


def is_a_deep_hole(z):
    if not isinstance(z, torch.Tensor) or z.shape != (2,):
        return "hole must be a tensor of shape (2,)"
    if float(z.norm()) > 2 + 1e-6:
        return f"that code has norm {float(z.norm()):.2f}: stay inside the circle of radius 2"
    with torch.no_grad():
        d = float(nearest_distance(ae.dec(z[None].float())))
    return d >= 0.9 * float(depth_ae.max()) or f"it decodes {d:.2f} from the nearest image: there are deeper holes"


ok = check("Exercise 4", hole, test=is_a_deep_hole,
           hint="decode a grid of codes (torch.cartesian_prod of two torch.linspace(-2, 2, n)), keep those with "
                "norm <= 2, and take the one whose decoding has the largest nearest_distance")
# BEGIN SOLUTION
assert ok
print(f"deepest hole in the disk: autoencoder {float(depth_ae.max()):.2f}, VAE {float(depth_vae.max()):.2f}; "
      f"share of the disk decoding farther than 0.2 from any image: autoencoder {float((depth_ae > 0.2).float().mean()):.0%}, "
      f"VAE {float((depth_vae > 0.2).float().mean()):.0%}")
assert depth_vae.max() < depth_ae.max() and (depth_vae > 0.2).float().mean() < (depth_ae > 0.2).float().mean()
# END SOLUTION

# %% [markdown]
# **5.** The ELBO of section 3's linear-Gaussian model (z ~ N(0, 1), x | z ~ N(wz + b, s²) with w = 2, b = 0.5,
# s = 0.8, x = 3) has a closed form for any q = N(m, σ_q²); no sampling needed. Write `elbo_closed(m, sd)` as
# the two terms we train with: the **reconstruction** term E_q[log N(x; wz + b, s²)] minus **KL**(q ‖ N(0, 1)).
# (For the first, E_q[(x − wz − b)²] is a squared bias plus a variance; for the second, section 2's `kl_gauss`.)
# The check integrates the ELBO's definition numerically and compares both with the exact log p(x).

# %%
b_lin = 0.5   # section 3's b (the name b holds an image since section 7); w, s, x_obs are unchanged


def elbo_closed(m: float, sd: float) -> float:
    """ELBO(q) = E_q[log p(x | z)] - KL(q || p(z)) for q = N(m, sd^2), in nats."""
    # BEGIN SOLUTION
    expected_sq_error = (x_obs - w * m - b_lin) ** 2 + w ** 2 * sd ** 2     # E_q[(x - w z - b)^2]
    reconstruction = -0.5 * math.log(2 * math.pi * s ** 2) - expected_sq_error / (2 * s ** 2)
    return reconstruction - kl_gauss(m, sd, 0.0, 1.0)
    # END SOLUTION
    # STUB: return None


# %%
def elbo_by_quadrature(m, sd):
    """E_q[log p(x, z) - log q(z)], the definition, integrated on a grid of z (no closed form used)."""
    zs_ = np.linspace(m - 12 * sd, m + 12 * sd, 200_001)
    q_ = np.exp(log_normal(zs_, m, sd))
    integrand = q_ * (log_normal(x_obs, w * zs_ + b_lin, s) + log_normal(zs_, 0.0, 1.0) - log_normal(zs_, m, sd))
    return float(integrand.sum() * (zs_[1] - zs_[0]))


def is_the_elbo(fn):
    for m_, sd_ in [(0.5, 0.6), (-1.0, 1.0), (2.0, 0.1), (post_mean, post_std)]:
        got = fn(m_, sd_)
        if got is None:
            return "elbo_closed returned None"
        if got > log_px + 1e-6:
            return f"for q = N({m_:.2f}, {sd_:.2f}^2) it gives {got:.4f} > log p(x) = {log_px:.4f}: not a lower bound"
        want = elbo_by_quadrature(m_, sd_)
        if abs(got - want) > 1e-5:
            return f"for q = N({m_:.2f}, {sd_:.2f}^2) it gives {got:.4f}, but the definition integrates to {want:.4f}"
    return abs(fn(post_mean, post_std) - log_px) < 1e-6 or "at the true posterior the bound should be tight"


ok = check("Exercise 5", elbo_closed, test=is_the_elbo,
           hint="log N(x; wz + b, s^2) = -log(2 pi s^2) / 2 - (x - wz - b)^2 / (2 s^2); under z ~ N(m, sd^2), "
                "E[u^2] = (E u)^2 + Var u for u = x - wz - b, and Var u is not zero; the KL is kl_gauss(m, sd, 0, 1)")
# BEGIN SOLUTION
assert ok
print(f"ELBO at the wrong guess {elbo_closed(q_mean, q_std):.4f} <= log p(x) = {log_px:.4f} "
      f"= ELBO at the posterior {elbo_closed(post_mean, post_std):.4f}")
# END SOLUTION

# %% [markdown]
# **6.** The encoder outputs μ and log σ², and the sample is z = μ + exp(½ log σ²) · ε. Backpropagation needs
# ∂z/∂μ and ∂z/∂(log σ²). Work them out **by hand** (chain rule; no autograd) for the five noise draws below, as two
# tensors `dz_dmu` and `dz_dlogvar` of the same shape as `eps_6` (one derivative per sample). The check lets
# autograd differentiate z and compares.

# %%
mu_6, logvar_6 = 0.7, math.log(0.4 ** 2)                                           # q = N(0.7, 0.4^2)
eps_6 = torch.randn(5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
# BEGIN SOLUTION
dz_dmu = torch.ones_like(eps_6)                                    # z moves one for one with mu
dz_dlogvar = 0.5 * math.exp(0.5 * logvar_6) * eps_6               # d/dl exp(l / 2) = exp(l / 2) / 2, times eps
# END SOLUTION
# STUB: dz_dmu = None       # a tensor like eps_6: dz/dmu for each sample
# STUB: dz_dlogvar = None   # a tensor like eps_6: dz/d(log sigma^2) for each sample

# %%
mu_t = torch.tensor(mu_6, dtype=torch.float64, requires_grad=True)
logvar_t = torch.tensor(logvar_6, dtype=torch.float64, requires_grad=True)
z_6 = mu_t + torch.exp(0.5 * logvar_t) * eps_6                     # (5,): the reparameterised samples
rows_6 = [torch.autograd.grad(z_6[i], (mu_t, logvar_t), retain_graph=True) for i in range(len(eps_6))]
auto_mu = torch.stack([r[0] for r in rows_6])
auto_logvar = torch.stack([r[1] for r in rows_6])


def matches_autograd(answer):
    d_mu, d_logvar = answer
    for name, got, want in (("dz_dmu", d_mu, auto_mu), ("dz_dlogvar", d_logvar, auto_logvar)):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return f"{name} must be a tensor of shape {tuple(want.shape)}, like eps_6"
        if not torch.allclose(got.double(), want, rtol=1e-6):
            return f"{name} differs from what autograd finds"
    return True


ok = check("Exercise 6", (dz_dmu, dz_dlogvar), test=matches_autograd,
           hint="sigma = exp(logvar / 2), so d sigma / d logvar = sigma / 2; mu enters z plainly")
# BEGIN SOLUTION
assert ok
assert torch.allclose(dz_dlogvar, 0.5 * (z_6.detach() - mu_6))   # the same thing: half of the noise part of z
print("dz/dlogvar = (z - mu) / 2:", dz_dlogvar.numpy().round(3))
# END SOLUTION
