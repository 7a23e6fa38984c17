"""Train the tiny CLIP on Shapes captions: ``python -m sdlearn train clip --seed 0 [--world scenes]``.

Contrastive pre-training as in CLIP (Radford et al. 2021, Fig. 3): a batch of B images and their
B captions gives a (B, B) matrix of scaled cosine similarities; a symmetric cross-entropy pulls
each image towards its caption and away from the others. Shapes captions often fit several
images of a batch ("a red circle" says nothing of size or place), so every pair whose caption is
true of the image counts as a positive (``caption_matches``). The result ships as the bundled
text encoder (``assets/tiny/text_encoder``, transformers layout) and ``assets/tiny_clip``.

``--world scenes`` trains on Shapes world 2 (one or two objects, three backgrounds). A bag of
words cannot tell "a red circle left of a blue square" from "a blue circle left of a red
square", and a random batch rarely holds both, so each two-object caption brings its own hard
negatives: the same caption with the colours swapped and with the relation flipped.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sdlearn import ASSETS_DIR
from sdlearn.data import (COLORS, POSITIONS, SHAPES, SIZES, Attributes, Scene, SceneDataset, SceneObject,
                          ShapesDataset, caption_holds, position_center, varied_caption, varied_scene_caption)
from sdlearn.tokenizer import CLIPTokenizer
from sdlearn.toys import TINY_CLIP_DIR, TinyCLIP, contrastive_loss

TEXT_ENCODER_DIR = ASSETS_DIR / "tiny" / "text_encoder"
ATTRIBUTES = {"shape": SHAPES, "color": COLORS, "size": SIZES, "position": POSITIONS}


def as_scene(a: Attributes | Scene) -> Scene:
    """A Shapes world 1 render's attributes as the one-object scene it shows (white background)."""
    return a if isinstance(a, Scene) else Scene((SceneObject(a.shape, a.color, a.size, *position_center(a.position)),))


def caption_matches(captions: list[str], shown: list[Attributes] | list[Scene]) -> torch.Tensor:
    """(B_txt, B_img) bool: is caption i true of image j (``data.caption_holds``: every attribute,
    relation and background it states agrees)?"""
    scenes = [as_scene(a) for a in shown]
    return torch.tensor([[caption_holds(c, s) for s in scenes] for c in captions])


_FLIP = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}


def hard_negatives(caption: str, scene: Scene) -> dict[str, str]:
    """Captions one binding away from a two-object ``caption``: ``"binding"``, the two colours
    swapped (when both are named and differ), and ``"relation"``, the relation flipped (when one
    is named). Either may still be true of some image (``caption_matches`` decides)."""
    out = {}
    if len(scene.objects) != 2:
        return out
    c1, c2 = scene.objects[0].color, scene.objects[1].color
    if c1 != c2 and re.search(rf"\b{c1}\b", caption) and re.search(rf"\b{c2}\b", caption):
        out["binding"] = re.sub(rf"\b({c1}|{c2})\b", lambda m: c2 if m.group(1) == c1 else c1, caption)
    for relation, flipped in _FLIP.items():
        if f" {relation} " in caption:
            out["relation"] = caption.replace(f" {relation} ", f" {flipped} ")
            break
    return out


def render_pool(n: int, seed: int, holdout: bool = True, world: str = "shapes",
                progress: bool = True) -> tuple[torch.Tensor, list[Attributes] | list[Scene]]:
    """n renders as uint8 (n, 3, 64, 64) (4x smaller than float) and what each shows: Attributes
    (``world="shapes"``) or Scenes (``"scenes"``: 60% two objects)."""
    if world == "scenes":
        data = SceneDataset(n, seed=seed, two_objects=0.6, holdout=holdout, varied=False)
        shown = [data.scene(i) for i in range(n)]
    else:
        data = ShapesDataset(n, seed=seed, holdout=holdout, varied=False)
        shown = [data.attributes(i) for i in range(n)]
    images = torch.empty((n, 3, 64, 64), dtype=torch.uint8)
    for i in tqdm(range(n), desc="rendering", leave=False, mininterval=5, disable=not progress):
        images[i] = ((data[i][0] + 1) * 127.5).round().to(torch.uint8)  # (3, 64, 64) [-1, 1] -> [0, 255]
    return images, shown


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0  # uint8 [0, 255] -> float [-1, 1]


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """(B, 77) ids cut after the longest caption's end token: the causal encoder gives the same states there."""
    ids = tokenizer(captions)                                            # (B, 77)
    length = int((ids == tokenizer.end_id).int().argmax(dim=1).max()) + 1
    return ids[:, :length]                                               # (B, L)


@torch.no_grad()
def evaluate(model: TinyCLIP, tokenizer: CLIPTokenizer, n_batches: int = 10, batch_size: int = 64,
             seed: int = 10_000, holdout: bool = True) -> dict[str, float]:
    """Caption -> image retrieval top-1 in batches of fresh renders, and zero-shot accuracy per attribute.

    Retrieval: each canonical caption picks the most similar image of its batch; a hit if that image
    shows what the caption says (a batch may hold two renders of the same attributes). Zero-shot: each
    image picks the most similar of all canonical captions (5 x 6 x 2 x 9 = 540); accuracy per
    attribute of that caption, and of all four at once. ``holdout=False`` renders also the held-out
    (shape, colour) pairs the training never saw.
    """
    model.eval()
    images, attrs = render_pool(n_batches * batch_size, seed, holdout)
    all_attrs = [Attributes(s, c, z, p) for s in SHAPES for c in COLORS for z in SIZES for p in POSITIONS]
    text_emb = torch.cat([model.encode_text(tokenize(tokenizer, [a.caption() for a in all_attrs[i:i + 270]]))
                          for i in range(0, len(all_attrs), 270)])       # (540, P)
    index = {a: i for i, a in enumerate(all_attrs)}
    hits, correct = 0, {k: 0 for k in [*ATTRIBUTES, "all"]}
    for b in range(n_batches):
        sl = slice(b * batch_size, (b + 1) * batch_size)
        img_emb = model.encode_image(to_float(images[sl]))               # (B, P)
        batch_attrs = attrs[sl]
        sim = text_emb[[index[a] for a in batch_attrs]] @ img_emb.T       # (B captions, B images)
        hits += sum(batch_attrs[j] == a for a, j in zip(batch_attrs, sim.argmax(dim=1).tolist()))
        for a, k in zip(batch_attrs, (img_emb @ text_emb.T).argmax(dim=1).tolist()):
            p = all_attrs[k]
            for name in ATTRIBUTES:
                correct[name] += getattr(p, name) == getattr(a, name)
            correct["all"] += p == a
    n = n_batches * batch_size
    return {"retrieval_top1": hits / n, **{f"zero_shot_{k}": v / n for k, v in correct.items()}}


@torch.no_grad()
def evaluate_scenes(model: TinyCLIP, tokenizer: CLIPTokenizer, n_batches: int = 10, batch_size: int = 64,
                    seed: int = 10_000) -> dict[str, float]:
    """Shapes world 2: caption -> image retrieval top-1 in batches of fresh scenes (a hit if the
    picked image shows what its full caption says), and on the two-object scenes whether the
    image is closer to its caption than to the same caption with the colours swapped (``binding``)
    or the relation flipped (``relation``): 50% is a bag of words."""
    model.eval()
    images, scenes = render_pool(n_batches * batch_size, seed, world="scenes", progress=False)
    hits, wins, n = 0, {"binding": [0, 0], "relation": [0, 0]}, n_batches * batch_size
    for b in range(n_batches):
        sl = slice(b * batch_size, (b + 1) * batch_size)
        batch = scenes[sl]
        captions = [s.caption() for s in batch]
        img_emb = model.encode_image(to_float(images[sl]))                 # (B, P)
        sim = model.encode_text(tokenize(tokenizer, captions)) @ img_emb.T  # (B captions, B images)
        hits += sum(caption_holds(c, batch[j]) for c, j in zip(captions, sim.argmax(dim=1).tolist()))
        for k, (c, s) in enumerate(zip(captions, batch)):
            for kind, neg in hard_negatives(c, s).items():
                if caption_holds(neg, s):                                # e.g. two red shapes: nothing to swap
                    continue
                score = model.encode_text(tokenize(tokenizer, [c, neg])) @ img_emb[k]   # (2,)
                wins[kind][0] += bool(score[0] > score[1])
                wins[kind][1] += 1
    return {"retrieval_top1": hits / n, **{f"{k}_accuracy": w / max(m, 1) for k, (w, m) in wins.items()}}


def train(seed: int = 0, steps: int = 1500, batch_size: int = 128, lr: float = 1e-3, pool: int = 6000,
          text_config: dict | None = None, log_every: int = 100, progress: bool = True, world: str = "shapes",
          init: TinyCLIP | None = None) -> TinyCLIP:
    """Contrastive training, from scratch or from ``init`` (fine-tuning); the same seed gives the
    same weights (same threads and CPU). ``world="scenes"``: Shapes world 2 with hard negatives."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tokenizer = CLIPTokenizer()
    model = init.train() if init is not None else TinyCLIP(text_config)
    images, attrs = render_pool(pool, seed, world=world, progress=progress)
    caption_of = varied_scene_caption if world == "scenes" else varied_caption
    # Shapes captions use ~40 of the 49,408 token rows: sparse gradients and a sparse Adam update
    # only those rows, instead of stepping all 6.3M embedding weights every batch.
    token_embedding = model.text_encoder.text_model.embeddings.token_embedding
    token_embedding.sparse = True
    dense = [p for p in model.parameters() if p is not token_embedding.weight]
    opts = [torch.optim.AdamW(dense, lr=lr, weight_decay=0.01), torch.optim.SparseAdam([token_embedding.weight], lr=lr)]
    warmup = max(1, steps // 20)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))  # warm-up, cosine
    scheds = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in opts]
    start = time.time()
    bar = tqdm(range(steps), desc="tiny CLIP", disable=not progress)
    for step in bar:
        idx = rng.choice(pool, size=batch_size, replace=False)
        batch_attrs = [attrs[i] for i in idx]
        captions = [caption_of(a, rng) for a in batch_attrs]
        if world == "scenes":                                                 # + H captions one binding away
            captions += [neg for c, a in zip(captions, batch_attrs) for neg in hard_negatives(c, a).values()]
        logits = model(to_float(images[idx]), tokenize(tokenizer, captions))  # (B images, B + H captions)
        loss = contrastive_loss(logits, caption_matches(captions, batch_attrs).T)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt, sched in zip(opts, scheds):
            opt.step()
            sched.step()
        if step % log_every == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", temp=f"{1 / model.logit_scale.exp().item():.4f}")
            if not progress:
                print(f"step {step:5d}  loss {loss.item():.4f}  temperature {1 / model.logit_scale.exp().item():.4f}"
                      f"  {time.time() - start:.0f}s", flush=True)
    token_embedding.sparse = False
    model.train_seconds = time.time() - start
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sdlearn train clip", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool", type=int, default=6000, help="number of pre-rendered training images")
    p.add_argument("--text-encoder-dir", type=Path, default=TEXT_ENCODER_DIR)
    p.add_argument("--clip-dir", type=Path, default=TINY_CLIP_DIR)
    p.add_argument("--no-progress", action="store_true", help="print log lines instead of a progress bar")
    p.add_argument("--world", choices=("shapes", "scenes"), default="shapes",
                   help="shapes: one object on white (world 1); scenes: Shapes world 2, with hard negatives")
    p.add_argument("--init", type=Path, nargs=2, metavar=("TEXT_ENCODER_DIR", "CLIP_DIR"), default=None,
                   help="fine-tune this tiny CLIP (e.g. the world-1 one) instead of training from scratch")
    args = p.parse_args(argv)
    init = TinyCLIP.load(*args.init) if args.init else None
    model = train(args.seed, args.steps, args.batch_size, args.lr, args.pool, progress=not args.no_progress,
                  world=args.world, init=init)
    print(f"trained in {model.train_seconds / 60:.1f} min")
    info = {"command": "python -m sdlearn train clip " + " ".join(argv or []), "seed": args.seed, "steps": args.steps,
            "batch_size": args.batch_size, "lr": args.lr, "pool": args.pool, "torch_threads": torch.get_num_threads(),
            "train_minutes": round(model.train_seconds / 60, 1), "world": args.world,
            "init": [str(d) for d in args.init] if args.init else None}
    model.save(args.text_encoder_dir, args.clip_dir, info)
    reloaded = TinyCLIP.load(args.text_encoder_dir, args.clip_dir)  # evaluate what ships (float16 text weights)
    for k, v in evaluate(reloaded, CLIPTokenizer()).items():
        print(f"{k}: {v:.3f}")
    if args.world == "scenes":
        for k, v in evaluate_scenes(reloaded, CLIPTokenizer()).items():
            print(f"scenes {k}: {v:.3f}")
    print(f"saved {args.text_encoder_dir} and {args.clip_dir}")
