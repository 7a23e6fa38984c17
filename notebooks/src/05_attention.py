# %% [markdown]
# # 05 · Attention: how words look at each other, and how pixels look at words
#
# {{COLAB_BADGE}}
#
# **What you will learn**
#
# 1. **Self-attention** on the sentence "YOUR CAT IS A LOVELY CAT": the 6×6 matrix softmax(QKᵀ/√d) whose
#    rows sum to 1, and the (6, 512) output it mixes.
# 2. Where the **1/√d** comes from (measured, not asserted), and why Q, K, V need their own projections.
# 3. **Multi-head** attention: 8 heads of 64 dimensions for the price of one head of 512.
# 4. **Cross-attention**, the door through which text enters Stable Diffusion: Q from image features,
#    K and V from text tokens, with the shapes of W_Q, W_K, W_V from the latent diffusion paper.
# 5. That the written-out formula, `sdlearn.attention`, PyTorch's fused kernel and diffusers all agree.
# 6. **Where a pixel looks** in a caption: per-token attention heatmaps, with `capture_attention`.

# %% [setup]

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from sdlearn.attention import (Attention, attention_heatmaps, capture_attention, merge_heads,
                               scaled_dot_product_attention, split_heads)
from sdlearn.data import BACKGROUND, render
from sdlearn.device import seed_everything
from sdlearn.exercises import check
from sdlearn.viz import save_figure

torch.set_num_threads(1)  # small tensors: one thread is as fast and repeatable
g = seed_everything(0)

# %% [markdown]
# ## 1. Self-attention on one sentence
#
# A transformer sees a sentence as a matrix X: one row per token, d = 512 numbers per row. A row starts
# as the token's **embedding** (what the word means; the same for both CATs) plus a **positional
# encoding** (where it stands; different for the two CATs). Here the embeddings are random: the
# mechanism does not care where the numbers came from.

# %%
words = ["YOUR", "CAT", "IS", "A", "LOVELY", "CAT"]
seq, d = len(words), 512
vocab = sorted(set(words))
embedding = torch.randn(len(vocab), d, generator=g)          # one random vector per distinct word


def positional_encoding(n: int, d: int) -> torch.Tensor:
    """Sinusoids of geometrically spaced wavelengths (Vaswani et al. 2017, sec. 3.5): (n, d)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]         # (n, 1)
    freq = 10000 ** (-torch.arange(0, d, 2) / d)                # (d/2,)
    pe = torch.zeros(n, d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


X = embedding[[vocab.index(w) for w in words]] + positional_encoding(seq, d)   # (6, 512)
print("X:", tuple(X.shape))

# %% [markdown]
# The simplest version uses the sentence itself as queries, keys and values, Q = K = V = X:
#
# $$\text{Attention}(Q, K, V) = \text{softmax}\left(\frac{QK^\top}{\sqrt{d}}\right) V$$
#
# Row i of QKᵀ holds the dot products of word i with every word: how much word i "matches" each word.
# The softmax turns each row into weights that are positive and sum to 1.

# %%
def show_matrix(A, title, ax=None, labels=words):
    ax = ax or plt.subplots(figsize=(4.2, 3.6))[1]
    ax.imshow(A, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            ax.text(j, i, f"{A[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if A[i, j] < 0.6 * A.max() else "black")
    ax.set_title(title, fontsize=9)
    return ax


P_naive = torch.softmax(X @ X.T / math.sqrt(d), dim=-1)     # (6, 512) @ (512, 6) -> (6, 6)
_ = show_matrix(P_naive, "Q = K = V = X: every word looks only at itself")
print("diagonal:", P_naive.diagonal().numpy().round(3))
assert P_naive.diagonal().min() > 0.85                       # "almost the identity": could fail, measured

# where the scores come from: the embeddings' part and the positions' part
S = X @ X.T / math.sqrt(d)                                   # the scaled scores, (6, 6)
pe = positional_encoding(seq, d)
off = ~torch.eye(seq, dtype=torch.bool)                      # the 30 off-diagonal entries
S_pe = pe @ pe.T / math.sqrt(d)                              # positions alone
print(f"|x|^2 = {(X * X).sum(-1).mean():.0f} on average (|e|^2 + |p|^2 ~ {d} + {(pe * pe).sum(-1).mean():.0f})")
print(f"scaled scores: diagonal {S.diagonal().mean():.1f}, off-diagonal {S[off].mean():+.1f} "
      f"(positions alone {S_pe[off].mean():+.1f}; the rest, embeddings and cross terms, {(S - S_pe)[off].abs().mean():.1f} in size)")
assert abs((X * X).sum(-1).mean() / (1.5 * d) - 1) < 0.15 and abs(S[off].mean() - S_pe[off].mean()) < 3

# %% [markdown]
# Almost the identity matrix. The reason is arithmetic, not meaning. A row is x = e + p (embedding plus
# position), and a word's dot product with itself is its squared length |x|² = |e|² + 2 e·p + |p|²:
# about d = 512 from the embedding (512 entries of variance 1), exactly d/2 = 256 from the positional
# encoding (each sin² + cos² pair is 1), and a small random cross term: **|x|² ≈ 768** on average
# (799 in this draw, printed above), not d.
# Two *different* rows give e·e′ ≈ ±√512 ≈ ±23 (512 random-signed terms), but p·p′ is large and
# **positive**: neighbouring positions share all the slow sinusoids, so p·p′ is between about 190 and
# 256 here. After dividing by √d the self-score is ≈ 768/√512 ≈ 34 (35.3 printed) and the others are ≈ +12: about +10
# from the positions, and a few units either way from the embeddings and the cross terms (printed
# above). The gap is about 23, and the softmax gives a word e²³ times more weight to itself. (The two CATs share an embedding, so their score is close to a self-score
# and they notice each other a little.)
#
# This is why attention learns three projections, **Q = X W_Q, K = X W_K, V = X W_V**: W_Q and W_K
# decide *which* features make words match, independently of a word matching itself. With random
# projections (the state before training) we get the kind of matrix the lecture shows.

# %%
W_Q, W_K, W_V = (torch.randn(d, d, generator=g) / math.sqrt(d) for _ in range(3))   # each (512, 512)
Q, K, V = X @ W_Q, X @ W_K, X @ W_V                           # (6, 512) @ (512, 512) -> (6, 512)
scores = Q @ K.T / math.sqrt(d)                              # (6, 512) @ (512, 6) -> (6, 6)
P = torch.softmax(scores, dim=-1)                            # each row: where that word looks
out = P @ V                                                  # (6, 6) @ (6, 512) -> (6, 512)

print("attention matrix:", tuple(P.shape), " output:", tuple(out.shape))
print("largest weight in each row:", P.max(-1).values.numpy().round(2))
assert P.diagonal().max() < 0.9 < P_naive.diagonal().min()   # no row is one-hot any more

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
show_matrix(P_naive, "Q = K = V = X", axes[0])
show_matrix(P, "random W_Q, W_K (before training)", axes[1])
fig.tight_layout()

# %% [markdown]
# Each output row is a weighted average of the value rows, with the weights of that row of the matrix:
# `out[1]` (the first CAT) is row 1 of the matrix applied to the value rows: its largest weight, 0.45,
# is not even on CAT itself, and every other word contributes. So each row now carries not only its
# own word but its relations to the others. Let us check that by hand for one row.

# %%
by_hand = sum(P[1, j] * V[j] for j in range(seq))
assert int(P[1].argmax()) != 1 and float(P[1].max()) < 0.5          # as the text says: CAT looks mostly elsewhere
assert torch.allclose(by_hand, out[1], atol=1e-5)
print("out[1] = sum_j P[1, j] V[j]:", torch.allclose(by_hand, out[1], atol=1e-5))

# %% [markdown]
# ## 2. Where does 1/√d come from?
#
# With entries of unit variance, q·k = Σᵢ qᵢkᵢ is a sum of d independent terms of variance 1, so its
# variance is d and its standard deviation √d. Dividing by √d brings the scores back to unit variance
# for *every* width d. Without it, wide heads produce huge scores and the softmax saturates to a
# one-hot vector whose gradient is almost zero. Let us measure both claims.

# %%
dims = [16, 64, 256, 512, 1024]
std_raw, ent_raw, ent_scaled = [], [], []
for dd in dims:
    q, k = torch.randn(2000, dd, generator=g), torch.randn(2000, 77, dd, generator=g)
    s = torch.einsum("nd,nmd->nm", q, k)                     # 2000 rows of 77 scores each
    std_raw.append(s.std().item())
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1).mean().item()
    ent_raw.append(entropy(s.softmax(-1)))
    ent_scaled.append(entropy((s / math.sqrt(dd)).softmax(-1)))

for dd, sr in zip(dims, std_raw):
    print(f"d = {dd:5d}: std(q.k) = {sr:6.2f}   sqrt(d) = {math.sqrt(dd):6.2f}   ratio {sr / math.sqrt(dd):.2f}")
    assert abs(sr / math.sqrt(dd) - 1) < 0.05

fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
axes[0].plot(dims, std_raw, "o-", label="measured std of q·k")
axes[0].plot(dims, np.sqrt(dims), "k--", label="√d")
axes[0].set(xscale="log", yscale="log", xlabel="d (head width)", title="dot products grow like √d")
axes[0].legend()
axes[1].plot(dims, ent_raw, "o-", label="softmax(q·k)")
axes[1].plot(dims, ent_scaled, "o-", label="softmax(q·k / √d)")
axes[1].axhline(math.log(77), color="k", ls=":", label="uniform over 77 tokens")
axes[1].set(xscale="log", xlabel="d", ylabel="entropy of a row (nats)", title="unscaled rows collapse to one-hot")
axes[1].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 3. Multi-head attention
#
# One 512-wide attention computes a single notion of "matching". Multi-head attention splits the 512
# columns of Q, K, V into h = 8 heads of 64, lets each head attend on its own, then concatenates the
# 8 outputs and mixes them with W_O (512 × 512). Each head costs 1/8 of the work, so 8 heads cost the
# same as one wide head: the parameters are the same four 512 × 512 matrices.
#
# The split is a reshape: (6, 512) → (6, 8, 64) → (8, 6, 64), heads first, so that one batched matrix
# product runs all heads at once. `sdlearn.attention.split_heads` does exactly this (with a batch axis).
#
# ![Multi-head attention: split the columns into heads, attend per head, concatenate, mix with W_O](../images/05_multihead_split.png)

# %%
heads, d_head = 8, d // 8
W_O = torch.randn(d, d, generator=g) / math.sqrt(d)
Qh = Q.view(seq, heads, d_head).transpose(0, 1)              # (6, 512) -> (6, 8, 64) -> (8, 6, 64)
Kh = K.view(seq, heads, d_head).transpose(0, 1)
Vh = V.view(seq, heads, d_head).transpose(0, 1)
P_heads = torch.softmax(Qh @ Kh.transpose(1, 2) / math.sqrt(d_head), dim=-1)   # (8, 6, 6): one matrix per head
out_heads = P_heads @ Vh                                     # (8, 6, 6) @ (8, 6, 64) -> (8, 6, 64)
multi = out_heads.transpose(0, 1).reshape(seq, d) @ W_O      # concat heads: (6, 8, 64) -> (6, 512), then W_O

# the same with sdlearn's helpers (they add a batch axis in front)
Qb, Kb, Vb = (split_heads(M[None], heads) for M in (Q, K, V))  # (1, 6, 512) -> (1, 8, 6, 64)
o, probs = scaled_dot_product_attention(Qb, Kb, Vb)
assert torch.allclose(merge_heads(o)[0] @ W_O, multi, atol=1e-5) and torch.allclose(probs[0], P_heads)
print("heads:", tuple(P_heads.shape), " output:", tuple(multi.shape))

fig, axes = plt.subplots(2, 4, figsize=(13, 6.4))
for h, ax in enumerate(axes.flat):
    show_matrix(P_heads[h], f"head {h}", ax)
fig.suptitle("8 heads, 8 different patterns of looking (random weights)")
fig.tight_layout()

# %% [markdown]
# ## 4. Cross-attention: how text gets into the image
#
# In Stable Diffusion the UNet's feature map at some level is a sequence too: a 64×64 latent gives
# N = 4096 positions, each a vector of d_e = 320 channels (φ(z), "the pixels"). The prompt, after the
# text encoder, is τ(y): M = 77 tokens of d_τ = 768 numbers. **Cross-attention** takes its queries from
# one sequence and its keys and values from the other. The latent diffusion paper (Rombach et al. 2022,
# Sec. 3.3) writes it in an unnumbered formula, the attention of Vaswani et al. 2017 (their Eq. 1) with
# Q and K/V from different places:
#
# $$\text{Attention}(Q, K, V) = \text{softmax}\left(\frac{QK^\top}{\sqrt{d}}\right) V,\qquad
# Q = W_Q^{(i)} \cdot \varphi_i(z_t),\quad K = W_K^{(i)} \cdot \tau_\theta(y),\quad V = W_V^{(i)} \cdot \tau_\theta(y),$$
# $$W_Q^{(i)} \in \mathbb{R}^{d \times d_e^i},\quad W_K^{(i)}, W_V^{(i)} \in \mathbb{R}^{d \times d_\tau}$$
#
# (The paper's numbered Eq. 3, right after it, is the *training objective* of the conditional model,
# E‖ε − ε_θ(z_t, t, τ_θ(y))‖²: notebook 07.) So every pixel asks a question (Q, from the image), every
# word offers a key and a value (from the text), and each pixel receives a mixture of word values: a
# (4096 × 77) attention matrix whose rows sum to 1.
#
# ![Self-attention and cross-attention, with the shapes of Q, K, V and the attention matrix](../images/05_self_vs_cross.png)
#
# **W_Q · φ or `phi @ W_Q.T`?** The paper's W_Q is d × d_e: it maps *one* token's column vector φ_n
# (d_e numbers) to its query q_n = W_Q φ_n (d numbers). Code stores the N tokens as the *rows* of a
# (N, d_e) matrix, and stacking the rows q_nᵀ = φ_nᵀ W_Qᵀ gives **Q = φ W_Qᵀ**: `phi @ W_Q.T`. That is
# what `nn.Linear` computes; its weight has shape (out, in), exactly the paper's d × d_e and d × d_τ,
# which is how `sdlearn.attention.Attention` stores them. (Section 1's `X @ W_Q` kept W_Q as
# (in, out), the transpose: the same map in the other convention.)

# %%
d_e, d_tau, n_heads = 320, 768, 8                            # SD 1.5, the first (64x64) level
cross = Attention(query_dim=d_e, context_dim=d_tau, heads=n_heads, dim_head=d_e // n_heads).eval()
for name in ("to_q", "to_k", "to_v"):
    print(f"W_{name[-1].upper()} = {name}.weight: {tuple(getattr(cross, name).weight.shape)}")
print("W_O = to_out.0.weight:", tuple(cross.to_out[0].weight.shape))

phi = torch.randn(1, 64 * 64, d_e, generator=g)             # image features: (B, N, d_e)
tau = torch.randn(1, 77, d_tau, generator=g)                 # text tokens:    (B, M, d_tau)
with torch.no_grad():
    q = cross.to_q(phi)                                      # (1, 4096, 320) -> (1, 4096, 320)
    k, v = cross.to_k(tau), cross.to_v(tau)                  # (1, 77, 768)  -> (1, 77, 320)
    A = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d_e), -1)   # one head: (1, 4096, 77)
print("Q", tuple(q.shape), " K", tuple(k.shape), " V", tuple(v.shape), " softmax(QK^T/sqrt(d))", tuple(A.shape))

W_q = cross.to_q.weight                                       # the paper's W_Q: (d, d_e) = (320, 320)
W_k = cross.to_k.weight                                       # the paper's W_K: (d, d_tau) = (320, 768)
with torch.no_grad():
    assert torch.allclose(q, phi @ W_q.T, atol=1e-5)              # all tokens at once: rows of phi
    assert torch.allclose(q[0, 7], W_q @ phi[0, 7], atol=1e-5)    # one token, the paper's W_Q . phi_n
    assert torch.allclose(k[0, 3], W_k @ tau[0, 3], atol=1e-5)    # one text token's key: (320, 768) @ (768,)
print("to_q(phi) = phi @ W_Q.T, row by row W_Q @ phi_n: checked")

# %% [markdown]
# ### The written-out formula, sdlearn, PyTorch's fused kernel and diffusers agree
#
# `Attention` runs `torch.nn.functional.scaled_dot_product_attention` by default: a fused kernel that
# never stores the 4096 × 77 matrix (for self-attention at 64×64 it would be 4096 × 4096 per head,
# 64 MB in float32). Setting `fast = False` runs the written-out formula instead. Here we compute
# multi-head cross-attention four ways on the same weights.

# %%
from diffusers.models.attention_processor import Attention as DiffusersAttention

with torch.no_grad():
    # 1. written out in this notebook
    qh, kh, vh = (split_heads(t, n_heads) for t in (q, k, v))     # (1, 8, 4096, 40), (1, 8, 77, 40) x2
    Ph = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d_e // n_heads), dim=-1)
    ours_by_hand = cross.to_out[0](merge_heads(Ph @ vh))           # (1, 4096, 320)
    # 2. sdlearn, fused SDPA path, and 3. sdlearn, written-out path
    fast = cross(phi, tau)
    cross.fast = False
    slow = cross(phi, tau)
    cross.fast = True
    # 4. diffusers, with the same weights
    ref = DiffusersAttention(query_dim=d_e, cross_attention_dim=d_tau, heads=n_heads, dim_head=d_e // n_heads)
    ref.load_state_dict(cross.state_dict())
    theirs = ref.eval()(phi, encoder_hidden_states=tau)

for name, o in [("sdlearn (SDPA)", fast), ("sdlearn (written out)", slow), ("diffusers", theirs)]:
    err = (o - ours_by_hand).abs().max().item()
    print(f"{name:22s} max |diff| vs by hand < 1e-5: {err < 1e-5}")
    assert err < 1e-5   # float32 round-off: same sums in a different order (a few ulps of O(1) values)

# %%
# NBVAL_IGNORE_OUTPUT
# self-attention at 64x64 (N = 4096), 2 of the 8 heads: the fused kernel never forms the 2 x 4096 x 4096 matrix
x_self = torch.randn(1, 2, 4096, 40, generator=g)
for label, fn in [("written out", lambda: scaled_dot_product_attention(x_self, x_self, x_self)[0]),
                  ("F.scaled_dot_product_attention", lambda: F.scaled_dot_product_attention(x_self, x_self, x_self))]:
    fn(); t0 = time.perf_counter(); fn(); dt = time.perf_counter() - t0
    print(f"{label:32s} {dt * 1000:7.1f} ms")
print(f"the probability matrix of these 2 heads alone: {2 * 4096 * 4096 * 4 / 2**20:.0f} MiB (all 8 heads: 4x that)")

# %% [markdown]
# ## 5. Where does a pixel look in the caption?
#
# A trained Stable Diffusion learns W_Q and W_K so that image positions showing a cat put their
# attention on the token "cat". We can watch the mechanism with weights set **by hand**. The image is
# a small Shapes picture; its features φ(z) are each pixel's colour (relative to the background); each
# word of the caption gets a 3-number embedding τ(y): colour words carry their colour, every other word
# carries "nothing" (zeros). With W_Q = W_K = 2 × identity (the 2 sharpens the softmax), a red pixel
# matches "red" best, a blue pixel "blue". (What a background pixel, whose colour is the background's,
# does is Exercise 4.)
#
# `capture_attention(model)` records the probabilities of every cross-attention layer inside the
# `with` block (and costs nothing outside it); `attention_heatmaps` turns them into one map per token.
# Notebook 08 uses the same two calls on the trained UNet, across denoising steps.

# %%
bg = np.array(BACKGROUND)
a_img = np.asarray(render("circle", "red", "large", "top left"))
b_img = np.asarray(render("square", "blue", "large", "bottom right"))
picture = np.where((np.abs(b_img.astype(int) - bg).sum(-1) > 30)[..., None], b_img, a_img)   # both shapes

caption_words = ["a", "red", "circle", "and", "a", "blue", "square"]
colour_of = {"red": (215, 35, 35), "blue": (35, 85, 215)}
tau_y = torch.tensor(np.array([(np.array(colour_of[w]) - bg) / 255 if w in colour_of else np.zeros(3)
                               for w in caption_words]), dtype=torch.float32)[None]  # (1, M=7, d_tau=3)

feat = torch.tensor((picture[::4, ::4] - bg) / 255, dtype=torch.float32)          # 16x16 grid of pixels
phi_z = feat.reshape(1, 16 * 16, 3)                                                # (1, N=256, d_e=3)

look = Attention(query_dim=3, context_dim=3, heads=1, dim_head=3).eval()
with torch.no_grad():
    look.to_q.weight.copy_(2 * torch.eye(3))     # W_Q in R^{d x d_e}: a scaled identity
    look.to_k.weight.copy_(2 * torch.eye(3))     # W_K in R^{d x d_tau}
    look.to_v.weight.copy_(torch.eye(3))
    with capture_attention(look) as maps:
        look(phi_z, tau_y)
probs = maps[""][0]                                                                # (B, heads, N, M)
print("captured:", {name or "<the module itself>": [tuple(p.shape) for p in ps] for name, ps in maps.items()})
heat = attention_heatmaps(maps, size=(64, 64))[0]                                  # (M, 64, 64)
# the captured probabilities are the formula with these weights: softmax((2 phi)(2 tau)^T / sqrt(3))
by_formula = torch.softmax((2 * phi_z) @ (2 * tau_y).transpose(1, 2) / math.sqrt(3), dim=-1)   # (1, 256, 7)
assert torch.allclose(probs[:, 0], by_formula, atol=1e-5)

fig, axes = plt.subplots(1, 8, figsize=(17, 2.6))
axes[0].imshow(picture); axes[0].set_title(f"the picture ({picture.shape[0]} x {picture.shape[1]} px)", fontsize=9)
for j, (w, ax) in enumerate(zip(caption_words, axes[1:])):
    im = ax.imshow(heat[j], cmap="magma", vmin=0, vmax=1)
    ax.set_title(f'token {j}: "{w}"', fontsize=9)
for ax in axes:
    ax.axis("off")
fig.colorbar(im, ax=axes.tolist(), fraction=0.012, pad=0.01, label="attention weight\n(a pixel's 7 weights sum to 1)")
fig.suptitle("where the pixels look: each pixel's attention to each token of the caption", y=1.04)
_ = save_figure(fig, "05_where_pixels_look.png")

# %% [markdown]
# The red circle attends mostly to "red", the blue square to "blue" (blue and red pixels still share a
# little: both are darker than the background), and the background spreads its attention thinly over
# everything. One pixel's row of the attention matrix is a distribution over the caption:

# %%
red_pixel = 4 * 16 + 4                                          # row 4, column 4 of the 16x16 grid
blue_pixel = 12 * 16 + 12
fig, ax = plt.subplots(figsize=(7, 2.6))
xs = np.arange(len(caption_words))
for off, (pix, label, c) in enumerate([(red_pixel, "a pixel of the circle", "tab:red"),
                                       (blue_pixel, "a pixel of the square", "tab:blue")]):
    ax.bar(xs + 0.4 * off - 0.2, probs[0, 0, pix], width=0.4, color=c, label=label)
ax.set_xticks(xs, caption_words)
ax.set_ylabel("attention weight")
ax.legend()
print("circle pixel looks at:", caption_words[probs[0, 0, red_pixel].argmax()],
      f"({probs[0, 0, red_pixel].max():.2f})")
print("square pixel looks at:", caption_words[probs[0, 0, blue_pixel].argmax()],
      f"({probs[0, 0, blue_pixel].max():.2f})")
assert caption_words[probs[0, 0, red_pixel].argmax()] == "red"
assert caption_words[probs[0, 0, blue_pixel].argmax()] == "blue"
red_mask = torch.tensor((np.abs(picture[::4, ::4].astype(int) - colour_of["red"]).sum(-1) < 60).reshape(-1))
print(f"average attention of the circle's {int(red_mask.sum())} pixels to 'red': {probs[0, 0, red_mask, 1].mean():.2f}")
assert probs[0, 0, red_mask, 1].mean() > 0.5                 # the whole circle, not one lucky pixel

# %% [markdown]
# ## Exercises
#
# **1.** A head of SD 1.5 is 40 wide (320 channels / 8 heads). For queries and keys with unit-variance
# entries, what factor must multiply q·k so that the scores have unit variance?

# %%
# BEGIN SOLUTION
answer_1 = 1 / math.sqrt(40)     # q.k is a sum of 40 terms of variance 1: std sqrt(40)
# END SOLUTION
# STUB: answer_1 = None   # a float: the factor that multiplies q.k
answer_1

# %%
qq, kk = torch.randn(20000, 40, generator=g), torch.randn(20000, 40, generator=g)


def unit_variance(factor):
    std = ((qq * kk).sum(-1) * float(factor)).std().item()   # measured on 20,000 random pairs
    return abs(std - 1) < 0.03 or f"with this factor the scores have std {std:.2f}, not 1"


ok = check("Exercise 1", answer_1, test=unit_variance,
           hint="the std of q.k grows like the square root of the head width (section 2); divide it away")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **2.** Write multi-head cross-attention with a plain Python loop over heads (slice the columns of
# Q, K, V, attend, concatenate), using `module`'s weights (`to_q`, `to_k`, `to_v`, `to_out[0]`,
# `heads`, `dim_head`). The check compares it with `cross(phi, tau)`.

# %%
def loop_over_heads(module, x, context):
    """Multi-head attention of x (B, N, d_e) to context (B, M, d_tau), one head at a time: (B, N, d_e)."""
    # BEGIN SOLUTION
    q, k, v = module.to_q(x), module.to_k(context), module.to_v(context)
    dh = module.dim_head
    outs = [scaled_dot_product_attention(q[..., h * dh:(h + 1) * dh], k[..., h * dh:(h + 1) * dh],
                                         v[..., h * dh:(h + 1) * dh])[0] for h in range(module.heads)]
    return module.to_out[0](torch.cat(outs, dim=-1))
    # END SOLUTION
    # STUB: return None   # loop over range(module.heads), attend on columns h*dim_head:(h+1)*dim_head


# %%
def matches_cross(fn):
    with torch.no_grad():
        got, want = fn(cross, phi, tau), cross(phi, tau)
    if not isinstance(got, torch.Tensor):
        return f"loop_over_heads returned {type(got).__name__}, not a tensor"
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    return torch.allclose(got, want, atol=1e-5) or f"max |difference| {(got - want).abs().max():.3g}"


ok = check("Exercise 2", loop_over_heads, test=matches_cross,
           hint="each head sees dim_head columns of Q, K and V; softmax(q k^T / sqrt(dim_head)) v per head, "
                "torch.cat the heads on the last axis, then to_out[0]")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **3.** In SD 2.1 the first level's cross-attention has d_e = 320 channels, 5 heads of 64 and a
# d_τ = 1024-wide text encoder. How many parameters does it hold (W_Q, W_K, W_V have no bias; W_O has one)?

# %%
# BEGIN SOLUTION
answer_3 = 320 * 320 + 2 * 320 * 1024 + (320 * 320 + 320)   # W_Q, W_K and W_V, W_O with its bias
# END SOLUTION
# STUB: answer_3 = None   # an int: the number of parameters
answer_3

# %%
ok = check("Exercise 3", answer_3,
           expected=sum(p.numel() for p in Attention(320, 1024, heads=5, dim_head=64).parameters()),
           hint="5 heads of 64 make the inner width d = 320; W_Q is d x d_e, W_K and W_V are d x d_tau, "
                "W_O is d_e x d plus a bias of d_e")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **4.** In section 5, with what weight does the pixel at row 8, column 8 of the 16×16 grid (the
# picture's centre, background) attend to each of the 7 tokens? Work it out from the formula (what is
# that pixel's φ, and so its query?), then let the check compare it with the captured probabilities.

# %%
# BEGIN SOLUTION
# its colour is the background's, so phi = 0, its query is zero, all 7 scores are 0: a uniform softmax
answer_4 = 1 / len(caption_words)
# END SOLUTION
# STUB: answer_4 = None   # a float: the weight that pixel gives each token
answer_4

# %%
centre = probs[0, 0, 8 * 16 + 8]                                    # that pixel's row: (7,)
ok = check("Exercise 4", answer_4,
           test=lambda w: torch.allclose(centre, torch.full_like(centre, float(w)), atol=2e-3)
           or f"that pixel's 7 weights are not all {float(w):.4g}",
           hint="phi for a background pixel is its colour minus the background colour; what does W_Q do to it, "
                "and what is the softmax of seven equal scores?")
# BEGIN SOLUTION
assert ok
# END SOLUTION
