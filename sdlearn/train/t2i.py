"""Train the tiny text-to-image latent diffusion model on the Shapes world.

The LDM objective (Rombach et al. 2022, Eq. 2), with classifier-free guidance's caption dropout:

    L_LDM = E_{z0 = E(x), y, eps ~ N(0, I), t} || eps - eps_theta(z_t, t, tau(y)) ||^2,
    z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps                  (Ho et al. 2020, Eq. 4)

The VAE (E) and the text encoder (tau) are frozen, so latents and caption states are computed
once and cached; only the UNet learns. An EMA of its weights is what ships.

    python -m sdlearn train t2i --seed 0                 # plain Python, CPU or one GPU
    accelerate launch -m sdlearn train t2i --seed 0      # unchanged on several GPUs
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from sdlearn import ASSETS_DIR
from sdlearn.configs import SCHEDULER_CONFIG
from sdlearn.data import SceneDataset, ShapesDataset
from sdlearn.device import seed_everything
from sdlearn.schedules import alpha_bar, make_betas, q_sample
from sdlearn.weights import load_file, save_file, write_model_index


def unet_config(cross_attention_dim: int, channels: tuple[int, ...] = (64, 128, 128),
                layers_per_block: int = 2, head_dim: int = 32) -> dict:
    """The tiny UNet: Stable Diffusion's architecture (a UNet2DConditionModel config) at 8x8x4 latents."""
    n = len(channels)
    return {
        "_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * n, "up_block_types": ["CrossAttnUpBlock2D"] * n,
        "mid_block_type": "UNetMidBlock2DCrossAttn", "block_out_channels": list(channels),
        "layers_per_block": layers_per_block, "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": [c // head_dim for c in channels], "norm_num_groups": 32,
        "flip_sin_to_cos": True, "freq_shift": 0, "act_fn": "silu", "use_linear_projection": False,
        "upcast_attention": False,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sdlearn train t2i", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4500, help="optimizer steps")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop (and export) after this many steps, keeping the --steps learning-rate schedule")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--num-images", type=int, default=20_000, help="training renders (latents cached)")
    ap.add_argument("--caption-dropout", type=float, default=0.1, help="share of empty captions (for CFG)")
    ap.add_argument("--world", choices=("shapes", "scenes"), default="shapes",
                    help="shapes: one object per image (the bundled model); scenes: Shapes world 2 (needs a "
                         "--model-dir whose VAE and text encoder were trained on scenes)")
    ap.add_argument("--two-objects", type=float, default=0.6, help="with --world scenes: share of two-object scenes")
    ap.add_argument("--one-object-steps", type=int, default=0,
                    help="with --world scenes: a curriculum; the first N steps draw only one-object scenes")
    ap.add_argument("--init-unet", type=Path, default=None,
                    help="start from the UNet in this folder (fine-tuning, e.g. world 1's sdlearn/assets/tiny/unet) "
                         "instead of random weights; its config must be the one --channels and --layers-per-block give")
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the shipped weights")
    ap.add_argument("--channels", default="64,128,128")
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--model-dir", type=Path, default=ASSETS_DIR / "tiny",
                    help="folder holding vae/, text_encoder/, tokenizer/; unet/ and scheduler/ are written here")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/t2i"), help="checkpoints and the loss log")
    ap.add_argument("--checkpoint-every", type=int, default=500,
                    help="save a resumable checkpoint and export the EMA UNet this often")
    ap.add_argument("--resume", action="store_true",
                    help="continue from run-dir/checkpoint.safetensors: the same weights as one uninterrupted run")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    return ap.parse_args(argv)


@torch.no_grad()
def cache_dataset(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    """Render, encode and cache: latent means/stds (N, 4, 8, 8), caption indices (N,) into the
    caption states (U, 77, d) (index 0: the empty caption), and the VAE's scaling factor."""
    from sdlearn.clip import CLIPTextEncoder
    from sdlearn.tokenizer import CLIPTokenizer
    from sdlearn.vae import VAE

    vae = VAE.from_pretrained(args.model_dir / "vae").to(device).eval()
    text_encoder = CLIPTextEncoder.from_pretrained(args.model_dir / "text_encoder").to(device).eval()
    tokenizer = CLIPTokenizer()
    if getattr(args, "world", "shapes") == "scenes":       # Shapes world 2: one or two objects, any background
        data = SceneDataset(args.num_images, seed=args.seed, two_objects=args.two_objects, holdout=True, varied=True)
    else:
        data = ShapesDataset(args.num_images, seed=args.seed, holdout=True, varied=True)
    means, stds, captions, objects = [], [], [], []
    for start in tqdm(range(0, len(data), 500), desc="caching latents"):
        items = [data[i] for i in range(start, min(start + 500, len(data)))]
        objects += [len(data.scene(i).objects) if isinstance(data, SceneDataset) else 1
                    for i in range(start, start + len(items))]
        x = torch.stack([im for im, _ in items]).to(device)                # (b, 3, 64, 64)
        posterior = vae.encode(x)                                            # q(z | x): (b, 4, 8, 8) each
        means.append(posterior.mean.cpu())
        stds.append(posterior.std.cpu())
        captions += [c for _, c in items]
    unique = [""] + sorted(set(captions))                                    # index 0: the empty caption
    index = {c: i for i, c in enumerate(unique)}
    states = torch.cat([text_encoder(tokenizer(unique[i:i + 256]).to(device)).cpu()
                        for i in range(0, len(unique), 256)])                # (U, 77, d)
    # contiguous, as they come back from the cache file: the UNet's convolutions then round the same way
    # whether a run computed its cache or read it (a resumed run reads it)
    return {"mean": torch.cat(means).contiguous(), "std": torch.cat(stds).contiguous(), "states": states,
            "caption": torch.tensor([index[c] for c in captions]), "objects": torch.tensor(objects),
            "scaling_factor": torch.tensor(float(vae.config["scaling_factor"]))}


def training_step(unet: nn.Module, cache: dict[str, torch.Tensor], a_bar: torch.Tensor, batch_size: int,
                  caption_dropout: float, generator: torch.Generator, pool: torch.Tensor | None = None) -> torch.Tensor:
    """L_LDM on one random batch of the cache (notebook 07 writes it out line by line):
    z0 ~ q(z|x) scaled, captions dropped to "" with probability ``caption_dropout`` (for CFG), t and eps
    drawn, z_t = q_sample(z0, t, eps) (Ho et al. Eq. 4), and MSE(eps_theta(z_t, t, tau(y)), eps).
    ``pool``: draw only these cache rows (a curriculum). All randomness comes from ``generator``, in
    that order; the loss is computed where ``a_bar`` lives."""
    mean, std, device = cache["mean"], cache["std"], a_bar.device
    idx = torch.randint(len(mean) if pool is None else len(pool), (batch_size,), generator=generator)
    idx = idx if pool is None else pool[idx]
    z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator)) * float(cache["scaling_factor"])
    cap = cache["caption"][idx].clone()
    cap[torch.rand(batch_size, generator=generator) < caption_dropout] = 0            # "" for CFG
    t = torch.randint(len(a_bar), (batch_size,), generator=generator)                 # (B,) random steps
    eps = torch.randn(z0.shape, generator=generator)                                  # (B, 4, 8, 8)
    z0, t, eps = z0.to(device), t.to(device), eps.to(device)
    z_t = q_sample(z0, t, eps, a_bar)                                                  # q(z_t | z_0)
    return F.mse_loss(unet(z_t, t, cache["states"][cap.to(device)]), eps)             # L_simple


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- decay theta_ema + (1 - decay) theta: the exponential moving average that ships."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)


def main(argv: list[str] | None = None) -> None:
    from accelerate import Accelerator

    from sdlearn.unet import UNet

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator()
    device = accelerator.device
    seed_everything(args.seed)
    args.run_dir.mkdir(parents=True, exist_ok=True)

    world = "" if args.world == "shapes" else f"_scenes{args.two_objects:g}_v2"
    cache_path = args.run_dir / f"cache_seed{args.seed}_n{args.num_images}{world}.safetensors"
    if cache_path.exists():
        cache = load_file(cache_path)
    else:
        cache = cache_dataset(args, device)
        if accelerator.is_main_process:
            save_file(cache, cache_path)
    cache["states"] = cache["states"].to(device)

    config = unet_config(cache["states"].shape[-1], tuple(int(c) for c in args.channels.split(",")),
                         args.layers_per_block)
    torch.manual_seed(args.seed)
    unet = UNet.from_config(config)
    if args.init_unet is not None:
        start = UNet.from_pretrained(args.init_unet)
        if any(start.config.get(k) != v for k, v in config.items() if not k.startswith("_")):
            raise ValueError(f"--init-unet {args.init_unet}: its config differs from the one this run trains "
                             "(set --channels and --layers-per-block to match)")
        unet.load_state_dict(start.state_dict())
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, min(500, args.steps // 10))                            # steps of linear warm-up
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    c = SCHEDULER_CONFIG
    a_bar = alpha_bar(make_betas(c["beta_schedule"], c["num_train_timesteps"], c["beta_start"],
                                 c["beta_end"])).to(device)                 # (1000,) cumulative prod of 1 - beta
    gen = torch.Generator().manual_seed(                                    # the data order: one stream per GPU
        args.seed * 1_000_003 + accelerator.process_index)

    step, log = 0, []
    ckpt = args.run_dir / "checkpoint.safetensors"
    if args.resume and ckpt.exists():
        step, log, streams = _load_checkpoint(ckpt, unet, ema, opt, sched)
        if len(streams) != accelerator.num_processes:
            raise ValueError(f"--resume: {ckpt} was written by {len(streams)} processes, this run has "
                             f"{accelerator.num_processes}; resume with as many to continue the same data order")
        gen.set_state(streams[accelerator.process_index])
    unet, opt = accelerator.prepare(unet, opt)
    ema.to(device)
    print(f"t2i: UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters, "
          f"{len(cache['mean'])} cached latents, {len(cache['states'])} distinct captions, device {device}")

    t0 = time.time()
    bar = tqdm(total=args.steps, initial=step, desc="training t2i", disable=not accelerator.is_main_process)
    unet.train()
    last = min(args.steps, args.stop_after or args.steps)
    one_object = torch.nonzero(cache["objects"] == 1).flatten() if "objects" in cache else None
    while step < last:
        pool = one_object if step < args.one_object_steps else None        # curriculum: one object first
        loss = training_step(unet, cache, a_bar, args.batch_size, args.caption_dropout, gen, pool)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        ema_update(ema, accelerator.unwrap_model(unet), min(args.ema, (1 + step) / (10 + step)))  # warm-up
        log.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(log[-50:]):.4f}")
        if step % args.checkpoint_every == 0 or step == last:
            streams = accelerator.gather(gen.get_state()[None].to(device)).cpu()  # (processes, n): each data order
            if accelerator.is_main_process:
                _save_checkpoint(ckpt, accelerator.unwrap_model(unet), ema, opt, sched, streams, step, log)
                save_model(ema, args.model_dir, config)
    bar.close()
    if accelerator.is_main_process:
        (args.run_dir / "loss.json").write_text(json.dumps({"loss": log, "seconds": time.time() - t0,
                                                            "device": str(device), "args": vars(args)},
                                                           default=str))
        print(f"t2i: {step} steps in {(time.time() - t0) / 60:.1f} min; "
              f"final loss {np.mean(log[-200:]):.4f}; wrote {args.model_dir / 'unet'}")


def save_model(unet: nn.Module, model_dir: Path, config: dict) -> None:
    """Write unet/ (float16 weights: half the size, no visible change at 64x64), scheduler/ and
    model_index.json in diffusers' layout."""
    (model_dir / "unet").mkdir(parents=True, exist_ok=True)
    (model_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    save_file({k: v.half() for k, v in unet.state_dict().items()},
              model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    (model_dir / "unet" / "config.json").write_text(json.dumps(config, indent=2))
    (model_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    write_model_index(model_dir)


def _save_checkpoint(path: Path, unet: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer,
                     sched: torch.optim.lr_scheduler.LRScheduler, streams: torch.Tensor, step: int,
                     log: list[float]) -> None:
    """Everything a resumed run needs to continue as if never stopped, as safetensors (no pickle):
    weights, EMA, Adam's moments and the data-order generators' states (one row per process); the
    counters, learning-rate schedule and Adam's hyperparameters as JSON metadata."""
    opt_state = opt.state_dict()
    tensors = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    tensors |= {f"opt.{i}.{name}": v.reshape(1) if v.dim() == 0 else v            # Adam's step count: (1,)
                for i, state in opt_state["state"].items() for name, v in state.items()}
    tensors["generators"] = streams
    meta = {"step": str(step), "log": json.dumps(log), "sched": json.dumps(sched.state_dict()),
            "opt_param_groups": json.dumps(opt_state["param_groups"])}
    save_file(tensors, path, metadata=meta)


def _load_checkpoint(path: Path, unet: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer,
                     sched: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[float], torch.Tensor]:
    """Restore what ``_save_checkpoint`` wrote into the modules; returns (step, loss log, generator states)."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    unet.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unet.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".")
            state.setdefault(int(i), {})[name] = v.reshape(()) if name == "step" else v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["opt_param_groups"])})
    sched.load_state_dict(json.loads(meta["sched"]))
    return int(meta["step"]), json.loads(meta["log"]), tensors["generators"]


if __name__ == "__main__":
    main()
