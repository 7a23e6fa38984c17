# %% [markdown]
# # 06 · The UNet: the network that predicts the noise
#
# {{COLAB_BADGE}}
#
# **What you will learn**
#
# 1. The noise predictor as a function **ε_θ(x_t, t, text)**: what goes in, what comes out.
# 2. How a single number t becomes a 320-dimensional **timestep embedding**, and why sines of many
#    frequencies make every step recognisable.
# 3. The **resnet block** (where t enters) and the **spatial transformer** (where text enters).
# 4. A **shape trace** of one forward pass of the real SD 1.5 UNet, level by level, down and up, with
#    its skip connections, run on PyTorch's `meta` device: shapes without arithmetic.
# 5. SD 1.5's **859,520,964 parameters** computed by hand from its config, and **where the compute goes**.
# 6. That `sdlearn.unet.UNet` is diffusers' `UNet2DConditionModel`: same weights in, same noise out.

# %% [setup]

# %%
import math
import time
from collections import defaultdict

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sdlearn.configs import SD15_UNET, SD21_UNET
from sdlearn.device import seed_everything
from sdlearn.exercises import check
from sdlearn.pipeline import StableDiffusion
from sdlearn.viz import save_figure
from sdlearn.unet import ResnetBlock, UNet, timestep_embedding

torch.set_num_threads(1)  # small tensors: one thread is as fast and repeatable
g = seed_everything(0)

# %% [markdown]
# ## 1. The noise predictor as a function
#
# Training (notebooks 02 and 07) asks one network to look at a noisy latent x_t, the step t it was noised to
# and the text, and say which noise ε was added: the loss is ‖ε − ε_θ(x_t, t, τ(y))‖². So the network
# maps a (B, 4, h, w) latent to a (B, 4, h, w) noise estimate of the **same shape**; t is one number
# per image; the text is a (B, 77, 768) sequence of token vectors from CLIP (notebook 04).
#
# Stable Diffusion 1.5's UNet is described completely by a small dict (its `config.json`). We will
# use a **classroom-size** version with the same structure for anything that computes, and the real
# one wherever only shapes and counts matter.
#
# A trap in these configs: in SD 1.x, **`attention_head_dim` is the number of heads**, not their
# width (a historical misnaming in diffusers, kept for compatibility; newer configs add
# `num_attention_heads`). SD 1.5's `8` means 8 heads at every level, each C/8 wide; SD 2.1's
# `[5, 10, 20, 20]` means 5, 10, 20, 20 heads, each 64 wide.

# %%
print({k: SD15_UNET[k] for k in ("block_out_channels", "layers_per_block", "attention_head_dim",
                                 "cross_attention_dim", "down_block_types", "up_block_types")})


def heads_per_level(cfg):
    """[(channels, heads, head width)] per level: attention_head_dim counts heads in SD 1.x/2.x configs."""
    n = cfg.get("num_attention_heads") or cfg["attention_head_dim"]
    n = n if isinstance(n, (list, tuple)) else [n] * len(cfg["block_out_channels"])
    return [(c, h, c // h) for c, h in zip(cfg["block_out_channels"], n)]


for name, cfg in [("SD 1.5", SD15_UNET), ("SD 2.1", SD21_UNET)]:
    print(f"{name}: heads x width per level:", ", ".join(f"{c} = {h} x {w}" for c, h, w in heads_per_level(cfg)))

SMALL = {**SD15_UNET, "block_out_channels": [32, 64, 128, 128], "attention_head_dim": 4,
         "cross_attention_dim": 64, "norm_num_groups": 8, "sample_size": 16}
unet = UNet.from_config(SMALL).eval()

x_t = torch.randn(2, 4, 16, 16, generator=g)            # two noisy latents (a 128x128 image each)
t = torch.tensor([50, 900])                               # one timestep per image
text = torch.randn(2, 77, 64, generator=g)                # stand-in for the text encoder's output
with torch.no_grad():
    eps = unet(x_t, t, text)
print("x_t", tuple(x_t.shape), "+ t", tuple(t.shape), "+ text", tuple(text.shape), "-> eps", tuple(eps.shape))
print(f"classroom UNet: {sum(p.numel() for p in unet.parameters()):,} parameters")
print("classroom heads x width per level:", ", ".join(f"{c} = {h} x {w}" for c, h, w in heads_per_level(SMALL)))
attn = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2     # the 64-channel level
assert (attn.heads, attn.dim_head) == heads_per_level(SMALL)[1][1:]     # 4 heads of 16, not heads of 4

# %% [markdown]
# ### Why predict ε? It is the score in disguise
#
# Notebook 02's lecture topic was the **score** ∇ log q(x_t), the direction towards more likely noisy
# images. Predicting ε is the same thing, rescaled. Given x₀, x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε is Gaussian,
# so ∇_{x_t} log q(x_t | x₀) = −ε / √(1−ᾱ_t). Averaged over the x₀ that could have produced x_t
# (Vincent 2011; "Tweedie's formula"), ∇ log q(x_t) = −E[ε | x_t] / √(1−ᾱ_t). The loss
# ‖ε − ε_θ‖² is minimised by ε_θ = E[ε | x_t], so
#
# $$s_\theta(x_t, t) = -\frac{\epsilon_\theta(x_t, t)}{\sqrt{1 - \bar\alpha_t}} \approx \nabla_{x_t} \log q(x_t):$$
#
# the UNet estimates the score of the noisy data, scaled by −√(1−ᾱ_t). A check where everything is
# known: for data x₀ ~ N(0, σ²), q(x_t) = N(0, ᾱσ² + 1 − ᾱ), whose score is −x_t / (ᾱσ² + 1 − ᾱ). The best
# ε-predictor is then linear in x_t, and least squares on samples finds its slope.

# %%
sigma, abar = 2.0, 0.3
x0_toy, e_toy = sigma * torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
xt_toy = math.sqrt(abar) * x0_toy + math.sqrt(1 - abar) * e_toy
slope = ((xt_toy * e_toy).sum() / (xt_toy * xt_toy).sum()).item()   # least squares: eps ~ slope * x_t
score_slope = -1 / (abar * sigma ** 2 + 1 - abar)                     # d/dx log N(x; 0, var) = -x / var
print(f"-eps slope / sqrt(1 - abar) = {-slope / math.sqrt(1 - abar):.3f}   score slope = {score_slope:.3f}")
assert abs(-slope / math.sqrt(1 - abar) - score_slope) < 0.01

# %% [markdown]
# ### The same UNet with and without text
#
# The text is an *input*, not part of the network: the unconditional prediction is the same UNet fed
# the empty prompt's embedding, which is what classifier-free guidance (notebook 08) subtracts. The
# bundled tiny model (trained in notebook 07; 8×8 latents, 64/128/128 channels) shows the difference:
# one noisy latent at t = 700, three contexts, and the clean image each ε implies,
# x̂₀ = (x_t − √(1−ᾱ_t) ε_θ) / √ᾱ_t, decoded by the VAE.

# %%
tiny = StableDiffusion.tiny(device="cpu")
prompts = ["a large red circle in the top left", "a large blue square in the bottom right", ""]
t_demo = 700
ab_demo = tiny.scheduler.alphas_cumprod[t_demo]
z_t = torch.randn(1, 4, 8, 8, generator=g).expand(3, -1, -1, -1)      # the same noisy latent, 3 times
with torch.no_grad():
    context = tiny.encode_prompt(prompts)                              # (3, 77, 128)
    eps_text = tiny.unet(z_t, torch.tensor(t_demo), context)           # (3, 4, 8, 8)
    pictures = tiny.decode_latents((z_t - (1 - ab_demo).sqrt() * eps_text) / ab_demo.sqrt())
change = [((eps_text[i] - eps_text[2]).norm() / eps_text[2].norm()).item() for i in (0, 1)]
print("|eps(text) - eps(empty)| / |eps(empty)|:", [round(c, 2) for c in change])
assert min(change) > 0.1                                              # the text moves the prediction

fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
for ax, img, p in zip(axes, pictures, prompts):
    ax.imshow(((img.permute(1, 2, 0) + 1) / 2).numpy())
    ax.set_title(f'"{p}"' if p else '"" (no text)', fontsize=9)
    ax.axis("off")
_ = fig.suptitle(f"the x0 implied by one UNet's eps at t = {t_demo}, same noisy latent, three contexts", fontsize=10)

# %% [markdown]
# ## 2. Telling the network the time: sinusoidal timestep embeddings
#
# A single number t ∈ [0, 999] is a poor input for a network (one scalar, wildly different scales).
# Instead t is written as 160 sines and 160 cosines of geometrically spaced frequencies
# (Vaswani et al. 2017; Ho et al. 2020):
#
# $$\text{emb}(t) = [\cos(t\,\omega_0), \dots, \cos(t\,\omega_{159}), \sin(t\,\omega_0), \dots, \sin(t\,\omega_{159})],
# \qquad \omega_i = 10000^{-i/160}$$
#
# (SD puts cos first: `flip_sin_to_cos=True`.) The fast frequencies (ω ≈ 1) distinguish neighbouring
# steps; the slow ones change little over the whole range and tell early from late, like the hands of
# a clock. Why 10000? The slowest wave has period 2π·10000^(159/160) ≈ 59,000 steps, far more than
# 1000, so even the slow waves never come back round. The cell below measures what this buys: every
# step's nearest embedding is that of a neighbouring step (no far-away step comes close), and the
# similarity falls with the distance between the steps.

# %%
ts = torch.arange(1000)
E = timestep_embedding(ts, 320, flip_sin_to_cos=True, freq_shift=0)   # (1000,) -> (1000, 320)
omega = 10000 ** (-torch.arange(160) / 160)
print(f"fastest period {2 * math.pi / omega[0]:.2f} steps, slowest period {2 * math.pi / omega[-1]:,.0f} steps")

sim = F.normalize(E, dim=1) @ F.normalize(E, dim=1).T          # cosine similarity (1000, 1000)
D = torch.cdist(E, E).fill_diagonal_(float("inf"))              # distances between all pairs of steps
nearest = D.argmin(dim=1)                                       # each step's closest other step
by_lag = [sim.diagonal(lag).mean().item() for lag in (1, 10, 100, 999)]
print(f"closest pair of different steps: {D.min():.2f} apart (embedding norm {E[0].norm():.2f}); "
      f"every step's nearest is t +- 1: {bool(((nearest - ts).abs() == 1).all())}")
print("mean cos similarity at |t - t'| = 1, 10, 100, 999:", np.round(by_lag, 2))
assert ((nearest - ts).abs() == 1).all() and all(a > b for a, b in zip(by_lag, by_lag[1:]))

fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
im0 = axes[0].imshow(E.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
axes[0].set(xlabel="timestep t", ylabel="embedding dimension (0-159 cos, 160-319 sin)",
            title="emb(t): cos block, then sin block")
fig.colorbar(im0, ax=axes[0], label="value (centred at 0)")
for i in (50, 70, 100, 159):
    axes[1].plot(ts, E[:, i], label=f"$\\omega_{{{i}}}$ = {omega[i]:.3g} rad/step")
axes[1].set(xlabel="timestep t", ylabel="cos(ω t)", title="four of the 160 cosines (slow ones)", xlim=(0, 999))
axes[1].legend(fontsize=7, loc="lower left")
im = axes[2].imshow(sim, cmap="viridis", vmin=0, vmax=1, origin="lower")
axes[2].set(xlabel="timestep t", ylabel="timestep t'", title="cosine similarity of emb(t), emb(t')")
fig.colorbar(im, ax=axes[2], label="cosine similarity")
fig.tight_layout()
_ = save_figure(fig, "06_timestep_embedding.png")

# %% [markdown]
# The embedding then goes through a small MLP (320 → 1280 → 1280, `time_embedding.linear_1/2`) so the
# network can shape it, and every resnet block receives the result.
#
# ## 3. The resnet block: where t enters
#
# GroupNorm → SiLU → 3×3 conv, **add the projected time embedding as one bias per channel**, GroupNorm →
# SiLU → 3×3 conv, and add the input back (through a 1×1 conv when the channel count changes). The
# time embedding cannot move individual pixels, only shift whole channels: it tells every filter how
# much noise to expect.
#
# ![Inside a resnet block and a spatial-transformer block](../images/06_blocks.png)

# %%
block = ResnetBlock(32, 64, temb_dim=128, groups=8, eps=1e-5, dropout=0.0).eval()
h = torch.randn(1, 32, 16, 16, generator=g)
with torch.no_grad():
    temb = F.silu(unet.time_embedding(timestep_embedding(torch.tensor([10, 500, 990]), 32)))[:, :128]
    shifts = block.time_emb_proj(temb)                           # (3, 128) -> (3, 64): one bias per channel
    outs = [block(h, temb[i:i + 1]) for i in range(3)]
print("resnet block:", tuple(h.shape), "->", tuple(outs[0].shape), "| shortcut:", block.conv_shortcut)
print("per-channel shift from t=10 vs t=990, first 4 channels:",
      shifts[0, :4].numpy().round(2), shifts[2, :4].numpy().round(2))


def resnet_by_hand(b, x, emb):                                    # x: (B, in, H, W), emb: (B, temb_dim)
    hh = b.conv1(F.silu(b.norm1(x)))                              # (B, out, H, W)
    hh = hh + b.time_emb_proj(emb)[:, :, None, None]              # t enters: one shift per channel
    hh = b.conv2(F.silu(b.norm2(hh)))
    return b.conv_shortcut(x) + hh                                # 1x1 conv: 32 -> 64 channels


with torch.no_grad():
    for i in range(3):
        assert torch.allclose(resnet_by_hand(block, h, temb[i:i + 1]), outs[i], atol=1e-5)
    # the shift of the first conv's output is exactly the projected time embedding, the same at every pixel
    after_conv1 = [block.conv1(F.silu(block.norm1(h))) + shifts[i][:, None, None] for i in (0, 2)]
    assert torch.allclose((after_conv1[1] - after_conv1[0]).std(dim=(-1, -2)), torch.zeros(64), atol=1e-5)
print("resnet block by hand = ResnetBlock for t = 10, 500, 990; relative change of the output t=10 -> 990:",
      f"{((outs[2] - outs[0]).norm() / outs[0].norm()).item():.2f}")

# %% [markdown]
# ## 4. The spatial transformer: where the text enters
#
# At each attention level the feature map (B, C, H, W) is read as H·W tokens of width C. A transformer
# layer then applies, each with a residual connection: **self-attention** (positions look at
# positions), **cross-attention** (positions look at the 77 text tokens: notebook 05), and a GEGLU
# **feed-forward** (a 4×-wide gated MLP). GroupNorm + a 1×1 conv (SD 1.x) or a linear layer (SD 2.x)
# project in and out.

# %%
st = unet.down_blocks[0].attentions[0]
print(type(st).__name__, "| norm", st.norm, "| proj_in", st.proj_in)
print("heads x width:", st.transformer_blocks[0].attn1.heads, "x", st.transformer_blocks[0].attn1.dim_head)
for name, m in st.transformer_blocks[0].named_children():
    print(f"  {name:6s}", m.__class__.__name__, "" if not hasattr(m, "to_k") else
          f"to_q {tuple(m.to_q.weight.shape)}, to_k {tuple(m.to_k.weight.shape)}")

# %% [markdown]
# The whole spatial transformer fits in a dozen lines. Written out with plain tensor operations and the block's
# own weights, and checked against it (SD 1.x layout: GroupNorm, 1×1 conv in, one transformer layer, 1×1 conv
# out, and a **long residual** around everything: the original LDM code starts proj_out at zero, so that a fresh
# block passes x through unchanged and learns only a correction):

# %%
def attend(a, x, context):
    """softmax(Q K^T / sqrt(d_head)) V with a's weights, heads split and merged again."""
    B, N, _ = x.shape
    split = lambda t: t.view(B, -1, a.heads, a.dim_head).transpose(1, 2)   # (B, n, heads*dh) -> (B, heads, n, dh)
    q, k, v = split(a.to_q(x)), split(a.to_k(context)), split(a.to_v(context))
    weights = (q @ k.transpose(-1, -2) / math.sqrt(a.dim_head)).softmax(dim=-1)   # (B, heads, N, M)
    return a.to_out[0]((weights @ v).transpose(1, 2).reshape(B, N, -1))   # merge heads, project: (B, N, dim)


def spatial_transformer_by_hand(st, x, context):                  # x: (B, C, H, W), context: (B, 77, d_text)
    B, C, H, W = x.shape
    h = st.proj_in(st.norm(x))                                    # GroupNorm, 1x1 conv: (B, C, H, W)
    h = h.flatten(2).transpose(1, 2)                              # one token per position: (B, H*W, C)
    for blk in st.transformer_blocks:
        h = attend(blk.attn1, blk.norm1(h), blk.norm1(h)) + h      # self-attention: positions <-> positions
        h = attend(blk.attn2, blk.norm2(h), context) + h           # cross-attention: positions <- text tokens
        value, gate = blk.ff.net[0].proj(blk.norm3(h)).chunk(2, dim=-1)   # GEGLU: (B, H*W, 8C) -> 2 x (B, H*W, 4C)
        h = blk.ff.net[2](value * F.gelu(gate)) + h                # gated MLP back to C, residual
    h = h.transpose(1, 2).reshape(B, C, H, W)                     # tokens back to a feature map
    return st.proj_out(h) + x                                     # 1x1 conv, the long residual


assert not st.linear_projection                                   # SD 1.x: 1x1 convolutions in and out
feat = torch.randn(2, st.norm.num_channels, 16, 16, generator=g)
text = torch.randn(2, 77, SMALL["cross_attention_dim"], generator=g)
with torch.no_grad():
    by_hand, ours = spatial_transformer_by_hand(st, feat, text), st(feat, text)
print("spatial transformer:", tuple(feat.shape), "+ text", tuple(text.shape), "->", tuple(by_hand.shape),
      f"| by hand vs sdlearn: max |difference| = {(by_hand - ours).abs().max():.1e}")
assert torch.allclose(by_hand, ours, atol=1e-5)

# %% [markdown]
# ## 5. A shape trace of the real SD 1.5 UNet
#
# On PyTorch's `meta` device tensors have shapes but no data: building the 860M-parameter UNet takes
# no memory and a forward pass computes every shape without a single multiplication. Forward hooks
# print what each block receives and returns, for a 512×512 image (a 64×64 latent), with classifier-free
# guidance's batch of 2. Watch the resolution halve three times on the way down and double on the way
# up, and each up block swallow three skip connections.
#
# ![The UNet as a U: resolution and channels per level, the skip connections, where t and the text enter](../images/06_unet_u.png)

# %%
with torch.device("meta"):
    sd = UNet.from_config(SD15_UNET)
    x_meta, ctx_meta = torch.empty(2, 4, 64, 64), torch.empty(2, 77, 768)

trace = []
def record(name):
    def hook(module, args, output):
        trace.append((name, tuple(args[0].shape), tuple(output[0].shape if isinstance(output, tuple) else output.shape)))
    return hook

handles = [sd.conv_in.register_forward_hook(record("conv_in"))]
handles += [b.register_forward_hook(record(f"down_blocks.{i}")) for i, b in enumerate(sd.down_blocks)]
handles += [sd.mid_block.register_forward_hook(record("mid_block"))]
handles += [b.register_forward_hook(record(f"up_blocks.{i}")) for i, b in enumerate(sd.up_blocks)]
handles += [sd.conv_out.register_forward_hook(record("conv_out"))]
with torch.no_grad():
    out_meta = sd(x_meta, torch.tensor([999, 999], device="meta"), ctx_meta)
for hd in handles:
    hd.remove()

print(f"{'block':14s} {'in':>20s}    {'out':>20s}   skips")
for name, i, o in trace:
    blk = dict(sd.named_modules())[name]
    skips = (f"pushes {len(blk.resnets) + (blk.downsamplers is not None)}" if name.startswith("down")
             else f"pops {len(blk.resnets)}" if name.startswith("up") else "")
    print(f"{name:14s} {str(i):>20s} -> {str(o):>20s}   {skips}")
pushed = 1 + sum(len(b.resnets) + (b.downsamplers is not None) for b in sd.down_blocks)   # conv_in + blocks
popped = sum(len(b.resnets) for b in sd.up_blocks)
print(f"skips pushed {pushed}, popped {popped}")
assert out_meta.shape == (2, 4, 64, 64) and pushed == popped == 12
assert [o[-1] for n, i, o in trace if n.startswith("down")] == [32, 16, 8, 8]   # the sides of the levels

# %% [markdown]
# The skips balance: conv_in's output plus 3 + 3 + 3 + 2 pushed on the way down = 12, popped 3 at a
# time by the four up blocks. Each up resnet concatenates the skip on the channel axis, which is why
# their inputs are wider (e.g. 1280 + 1280 = 2560 channels) than their outputs.
#
# ## 6. 859,520,964 parameters, by hand
#
# Every parameter sits in a conv, a linear layer or a norm, and the config fixes every one of their
# sizes. Counting them by hand is the best test that we understand the architecture.

# %%
def conv(cin, cout, k):   return cin * cout * k * k + cout
def linear(cin, cout, bias=True): return cin * cout + (cout if bias else 0)
def norm(c):              return 2 * c                        # scale and shift


def resnet_params(cin, cout, temb):
    return (norm(cin) + conv(cin, cout, 3) + linear(temb, cout) + norm(cout) + conv(cout, cout, 3)
            + (conv(cin, cout, 1) if cin != cout else 0))


def transformer_params(c, ctx, linear_proj):
    proj = linear(c, c) if linear_proj else conv(c, c, 1)
    attn1 = 3 * linear(c, c, bias=False) + linear(c, c)          # to_q, to_k, to_v, to_out.0
    attn2 = linear(c, c, bias=False) + 2 * linear(ctx, c, bias=False) + linear(c, c)
    ff = linear(c, 8 * c) + linear(4 * c, c)                       # GEGLU: 2 x 4c, then back to c
    return norm(c) + 2 * proj + 3 * norm(c) + attn1 + attn2 + ff


# %% [markdown]
# The whole UNet, block by block, from the config alone:

# %%
def unet_params(cfg):
    ch, n, L = cfg["block_out_channels"], len(cfg["block_out_channels"]), cfg["layers_per_block"]
    ctx, lin, temb = cfg["cross_attention_dim"], cfg.get("use_linear_projection", False), 4 * ch[0]
    parts = {"conv_in + time MLP": conv(cfg["in_channels"], ch[0], 3) + linear(ch[0], temb) + linear(temb, temb)}
    for i, kind in enumerate(cfg["down_block_types"]):
        cin = ch[max(i - 1, 0)]
        p = sum(resnet_params(cin if j == 0 else ch[i], ch[i], temb) for j in range(L))
        p += L * transformer_params(ch[i], ctx, lin) if kind.startswith("CrossAttn") else 0
        parts[f"down {i}"] = p + (conv(ch[i], ch[i], 3) if i < n - 1 else 0)
    parts["mid"] = 2 * resnet_params(ch[-1], ch[-1], temb) + transformer_params(ch[-1], ctx, lin)
    rc = ch[::-1]
    for i, kind in enumerate(cfg["up_block_types"]):
        prev, skip_in = rc[max(i - 1, 0)], rc[min(i + 1, n - 1)]
        p = sum(resnet_params((prev if j == 0 else rc[i]) + (skip_in if j == L else rc[i]), rc[i], temb)
                for j in range(L + 1))
        p += (L + 1) * transformer_params(rc[i], ctx, lin) if kind.startswith("CrossAttn") else 0
        parts[f"up {i}"] = p + (conv(rc[i], rc[i], 3) if i < n - 1 else 0)
    parts["norm + conv_out"] = norm(ch[0]) + conv(ch[0], cfg["out_channels"], 3)
    return parts


# %%
for name, cfg, model in [("SD 1.5", SD15_UNET, sd), ("classroom", SMALL, unet)]:
    by_hand = sum(unet_params(cfg).values())
    actual = sum(p.numel() for p in model.parameters())
    print(f"{name:10s} by hand {by_hand:>13,}   counted in the module {actual:>13,}")
    assert by_hand == actual
with torch.device("meta"):
    sd21 = UNet.from_config(SD21_UNET)
assert sum(unet_params(SD21_UNET).values()) == sum(p.numel() for p in sd21.parameters())
print(f"SD 2.1     by hand {sum(unet_params(SD21_UNET).values()):>13,}   (1024-wide context, linear projections)")
print(f"SD 1.5 in float32: {sum(unet_params(SD15_UNET).values()) * 4 / 2**30:.2f} GiB; "
      f"the classroom UNet is {sum(unet_params(SD15_UNET).values()) / sum(unet_params(SMALL).values()):,.0f}x smaller")

# %% [markdown]
# ## 7. Where the compute goes
#
# Parameters and compute live in different places. The wide 1280-channel levels hold most of the
# parameters but run on 16×16 and 8×8 maps; the 320-channel level has few parameters but runs on all
# 64×64 = 4096 positions, and its self-attention compares every position with every other. PyTorch's
# `FlopCounterMode` counts the floating-point operations of the meta forward pass, block by block, the
# usual way: **2 FLOPs per multiply-add** (a k-long dot product is k multiplies and k adds). So the total
# below in TFLOP is twice the number of multiply-accumulates (MACs), which some papers quote instead.

# %%
with torch.no_grad(), FlopCounterMode(display=False) as counter:
    sd(x_meta[:1], torch.tensor([999], device="meta"), ctx_meta[:1])
flops = {k.removeprefix("UNet."): sum(v.values()) for k, v in counter.get_flop_counts().items()}
total = flops["UNet"]
blocks = [f"down_blocks.{i}" for i in range(4)] + ["mid_block"] + [f"up_blocks.{i}" for i in range(4)]
params = list(unet_params(SD15_UNET).values())[1:-1]
attn_flops = {b: sum(v for k, v in flops.items() if k.startswith(b + ".") and k.endswith(("attn1", "attn2"))) for b in blocks}

print(f"one SD 1.5 UNet evaluation at 512x512: {total / 1e12:.2f} TFLOP = {total / 2e12:.2f} T multiply-adds")
one_conv = 2 * 320 * 4 * 9 * 64 * 64                               # conv_in: 2 x (in x out x 3 x 3) per pixel
assert flops["conv_in"] == one_conv                                 # FlopCounterMode: 2 FLOPs per multiply-add
fig, ax = plt.subplots(figsize=(11, 3.8))
xs = np.arange(len(blocks))
sides = [64, 32, 16, 8, 8, 8, 16, 32, 64]
ax.bar(xs - 0.2, 100 * np.array(params) / sum(params), 0.4, color="tab:blue", label="share of the blocks' parameters")
ax.bar(xs + 0.2, [100 * flops[b] / total for b in blocks], 0.4, color="tab:orange", label="share of FLOPs")
ax.bar(xs + 0.2, [100 * attn_flops[b] / total for b in blocks], 0.4, color="tab:red",
       label="... of which attention (attn1 + attn2)")
ax.set_xticks(xs, [f"{b}\n{s}x{s}" for b, s in zip(blocks, sides)], fontsize=8)
ax.set(ylabel="share (%)", xlabel="block (and the side of the latent map it works on)")
ax.legend()
ax.set_title(f"SD 1.5 UNet, 64x64 latent ({sum(params) / 1e6:.0f}M parameters in these blocks, "
             f"{total / 1e12:.2f} TFLOP): parameters sit in the coarse levels, compute in the fine ones", fontsize=10)
fig.tight_layout()
_ = save_figure(fig, "06_params_vs_flops.png")
assert flops["up_blocks.3"] > flops["up_blocks.0"] and params[8] < params[5]

# %% [markdown]
# On the classroom UNet we can time the blocks for real (hooks before and after each block). The
# numbers depend on your machine; the pattern follows the FLOP count.

# %%
# NBVAL_IGNORE_OUTPUT
times = defaultdict(float)
def tic(name):
    return lambda m, args: times.__setitem__(name + "_t0", time.perf_counter())
def toc(name):
    return lambda m, args, out: times.__setitem__(name, times[name] + time.perf_counter() - times[name + "_t0"])

big_x, big_text = torch.randn(1, 4, 32, 32, generator=g), torch.randn(1, 77, 64, generator=g)
named = dict(unet.named_modules())
hs = [named[b].register_forward_pre_hook(tic(b)) for b in blocks] + [named[b].register_forward_hook(toc(b)) for b in blocks]
with torch.no_grad():
    unet(big_x, 500, big_text)                     # warm-up
    for k in [k for k in times if not k.endswith("_t0")]:
        times[k] = 0.0
    for _ in range(3):
        unet(big_x, 500, big_text)
for hd in hs:
    hd.remove()
for b in blocks:
    print(f"{b:14s} {times[b] / 3 * 1000:7.1f} ms")

# %% [markdown]
# ## 8. sdlearn's UNet *is* diffusers' UNet2DConditionModel
#
# The parameter names of `sdlearn.unet.UNet` are diffusers', so diffusers' state dict loads into it
# unchanged (`strict=True`), and real SD 1.x/2.x checkpoints load with `UNet.from_pretrained(folder)`.
# Here both libraries build the classroom config, diffusers' random weights are copied into ours, and
# both predict the noise for a batch of mixed timesteps. (The tests do the same with the full SD 1.5
# and SD 2.1 configs.)

# %%
from diffusers import UNet2DConditionModel

torch.manual_seed(0)
theirs = UNet2DConditionModel.from_config(SMALL).eval()
ours = UNet.from_config(SMALL).eval()
ours.load_state_dict(theirs.state_dict(), strict=True)
assert set(ours.state_dict()) == set(theirs.state_dict())

x_t = torch.randn(3, 4, 16, 16, generator=g)
t = torch.tensor([1, 400, 999])
text = torch.randn(3, 77, 64, generator=g)
with torch.no_grad():
    eps_ours = ours(x_t, t, text)
    eps_theirs = theirs(x_t, t, encoder_hidden_states=text).sample
err = (eps_ours - eps_theirs).abs().max().item()
print(f"{len(ours.state_dict())} tensors with identical names; max |eps_ours - eps_diffusers| < 1e-5: {err < 1e-5}")
assert err < 1e-5   # the same float32 operations in the same order: equal up to round-off

# %% [markdown]
# ## Exercises
#
# **1.** How many parameters does the first resnet of SD 1.5's `down_blocks.1` hold (320 → 640
# channels, 1280-dim time embedding)? Use the counting functions above.

# %%
# BEGIN SOLUTION
answer_1 = resnet_params(320, 640, 1280)
# END SOLUTION
# STUB: answer_1 = None   # an int: the number of parameters
answer_1

# %%
ok = check("Exercise 1", answer_1, expected=sum(p.numel() for p in sd.down_blocks[1].resnets[0].parameters()),
           hint="resnet_params(cin, cout, temb) counts two GroupNorms, two 3x3 convs, the time projection "
                "and the 1x1 shortcut that a change of channels needs")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **2.** SD 2.1 makes 768×768 images with a VAE that shrinks each side 8×. What is the spatial size
# (height, width) of the feature map entering SD 2.1's `mid_block`? The check runs a meta forward pass.

# %%
# BEGIN SOLUTION
answer_2 = (768 // 8 // 2 ** 3, 768 // 8 // 2 ** 3)
# END SOLUTION
# STUB: answer_2 = None   # a tuple (height, width)
answer_2

# %%
seen = {}
def remember(module, args, output):       # a forward hook must return None (or it replaces the output)
    seen["shape"] = tuple(output.shape[-2:])
hook = sd21.mid_block.register_forward_hook(remember)
with torch.no_grad(), torch.device("meta"):
    sd21(torch.empty(1, 4, 96, 96), torch.tensor([1]), torch.empty(1, 77, 1024))
hook.remove()
ok = check("Exercise 2", answer_2, expected=seen["shape"],
           hint="the latent side is the image side / 8; the down path halves it once per downsampler, "
                "and SD 2.1 has as many as SD 1.5 (len(block_out_channels) - 1)")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **3.** Every image size that is a multiple of 8 (the VAE's factor) runs through SD 1.5, even when the
# latent side is not a multiple of 2³ = 8. On the way down, a stride-2 convolution with padding 1 turns
# a side n into ⌈n/2⌉ (65 → 33 → 17 → 9). On the way up, plain doubling would give 18, 34, 66: one too
# many wherever the down path halved an odd side, and the skip would not fit next to it. So the UNet
# (like diffusers') hands each upsampler the size of the skip it feeds (diffusers calls it
# `upsample_size`) instead of doubling. For which of these image sizes does at least one upsampler
# give something other than twice its input: 512, 520, 576, 600, 640? (The latent side is the image
# side / 8.)

# %%
# BEGIN SOLUTION
def sides_down(n, downsamplings=3):
    """The latent side at each level of the down path: n, ceil(n/2), ..."""
    sides = [n]
    for _ in range(downsamplings):
        sides.append(math.ceil(sides[-1] / 2))
    return sides

answer_3 = [s for s in (512, 520, 576, 600, 640)
            if any(2 * small != big for big, small in zip(sides_down(s // 8), sides_down(s // 8)[1:]))]
# END SOLUTION
# STUB: answer_3 = None   # a list of the image sizes, in the order above
answer_3

# %%
def upsampler_sizes(image_side):
    """Run SD 1.5 on the meta device; return each upsampler's (input side, output side)."""
    seen = []
    hooks = [b.upsamplers[0].register_forward_hook(
                 lambda module, args, out: seen.append((args[0].shape[-1], out.shape[-1])))
             for b in sd.up_blocks if b.upsamplers is not None]
    with torch.no_grad(), torch.device("meta"):
        out = sd(torch.empty(1, 4, image_side // 8, image_side // 8), torch.tensor([1]), torch.empty(1, 77, 768))
    for hd in hooks:
        hd.remove()
    assert out.shape[-1] == image_side // 8          # every one of these sizes runs
    return seen

not_doubled = [s for s in (512, 520, 576, 600, 640) if any(o != 2 * i for i, o in upsampler_sizes(s))]
ok = check("Exercise 3", answer_3, expected=not_doubled,
           hint="follow the latent side down: n, ceil(n/2), ceil(n/4), ceil(n/8); an upsampler does not "
                "double wherever the side it must reach is odd")
# BEGIN SOLUTION
assert ok
for s in (512, 520, 576, 600, 640):
    print(s, "-> latent", s // 8, "| upsamplers (in -> out):", ", ".join(f"{i} -> {o}" for i, o in upsampler_sizes(s)))
# END SOLUTION

# %% [markdown]
# **4.** Write the sinusoidal timestep embedding of section 2 yourself: `my_timestep_embedding(t, dim)` for a
# 1-D tensor of timesteps t (ints or floats) and an even `dim`, returning (len(t), dim): first the dim/2
# cosines, then the dim/2 sines, with ω_i = 10000^(−i/(dim/2)) for i = 0 … dim/2 − 1 (SD's
# `flip_sin_to_cos=True`, `freq_shift=0`). Use only torch functions, not `timestep_embedding`. The check
# compares with diffusers' `get_timestep_embedding` at two widths.

# %%
def my_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) timesteps -> (B, dim): [cos(t w_0) ... cos(t w_{dim/2-1}), sin(t w_0) ... sin(t w_{dim/2-1})]."""
    # BEGIN SOLUTION
    half = dim // 2
    omega = 10000 ** (-torch.arange(half, dtype=torch.float32) / half)   # (half,), from 1 down towards 1e-4
    angles = t.float()[:, None] * omega[None, :]                         # (B, 1) * (1, half) -> (B, half)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)               # (B, dim): cos block first
    # END SOLUTION
    # STUB: return None


# %%
from unittest import mock

from diffusers.models.embeddings import get_timestep_embedding


def on_its_own(fn, *args):
    """Run fn with the library embeddings switched off (in their modules and in this notebook)."""
    def off_limits(*_, **__):
        raise RuntimeError("timestep_embedding and get_timestep_embedding are off limits: use torch functions")
    saved = {name: globals()[name] for name in ("timestep_embedding", "get_timestep_embedding") if name in globals()}
    with mock.patch("sdlearn.unet.timestep_embedding", off_limits), \
            mock.patch("diffusers.models.embeddings.get_timestep_embedding", off_limits):
        globals().update(dict.fromkeys(saved, off_limits))
        try:
            return fn(*args)
        finally:
            globals().update(saved)


def same_as_diffusers(fn):
    t_test = torch.tensor([0, 1, 10, 250, 999])
    for dim in (320, 64):
        got = on_its_own(fn, t_test, dim)
        want = get_timestep_embedding(t_test, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return f"for dim = {dim} the result must be a tensor of shape {tuple(want.shape)}"
        # float32 round-off in t * omega near t = 1000 moves a sine by up to about 6e-5
        bad = (got.float() - want).abs().amax(dim=0) > 2e-4                  # (dim,): which columns disagree
        if bad.any():
            col = int(bad.nonzero()[0])
            return (f"for dim = {dim}, column {col} ({'cosine' if col < dim // 2 else 'sine'} block) differs from "
                    f"diffusers'")
    fractional = torch.tensor([0.5, 17.25])                                  # DPM-style non-integer steps
    return (torch.allclose(on_its_own(fn, fractional, 8).float(), get_timestep_embedding(fractional, 8, True, 0), atol=1e-5)
            or "fractional timesteps must be embedded as they are, not rounded")


ok = check("Exercise 4", my_timestep_embedding, test=same_as_diffusers,
           hint="the angles t * omega_i form a (B, dim/2) table (broadcast a column of t against a row of omega); "
                "the embedding is their cosines, then their sines, side by side; i runs over dim/2 frequencies")
# BEGIN SOLUTION
assert ok
assert torch.allclose(my_timestep_embedding(ts, 320), E, atol=2e-4)   # section 2's embedding, from sdlearn
# END SOLUTION
