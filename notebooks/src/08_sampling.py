# %% [markdown]
# # 08 · Sampling: from a prompt to a picture, every step in view
#
# {{COLAB_BADGE}}
#
# Notebook 07 trained a text-to-image model. Here we take it apart at sampling time: the whole sampler in
# one short function, then every knob it has.
#
# **What you will learn**
#
# 1. The **full sampler** written out (tokenise, encode, unconditional embedding, initial latents, the loop
#    with classifier-free guidance, decode), checked equal to `sdlearn`'s pipeline.
# 2. **Seeds and generators**: why the same seed repeats an image and reusing a generator does not.
# 3. **Negative prompts**: steering *away* from a caption, and why the same bare word works on one prompt
#    and hardly at all on another.
# 4. The **guidance scale**, from ignoring the prompt to over-saturated caricature.
# 5. **Samplers** on the same noise: DDPM, DDIM, DPM-Solver++, Euler, Euler ancestral; how fast each
#    converges, measured (and why DDIM and Euler are one method).
# 6. **Cross-attention heatmaps**: where "red", "circle", "top", "left" and the end-of-text token look,
#    step by step.
# 7. An interactive panel, and the same loop run on **diffusers'** components.

# %% [setup]

# %%
import time

import diffusers
import matplotlib.pyplot as plt
import numpy as np
import torch

from sdlearn import evaluate
from sdlearn.attention import attention_heatmaps, capture_attention
from sdlearn.configs import SCHEDULER_CONFIG
from sdlearn.data import Attributes
from sdlearn.device import quiet_hub_loading, seed_everything
from sdlearn.pipeline import TINY_MODEL_DIR, StableDiffusion, make_scheduler
from sdlearn.viz import image_grid, plot_attention_maps, save_figure

# Section 8 loads diffusers' pipeline: hide its loading progress bars and transformers' notice about
# torchvision (a log record, dropped by its message; every other warning still shows).
quiet_hub_loading()
torch.set_num_threads(1)  # small tensors: one thread is as fast and repeatable
g = seed_everything(0)
pipe = StableDiffusion.tiny(device="cpu")  # the files store float16; loaded as float32
pipe.progress_bar = False
print(type(pipe.unet).__name__, type(pipe.vae).__name__, type(pipe.text_encoder).__name__,
      type(pipe.tokenizer).__name__, type(pipe.scheduler).__name__)


def scheduler_for(name: str, **changes):
    """A fresh scheduler ("ddpm", "ddim", "dpm++", "euler", "euler_a") on the schedule the model was trained with."""
    return make_scheduler(name, {**SCHEDULER_CONFIG, **changes})

# %% [markdown]
# ## 1. The whole sampler in one function
#
# A sampler needs five things: a way to turn text into token ids, the text encoder, the UNet, the VAE's
# decoder and a scheduler (notebook 02's reverse-process step). With them:
#
# 1. **tokenise** the prompt and the negative prompt (by default "") into (B, 77) ids;
# 2. **encode** both: (B, 77, d) each. The empty prompt's states are the *unconditional* embedding;
# 3. draw the **initial latents** z_T ~ N(0, I) from a seeded generator, times the scheduler's
#    `init_noise_sigma` (1 for DDPM, DDIM and DPM-Solver++; for Euler-type schedulers √(σ² + 1) at the
#    first timestep with SD's "leading" spacing, printed below (with "trailing" spacing diffusers uses σ_max), since they carry z = x_t/√ᾱ_t = x₀ + σε instead of x_t);
# 4. **loop** over the scheduler's timesteps: run the UNet once on [z; z] with [uncond; cond] (one batch
#    of 2B), combine ε̂ = ε_u + w (ε_c − ε_u), and let the scheduler take one step. Before the UNet,
#    `scheduler.scale_model_input(z, t)` turns the scheduler's variable into the x_t the UNet was trained
#    on: DDPM, DDIM and DPM-Solver++ already hold x_t, so for them it returns z unchanged; Euler-type
#    schedulers divide by √(σ² + 1), as in diffusers;
# 5. **decode** z₀ / scaling_factor with the VAE.
#
# We pass the five parts in as plain functions, so the very same loop will later run diffusers' parts.

# %%
@torch.no_grad()
def generate_simplified(prompt: list[str], parts: dict, negative_prompt: list[str] | None = None,
                        num_inference_steps: int = 20, guidance_scale: float = 5.0, seed: int = 0) -> torch.Tensor:
    """Text to image, the way Stable Diffusion does it. Returns (B, 3, 64, 64) in [0, 1]."""
    tokenize, encode, unet, decode, scheduler = (parts[k] for k in ("tokenize", "encode", "unet", "decode", "scheduler"))
    negative_prompt = negative_prompt or [""] * len(prompt)
    # 1-2. text -> ids -> states, for the prompt and the negative (unconditional) prompt
    cond = encode(tokenize(prompt))                                   # (B, 77) -> (B, 77, d)
    uncond = encode(tokenize(negative_prompt))                        # (B, 77) -> (B, 77, d)
    context = torch.cat([uncond, cond])                               # (2B, 77, d)
    # 3. initial latents, drawn on a CPU generator
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn((len(prompt), 4, 8, 8), generator=generator)  # (B, 4, 8, 8): z_T ~ N(0, I)
    scheduler.set_timesteps(num_inference_steps)
    latents = latents * scheduler.init_noise_sigma
    # 4. the denoising loop with classifier-free guidance
    for t in scheduler.timesteps:
        z_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)   # (2B, 4, 8, 8)
        eps_uncond, eps_cond = unet(z_in, t, context).chunk(2)                # (2B, 4, 8, 8) -> 2 x (B, 4, 8, 8)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        latents = scheduler.step(eps, t, latents, generator=generator).prev_sample
    # 5. decode
    image = decode(latents / parts["scaling_factor"])                 # (B, 4, 8, 8) -> (B, 3, 64, 64) in [-1, 1]
    return (image.clamp(-1, 1) + 1) / 2


# %%
ours = {"tokenize": pipe.tokenizer, "encode": pipe.text_encoder, "unet": pipe.unet, "decode": pipe.vae.decode,
        "scheduler": scheduler_for("dpm++"), "scaling_factor": pipe.scaling_factor}
prompts = ["a large red circle in the top left", "a small blue star in the bottom right",
           "a large green triangle in the center", "a large yellow square in the top right"]
mine = generate_simplified(prompts, ours, seed=0)
theirs = pipe.text_to_image(prompts, seed=0, num_inference_steps=20, guidance_scale=5.0, output_type="pt")
print(f"hand-written loop vs sdlearn's pipeline: max |difference| = {(mine - theirs).abs().max():.1e}")
assert torch.allclose(mine, theirs, atol=1e-5)
fig = image_grid(mine * 2 - 1, nrow=4, captions=prompts, figsize=1.9)   # image_grid reads tensors in [-1, 1]
save_figure(fig, "08_generate_simplified.png")
plt.show()

# %%
euler = scheduler_for("euler")
euler.set_timesteps(20)
z_probe = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
print(f"Euler, 20 steps: first t = {int(euler.timesteps[0])}, sigma = {float(euler.sigmas[0]):.2f}, "
      f"init_noise_sigma = {float(euler.init_noise_sigma):.2f}; scale_model_input divides by "
      f"{float(z_probe.norm() / euler.scale_model_input(z_probe, euler.timesteps[0]).norm()):.2f}")
dpm = scheduler_for("dpm++")
dpm.set_timesteps(20)
print("DPM-Solver++: init_noise_sigma =", dpm.init_noise_sigma, "| scale_model_input leaves z unchanged:",
      torch.equal(dpm.scale_model_input(z_probe, dpm.timesteps[0]), z_probe))

# %% [markdown]
# The pipeline's `text_to_image` is this function plus checks (sizes, batch sizes, step counts), output
# types, callbacks and the other samplers. From here on we use it.
#
# ## 2. Seeds and generators
#
# All the randomness of an image is the initial latent z_T (plus, for stochastic samplers such as DDPM
# and Euler ancestral, fresh noise at every step). A `torch.Generator` is a stream of random numbers:
# seeding it fixes the stream, and every draw *advances* it. So:
#
# * `seed=0` twice → the same image (the pipeline builds a fresh generator from the seed);
# * passing the **same generator object** twice → two different images: the second call continues the
#   stream where the first stopped, 4·8·8 = 256 numbers later;
# * in a batch, image i takes the i-th block of 256 numbers.

# %%
prompt = "a large purple diamond in the center"
gen = torch.Generator().manual_seed(0)
a = pipe.text_to_image(prompt, generator=gen, output_type="pt")
b = pipe.text_to_image(prompt, generator=gen, output_type="pt")       # the same generator, reused
c = pipe.text_to_image(prompt, seed=0, output_type="pt")              # a fresh generator from seed 0
batch = pipe.text_to_image([prompt] * 2, seed=0, output_type="pt")    # both images in one call
print("seed 0 again == first image:", torch.allclose(a, c))
print("reused generator == first image:", torch.allclose(a, b))
stream = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))   # the first 512 numbers of seed 0
second = pipe.text_to_image(prompt, latents=stream[1:2], output_type="pt")
assert torch.allclose(a, c) and not torch.allclose(a, b)
assert torch.allclose(b, second, atol=1e-6) and torch.allclose(batch[1:], second, atol=1e-5)
print("second call == image from numbers 257-512 of seed 0 == image 2 of the batch")
fig = image_grid(torch.cat([a, b, c, batch]) * 2 - 1, nrow=5,
                 captions=["generator, call 1", "same generator, call 2", "seed=0", "batch[0], seed=0", "batch[1], seed=0"])
save_figure(fig, "08_seeds.png")
plt.show()

# %% [markdown]
# ## 3. Negative prompts
#
# Guidance pushes from the unconditional prediction towards the prompt. Nothing forces the starting point
# to be the empty prompt: with a **negative prompt** n, the pipeline uses ε̂ = ε(n) + w (ε(y) − ε(n)),
# which starts from the model's prediction *for n* and extrapolates away from it. "a circle" says nothing
# about colour or size, so the model falls back on its habits (here: red, large). Can a negative prompt
# push it off them? We try the bare word "red" and whole captions on "a circle", the bare word on a
# second prompt whose red habit is weaker, and show what "red" alone draws; 16 seeds each, the same
# starting noise in every row.

# %%
N_SEEDS = 16
z_T = torch.randn(N_SEEDS, 4, 8, 8, generator=torch.Generator().manual_seed(1))
runs = [("a circle", ""), ("a circle", "red"), ("a circle", "a red circle"), ("a circle", "a large circle"),
        ("a large star in the center", ""), ("a large star in the center", "red"), ("red", "")]
rows = {}
for prompt, negative in runs:
    imgs = pipe.text_to_image([prompt] * N_SEEDS, negative_prompt=[negative] * N_SEEDS, latents=z_T, output_type="pt")
    rows[prompt, negative] = (imgs, evaluate.read_attributes(imgs * 2 - 1))
count = {run: {"red": sum(r.color == "red" for r in read), "small": sum(r.size == "small" for r in read),
               "circle": sum(r.shape == "circle" for r in read), "star": sum(r.shape == "star" for r in read),
               "square": sum(r.shape == "square" for r in read)} for run, (_, read) in rows.items()}
for (prompt, negative), c in count.items():
    print(f"{prompt!r:29} negative {negative!r:17}: red {c['red']:2d}/{N_SEEDS}, small {c['small']:2d}, "
          f"circles {c['circle']:2d}, stars {c['star']:2d}, squares {c['square']:2d}")
circle, star = "a circle", "a large star in the center"
assert count[circle, ""]["red"] == N_SEEDS and count[circle, "red"]["red"] >= N_SEEDS - 3   # the word barely moves circles
assert count[star, "red"]["red"] == 0 < count[star, ""]["red"]                              # ... and removes red from stars
assert count[circle, "a red circle"]["red"] <= 2                                            # the caption removes the habit
assert count[circle, "a large circle"]["small"] >= count[circle, ""]["small"] + 10
assert count["red", ""]["red"] == N_SEEDS and count["red", ""]["square"] >= N_SEEDS // 2     # alone: red squares
fig = image_grid(torch.cat([rows[run][0][:8] for run in runs]) * 2 - 1, nrow=8, figsize=1.2,
                 row_labels=[(f'"{p}"\nnegative "{n}"' if p != "red" else '"red" alone\n(no negative)')
                             + f"\nred {count[p, n]['red']}/{N_SEEDS}, small {count[p, n]['small']}" for p, n in runs])
fig.suptitle("negative prompts: the first 8 of 16 seeds (the same starting noise in every row)", y=1.01)
save_figure(fig, "08_negative_prompts.png")
plt.show()

# %% [markdown]
# **What a negative prompt removes depends on the prompt.** The model does know the word: alone, "red"
# draws red shapes (mostly large squares, last row). As a negative prompt it removes red from every one
# of the large stars, yet on "a circle", whose red is the strongest habit above (16 of 16), it leaves
# 14 of 16 red. The formula says why this is possible: putting n in the negative slot instead of ""
# changes the guided prediction by (w − 1)(ε(∅) − ε(n)) (Exercise 4 measures it on the UNet). The push is
# away from what n predicts *relative to the empty prompt*, and it is small wherever ε(∅) is already close
# to ε(n): on these circle trajectories the model draws red with no prompt at all, so a bare "red" hardly
# differs from "" there. Nothing guarantees that ε(∅) − ε(n) carries the attribute the negative names. The whole caption "a red circle" does remove the red circles (1 of 16
# left), and "a large circle" turns all 16 small; some shapes suffer (the extrapolation leaves the
# captions the model knows). So check a negative prompt on the prompt you use it with. Real Stable
# Diffusion's captions are web alt-texts, which is why its popular negatives read like alt-text too:
# "blurry, low quality, watermark".

# %% [markdown]
# ## 4. The guidance scale
#
# w = 1 is the plain conditional model, and larger w extrapolates beyond it. (By the formula w = 0 would be
# the unconditional model, but Stable Diffusion pipelines, ours and diffusers', treat any w ≤ 1 as "no
# guidance" and skip the unconditional half of the batch; notebook 07 shows the unconditional model with
# the prompt "".) Too little guidance and the picture drifts from the prompt; too much and the update
# overshoots, because ε̂ is pushed outside anything the model predicted during training. One prompt per row
# (named at its left), the guidance scale w above each image, and the same starting noise everywhere:

# %%
scales = (1.0, 2.0, 4.0, 7.5, 12.0, 20.0)
grid_prompts = ["a large red circle in the top left", "a small blue star in the bottom right",
                "a large orange diamond in the center right"]
z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)).repeat(len(grid_prompts), 1, 1, 1)
by_scale = {w: pipe.text_to_image(grid_prompts, latents=z_T, guidance_scale=w, output_type="pt") for w in scales}
imgs = torch.stack([by_scale[w] for w in scales], dim=1).flatten(0, 1)          # rows: prompts, columns: w
fig = image_grid(imgs * 2 - 1, nrow=len(scales), row_labels=[f'"{p[2:]}"' for p in grid_prompts],
                 captions=[f"w = {w}" for w in list(scales) * 3], figsize=1.3)
save_figure(fig, "08_guidance_grid.png")
plt.show()
attrs = [Attributes("circle", "red", "large", "top left"), Attributes("star", "blue", "small", "bottom right"),
         Attributes("diamond", "orange", "large", "center right")]
right = {}
for w in scales:
    acc = evaluate.attribute_accuracy(by_scale[w] * 2 - 1, attrs)
    contrast = (by_scale[w] - by_scale[w].mean(dim=(2, 3), keepdim=True)).abs().mean().item()
    print(f"w = {w:4}: all four attributes right in {round(acc['all'] * 3)}/3, mean |pixel - image mean| {contrast:.3f}")
    right[w] = round(acc["all"] * 3)
assert right[1.0] < right[4.0] and right[20.0] < right[4.0]   # too little and too much both cost attributes

# %% [markdown]
# At w = 1 the small blue star comes out as a square (2 of 3 right). From w = 2 to 12 all three are right and
# the pictures barely change. At w = 20 the overshoot shows: the star and the diamond melt into soft blobs (the
# diamond turns yellow) on a tinted background, and only the circle is still read right. The contrast column
# (mean |pixel − image mean|) grows only slowly with w: on this model too much guidance deforms shapes and
# colours more than it saturates them.
#
# ## 5. Samplers on the same noise
#
# The UNet is the same; the scheduler decides how to walk from z_T to z₀ (notebook 02). DDPM takes
# ancestral steps, the walk it was trained for (here strided to n of its 1000 steps); DDIM, Euler and DPM-Solver++ solve the deterministic
# probability-flow ODE with bigger steps; Euler ancestral adds fresh noise each step. First a look: the
# same prompt and noise through each sampler at 5, 10 and 25 steps (DDPM's full 1000-step walk costs
# 1000 UNet calls per image: its accuracy and time are in the benchmark, `benchmarks/RESULTS.md`).

# %%
names = {"ddpm": "DDPM", "ddim": "DDIM", "dpm++": "DPM-Solver++", "euler": "Euler", "euler_a": "Euler ancestral"}
steps_grid = (5, 10, 25)
cmp_prompt = "a large green star in the top right"
z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
cells, captions, seconds = [], [], {}
for n in steps_grid:                                   # rows: step counts, columns: samplers
    for key, name in names.items():
        t0 = time.perf_counter()
        cells.append(pipe.text_to_image(cmp_prompt, latents=z_T, num_inference_steps=n, scheduler=scheduler_for(key),
                                        generator=torch.Generator().manual_seed(0), output_type="pt"))
        seconds[key, n] = time.perf_counter() - t0
        captions.append(f"{name}, {n}")
fig = image_grid(torch.cat(cells) * 2 - 1, nrow=len(names), captions=captions, figsize=1.5)
save_figure(fig, "08_samplers.png")
plt.show()

# %% [markdown]
# At 10 and 25 steps every sampler draws the same green star. At 5 steps DPM-Solver++ is the one that breaks
# (a red-and-green star). Its second-order update extrapolates from the previous step's ε̂; over steps about
# 170 timesteps long, with guidance 5, that extrapolation overshoots. From 10 steps on it is as clean as the
# others. How fast each sampler approaches the exact answer is measured next.

# %%
# NBVAL_IGNORE_OUTPUT
print("seconds per image (one image, guidance on; shared CPU):")
for key, name in names.items():
    print(f"  {name:16}", "  ".join(f"{n:>4} steps {seconds[key, n]:5.2f} s" for n in steps_grid))

# %% [markdown]
# ### How many steps are enough?
#
# For the deterministic samplers there is an exact answer to converge to: the solution of the
# probability-flow ODE from the same z_T. A fair race needs the same problem for every run:
#
# * **The same start.** SD's default "leading" spacing starts at a different t for each step count, and
#   DPM-Solver++'s starts differ again from DDIM's and Euler's (printed below), so runs with different counts would solve slightly different
#   problems. Here every run uses "trailing" spacing, which always starts at t = 999.
# * **The same end.** SD's DDIM config (`set_alpha_to_one=False`) stops at ᾱ_0, i.e. σ_min = σ(t = 0)
#   ≈ 0.029, not at σ = 0; compared with a reference that ends at 0, DDIM would show an error floor
#   that no number of steps removes. So all three stop at σ_min: Euler and DPM-Solver++ are told so with
#   `final_sigmas_type="sigma_min"`.
# * **The same grid.** Step counts divide 1000, so DDIM's step t → t − 1000/n lands on the next
#   timestep of the schedule, as Euler's and DPM-Solver++'s steps do.
# * **A fine reference**: DPM-Solver++ with 500 steps (its distance to 250 steps is printed, to show
#   that it is far below the errors being measured).
#
# **DDIM is Euler's method in σ-space.** With σ = √(1−ᾱ)/√ᾱ and y = x_t/√ᾱ = x_t·√(1+σ²), DDIM's update
# x_s = √ᾱ_s x̂₀ + √(1−ᾱ_s) ε̂, divided by √ᾱ_s, reads y_s = x̂₀ + σ_s ε̂ = y_t + (σ_s − σ_t) ε̂: one Euler
# step of the ODE dy/dσ = ε̂(y/√(1+σ²), t), which is exactly what the Euler scheduler integrates (its
# `scale_model_input` is the division by √(1+σ²)). So the two must agree to round-off, provided they
# start from the same point: Euler's y_T is √(1+σ_max²)·z_T, which diffusers' `init_noise_sigma` (σ_max
# with trailing spacing) rounds off by 0.2%, so we hand Euler z_T·√(1+σ_max²)/σ_max, and bring its end
# back to x_t units by dividing by √(1+σ_min²).

# %%
for key in ("ddim", "euler", "dpm++"):
    firsts = []
    for n in (20, 4):
        sched = scheduler_for(key)                              # SD's own "leading" spacing
        sched.set_timesteps(n)
        firsts.append(int(sched.timesteps[0]))
    print(f"leading spacing, {names[key]:13}: first t = {firsts[0]} for 20 steps, {firsts[1]} for 4 steps")

conv_prompt = "a large red circle in the top left"
z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))


def solve(key: str, n: int) -> torch.Tensor:
    """z_T -> the latent at sigma_min in n steps of sampler `key` (trailing spacing), in x_t units."""
    sched = scheduler_for(key, timestep_spacing="trailing", final_sigmas_type="sigma_min")  # DDIM ignores the last
    sched.set_timesteps(n)
    start, back = z_T, 1.0
    if key == "euler":                                          # y = x_t * sqrt(1 + sigma^2)
        s_max, s_min = float(sched.sigmas[0]), float(sched.sigmas[-1])
        start = z_T * (1 + s_max**2) ** 0.5 / s_max             # the pipeline multiplies by init_noise_sigma = s_max
        back = 1 / (1 + s_min**2) ** 0.5
    return back * pipe.text_to_image(conv_prompt, latents=start, num_inference_steps=n, scheduler=sched,
                                     output_type="latent")


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


reference = solve("dpm++", 500)
print(f"reference: DPM-Solver++ with 500 steps; with 250 steps it moves by RMS {rms(solve('dpm++', 250), reference):.4f}")
step_counts = (4, 5, 8, 10, 20, 25, 40)
final = {key: {n: solve(key, n) for n in step_counts} for key in ("ddim", "euler", "dpm++")}
errors = {key: [rms(final[key][n], reference) for n in step_counts] for key in final}
same = max(rms(final["ddim"][n], final["euler"][n]) for n in step_counts)
print("DDIM and Euler agree at every step count (RMS difference < 1e-4):", same < 1e-4)
assert same < 1e-4

# %%
fig, ax = plt.subplots(figsize=(5.8, 3.6))
styles = {"ddim": dict(marker="o", lw=3, alpha=0.5), "euler": dict(marker="x", ls="--"), "dpm++": dict(marker="s")}
for key, errs in errors.items():
    ax.loglog(step_counts, errs, label=names[key] + (" (= DDIM)" if key == "euler" else ""), **styles[key])
n_ref, e_ref = step_counts[3], errors["ddim"][3]                         # guide lines through DDIM at 10 steps
for order, ls in ((1, ":"), (2, "-.")):
    ax.loglog(step_counts, [e_ref * (n_ref / n) ** order for n in step_counts], color="gray", ls=ls, lw=1,
              label=f"∝ 1/steps{'²' if order == 2 else ''} (guide)")
ax.set(xlabel="sampling steps (trailing spacing)", ylabel="RMS distance to the reference\n(latents at σ_min)",
       title="How fast each sampler converges")
ax.set_xticks(step_counts, [str(n) for n in step_counts])
ax.minorticks_off()
ax.legend(fontsize=7)
save_figure(fig, "08_sampler_convergence.png")
plt.show()
slopes = {}
print("steps:           ", "".join(f"{n:>7}" for n in step_counts))
for key, errs in errors.items():
    print(f"{names[key]:16} ", "".join(f"{e:7.3f}" for e in errs))
for key, errs in errors.items():
    x, y = np.log(step_counts), np.log(errs)
    slopes[key] = (np.polyfit(x, y, 1)[0], np.polyfit(x[3:], y[3:], 1)[0])
    print(f"{names[key]:13} fitted slope of log error vs log steps: {slopes[key][0]:+.2f} over 4-40 steps, "
          f"{slopes[key][1]:+.2f} over 10-40")
ratio = [d / p for d, p in zip(errors["ddim"], errors["dpm++"])]
print("DDIM error / DPM-Solver++ error:", "  ".join(f"{n}: {r:.2f}" for n, r in zip(step_counts, ratio)))
assert all(r > 1.5 for r in ratio[:4]) and all(0.85 < r < 1.15 for r in ratio[4:])
assert all(-1.3 < s[1] < -0.4 for s in slopes.values())                  # nowhere near -2 above 10 steps

# %% [markdown]
# **What was measured.** Fitted over 10-40 steps, the error falls like steps^−1.10 for DDIM and Euler
# (one curve: they are the same method) and like steps^−0.62 for DPM-Solver++; over 4-40 steps the fits
# are −1.96 and −1.35, pulled steep by the first few points, where a sampler is still settling on the
# picture. Theory for a smooth ODE gives a slope of −1 to a first-order method (DDIM, Euler), close to
# what we see above 10 steps, and −2 to a second-order one (DPM-Solver++ 2M): this model does not show
# that. Where DPM-Solver++ wins is at **few steps**: at 4, 5, 8 and 10 steps its error is 2.2, 3.8, 3.5
# and 1.9 times smaller than DDIM's, and from 20 steps on the three are within 10% of each other. That
# low-step advantage is why a handful of DPM-Solver++ steps is this series' default (the benchmark's
# sampler table checks it on prompt-following accuracy). The stochastic samplers (DDPM, Euler ancestral)
# do not converge to the ODE's solution at all: they sample a *different* image of the same distribution
# for every noise draw.
#
# A higher order only pays when the ODE's right-hand side is smooth on the scale of a step. One check on
# this model: the guided noise prediction at fixed z over 21 consecutive timesteps.

# %%
ctx = pipe.encode_prompt(["", conv_prompt])                               # (2, 77, d): [uncond; cond]
z_probe = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
with torch.no_grad():
    eps_t = torch.stack([pipe.predict_noise(z_probe, torch.tensor(t), ctx, 5.0, scheduler_for("dpm++"))
                         for t in range(490, 511)])                        # (21, 1, 4, 8, 8), guidance 5
step_change = rms(eps_t[1:], eps_t[:-1])                                  # change from t to t + 1
curvature = float((eps_t[2:] - 2 * eps_t[1:-1] + eps_t[:-2]).pow(2).mean().sqrt())   # second difference
trend = rms(eps_t[-1], eps_t[0]) / 20                                     # average change per timestep over 20
print(f"t = 490..510: change per timestep RMS {step_change:.4f}, its second difference {curvature:.4f}, "
      f"net drift over 20 timesteps {trend:.4f} per timestep")
assert curvature > 0.3 * step_change and trend < step_change

# %% [markdown]
# From one timestep to the next the guided prediction changes by RMS 0.0079, and its second difference is
# nearly as large (0.0061), where a smooth function's would be much smaller; over the 20 timesteps it drifts
# only 0.0024 per timestep, under a third of its step-to-step change. So it jitters from one integer t to
# the next around a slow trend. A solver that samples it every 25-100 timesteps sees that jitter as noise,
# which a higher order cannot integrate away: a likely reason why the measured slopes stay near −1 or
# shallower instead of reaching −2.
#
# ## 6. Where the words look: cross-attention across the steps
#
# In every cross-attention layer each latent pixel distributes one unit of attention over the 77 text
# tokens (notebook 05). `capture_attention` records those probabilities while the pipeline runs;
# `attention_heatmaps` averages heads and layers into one map per token: at each pixel, the share of its
# attention that goes to that token. We look at the conditional half of the batch, at four of the 20
# steps, for four words and for the end-of-text token `<|endoftext|>` (which also fills the 67 padding
# positions after it: SD v1's tokenizer pads with it).
#
# The tokens get very different amounts of attention (printed below), so one colour scale for all maps
# would leave the words nearly blank. **Each row has its own colour scale**, shared by its four steps,
# with its colour bar at the right in the maps' own units.

# %%
heat_prompt = "a large red circle in the top left"
ids = pipe.tokenizer.encode(heat_prompt)                     # [<start>, a, large, red, circle, ..., <end>]
words = [pipe.tokenizer.decode([i]) for i in ids]
print(list(enumerate(words)))
END = len(ids) - 1                                           # <|endoftext|>; positions END+1..76 pad with it
show = {f'"{w}"': words.index(w) for w in ("red", "circle", "top", "left")} | {"<|endoftext|>": END}
with capture_attention(pipe.unet, average_heads=True) as maps:
    heat_image = pipe.text_to_image(heat_prompt, seed=6, output_type="pt")
print(f"captured {len(maps)} cross-attention layers x {len(next(iter(maps.values())))} steps")
overall = attention_heatmaps(maps, (64, 64))[1]                            # (77, 64, 64), all steps, [cond]
mass = overall.mean(dim=(1, 2))                                            # (77,) mean share per pixel
print(f"a pixel's attention, on average over steps and pixels: <start> {mass[0]:.0%}, the {END - 1} words "
      f"{mass[1:END].sum():.0%}, <|endoftext|> {mass[END]:.0%}, the {76 - END} padding copies {mass[END + 1:].sum():.0%}")

# %%
steps_to_show = (0, 5, 10, 19)
per_step = [attention_heatmaps(maps, (64, 64), calls=[s])[1] for s in steps_to_show]   # [cond] of [uncond; cond]: (77, 64, 64)
fig, axes = plt.subplots(len(show), len(steps_to_show) + 1, layout="constrained",
                         figsize=(1.75 * (len(steps_to_show) + 1) + 0.6, 1.65 * len(show)))
for r, (label, j) in enumerate(show.items()):
    row_maps = torch.stack([h[j] for h in per_step])                        # (4, 64, 64): one colour scale per row
    lo, hi = float(row_maps.min()), float(row_maps.max())
    axes[r, 0].imshow(heat_image[0].permute(1, 2, 0))
    axes[r, 0].set_ylabel(label, fontsize=9)
    for c, (s, m) in enumerate(zip(steps_to_show, row_maps)):
        axes[r, c + 1].imshow(heat_image[0].mean(0), cmap="gray", vmin=0, vmax=1)   # grey: no red to mix in
        shown = axes[r, c + 1].imshow(m, cmap="jet", alpha=0.55, vmin=lo, vmax=hi)
        if r == 0:
            axes[r, c + 1].set_title(f"step {s + 1} of 20", fontsize=9)
    bar = fig.colorbar(shown, ax=axes[r, 1:].tolist(), fraction=0.05, pad=0.02)
    bar.ax.tick_params(labelsize=7)
    bar.set_label("share", fontsize=7)
    bar.solids.set_alpha(1)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
axes[0, 0].set_title("final image", fontsize=9)
fig.suptitle("share of each pixel's attention on one token (one colour scale per row)", fontsize=9)
save_figure(fig, "08_attention_steps.png")
plt.show()

# %% [markdown]
# Which words does the model use to *place* the shape? The reader's coverage map (notebook 00) tells
# which pixels are the shape; we compare each word's share of attention mass on those pixels with the
# share of the image they cover (what uniform attention would give). A word far above that share is
# looked up where the object is drawn; one far below is consulted mostly elsewhere (for instance, to keep
# the background empty). At 8×8 latents the maps are coarse: three UNet levels of 8×8, 4×4 and 2×2.
# In the figure, averaged over all 20 steps, **each panel has its own colour scale** (its colour bar).

# %%
alpha = evaluate.foreground(heat_image * 2 - 1)[0][0]                      # (64, 64) coverage of the shape
mask = alpha > 0.5
uniform = mask.float().mean().item()                                      # the share uniform attention gives
print(f"the shape covers {uniform:.0%} of the image")
on_shape = {}
for label, j in show.items():
    on_shape[label] = ((overall[j] * mask).sum() / overall[j].sum()).item()
    print(f"  {label}: {on_shape[label]:.0%} of its attention on the shape")
fig = plot_attention_maps(heat_image[0] * 2 - 1, overall[list(show.values())], list(show), colorbar=True)
save_figure(fig, "08_attention_average.png")
plt.show()
assert on_shape['"left"'] > uniform > max(on_shape['"red"'], on_shape['"circle"'])

# %% [markdown]
# Perhaps surprisingly, "red" and "circle" put *less* of their attention on the circle than uniform attention
# would; only "left" (and the end token) are above that share. In this tiny model the words that name *what*
# to draw are read all over the image, most of it background, and the shape is placed where the position
# words look. Nothing in a one-object world forces a colour word to find *its* object: any pixel can read
# "red", since there is only one thing to be red. In a scene of two objects, where "red" belongs to one and not
# the other, a word's map has to point at its object to be of use (`benchmarks/bench_scene_attention.py`
# measures how often it does on a two-object model).

# %% [markdown]
# ## 7. An interactive panel
#
# `panel` is a plain function: prompt, seed, steps, guidance and sampler in, image (and what the reader
# sees in it) out. ipywidgets calls it whenever a control changes; we also call it once directly so the
# stored notebook shows a result.

# %%
def panel(prompt: str = "a small orange square in the bottom left", seed: int = 0, steps: int = 20,
          guidance: float = 5.0, sampler: str = "dpm++"):
    t0 = time.perf_counter()
    image = pipe.text_to_image(prompt, seed=seed, num_inference_steps=steps, guidance_scale=guidance,
                               scheduler=scheduler_for(sampler))[0]
    read = evaluate.read_attributes([image])[0]
    fig, ax = plt.subplots(figsize=(3, 3.2))
    ax.imshow(image)
    ax.axis("off")
    ax.set_title(f"{prompt}\nread: {read.caption()[2:]} · {time.perf_counter() - t0:.1f} s", fontsize=8)
    plt.show()
    return read


read = panel()
print(read)

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets

widgets.interact(panel,
                 prompt=widgets.Text(value="a small orange square in the bottom left", continuous_update=False),
                 seed=widgets.IntSlider(value=0, min=0, max=50, continuous_update=False),
                 steps=widgets.IntSlider(value=20, min=1, max=60, continuous_update=False),
                 guidance=widgets.FloatSlider(value=5.0, min=1.0, max=15.0, step=0.5, continuous_update=False),
                 sampler=widgets.Dropdown(options=["dpm++", "ddim", "euler", "euler_a", "ddpm"], value="dpm++"));

# %% [markdown]
# ## 8. The same loop on diffusers' components
#
# The bundled model is a diffusers folder, so diffusers loads it as it is (offline). Its tokenizer, CLIP
# text model, UNet, VAE and DPM-Solver++ scheduler have slightly different call conventions (keyword
# arguments, outputs wrapped in objects); a line each adapts them to our `generate_simplified`. Same
# weights, same noise: the same picture. And diffusers' own pipeline agrees too.

# %%
# NBVAL_IGNORE_OUTPUT
from diffusers import StableDiffusionPipeline

dpipe = StableDiffusionPipeline.from_pretrained(TINY_MODEL_DIR, safety_checker=None, feature_extractor=None,
                                                requires_safety_checker=False)
dpipe.set_progress_bar_config(disable=True)
print(diffusers.__version__, type(dpipe.scheduler).__name__)

# %%
theirs_parts = {
    "tokenize": lambda p: dpipe.tokenizer(p, padding="max_length", max_length=dpipe.tokenizer.model_max_length,
                                          truncation=True, return_tensors="pt").input_ids,
    "encode": lambda ids: dpipe.text_encoder(ids)[0],
    "unet": lambda z, t, c: dpipe.unet(z, t, encoder_hidden_states=c).sample,
    "decode": lambda z: dpipe.vae.decode(z).sample,
    "scheduler": dpipe.scheduler,
    "scaling_factor": dpipe.vae.config.scaling_factor,
}
with torch.no_grad():
    on_diffusers = generate_simplified(prompts, theirs_parts, seed=0)
    z_T = torch.randn(len(prompts), 4, 8, 8, generator=torch.Generator().manual_seed(0))
    diffusers_pipeline = dpipe(prompts, latents=z_T, num_inference_steps=20, guidance_scale=5.0, output_type="pt").images
print(f"our loop on diffusers' parts vs on sdlearn's parts: max |difference| = {(on_diffusers - mine).abs().max():.1e}")
print(f"diffusers' own pipeline vs sdlearn's pipeline:     max |difference| = {(diffusers_pipeline - theirs).abs().max():.1e}")
# tolerance: float32 round-off through 20 steps of two differently written (but equal) networks
assert torch.allclose(on_diffusers, mine, atol=1e-3) and torch.allclose(diffusers_pipeline, theirs, atol=1e-3)
fig = image_grid(torch.cat([mine, on_diffusers, diffusers_pipeline]) * 2 - 1, nrow=4,
                 captions=[f"{w}: {p[2:]}" for w in ("sdlearn", "loop on diffusers", "diffusers pipeline") for p in prompts], figsize=1.7)
save_figure(fig, "08_diffusers.png")
plt.show()

# %% [markdown]
# ## 9. Exercises
#
# **Exercise 1.** Count the work. With B prompts, n steps and guidance w, how many *rows* (single latents)
# does the UNet process in one `text_to_image` call? (Guidance w ≤ 1 skips the unconditional half.)

# %%
def unet_rows(B: int, n: int, w: float) -> int:
    # BEGIN SOLUTION
    return B * n * (2 if w > 1 else 1)
    # END SOLUTION
    # STUB: return None   # an int, from B, n and w


# %%
from sdlearn.exercises import check


def counts_rows(fn):
    rows_seen = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: rows_seen.append(out.shape[0]))
    try:
        for B, n, w in ((1, 5, 5.0), (3, 4, 1.0), (2, 7, 7.5)):
            rows_seen.clear()
            pipe.text_to_image(["a red circle"] * B, num_inference_steps=n, guidance_scale=w, seed=0, output_type="latent")
            if fn(B, n, w) != sum(rows_seen):
                return f"with B={B}, n={n}, w={w} the UNet saw {sum(rows_seen)} rows; unet_rows says {fn(B, n, w)}"
    finally:
        hook.remove()
    return True


ok = check("Exercise 1", unet_rows, test=counts_rows,
           hint="one UNet call per step; with guidance each call holds the batch twice (unconditional and conditional)")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **Exercise 2.** A friend called `pipe.text_to_image([p, p], generator=gen)` three times, two images per
# call, with one `gen = torch.Generator().manual_seed(42)`, and liked the **second** image of the **third**
# call. Rebuild that image with a single call for the one prompt `p` that passes `latents=` (DPM-Solver++
# draws no noise during the steps).

# %%
p = "a small green diamond in the center"
# BEGIN SOLUTION
liked_latents = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(42))[5:6]   # call 3, image 2
rebuilt = pipe.text_to_image(p, latents=liked_latents, output_type="pt")
# END SOLUTION
# STUB: rebuilt = None   # a (1, 3, 64, 64) image from pipe.text_to_image(p, latents=..., output_type="pt")

# %%
gen = torch.Generator().manual_seed(42)
friends = [pipe.text_to_image([p, p], generator=gen, output_type="pt") for _ in range(3)]   # 3 x (2, 3, 64, 64)
ok = check("Exercise 2", rebuilt,
           test=lambda x: x.shape == (1, 3, 64, 64) and torch.allclose(x, friends[2][1:], atol=1e-5) or "not that image",
           hint="every image takes the next (4, 8, 8) block of the generator's stream, call after call")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **Exercise 3.** Which word of "a large red circle in the top left" (not the start or end token) gets the *least* of its attention on the
# shape itself, and why is that plausible? Compute the share for every word (reuse `overall`, `mask` and
# `words`) and store the word in `least`.

# %%
# BEGIN SOLUTION
shares = {w: ((overall[j] * mask).sum() / overall[j].sum()).item() for j, w in enumerate(words) if 0 < j < len(words) - 1}
least = min(shares, key=shares.get)
# END SOLUTION
# STUB: least = None   # a word (str) of the prompt
least

# %%
on_shape = {w: float(overall[words.index(w)][mask].sum() / overall[words.index(w)].sum()) for w in words[1:-1]}
ok = check("Exercise 3", least, expected=min(on_shape, key=on_shape.get),
           hint="for each word j, (overall[j] * mask).sum() / overall[j].sum() is its share on the shape")
# BEGIN SOLUTION
assert ok
print(f"'{least}': {on_shape[least]:.0%} of its attention on the shape")
# END SOLUTION

# %% [markdown]
# **Exercise 4.** How hard does a negative prompt pull? Swapping the empty negative prompt for a negative n
# changes the guided prediction ε̂ by some multiple k of ε(∅) − ε(n): the direction *away* from n, measured
# from the empty prompt's prediction (section 3's formula, with n and then ∅ in the negative slot). Write
# `negative_pull(w)`, that multiple k for guidance scale w ≥ 1 (the pipeline skips the negative prompt below 1). Before you run the check: what does your k say
# about a negative prompt at w = 1, and how much harder does it pull at w = 7.5 than at w = 3?

# %%
def negative_pull(w: float) -> float:
    # BEGIN SOLUTION
    return w - 1.0      # eps(n) + w (eps(y) - eps(n)) minus the same with the empty prompt: (w - 1)(eps(0) - eps(n))
    # END SOLUTION
    # STUB: return None   # a float, from w


# %%
def pulls_like_the_pipeline(fn):
    """Measure k on the UNet: the pipeline's guided eps with negative "red" minus with "", against eps(0) - eps(n)."""
    y, n_text = "a large star in the center", "red"
    states = {p: pipe.text_encoder(pipe.tokenizer([p])) for p in (y, "", n_text)}       # 3 x (1, 77, d)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sched = scheduler_for("dpm++")
    sched.set_timesteps(20)
    t = sched.timesteps[5]
    with torch.no_grad():
        eps_alone = {p: pipe.predict_noise(z, t, states[p], 1.0, sched) for p in ("", n_text)}   # unguided eps(.)
        away = eps_alone[""] - eps_alone[n_text]                                               # (1, 4, 8, 8)
        for w in (1.0, 2.0, 3.0, 7.5):
            # the pipeline's context: [negative; prompt] when it guides (w > 1), the prompt alone when not
            context = {p: torch.cat([states[p], states[y]]) if w > 1 else states[y] for p in ("", n_text)}
            guided = {p: pipe.predict_noise(z, t, context[p], w, sched) for p in ("", n_text)}
            shift = guided[n_text] - guided[""]
            k = float((shift * away).sum() / (away * away).sum())                              # least squares
            got = fn(w)
            if not isinstance(got, (int, float)) or abs(got - k) > 1e-3 * max(1.0, abs(k)):
                return (f"at w = {w} negative_pull gives {got}, which is too "
                        f"{'large' if isinstance(got, (int, float)) and got > k else 'small' if isinstance(got, (int, float)) else 'odd: not a number'}")
    return True


ok = check("Exercise 4", negative_pull, test=pulls_like_the_pipeline,
           hint="write the guided eps twice, once with n and once with the empty prompt in the negative slot, and "
                "subtract: the w eps(y) terms cancel")
# BEGIN SOLUTION
assert ok
print(f"w = 1: k = {negative_pull(1.0):g}, a negative prompt does nothing (the pipeline skips it); "
      f"w = 7.5 pulls {negative_pull(7.5) / negative_pull(3.0):.2f}x as hard as w = 3")
# END SOLUTION
