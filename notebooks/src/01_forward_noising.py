# %% [markdown]
# # 01 · Forward noising: how a diffusion model destroys an image
#
# {{COLAB_BADGE}}
#
# **What you will learn**
#
# 1. What a *generative model* is for: sampling from a **joint** distribution, not from separate marginals.
# 2. The **forward process**: a fixed Markov chain that adds a little Gaussian noise at each of T = 1000 steps, like ink spreading in water.
# 3. Why we never run that chain in practice: a **closed form** jumps from the clean image x₀ to any step t in one go, and we check numerically that both give the same distribution.
# 4. **Noise schedules** (linear, Stable Diffusion's scaled-linear, cosine) compared by how much signal they keep (ᾱ) and by their log signal-to-noise ratio, and where their "magic" constants come from.
# 5. That `sdlearn.schedules` holds exactly this, and agrees with diffusers.
#
# **Symbols used in notebooks 01 and 02**
#
# | symbol | meaning |
# |---|---|
# | T | number of noising steps (1000 here and in Stable Diffusion) |
# | t | a step, counted **1, …, T** as in Ho et al. 2020 (see the convention below) |
# | x₀ | a clean data point (an image scaled to [−1, 1]) |
# | x_t | the data after t noising steps; x_T is (almost) pure noise |
# | ε | standard Gaussian noise, ε ~ N(0, I); ε_θ(x_t, t) is a network's prediction of it |
# | β_t | the variance of the noise added at step t (the **schedule**) |
# | α_t | 1 − β_t, the fraction of the variance one step keeps |
# | ᾱ_t | α₁α₂⋯α_t, the fraction of the signal's variance left after t steps |
# | SNR(t) | signal-to-noise ratio ᾱ_t/(1 − ᾱ_t); log SNR is its logarithm |
# | σ_t | √((1 − ᾱ_t)/ᾱ_t), the noise level of the samplers (notebooks 02, 08) |
# | q | the fixed forward (noising) process: q(x_t \| x_{t−1}), q(x_t \| x₀) |
# | p_θ | the learned reverse process p_θ(x_{t−1} \| x_t), with parameters θ |
# | N(μ, σ²I) | a Gaussian with mean μ and covariance σ²I |
# | KL, ELBO | Kullback–Leibler divergence and evidence lower bound (primer in 02, full story in 03) |
# | score | in 02: ∇_x log q(x), the gradient of the log-density **with respect to the data point x**. Careful: notebook 03 §4 uses "score" for ∇_φ log q_φ(z), the gradient **with respect to the parameters φ** (the score-function or REINFORCE estimator). Same word, different variable. |
#
# **Timestep convention (01 and 02).** The mathematics, figure titles and printed step numbers count t = 1, …, T.
# Python arrays count from 0, so `beta[t - 1]` is β_t and `alpha_bar[t - 1]` is ᾱ_t. The schedulers of
# diffusers and sdlearn use these 0-based indices as their `timesteps`: scheduler timestep 999 is t = T = 1000.

# %% [setup]

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from sdlearn.data import sample_photo, to_pil, to_tensor
from sdlearn.device import seed_everything
from sdlearn.viz import save_figure

torch.set_num_threads(1)  # small tensors: one thread is as fast and repeatable
g = seed_everything(0)

# %% [markdown]
# ## 1. What is a generative model for?
#
# Suppose you need thousands of fake but believable people, each described by two numbers, (age, height).
# A statistics office can hand you the **marginal** distribution of each number on its own, say
# age ~ N(40, 30²) and height ~ N(120, 100²) (cm). Sampling the two independently gives pairs that
# are each plausible on their own axis but absurd together: toddlers two metres tall, negative heights.
# What we need is the **joint** distribution p(age, height), where height depends on age.
# A generative model learns such a joint distribution from examples, and an image is just a very long
# vector of numbers (a 512×512 RGB image has 786,432 of them) whose joint distribution is what makes it a cat.

# %%
rng = np.random.default_rng(0)
n = 2000
# a synthetic population with a real dependence: children grow, adults stop
age = np.clip(rng.normal(40, 30, n), 0, 95)
height = 50 + 125 * (1 - np.exp(-age / 5.5)) + rng.normal(0, 7, n)

# the "statistics office" marginals from the lecture, sampled independently
age_ind = rng.normal(40, 30, n)
height_ind = rng.normal(120, 100, n)


def unreasonable(a, h):
    """Pairs nobody would believe: negative age/height, or a child under 5 taller than 1.5 m."""
    return (a < 0) | (h < 30) | ((a < 5) & (h > 150)) | (h > 250)


frac_joint = unreasonable(age, height).mean()
frac_ind = unreasonable(age_ind, height_ind).mean()
print(f"unreasonable pairs: joint {frac_joint:.1%}, independent marginals {frac_ind:.1%}")
assert frac_joint < 0.01 < 0.3 < frac_ind

fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, sharey=True)
for ax, a, h, title in [(axes[0], age, height, "joint p(age, height)"),
                        (axes[1], age_ind, height_ind, "independent marginals p(age) p(height)")]:
    bad = unreasonable(a, h)
    ax.scatter(a[~bad], h[~bad], s=4, alpha=0.5, label="plausible")
    ax.scatter(a[bad], h[bad], s=4, alpha=0.5, c="crimson", label=f"unreasonable ({bad.mean():.0%})")
    ax.set(title=title, xlabel="age (years)", xlim=(-60, 140), ylim=(-200, 450))
    ax.legend(loc="upper left", markerscale=3)
axes[0].set_ylabel("height (cm)")
save_figure(fig, "01_joint_vs_marginals.png")
plt.show()

# %% [markdown]
# ## 2. The forward process: ink in water
#
# Drop ink into water and it spreads until nothing of the drop's shape is left. A diffusion model does
# the same to an image x₀ on purpose, in T = 1000 small steps. Step t keeps a fraction √(1−β_t) of the
# current image and adds Gaussian noise of variance β_t (Ho et al. 2020, Eq. 2):
#
# $$q(x_t \mid x_{t-1}) = \mathcal N\big(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big).$$
#
# The β_t are a fixed **schedule**; nothing is learned here. Because each step shrinks the signal and
# adds noise with variances summing to one (if Var x_{t-1} = 1 then Var x_t = (1−β_t) + β_t = 1),
# images scaled to [−1, 1] stay at unit scale all the way to pure noise.
#
# Let us run this chain, step by step, on a photo.

# %%
T = 1000
beta = torch.linspace(1e-4, 0.02, T)  # the DDPM paper's linear schedule (Sec. 4)

x0 = to_tensor(sample_photo("chelsea").resize((128, 96)))  # (3, 96, 128) in [-1, 1]
show_at = [1, 25, 50, 100, 200, 400, 700, 1000]  # steps t, counted from 1
x = x0.clone()
snapshots = {}
for t in range(1, T + 1):  # step t uses beta_t = beta[t - 1]
    x = (1 - beta[t - 1]).sqrt() * x + beta[t - 1].sqrt() * torch.randn(x.shape, generator=g)
    if t in show_at:
        snapshots[t] = x.clone()

fig, axes = plt.subplots(1, len(show_at), figsize=(16, 2.4))
for ax, t in zip(axes, show_at):
    ax.imshow(to_pil(snapshots[t].clamp(-1, 1)))
    ax.set_title(f"t = {t}")
    ax.axis("off")
fig.suptitle("the forward chain, iterated step by step (linear schedule)")
save_figure(fig, "01_forward_chain.png")
plt.show()
print(f"std of x after 1000 steps: {snapshots[1000].std():.2f} (pure noise has 1)")
assert abs(float(snapshots[1000].std()) - 1) < 0.02

# %% [markdown]
# ## 3. Jumping straight to step t
#
# Training needs noisy images at random t, millions of times; running t steps each time would be
# absurd. Gaussians compose: two steps give √(1−β₂)(√(1−β₁)x₀ + √β₁ε₁) + √β₂ε₂, whose noise part is a
# single Gaussian of variance (1−β₂)β₁ + β₂ = 1 − (1−β₁)(1−β₂). By induction, with
# α_t = 1 − β_t and ᾱ_t = α₁α₂⋯α_t (Ho et al. Eq. 4):
#
# $$q(x_t \mid x_0) = \mathcal N\big(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big),
# \qquad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon.$$
#
# ᾱ_t is the fraction of the signal's variance left at step t. Let us check numerically that the
# chain and the closed form give the same *distribution*: start 20,000 copies of three pixel values,
# run the chain to t = 300, and compare with one jump.

# %%
alpha_bar = torch.cumprod(1 - beta, dim=0)


def q_sample(x0, t, eps):
    """x_t in one jump from x_0 (Eq. 4); t counted from 1."""
    return alpha_bar[t - 1].sqrt() * x0 + (1 - alpha_bar[t - 1]).sqrt() * eps


t_check, copies = 300, 20000
pixels = torch.tensor([-0.8, 0.1, 0.9]).repeat(copies, 1)  # (copies, 3): three pixels, many noise draws
chain = pixels.clone()
for t in range(1, t_check + 1):  # steps 1..300
    chain = (1 - beta[t - 1]).sqrt() * chain + beta[t - 1].sqrt() * torch.randn(chain.shape, generator=g)
jump = q_sample(pixels, t_check, torch.randn(pixels.shape, generator=g))

expected_mean = alpha_bar[t_check - 1].sqrt() * pixels[0]
expected_std = (1 - alpha_bar[t_check - 1]).sqrt()
print("expected mean", expected_mean.numpy().round(2), " std", round(float(expected_std), 2))
print("chain    mean", chain.mean(0).numpy().round(2), " std", chain.std(0).numpy().round(2))
print("jump     mean", jump.mean(0).numpy().round(2), " std", jump.std(0).numpy().round(2))
tol = 5 / math.sqrt(copies)  # 5 standard errors of a mean of unit-scale samples
assert torch.allclose(chain.mean(0), expected_mean, atol=tol) and torch.allclose(jump.mean(0), expected_mean, atol=tol)
assert torch.allclose(chain.std(0), expected_std.expand(3), atol=tol)

fig, ax = plt.subplots(figsize=(8, 3.2))
bins = np.linspace(-2.5, 2.5, 80)
for i, c in enumerate(["tab:blue", "tab:orange", "tab:green"]):
    ax.hist(chain[:, i].numpy(), bins, density=True, alpha=0.35, color=c, label=f"chain, x0={pixels[0, i]:.1f}")
    grid = torch.tensor(bins)
    pdf = torch.exp(-0.5 * ((grid - expected_mean[i]) / expected_std) ** 2) / (expected_std * math.sqrt(2 * math.pi))
    ax.plot(bins, pdf.numpy(), color=c, lw=2)
ax.set(title=f"x_t at t = {t_check}: {t_check} chained steps (histograms) vs the closed form (curves)",
       xlabel="pixel value", ylabel="density")
ax.legend(fontsize=8)
save_figure(fig, "01_chain_vs_closed_form.png")
plt.show()

# %% [markdown]
# ## 4. Schedules compared
#
# How fast the signal disappears is a design choice. Three schedules are common:
#
# * **linear** (DDPM): β from 10⁻⁴ to 0.02, evenly.
# * **scaled_linear** (Stable Diffusion): evenly spaced in √β from √0.00085 to √0.012, then squared.
#   Its betas *start* larger than DDPM's (β₁ = 0.00085 vs 0.0001, 8.5×) and stay larger up to t = 51; from
#   t = 52 on they are smaller, ending at 0.012 instead of 0.02. Summed over all steps they remove much less
#   signal (below), a choice made for SD's 4×64×64 latents rather than for pixels.
# * **cosine** (Nichol & Dhariwal 2021, Eq. 17) chooses ᾱ directly:
#
#   $$\bar\alpha_t = \frac{f(t)}{f(0)},\qquad f(t) = \cos^2\Big(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\Big),
#   \qquad s = 0.008,\qquad \beta_t = \min\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}},\ 0.999\Big).$$
#
#   Dividing by f(0) makes ᾱ₀ = 1; the small offset s keeps β₁ from being vanishingly small; the cap 0.999 stops
#   β_T = 1 (f(T) = 0) from dividing by zero later. Nichol & Dhariwal's complaint is about the **end** of the
#   linear schedule: for 64×64 images its last steps are already nearly pure noise, so they add little to
#   sample quality (skipping up to the last ~20% of the reverse process barely hurt). The cosine ᾱ falls
#   roughly linearly in the middle and changes gently near t = 0 and t = T.
#
# Two views: ᾱ_t (signal variance left) and the **log signal-to-noise ratio**
# log SNR = log(ᾱ/(1−ᾱ)), the quantity samplers such as DPM-Solver step through.

# %%
from sdlearn import schedules

names = {"linear (DDPM)": schedules.make_betas("linear", 1000, 1e-4, 0.02),
         "scaled_linear (SD)": schedules.make_betas("scaled_linear", 1000, 0.00085, 0.012),
         "cosine": schedules.make_betas("squaredcos_cap_v2", 1000)}
bars = {k: schedules.alpha_bar(b) for k, b in names.items()}

fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
steps = np.arange(1, T + 1)
for k, ab in bars.items():
    axes[0].plot(steps, ab.numpy(), label=k)
    axes[1].plot(steps, schedules.log_snr(ab).numpy(), label=k)
axes[0].set(title="signal variance left, ᾱ_t", xlabel="t")
axes[1].set(title="log SNR = log(ᾱ / (1 − ᾱ))", xlabel="t")
axes[1].axhline(0, color="gray", lw=0.8, ls="--")
axes[0].legend()
save_figure(fig, "01_schedules.png")
plt.show()

for k, ab in bars.items():
    half = int((ab < 0.5).nonzero()[0]) + 1  # first step with SNR < 1
    print(f"{k:20s} SNR = 1 at t = {half:4d}   ᾱ_T = {float(ab[-1]):.2e}   signal std left at T: {float(ab[-1]) ** 0.5:.3f}")

# %% [markdown]
# Two of the claims above, checked: the cosine formula (with its /f(0), s = 0.008 and the 0.999 cap) gives
# sdlearn's (and diffusers') `squaredcos_cap_v2` betas, and SD's betas are above DDPM's up to t = 51 only.

# %%
f = lambda t: torch.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
t_all = torch.arange(0, T + 1, dtype=torch.float64)  # t = 0..T
ab_cos = f(t_all) / f(t_all[:1])  # (T + 1,): alpha_bar_0 = 1, ..., alpha_bar_T
beta_cos = (1 - ab_cos[1:] / ab_cos[:-1]).clamp(max=0.999)  # (T,): beta_1..beta_T
assert torch.allclose(beta_cos.float(), names["cosine"], atol=1e-6)
print(f"cosine: beta_1 = {float(beta_cos[0]):.1e}, beta_T = {float(beta_cos[-1]):.3f} (capped)")

lin, sd = names["linear (DDPM)"], names["scaled_linear (SD)"]
last_larger = int((sd > lin).nonzero().max()) + 1  # the last step t where SD's beta is the larger one
print(f"SD's beta_t > DDPM's for t = 1..{last_larger}, smaller from t = {last_larger + 1}; "
      f"sum of betas: DDPM {float(lin.sum()):.2f}, SD {float(sd.sum()):.2f}")
assert last_larger == 51 and bool((sd[:51] > lin[:51]).all() and (sd[51:] < lin[51:]).all())

# %% [markdown]
# Where do the "magic" end points come from? Since log ᾱ_T = Σ log(1 − β_t) ≈ −Σ β_t for small β,
# the schedule's end point is fixed by the *sum* of the betas:
#
# * linear: Σβ ≈ T·(β₁ + β_T)/2 = 1000 · 0.01005 = 10.05, so ᾱ_T ≈ e^−10.05 ≈ 4.3·10⁻⁵:
#   the signal's standard deviation is down to about 0.006 (√ of the exact 4.04·10⁻⁵), pure noise for all practical purposes.
# * scaled_linear: Σβ = Σ(√β)², the mean square of an even ramp from a to b is (a² + ab + b²)/3,
#   so Σβ ≈ 1000·(0.00085 + √(0.00085·0.012) + 0.012)/3 ≈ 5.35 and ᾱ_T ≈ e^−5.35 ≈ 0.0048 (exactly 0.0047).
#   SD's last step still keeps √0.0047 ≈ 6.8% of the signal's standard deviation (the table above prints 0.068)! (Lin et al. 2024 call this
#   a flaw: at sampling time we start from pure noise, which the model never saw in training.)
#
# Both are first order in β: log(1 − β) = −β − β²/2 − …, and the next term, −Σβ²/2 (≈ −0.07 for the
# linear schedule), accounts for what is left. Let us check both derivations against the exact products.

# %%
approx_linear = math.exp(-1000 * (1e-4 + 0.02) / 2)
a, b = math.sqrt(0.00085), math.sqrt(0.012)
approx_scaled = math.exp(-1000 * (a * a + a * b + b * b) / 3)
exact_linear, exact_scaled = float(bars["linear (DDPM)"][-1]), float(bars["scaled_linear (SD)"][-1])
print(f"linear:        approx {approx_linear:.2e}  exact {exact_linear:.2e}")
print(f"scaled_linear: approx {approx_scaled:.4f}  exact {exact_scaled:.4f}")
second_order = -0.5 * float(names["linear (DDPM)"].double().pow(2).sum())
print(f"second-order term for linear: {second_order:.3f}")
assert abs(math.log(approx_linear) - math.log(exact_linear)) < 0.1  # first order: within 10%
assert abs(math.log(approx_linear) + second_order - math.log(exact_linear)) < 0.005  # second order: 0.5%
assert abs(math.log(approx_scaled) - math.log(exact_scaled)) < 0.05

# %% [markdown]
# The same photo, the same noise, at the same t under each schedule: the linear schedule has all but
# erased the cat by t ≈ 250, while under the cosine schedule its eyes still show at t ≈ 400.

# %%
x0_small = to_tensor(sample_photo("chelsea").resize((96, 72)))
eps = torch.randn(x0_small.shape, generator=g)  # one noise draw for all, so only the schedule differs
ts = [100, 250, 400, 600, 800, 1000]  # steps t, counted from 1
fig, axes = plt.subplots(3, len(ts), figsize=(13, 5.4))
for row, (k, ab) in enumerate(bars.items()):
    for col, t in enumerate(ts):
        xt = schedules.q_sample(x0_small[None], t - 1, eps[None], ab)[0]  # sdlearn takes the 0-based timestep
        axes[row, col].imshow(to_pil(xt.clamp(-1, 1)))
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
        if row == 0:
            axes[row, col].set_title(f"t = {t}")
    axes[row, 0].set_ylabel(k, fontsize=9)
save_figure(fig, "01_schedules_photos.png")
plt.show()

# %% [markdown]
# ## 5. Slide through t yourself
#
# Move the slider to see x_t for Stable Diffusion's schedule (the printed numbers are ᾱ_t and the
# signal-to-noise ratio). On GitHub the widget does not render; run the notebook to use it.

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets

ab_sd = bars["scaled_linear (SD)"]


def show(t=500):
    xt = schedules.q_sample(x0_small[None], t - 1, eps[None], ab_sd)[0]
    fig, ax = plt.subplots(figsize=(3, 2.4))
    ax.imshow(to_pil(xt.clamp(-1, 1)))
    ax.set_title(f"t={t}  ᾱ={float(ab_sd[t - 1]):.3f}  SNR={float(schedules.snr(ab_sd[t - 1])):.3g}", fontsize=9)
    ax.axis("off")
    plt.show()


widgets.interact(show, t=widgets.IntSlider(value=500, min=1, max=1000, step=1, continuous_update=False));

# %% [markdown]
# ## 6. sdlearn holds the same (and diffusers agrees)
#
# `sdlearn.schedules` has the betas, ᾱ, `q_sample` (Eq. 4), the v-target, SNR and the noise level
# σ = √((1 − ᾱ)/ᾱ) that later samplers use. Our notebook's `q_sample` and diffusers' `DDPMScheduler.add_noise`
# give the same numbers.

# %%
import diffusers

theirs = diffusers.DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
assert torch.equal(schedules.make_betas("linear", 1000, 1e-4, 0.02), beta)
assert torch.allclose(schedules.alpha_bar(beta), theirs.alphas_cumprod)
batch, noise = x0_small[None].repeat(3, 1, 1, 1), torch.randn(3, *x0_small.shape, generator=g)
t_batch = torch.tensor([10, 300, 900])  # scheduler timesteps (0-based): the steps t = 11, 301, 901
ours_nb = torch.stack([q_sample(batch[i], int(t_batch[i]) + 1, noise[i]) for i in range(3)])
ours_pkg = schedules.q_sample(batch, t_batch, noise, alpha_bar)
diff = max((ours_nb - ours_pkg).abs().max(), (ours_pkg - theirs.add_noise(batch, noise, t_batch)).abs().max())
assert diff < 1e-5
print("notebook, sdlearn and diffusers agree to within 1e-5")

# %% [markdown]
# ## Exercises
#
# **1.** For Stable Diffusion's schedule (`ab_sd`), at which step t (counted from 1) does the
# signal-to-noise ratio first fall below 0.1, i.e. the noise variance is ten times the signal's?

# %%
# BEGIN SOLUTION
answer_1 = int((schedules.snr(ab_sd) < 0.1).nonzero()[0]) + 1
# END SOLUTION
# STUB: answer_1 = None   # an int: the first step t (counted from 1) with SNR < 0.1
answer_1

# %%
from sdlearn.exercises import check

snr_sd = ab_sd / (1 - ab_sd)   # SNR = alpha_bar / (1 - alpha_bar), step t at index t - 1


def first_below(t):            # checks the property, not a copy of the computation
    if not 1 < t <= T:
        return f"t = {t} is not a step of this schedule after the first (2 ... {T})"
    if float(snr_sd[t - 1]) >= 0.1:
        return f"at t = {t} the SNR is still {float(snr_sd[t - 1]):.3f}"
    return float(snr_sd[t - 2]) >= 0.1 or f"at t = {t - 1} the SNR is already below 0.1"


ok = check("Exercise 1", answer_1, test=first_below,
           hint="schedules.snr(ab_sd) is the SNR of every step; find the first index where it is below 0.1, "
                "then remember that index 0 is step t = 1")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **2.** A noisy image x_t and the exact noise ε that made it are given. Invert Eq. 4 to recover x₀.
# (This is what a trained noise predictor lets us do approximately: notebook 02.)

# %%
t2 = 600  # the step t, counted from 1: its alpha_bar is ab_sd[t2 - 1]
x_t = schedules.q_sample(x0_small[None], t2 - 1, eps[None], ab_sd)[0]
# BEGIN SOLUTION
x0_recovered = (x_t - (1 - ab_sd[t2 - 1]).sqrt() * eps) / ab_sd[t2 - 1].sqrt()
# END SOLUTION
# STUB: x0_recovered = None   # a tensor shaped like x_t, from x_t, eps and ab_sd[t2 - 1]

# %%
ok = check("Exercise 2", x0_recovered,
           test=lambda x: torch.allclose(x, x0_small, atol=1e-4) or "that is not the image x_t was made from",
           hint="Eq. 4 says x_t = sqrt(ab) x0 + sqrt(1 - ab) eps: solve it for x0")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **3.** Using only the approximation log ᾱ_T ≈ −Σβ_t, what `beta_end` would a linear schedule starting at
# β₁ = 10⁻⁴ need, over T = 1000 steps, so that ᾱ_T ≈ 10⁻⁶ (signal std 0.001)? Check it with `make_betas`.

# %%
# BEGIN SOLUTION
answer_3 = 2 * math.log(1e6) / 1000 - 1e-4     # T (b1 + bT) / 2 = ln(1e6)  =>  bT = 2 ln(1e6) / T - b1
# END SOLUTION
# STUB: answer_3 = None   # a float: beta_end
answer_3

# %%
def ends_near_1e6(beta_end):
    ab_end = float(schedules.alpha_bar(schedules.make_betas("linear", 1000, 1e-4, beta_end))[-1])
    return 0.5e-6 < ab_end < 2e-6 or f"with beta_end = {beta_end:.4g}, alpha_bar_T = {ab_end:.2e}, not about 1e-6"


ok = check("Exercise 3", answer_3, test=ends_near_1e6,
           hint="the betas of a linear ramp sum to T (beta_1 + beta_T) / 2; set that sum to ln(1e6)")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **4.** Back to section 1's population. Binned into three age groups (under 5, 5-17, 18 and over) and
# three height groups (under 110 cm, 110-160 cm, over 160 cm), its joint distribution is the 3 × 3 table
# `p_joint[a, h]` below. A generative model samples such a joint *ancestrally*: first an age group from the
# marginal p(a) = Σ_h p(a, h), then a height group from the conditional p(h | a) = p(a, h) / p(a).
# Write `sample_pairs(n, rng)`, returning an (n, 2) integer array of (age group, height group) pairs drawn
# this way (`rng.choice(3, size=k, p=probs)` draws k groups from a distribution `probs`).

# %%
age_group = np.digitize(age, [5, 18])           # 0: under 5, 1: 5-17, 2: 18 and over
height_group = np.digitize(height, [110, 160])  # 0: under 110 cm, 1: 110-160 cm, 2: over 160 cm
counts = np.zeros((3, 3), dtype=int)
np.add.at(counts, (age_group, height_group), 1)
p_joint = counts / n   # (3, 3): rows are age groups, columns height groups; sums to 1
print(p_joint)


def sample_pairs(n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(n_pairs, 2) ints: an age group from p(a), then a height group from p(h | a)."""
    # BEGIN SOLUTION
    p_a = p_joint.sum(axis=1)                           # the marginal p(a), (3,)
    a = rng.choice(3, size=n_pairs, p=p_a)
    h = np.empty(n_pairs, dtype=int)
    for k in range(3):                                  # p(h | a = k) is row k of the table, renormalised
        h[a == k] = rng.choice(3, size=int((a == k).sum()), p=p_joint[k] / p_a[k])
    return np.stack([a, h], axis=1)
    # END SOLUTION
    # STUB: return None


# %%
def follows_the_joint(f, n_draws=20000):
    pairs = f(n_draws, np.random.default_rng(1))
    if pairs is None:
        return "sample_pairs returned None"
    pairs = np.asarray(pairs)
    if pairs.shape != (n_draws, 2) or not np.isin(pairs, [0, 1, 2]).all():
        return f"expected an ({n_draws}, 2) array of groups 0, 1, 2; got shape {pairs.shape}"
    freq = np.zeros((3, 3))
    np.add.at(freq, (pairs[:, 0], pairs[:, 1]), 1 / n_draws)   # the samples' own joint table
    independent = np.outer(p_joint.sum(1), p_joint.sum(0))     # what independent marginals would give
    if np.abs(freq - independent).max() < 0.015:
        return (f"your pairs look independent: {freq[0, 2]:.1%} are toddlers over 160 cm, "
                f"where the table has {p_joint[0, 2]:.1%}")
    gap = np.abs(freq - p_joint).max()   # 0.015 is more than 4 standard errors of a frequency here
    return gap < 0.015 or f"the samples' frequencies differ from p_joint by up to {gap:.3f}"


ok = check("Exercise 4", sample_pairs, test=follows_the_joint,
           hint="p(a) sums a row of p_joint; p(h | a) is that row divided by p(a). Draw all the age groups "
                "first, then for each age group k draw the heights of the pairs that got k")
# BEGIN SOLUTION
assert ok
# END SOLUTION
