"""The Stable Diffusion sampler: text -> CLIP states -> denoise latents with guidance -> VAE decode.

Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models": the UNet
eps_theta(z_t, t, tau(y)) is run in the VAE's latent space, conditioned on the text through
cross-attention. Classifier-free guidance (Ho & Salimans 2022, Eq. 6) mixes a conditional and an
unconditional prediction: eps = eps(z, "") + w * (eps(z, y) - eps(z, "")).

``StableDiffusion`` holds the five parts (unet, vae, text_encoder, tokenizer, scheduler) and does
text-to-image, image-to-image (SDEdit) and inpainting with any scheduler, ours or diffusers'.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from sdlearn import schedulers as ours
from sdlearn.device import get_device, randn

TINY_MODEL_DIR: Path = Path(__file__).resolve().parent / "assets" / "tiny"

#: Sampler names accepted by ``scheduler=`` (and the command line's ``--sampler``).
SAMPLERS: dict[str, type] = {
    "ddpm": ours.DDPM, "ddim": ours.DDIM, "dpm++": ours.DPMSolverPP, "dpmsolver++": ours.DPMSolverPP,
    "euler": ours.Euler, "euler_a": ours.EulerAncestral, "euler-ancestral": ours.EulerAncestral,
}
#: diffusers scheduler class names -> ours, for loading a diffusers folder's scheduler config.
#: Stable Diffusion v1.5 ships PNDM, which we don't implement: DPM-Solver++ takes its place.
_DIFFUSERS_SCHEDULERS: dict[str, type] = {
    "DDPMScheduler": ours.DDPM, "DDIMScheduler": ours.DDIM, "DPMSolverMultistepScheduler": ours.DPMSolverPP,
    "EulerDiscreteScheduler": ours.Euler, "EulerAncestralDiscreteScheduler": ours.EulerAncestral,
}

Prompt = str | Sequence[str]


def _config(module: Any) -> dict:
    cfg = module.config
    return dict(cfg) if not isinstance(cfg, dict) else cfg


def make_scheduler(name_or_scheduler: Any, config: dict | None = None) -> Any:
    """A scheduler from a name in ``SAMPLERS`` (built from ``config``) or a scheduler object as is."""
    if not isinstance(name_or_scheduler, str):
        return name_or_scheduler
    key = name_or_scheduler.lower()
    if key not in SAMPLERS:
        raise ValueError(f"unknown scheduler {name_or_scheduler!r}; allowed: {', '.join(SAMPLERS)}")
    return SAMPLERS[key].from_config(config or {})   # the shared keys carry over: schedule, prediction type, spacing


class StableDiffusion:
    """Stable Diffusion from its five parts. ``StableDiffusion.tiny()`` is the bundled offline model."""

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module,
                 tokenizer: Any, scheduler: Any):
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.progress_bar = True
        for m in (unet, vae, text_encoder):
            m.eval().requires_grad_(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def tiny(cls, device: str | torch.device | None = None) -> "StableDiffusion":
        """The bundled tiny text-to-image model (Shapes world, 64x64), trained by sdlearn itself."""
        if not (TINY_MODEL_DIR / "unet").exists():
            raise FileNotFoundError(f"the bundled tiny model is missing from {TINY_MODEL_DIR}; "
                                    "train it with `python -m sdlearn train t2i` (see README)")
        return cls.from_pretrained(TINY_MODEL_DIR, device=device)

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> "StableDiffusion":
        """Load a diffusers-format folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
        ``scheduler/``), or a hub id such as ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` when
        online. Only safetensors weights are read."""
        from sdlearn.clip import CLIPTextEncoder
        from sdlearn.unet import UNet
        from sdlearn.vae import VAE

        folder = Path(path_or_id)
        if not folder.is_dir():
            folder = _download(str(path_or_id))
        for part in ("unet", "vae", "text_encoder"):
            if not (folder / part).is_dir():
                raise ValueError(f"{folder} is not a diffusers Stable Diffusion folder: {part}/ is missing")
        tokenizer = _load_tokenizer(folder / "tokenizer")
        pipe = cls(UNet.from_pretrained(folder / "unet"), VAE.from_pretrained(folder / "vae"),
                   CLIPTextEncoder.from_pretrained(folder / "text_encoder"), tokenizer,
                   _load_scheduler(folder / "scheduler"))
        return pipe.to(device or get_device(), dtype)

    @classmethod
    def from_single_file(cls, path: str | os.PathLike, allow_pickle: bool = False,
                         device: str | torch.device | None = None,
                         dtype: torch.dtype | None = None) -> "StableDiffusion":
        """Load an original CompVis-layout checkpoint (``.safetensors``; pickles only with
        ``allow_pickle=True``, and then through ``torch.load(weights_only=True)``)."""
        from sdlearn import weights

        return weights.pipeline_from_single_file(cls, path, allow_pickle=allow_pickle).to(device or get_device(), dtype)

    @classmethod
    def from_diffusers(cls, pipe: Any) -> "StableDiffusion":
        """Copy a diffusers ``StableDiffusionPipeline``'s weights into sdlearn modules (same keys)."""
        from sdlearn.clip import CLIPTextEncoder
        from sdlearn.tokenizer import CLIPTokenizer
        from sdlearn.unet import UNet
        from sdlearn.vae import VAE

        parts = {}
        for name, klass in (("unet", UNet), ("vae", VAE), ("text_encoder", CLIPTextEncoder)):
            theirs = getattr(pipe, name)
            config = theirs.config.to_dict() if hasattr(theirs.config, "to_dict") else dict(theirs.config)
            mine = klass.from_config(config)
            mine.load_state_dict(theirs.state_dict(), strict=True)
            parts[name] = mine.to(theirs.device, theirs.dtype)
        tokenizer = CLIPTokenizer()
        tokenizer.pad_id = getattr(pipe.tokenizer, "pad_token_id", tokenizer.pad_id)  # v2 pads with "!" (id 0)
        scheduler = _DIFFUSERS_SCHEDULERS.get(type(pipe.scheduler).__name__, ours.DPMSolverPP).from_config(
            dict(pipe.scheduler.config))
        return cls(parts["unet"], parts["vae"], parts["text_encoder"], tokenizer, scheduler)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
           channels_last: bool = False) -> "StableDiffusion":
        """Move to ``device``; ``dtype`` (e.g. torch.float16) applies to the UNet and text encoder.
        The VAE stays in float32: decoding in float16 overflows into NaNs (black images).
        ``channels_last`` stores the UNet's convolution weights NHWC, which GPU convolutions prefer."""
        self.unet.to(device=device, dtype=dtype)
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self.text_encoder.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=torch.float32)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(_config(self.vae)["block_out_channels"]) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(_config(self.vae).get("scaling_factor", 0.18215))

    # ------------------------------------------------------------------ building blocks
    @torch.no_grad()
    def encode_prompt(self, prompt: list[str]) -> torch.Tensor:
        """Prompts -> CLIP last hidden states (B, 77, d): the UNet's cross-attention context."""
        ids = self.tokenizer(prompt).to(self.device)            # (B, 77) token ids
        return self.text_encoder(ids).to(self.dtype)            # (B, 77) -> (B, 77, d)

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8), sampled from q(z|x)."""
        posterior = self.vae.encode(image.to(self.device, torch.float32))
        return posterior.sample(generator) * self.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w) in [-1, 1] (VAE in float32)."""
        return self.vae.decode(latents.to(torch.float32) / self.scaling_factor).clamp(-1, 1)

    def predict_noise(self, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                      guidance_scale: float, scheduler: Any, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier-free guided eps: eps_u + w (eps_c - eps_u); context is [uncond; cond] when guiding."""
        guided = guidance_scale > 1.0
        x = torch.cat([latents] * 2) if guided else latents                 # (2B, 4, h, w) when guided
        x = scheduler.scale_model_input(x, t)
        if extra is not None:                                               # inpainting UNet: 4 + 1 + 4 channels
            x = torch.cat([x, torch.cat([extra] * 2) if guided else extra], dim=1)
        eps = self.unet(x.to(self.dtype), t, context).to(latents.dtype)     # (2B, 4, h, w)
        if not guided:
            return eps
        eps_uncond, eps_cond = eps.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    # ------------------------------------------------------------------ text to image
    @torch.no_grad()
    def text_to_image(self, prompt: Prompt, negative_prompt: Prompt | None = None,
                      num_inference_steps: int = 20, guidance_scale: float = 5.0,
                      height: int | None = None, width: int | None = None, seed: int | None = None,
                      generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                      scheduler: Any = None, output_type: str = "pil",
                      callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None):
        """Generate one image per prompt. Returns a list of PIL images (``output_type="pil"``),
        a (B, 3, H, W) tensor in [0, 1] (``"pt"``), a (B, H, W, 3) array (``"np"``) or the final
        latents (``"latent"``). ``callback(i, t, latents)`` is called after every step."""
        prompts, negatives = self._check_prompts(prompt, negative_prompt)
        self._check_common(num_inference_steps, guidance_scale, output_type)
        height, width = self._check_size(height, width)
        scheduler = make_scheduler(scheduler, _config(self.scheduler)) if scheduler is not None else self.scheduler
        generator = _generator(seed, generator)
        shape = (len(prompts), _config(self.unet)["out_channels"], height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} for {len(prompts)} prompt(s) at "
                             f"{height}x{width}; got {tuple(latents.shape)}")

        context = self._context(prompts, negatives, guidance_scale)          # (2B or B, 77, d)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        if latents is None:
            latents = randn(shape, generator, self.device)                  # z_T ~ N(0, I), drawn on the CPU
        latents = latents.to(self.device, torch.float32) * scheduler.init_noise_sigma
        latents = self._denoise(latents, scheduler.timesteps, context, guidance_scale, scheduler,
                                generator, callback)
        return self._output(latents, output_type)

    # ------------------------------------------------------------------ image to image (SDEdit)
    @torch.no_grad()
    def image_to_image(self, prompt: Prompt, image: Any, strength: float = 0.6,
                       negative_prompt: Prompt | None = None, num_inference_steps: int = 20,
                       guidance_scale: float = 5.0, seed: int | None = None,
                       generator: torch.Generator | None = None, scheduler: Any = None,
                       output_type: str = "pil",
                       callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None):
        """SDEdit (Meng et al. 2022): encode ``image``, noise it to the step that ``strength`` picks
        (q(z_t | z_0), Ho et al. Eq. 4), and denoise from there. strength 0 returns the input's
        VAE round trip; strength 1 starts from the noisiest step of the schedule, where only
        sqrt(alpha_bar_t) (about 0.1 for SD's schedule) of the input's amplitude is left."""
        prompts, negatives = self._check_prompts(prompt, negative_prompt)
        self._check_common(num_inference_steps, guidance_scale, output_type)
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1]; got {strength}")
        x0 = self._image_tensor(image, len(prompts))                          # (B, 3, H, W) in [-1, 1]
        self._check_size(x0.shape[-2], x0.shape[-1])
        scheduler = make_scheduler(scheduler, _config(self.scheduler)) if scheduler is not None else self.scheduler
        generator = _generator(seed, generator)

        context = self._context(prompts, negatives, guidance_scale)
        timesteps = self._strength_timesteps(scheduler, num_inference_steps, strength)
        z0 = self.encode_image(x0, generator)                                 # (B, 4, h, w)
        if len(timesteps) == 0:
            return self._output(z0, output_type)
        noise = randn(tuple(z0.shape), generator, self.device)
        latents = scheduler.add_noise(z0, noise, timesteps[:1])               # z_t = sqrt(a_bar) z0 + sqrt(1 - a_bar) eps
        latents = self._denoise(latents, timesteps, context, guidance_scale, scheduler, generator, callback)
        return self._output(latents, output_type)

    # ------------------------------------------------------------------ inpainting
    @torch.no_grad()
    def inpaint(self, prompt: Prompt, image: Any, mask: Any, negative_prompt: Prompt | None = None,
                num_inference_steps: int = 20, guidance_scale: float = 5.0, strength: float = 1.0,
                seed: int | None = None, generator: torch.Generator | None = None,
                scheduler: Any = None, output_type: str = "pil",
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None):
        """Repaint where ``mask`` is white (1) and keep the rest.

        A 9-channel inpainting UNet sees [z_t, mask, z(masked image)] at every step. An ordinary
        4-channel UNet gets latent blending instead: after each step the known region is replaced
        by the input's latents noised to the same level, so only the masked region is invented.
        """
        prompts, negatives = self._check_prompts(prompt, negative_prompt)
        self._check_common(num_inference_steps, guidance_scale, output_type)
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1]; got {strength}")
        x0 = self._image_tensor(image, len(prompts))                          # (B, 3, H, W)
        height, width = self._check_size(x0.shape[-2], x0.shape[-1])
        m = self._mask_tensor(mask, len(prompts), height, width)              # (B, 1, H, W), 1 = repaint
        in_channels = _config(self.unet)["in_channels"]
        if in_channels not in (4, 9):
            raise ValueError(f"inpainting needs a UNet with 4 or 9 input channels; got {in_channels}")
        scheduler = make_scheduler(scheduler, _config(self.scheduler)) if scheduler is not None else self.scheduler
        generator = _generator(seed, generator)

        context = self._context(prompts, negatives, guidance_scale)
        timesteps = self._strength_timesteps(scheduler, num_inference_steps, strength)
        h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
        m_latent = torch.nn.functional.interpolate(m, size=(h, w)).to(self.device)  # (B, 1, h, w)
        # the random draws happen in diffusers' order, so both give the same image from one generator
        z0 = self.encode_image(x0, generator) if (in_channels == 4 or strength < 1.0) else None
        noise = randn((len(prompts), _config(self.unet)["out_channels"], h, w), generator, self.device)
        if strength >= 1.0:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(z0, noise, timesteps[:1])

        if in_channels == 9:
            masked = x0 * (m < 0.5)                                           # known pixels only
            extra = torch.cat([m_latent, self.encode_image(masked, generator)], dim=1)  # (B, 1 + 4, h, w)
            latents = self._denoise(latents, timesteps, context, guidance_scale, scheduler, generator,
                                    callback, extra=extra.to(self.dtype))
        else:
            def blend(i: int, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
                known = z0 if i == len(timesteps) - 1 else scheduler.add_noise(z0, noise, timesteps[i + 1:i + 2])
                return (1 - m_latent) * known + m_latent * z                  # keep the unmasked region
            latents = self._denoise(latents, timesteps, context, guidance_scale, scheduler, generator,
                                    callback, after_step=blend)
        return self._output(latents, output_type)

    # ------------------------------------------------------------------ internals
    def _denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                 guidance_scale: float, scheduler: Any, generator: torch.Generator | None,
                 callback: Callable | None, extra: torch.Tensor | None = None,
                 after_step: Callable | None = None) -> torch.Tensor:
        """The sampling loop: z_T -> z_0 with ``scheduler.step`` (the reverse process p(z_{t-1}|z_t))."""
        for i, t in enumerate(tqdm(timesteps, disable=not self.progress_bar, desc="denoising")):
            eps = self.predict_noise(latents, t, context, guidance_scale, scheduler, extra)
            latents = scheduler.step(eps, t, latents, generator=generator, return_dict=False)[0]
            if after_step is not None:
                latents = after_step(i, t, latents)
            if callback is not None:
                callback(i, t, latents)
        return latents

    def _context(self, prompts: list[str], negatives: list[str], guidance_scale: float) -> torch.Tensor:
        cond = self.encode_prompt(prompts)                                    # (B, 77, d)
        if guidance_scale <= 1.0:
            return cond
        return torch.cat([self.encode_prompt(negatives), cond])               # (2B, 77, d): [uncond; cond]

    @staticmethod
    def _strength_timesteps(scheduler: Any, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The last ``strength`` fraction of the schedule (as diffusers' img2img picks it)."""
        scheduler.set_timesteps(num_inference_steps)
        n_run = min(int(num_inference_steps * strength), num_inference_steps)
        start = (num_inference_steps - n_run) * scheduler.order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        return scheduler.timesteps[start:]

    def _output(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        images = (self.decode_latents(latents) + 1) / 2                       # (B, 3, H, W) in [0, 1]
        if output_type == "pt":
            return images.cpu()
        arr = images.permute(0, 2, 3, 1).cpu().numpy()                        # (B, H, W, 3)
        if output_type == "np":
            return arr
        return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr]

    @staticmethod
    def _check_prompts(prompt: Prompt, negative_prompt: Prompt | None) -> tuple[list[str], list[str]]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompt must be a string or a non-empty list of strings; got {type(prompt).__name__}")
        prompts = list(prompts)
        if negative_prompt is None:
            return prompts, [""] * len(prompts)
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
        if not isinstance(negatives, (list, tuple)) or not all(isinstance(p, str) for p in negatives):
            raise TypeError("negative_prompt must be a string or a list of strings")
        if len(negatives) != len(prompts):
            raise ValueError(f"negative_prompt has {len(negatives)} entries but prompt has {len(prompts)}; "
                             "give one negative prompt per prompt (or a single string)")
        return prompts, list(negatives)

    @staticmethod
    def _check_common(num_inference_steps: int, guidance_scale: float, output_type: str) -> None:
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1; got {num_inference_steps!r}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance); got {guidance_scale}")
        if output_type not in ("pil", "pt", "np", "latent"):
            raise ValueError(f"output_type must be one of 'pil', 'pt', 'np', 'latent'; got {output_type!r}")

    def _check_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        cfg = _config(self.unet)
        multiple = self.vae_scale_factor * 2 ** (len(cfg["block_out_channels"]) - 1)
        default = cfg.get("sample_size", 8) * self.vae_scale_factor
        height, width = height or default, width or default
        for name, v in (("height", height), ("width", width)):
            if v % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} (VAE factor {self.vae_scale_factor} "
                                 f"x UNet downsampling {multiple // self.vae_scale_factor}); got {v}")
        return int(height), int(width)

    def _image_tensor(self, image: Any, batch: int) -> torch.Tensor:
        """PIL RGB image(s) or a tensor in [-1, 1] -> (B, 3, H, W) on the device."""
        from sdlearn.data import to_tensor

        images = image if isinstance(image, (list, tuple)) else [image]
        if isinstance(image, torch.Tensor):
            x = image if image.dim() == 4 else image[None]
            if x.shape[1] != 3:
                raise ValueError(f"image tensor must have 3 (RGB) channels, shape (B, 3, H, W); got {tuple(x.shape)}")
        else:
            for im in images:
                if not isinstance(im, Image.Image):
                    raise TypeError(f"image must be a PIL image or a tensor; got {type(im).__name__}")
                if im.mode != "RGB":
                    raise ValueError(f"image must be RGB; got mode {im.mode!r} (use image.convert('RGB'))")
            x = torch.stack([to_tensor(im) for im in images])
        if x.shape[0] == 1 and batch > 1:
            x = x.expand(batch, -1, -1, -1)
        if x.shape[0] != batch:
            raise ValueError(f"got {x.shape[0]} images for {batch} prompts")
        return x.to(self.device, torch.float32)

    def _mask_tensor(self, mask: Any, batch: int, height: int, width: int) -> torch.Tensor:
        """PIL "L" mask(s) or a tensor in [0, 1] -> binary (B, 1, H, W); white/1 = repaint."""
        if isinstance(mask, Image.Image):
            m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
        elif isinstance(mask, torch.Tensor):
            m = mask.float()
            m = m[None, None] if m.dim() == 2 else (m[None] if m.dim() == 3 else m)
        else:
            raise TypeError(f"mask must be a PIL image or a tensor; got {type(mask).__name__}")
        if tuple(m.shape[-2:]) != (height, width) or m.shape[1] != 1:
            raise ValueError(f"mask must be 1 x {height} x {width} (the image's size); got {tuple(m.shape)}")
        m = (m >= 0.5).float()
        return (m.expand(batch, -1, -1, -1) if m.shape[0] == 1 else m).to(self.device)


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    return torch.Generator("cpu").manual_seed(seed) if seed is not None else generator


def _load_tokenizer(folder: Path) -> Any:
    """Our CLIP tokenizer, with the padding token a diffusers ``tokenizer/`` folder asks for
    (SD v1 pads with <|endoftext|>, SD v2 with "!")."""
    from sdlearn.tokenizer import CLIPTokenizer

    tokenizer = CLIPTokenizer()
    path = folder / "special_tokens_map.json"
    pad = json.loads(path.read_text()).get("pad_token") if path.exists() else None
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if pad is not None:
        tokenizer.pad_id = tokenizer.encoder.get(pad, tokenizer.encoder.get(pad + "</w>", tokenizer.pad_id))
    return tokenizer


def _load_scheduler(folder: Path) -> Any:
    """Our scheduler for a diffusers ``scheduler/`` folder (DPM-Solver++ when it's one we lack)."""
    path = folder / "scheduler_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    return _DIFFUSERS_SCHEDULERS.get(config.get("_class_name"), ours.DPMSolverPP).from_config(config)


def _download(repo_id: str) -> Path:
    """Fetch a hub repo's configs and safetensors (needs the network; never used by the tests)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ValueError(f"{repo_id!r} is not a local folder and HF_HUB_OFFLINE=1: real Stable Diffusion "
                         "weights need an internet connection (e.g. on Colab)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "unet/*.safetensors",
                                                          "vae/*.safetensors", "text_encoder/*.safetensors"],
                                  ignore_patterns=["*.fp16.safetensors", "*non_ema*", "*.ckpt", "*.bin"]))
