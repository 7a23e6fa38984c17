"""The bundled Shapes VAE on renders it never saw: PSNR, and does every attribute survive?

For ``--n`` held-out renders (seed stream 10000, which training never uses) it reports PSNR over the
whole image and over the foreground only, and the fraction of images whose shape, colour, size
and position read from the reconstruction (``sdlearn.evaluate.read_attributes``) equal those read
from the original, per attribute, per shape and size. Also: the latent statistics after scaling,
and encode/decode speed against diffusers' AutoencoderKL on the same weights (same run).
Appends a dated section to benchmarks/RESULTS.md.

    python benchmarks/bench_vae.py [--vae sdlearn/assets/tiny/vae] [--n 500]

Shapes world 2 (always reported): ``--n`` held-out scenes (one or two objects on white, black or
gray): PSNR per background, and the share whose reading (``evaluate.read_scene`` +
``scene_correct``: objects, relation, background) is still right after the round trip.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from collections import defaultdict
from pathlib import Path

import torch

from sdlearn import data
from sdlearn.evaluate import psnr, read_attributes, read_scene, scene_correct
from sdlearn.pipeline import TINY_MODEL_DIR
from sdlearn.train.vae import ShapesStream, foreground, held_out_images
from sdlearn.vae import VAE

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def reconstruct(vae: VAE, x: torch.Tensor, batch_size: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstructions in [-1, 1], posterior means) for images x."""
    rec, lat = [], []
    for i in range(0, len(x), batch_size):
        z = vae.encode(x[i:i + batch_size]).mode()
        lat.append(z)
        rec.append(vae.decode(z).clamp(-1, 1))
    return torch.cat(rec), torch.cat(lat)


def speed(vae: VAE, x: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Median seconds to encode+decode ``x`` with sdlearn and with diffusers (same weights)."""
    from diffusers import AutoencoderKL

    ref = AutoencoderKL(**{k: v for k, v in vae.config.items()}).eval()
    ref.load_state_dict(vae.state_dict())
    out = {}
    for name, fn in (("sdlearn", lambda: vae.decode(vae.encode(x).mode())),
                     ("diffusers", lambda: ref.decode(ref.encode(x).latent_dist.mode()).sample)):
        times = []
        with torch.no_grad():
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        out[name] = sorted(times)[len(times) // 2]
    return out


def scenes_round_trip(vae: VAE, n: int) -> list[str]:
    """Shapes world 2 lines: PSNR per background and scene reading after the round trip."""
    ds = data.SceneDataset(n, seed=10_000, two_objects=0.6, holdout=False, varied=False)
    scenes = [ds.scene(i) for i in range(n)]
    x = torch.stack([ds[i][0] for i in range(n)])
    x_hat, _ = reconstruct(vae, x)
    per_bg = {bg: [i for i, s in enumerate(scenes) if s.background == bg] for bg in data.BACKGROUNDS}
    right = [scene_correct(r, s)["all"] for r, s in zip(read_scene(x_hat), scenes)]
    right_x = [scene_correct(r, s)["all"] for r, s in zip(read_scene(x), scenes)]
    two = [i for i, s in enumerate(scenes) if len(s.objects) == 2]
    return [f"- Shapes world 2, {n} held-out scenes ({len(two)} with two objects): PSNR "
            + ", ".join(f"{bg} {psnr(x_hat[idx], x[idx]):.2f} dB (n={len(idx)})" for bg, idx in per_bg.items()),
            f"- scene read right (objects, relation, background) after the round trip: {100 * sum(right) / n:.1f}% "
            f"(two objects: {100 * sum(right[i] for i in two) / len(two):.1f}%); on the originals {100 * sum(right_x) / n:.1f}%"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vae", default=str(TINY_MODEL_DIR / "vae"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()
    torch.manual_seed(0)
    vae = VAE.from_pretrained(args.vae)
    x = held_out_images(args.n)                                  # (n, 3, 64, 64)
    stream = ShapesStream(args.n, 10_000, p_small=0.5)
    truth = [stream.attributes(i)[0] for i in range(args.n)]
    x_hat, z = reconstruct(vae, x)
    read_x, read_hat = read_attributes(x), read_attributes(x_hat)
    keys = ("shape", "color", "size", "position")
    agree = {k: sum(getattr(a, k) == getattr(b, k) for a, b in zip(read_x, read_hat)) / args.n for k in keys}
    agree["all"] = sum(a == b for a, b in zip(read_x, read_hat)) / args.n
    reader_on_originals = sum(a == t for a, t in zip(read_x, truth)) / args.n
    groups = defaultdict(list)
    for a, b, t in zip(read_x, read_hat, truth):
        groups[(t.shape, t.size)].append(a == b)
    zs = z * vae.scaling_factor
    fg = foreground(x)
    t = speed(vae, x[:16])
    machine = f"{platform.machine()}, {torch.get_num_threads()} CPU threads (shared machine), torch {torch.__version__}"
    vae_path = Path(args.vae).resolve()
    shown = vae_path.relative_to(ROOT) if vae_path.is_relative_to(ROOT) else vae_path
    lines = [f"\n## Shapes VAE round trip (bench_vae.py), {datetime.date.today()}\n",
             f"Machine: {machine}. VAE: {shown} (block_out_channels {vae.config['block_out_channels']}, "
             f"f={vae.downsample_factor}, scaling_factor {vae.scaling_factor}); {args.n} held-out renders.\n",
             f"- PSNR {psnr(x_hat, x):.2f} dB (whole image), {psnr(x_hat, x, fg):.2f} dB (foreground only)",
             "- attributes read from reconstruction == read from original: "
             + ", ".join(f"{k} {100 * v:.1f}%" for k, v in agree.items()),
             f"- reader on the originals (vs the true attributes): {100 * reader_on_originals:.1f}%",
             "- all-attribute agreement by shape/size: "
             + ", ".join(f"{s} {z_}: {100 * sum(v) / len(v):.0f}% (n={len(v)})" for (s, z_), v in sorted(groups.items())),
             f"- scaled latents (z * scaling_factor): mean {float(zs.mean()):.3f}, std {float(zs.std()):.3f}, "
             f"per-channel std {[round(float(s), 2) for s in zs.std(dim=(0, 2, 3))]}, max |z| {float(zs.abs().max()):.2f}",
             f"- encode+decode 16 images: sdlearn {t['sdlearn'] * 1e3:.0f} ms, diffusers {t['diffusers'] * 1e3:.0f} ms "
             f"(ratio {t['sdlearn'] / t['diffusers']:.2f}; median of 3, same weights, same run)",
             *scenes_round_trip(vae, min(args.n, 600))]
    log = Path(args.vae) / "training_log.json"
    if log.exists():
        import json

        summary = json.loads(log.read_text())["summary"]
        a = summary["args"]
        extra = "".join(f" --{k} {a[k]}" for k in ("world", "init", "lr") if a.get(k) not in (None, "shapes", 1e-3))
        lines.append(f"- trained by `python -m sdlearn train vae --seed {a['seed']} --steps {a['steps']}{extra}` "
                     f"on {summary['device']} in {summary['train_seconds']} s")
    print("\n".join(lines))
    with open(args.results, "a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
