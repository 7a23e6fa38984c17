"""The bundled tiny CLIP: caption -> image retrieval and zero-shot attribute accuracy on fresh renders,
plus the text encoder's speed next to transformers' CLIPTextModel; appends to benchmarks/RESULTS.md.

    python benchmarks/bench_clip.py [--batches 20]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from sdlearn.clip import CLIPTextEncoder
from sdlearn.configs import CLIP_VIT_L_TEXT
from sdlearn.tokenizer import CLIPTokenizer
from sdlearn.toys import TINY_CLIP_DIR, TinyCLIP
from sdlearn.train.clip import TEXT_ENCODER_DIR, evaluate

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def ms_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


@torch.no_grad()
def speed(config: dict, batch: int, repeats: int) -> tuple[float, float]:
    """ms per forward of (batch, 77) ids: ours, then transformers' CLIPTextModel on the same weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    ours = CLIPTextEncoder.from_config(config).eval()
    with torch.device("meta"):
        theirs = CLIPTextModel(CLIPTextConfig(**config))
    theirs.load_state_dict({k.removeprefix("text_model."): v for k, v in ours.state_dict().items()}, assign=True)
    theirs.embeddings.position_ids = torch.arange(77)[None]
    theirs.eval()
    ids = torch.randint(0, 49406, (batch, 77), generator=torch.Generator().manual_seed(0))
    return ms_per_call(lambda: ours(ids), repeats), ms_per_call(lambda: theirs(ids), repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=20, help="batches of 64 fresh renders")
    args = p.parse_args()
    tok = CLIPTokenizer()
    model = TinyCLIP.load(TEXT_ENCODER_DIR, TINY_CLIP_DIR)
    training = json.loads((TINY_CLIP_DIR / "config.json").read_text()).get("training", {})
    rows = []
    for label, holdout in [("trained (shape, colour) pairs, new renders", True),
                           ("all pairs incl. the 5 held-out ones", False)]:
        t0 = time.perf_counter()
        s = evaluate(model, tok, n_batches=args.batches, batch_size=64, seed=20_000, holdout=holdout)
        rows.append((label, s, time.perf_counter() - t0))
        print(label, {k: round(v, 4) for k, v in s.items()})
    n = args.batches * 64
    tiny = speed(model.text_encoder.config, 64, 20)
    sd1 = speed(CLIP_VIT_L_TEXT, 1, 5)
    te_mb = (TEXT_ENCODER_DIR / "model.safetensors").stat().st_size / 1e6
    clip_mb = (TINY_CLIP_DIR / "model.safetensors").stat().st_size / 1e6

    lines = [f"\n## Tiny CLIP ({datetime.date.today()})\n",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs, so timings "
             f"are rough), torch {torch.__version__}, {torch.get_num_threads()} threads. "
             f"`python benchmarks/bench_clip.py --batches {args.batches}`.\n",
             f"Bundled weights: text encoder {te_mb:.1f} MB (float16 storage, "
             f"{sum(p.numel() for p in model.text_encoder.parameters()):,} weights, "
             f"{model.text_encoder.config['hidden_size']} wide, {model.text_encoder.config['num_hidden_layers']} layers), "
             f"image tower + projection + temperature {clip_mb:.1f} MB; learned temperature "
             f"{1 / model.logit_scale.exp().item():.4f}. Training: {training or 'unknown'}.\n",
             f"Retrieval: each canonical caption picks one of its batch's 64 renders (a hit if that render shows "
             f"what it says); zero-shot: each render picks one of all 540 canonical captions. {n} renders each.\n",
             "| renders | retrieval top-1 | shape | colour | size | position | all four |",
             "|---|---|---|---|---|---|---|"]
    for label, s, _ in rows:
        lines.append(f"| {label} | {s['retrieval_top1']:.1%} | {s['zero_shot_shape']:.1%} | {s['zero_shot_color']:.1%} "
                     f"| {s['zero_shot_size']:.1%} | {s['zero_shot_position']:.1%} | {s['zero_shot_all']:.1%} |")
    lines += ["", "Text encoder forward, ms per call (77 tokens), ours vs transformers' CLIPTextModel on the same weights:", "",
              "| model | batch | sdlearn | transformers | ratio |", "|---|---|---|---|---|",
              f"| tiny (bundled) | 64 | {tiny[0]:.1f} | {tiny[1]:.1f} | {tiny[0] / tiny[1]:.2f} |",
              f"| SD v1 CLIP ViT-L/14 (random weights) | 1 | {sd1[0]:.1f} | {sd1[1]:.1f} | {sd1[0] / sd1[1]:.2f} |", ""]
    text = "\n".join(lines)
    print(text)
    with RESULTS.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
