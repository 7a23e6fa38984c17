"""The Stable Diffusion sampler: text -> CLIP states -> denoise latents with guidance -> VAE decode.

Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models": the UNet
eps_theta(z_t, t, tau(y)) is run in the VAE's latent space, conditioned on the text through
cross-attention. Classifier-free guidance (Ho & Salimans 2022, Eq. 6) mixes a conditional and an
unconditional prediction: eps = eps(z, "") + w * (eps(z, y) - eps(z, "")).

``StableDiffusion`` holds the five parts (unet, vae, text_encoder, tokenizer, scheduler) and does
text-to-image, image-to-image (SDEdit) and inpainting with any scheduler, ours or diffusers'.
"""
from __future__ import annotations

import copy
import math
import numbers
import operator
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from sdlearn import ASSETS_DIR
from sdlearn import schedulers as ours
from sdlearn.attend_excite import DEFAULT_SCALE as DEFAULT_EXCITE_SCALE
from sdlearn.attend_excite import Excite, excite_step, subject_tokens
from sdlearn.device import Generators, get_device, randn

TINY_MODEL_DIR: Path = ASSETS_DIR / "tiny"

Prompt = str | Sequence[str]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]   # callback(i, t, latents) after each step
Output = list[Image.Image] | torch.Tensor | np.ndarray       # by output_type: pil, pt / latent, np


def make_scheduler(name_or_scheduler: Any, config: Mapping[str, Any] | None = None) -> Any:
    """A sampler named in ``sdlearn.schedulers.SCHEDULERS`` (or by its diffusers class name), built from
    ``config``: the keys all samplers share carry over (schedule, prediction type, spacing). A scheduler
    object is returned as is."""
    if not isinstance(name_or_scheduler, str):
        return name_or_scheduler
    return ours.scheduler_class(name_or_scheduler).from_config(config or {})


class StableDiffusion:
    """Stable Diffusion from its five parts. ``StableDiffusion.tiny()`` is the bundled offline model."""

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module,
                 tokenizer: Any, scheduler: Any) -> None:
        """Hold the parts as they are (no copies): the three modules are switched to eval mode and
        frozen (``requires_grad_(False)``) in place, so to keep training one of them, train it before
        building the pipeline or unfreeze it after (notebook 07's live UNet samples from its EMA copy)."""
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
        online. Only safetensors weights are read, each model through ``sdlearn.weights.load_pretrained``
        (keys and shapes checked on the meta device first). The UNet and text encoder come in as
        ``dtype`` (None: float32), the VAE in float32."""
        from sdlearn import weights
        from sdlearn.clip import CLIPTextEncoder
        from sdlearn.unet import UNet
        from sdlearn.vae import VAE

        dtype = weights.check_dtype(dtype)
        if not isinstance(path_or_id, (str, os.PathLike)):
            raise TypeError(f"path_or_id must be a folder path or a hub id (got {type(path_or_id).__name__})")
        folder = Path(path_or_id)
        if not folder.is_dir():
            folder = _download(str(path_or_id))
        missing = [f"{part}/" for part in ("unet", "vae", "text_encoder") if not (folder / part).is_dir()]
        if missing:
            raise ValueError(f"{folder} is not a diffusers Stable Diffusion folder: {', '.join(missing)} missing "
                             "(it needs unet/, vae/ and text_encoder/; tokenizer/ and scheduler/ are optional)")
        tokenizer = _load_tokenizer(folder / "tokenizer")
        scheduler = _load_scheduler(folder / "scheduler")
        pipe = cls(UNet.from_pretrained(folder / "unet", dtype), VAE.from_pretrained(folder / "vae"),
                   CLIPTextEncoder.from_pretrained(folder / "text_encoder", dtype), tokenizer, scheduler)
        return pipe.to(device or get_device(), dtype)

    @classmethod
    def from_single_file(cls, path: str | os.PathLike, allow_pickle: bool = False,
                         device: str | torch.device | None = None,
                         dtype: torch.dtype | None = None) -> "StableDiffusion":
        """Load an original CompVis-layout checkpoint (``.safetensors``; pickles only with
        ``allow_pickle=True``, and then through ``torch.load(weights_only=True)``). Keys and shapes
        are checked against the SD architecture, built on the meta device, before any weight is read."""
        from sdlearn import weights

        pipe = weights.pipeline_from_single_file(cls, path, allow_pickle=allow_pickle, dtype=dtype)
        return pipe.to(device or get_device(), dtype)

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
        scheduler = _our_scheduler(type(pipe.scheduler).__name__, pipe.scheduler.config)
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
        return 2 ** (len(self.vae.config["block_out_channels"]) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.get("scaling_factor", 0.18215))

    # ------------------------------------------------------------------ building blocks
    @torch.no_grad()
    def encode_prompt(self, prompt: list[str]) -> torch.Tensor:
        """Prompts -> CLIP last hidden states (B, 77, d): the UNet's cross-attention context."""
        ids = self.tokenizer(prompt).to(self.device)            # (B, 77) token ids
        return self.text_encoder(ids).to(self.dtype)            # (B, 77) -> (B, 77, d)

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Image (B, 3, H, W) in [-1, 1] (the VAE's range) -> scaled latents (B, 4, H/8, W/8),
        sampled from q(z|x). A list of generators samples item i with generator i."""
        x = image.to(self.device, torch.float32)
        if isinstance(generator, list):                          # one posterior sample per generator
            return torch.cat([self.encode_image(x[i:i + 1], g) for i, g in enumerate(generator)])
        return self.vae.encode(x).sample(generator) * self.scaling_factor

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

    # ------------------------------------------------------------------ the three tasks
    # One loop (``_sample``), three starts: text-to-image starts from noise, image-to-image from the
    # input's latent noised to the strength's step, inpainting from noise (or the noised input) and
    # pastes the known region back after every step (notebook 09 builds the same as ``generate``).

    @torch.no_grad()
    def text_to_image(self, prompt: Prompt, negative_prompt: Prompt | None = None,
                      num_inference_steps: int = 20, guidance_scale: float = 5.0,
                      height: int | None = None, width: int | None = None, seed: int | None = None,
                      generator: Generators = None, latents: torch.Tensor | None = None,
                      scheduler: Any = None, output_type: str = "pil",
                      callback: Callback | None = None, attend_and_excite: Sequence[str] | None = None,
                      attend_and_excite_steps: int | None = None,
                      attend_and_excite_scale: float = DEFAULT_EXCITE_SCALE) -> Output:
        """Generate one image per prompt. Returns a list of PIL images (``output_type="pil"``),
        a (B, 3, H, W) tensor in [0, 1] (``"pt"``), a (B, H, W, 3) array in [0, 1] (``"np"``) or
        the final latents (``"latent"``). ``latents`` is the initial standard-normal noise z_T
        (before ``init_noise_sigma``). ``generator`` may be a list, one per prompt: item i is then
        the image the single run with generator i gives. ``callback(i, t, latents)`` runs after
        every step.

        ``attend_and_excite``: words of the prompt (e.g. ``["circle", "square"]``) whose
        cross-attention Attend-and-Excite strengthens (Chefer et al. 2023; ``sdlearn.attend_excite``)
        by nudging the latents during the first ``attend_and_excite_steps`` steps (default: half of
        them), step size ``attend_and_excite_scale``. Off (None) by default."""
        run = self._prepare(prompt, negative_prompt, num_inference_steps, guidance_scale, seed,
                            generator, scheduler, output_type, callback)
        if attend_and_excite is not None:
            run.excite = self._check_excite(run, attend_and_excite, attend_and_excite_steps, attend_and_excite_scale)
        height, width = self._check_size(height, width)
        shape = (run.batch, self.unet.config["out_channels"], height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        z_T = randn(shape, run.generator, self.device) if latents is None else self._check_latents(latents, shape)
        run.scheduler.set_timesteps(run.steps, device=self.device)
        timesteps = run.scheduler.timesteps
        z = z_T * run.scheduler.init_noise_sigma
        return self._output(self._sample(run, z, timesteps), run.output_type)

    @torch.no_grad()
    def image_to_image(self, prompt: Prompt, image: Any, strength: float = 0.6,
                       negative_prompt: Prompt | None = None, num_inference_steps: int = 20,
                       guidance_scale: float = 5.0, seed: int | None = None,
                       generator: Generators = None, scheduler: Any = None,
                       output_type: str = "pil", callback: Callback | None = None) -> Output:
        """SDEdit (Meng et al. 2022): encode ``image``, noise it to the step that ``strength`` picks
        (q(z_t | z_0), Ho et al. Eq. 4), and denoise from there. ``image``: PIL RGB image(s), or a
        tensor (B, 3, H, W) / array (B, H, W, 3) in [0, 1] as diffusers takes them (so an
        ``output_type="pt"`` result goes straight back in). strength 0 returns the input's VAE
        round trip; strength 1 starts from the noisiest step of the schedule, where only
        sqrt(alpha_bar_t) (about 0.1 for SD's schedule) of the input's amplitude is left."""
        run = self._prepare(prompt, negative_prompt, num_inference_steps, guidance_scale, seed,
                            generator, scheduler, output_type, callback)
        strength = _check_real("strength", strength, 0.0, 1.0)
        x0 = self._image_tensor(image, run.batch)                              # (B, 3, H, W) in [-1, 1]
        timesteps = self._strength_timesteps(run.scheduler, run.steps, strength)
        z0 = self.encode_image(x0, run.generator)                              # (B, 4, h, w)
        if len(timesteps) == 0:
            return self._output(z0, run.output_type)
        noise = randn(tuple(z0.shape), run.generator, self.device)
        z = run.scheduler.add_noise(z0, noise, timesteps[:1])                  # z_t = sqrt(a_bar) z0 + sqrt(1 - a_bar) eps
        return self._output(self._sample(run, z, timesteps), run.output_type)

    @torch.no_grad()
    def inpaint(self, prompt: Prompt, image: Any, mask: Any, negative_prompt: Prompt | None = None,
                num_inference_steps: int = 20, guidance_scale: float = 5.0, strength: float = 1.0,
                seed: int | None = None, generator: Generators = None,
                scheduler: Any = None, output_type: str = "pil",
                callback: Callback | None = None) -> Output:
        """Repaint where ``mask`` is white (1) and keep the rest. ``image`` as in ``image_to_image``;
        ``mask``: a PIL image (any mode, read as "L"), or a tensor/array in [0, 1] of shape (H, W),
        (1, H, W) or (B, 1, H, W), one mask for all prompts or one per prompt.

        A 9-channel inpainting UNet sees [z_t, mask, z(masked image)] at every step. An ordinary
        4-channel UNet gets latent blending instead: after each step the known region is replaced
        by the input's latents noised to the same level, so only the masked region is invented.
        """
        run = self._prepare(prompt, negative_prompt, num_inference_steps, guidance_scale, seed,
                            generator, scheduler, output_type, callback)
        strength = _check_real("strength", strength, 0.0, 1.0)
        in_channels = self.unet.config["in_channels"]
        if in_channels not in (4, 9):
            raise ValueError(f"inpainting needs a UNet with 4 or 9 input channels; got {in_channels}")
        x0 = self._image_tensor(image, run.batch)                              # (B, 3, H, W) in [-1, 1]
        m = self._mask_tensor(mask, run.batch, *x0.shape[-2:])                 # (B, 1, H, W), 1 = repaint
        timesteps = self._strength_timesteps(run.scheduler, run.steps, strength)
        h, w = x0.shape[-2] // self.vae_scale_factor, x0.shape[-1] // self.vae_scale_factor
        m_latent = torch.nn.functional.interpolate(m, size=(h, w))             # (B, 1, h, w)
        # the random draws happen in diffusers' order, so both give the same image from one generator
        z0 = self.encode_image(x0, run.generator) if (in_channels == 4 or strength < 1.0) else None
        noise = randn((run.batch, self.unet.config["out_channels"], h, w), run.generator, self.device)
        z = noise * run.scheduler.init_noise_sigma if strength >= 1.0 else run.scheduler.add_noise(z0, noise, timesteps[:1])

        if in_channels == 9:                                                   # the UNet sees mask + masked image
            masked = self.encode_image(x0 * (m < 0.5), run.generator)          # known pixels only -> (B, 4, h, w)
            extra = torch.cat([m_latent, masked], dim=1).to(self.dtype)        # (B, 1 + 4, h, w)
            return self._output(self._sample(run, z, timesteps, extra=extra), run.output_type)

        def paste_known(i: int, z: torch.Tensor) -> torch.Tensor:              # latent blending
            known = z0 if i == len(timesteps) - 1 else run.scheduler.add_noise(z0, noise, timesteps[i + 1:i + 2])
            return m_latent * z + (1 - m_latent) * known                       # invent the hole, keep the rest
        return self._output(self._sample(run, z, timesteps, after_step=paste_known), run.output_type)

    # ------------------------------------------------------------------ the loop
    def _sample(self, run: "_Run", z: torch.Tensor, timesteps: torch.Tensor,
                extra: torch.Tensor | None = None,
                after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The reverse process z_t -> z_0: guided eps, ``scheduler.step`` (p(z_{t-1}|z_t)), then
        whatever the task does after each step."""
        warned = False
        for i, t in enumerate(tqdm(timesteps, disable=not self.progress_bar, desc="denoising")):
            if run.excite is not None and i < run.excite.steps:       # Attend-and-Excite: nudge z_t first
                z, _ = excite_step(self.unet, z, t, run.context[-run.batch:], run.excite, i,
                                   run.scheduler.scale_model_input)
            eps = self.predict_noise(z, t, run.context, run.guidance_scale, run.scheduler, extra)
            z = run.scheduler.step(eps, t, z, generator=run.generator, return_dict=False)[0]
            if after_step is not None:
                z = after_step(i, z)
            if not warned and not torch.isfinite(z).all():
                warned = True
                warnings.warn(f"the latents became NaN/inf at step {i} (t={int(t)}): the UNet's noise prediction "
                              f"overflowed. Check the UNet's weights, guidance_scale={run.guidance_scale} and the "
                              f"dtype ({self.dtype}; float16 can overflow where bfloat16 or float32 don't)",
                              RuntimeWarning, stacklevel=4)   # _sample <- task <- no_grad wrapper <- caller
            if run.callback is not None:
                run.callback(i, t, z)
        return z

    def _prepare(self, prompt: Prompt, negative_prompt: Prompt | None, num_inference_steps: Any,
                 guidance_scale: Any, seed: Any, generator: Any, scheduler: Any, output_type: Any,
                 callback: Any) -> "_Run":
        """Check the arguments every task shares, encode the prompts, and give this call its own
        scheduler (a scheduler keeps per-call state, so a shared pipeline is safe across threads)."""
        prompts, negatives = _check_prompts(prompt, negative_prompt)
        steps = _check_int("num_inference_steps", num_inference_steps, 1, 1000)
        guidance_scale = _check_real("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(map(repr, OUTPUT_TYPES))}; got {output_type!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable as callback(i, t, latents); got {type(callback).__name__}")
        generator = _check_generator(seed, generator, len(prompts))
        scheduler = copy.deepcopy(self.scheduler if scheduler is None else _check_scheduler(scheduler, self.scheduler))
        context = self._context(prompts, negatives, guidance_scale)            # (2B or B, 77, d)
        return _Run(len(prompts), context, scheduler, generator, steps, guidance_scale, output_type, callback,
                    prompts)

    def _check_excite(self, run: "_Run", words: Any, steps: Any, scale: Any) -> Excite:
        """Attend-and-Excite's arguments -> the token positions to excite in each prompt."""
        if isinstance(words, str) or not isinstance(words, (list, tuple)) or not words \
                or not all(isinstance(w, str) and w.strip() for w in words):
            raise TypeError(f"attend_and_excite must be a non-empty list of words of the prompt, e.g. "
                            f"['circle', 'square']; got {words!r}")
        steps = max(1, run.steps // 2) if steps is None else _check_int("attend_and_excite_steps", steps, 1, run.steps)
        scale = _check_real("attend_and_excite_scale", scale, 0.0, 1000.0)
        found = [subject_tokens(self.tokenizer, p, words) for p in run.prompts]
        return Excite(tuple(t for t, _ in found), tuple(e for _, e in found), steps, scale)

    def _context(self, prompts: list[str], negatives: list[str], guidance_scale: float) -> torch.Tensor:
        cond = self.encode_prompt(prompts)                                    # (B, 77, d)
        context = cond if guidance_scale <= 1.0 else torch.cat([self.encode_prompt(negatives), cond])
        if not torch.isfinite(context).all():                                 # (2B, 77, d): [uncond; cond]
            warnings.warn("the text encoder's output contains NaN/inf: check its weights and dtype",
                          RuntimeWarning, stacklevel=5)   # _context <- _prepare <- task <- no_grad <- caller
        return context

    @staticmethod
    def _strength_timesteps(scheduler: Any, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The last ``strength`` fraction of the schedule (as diffusers' img2img picks it)."""
        scheduler.set_timesteps(num_inference_steps)
        n_run = min(int(num_inference_steps * strength), num_inference_steps)
        start = (num_inference_steps - n_run) * scheduler.order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        return scheduler.timesteps[start:]

    def _output(self, latents: torch.Tensor, output_type: str) -> Output:
        if output_type == "latent":
            return latents
        images = (self.decode_latents(latents) + 1) / 2                       # (B, 3, H, W) in [0, 1]
        if not torch.isfinite(images).all():
            if torch.isfinite(latents).all():
                warnings.warn("the VAE decoder produced NaN/inf from finite latents: check its weights and dtype",
                              RuntimeWarning, stacklevel=4)
            images = images.nan_to_num(0.0, 0.0, 0.0)                         # NaN -> black, named above
        if output_type == "pt":
            return images.cpu()
        arr = images.permute(0, 2, 3, 1).cpu().numpy()                        # (B, H, W, 3)
        if output_type == "np":
            return arr
        return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr]

    # ------------------------------------------------------------------ argument checks
    def _check_size(self, height: Any, width: Any) -> tuple[int, int]:
        """Image sides: positive multiples of the VAE factor (8). The UNet, like diffusers', takes
        latent sides that its downsampling does not divide."""
        f = self.vae_scale_factor
        default = self.unet.config.get("sample_size", 8) * f
        sides = []
        for name, v in (("height", height), ("width", width)):
            v = default if v is None else _check_int(name, v, f, MAX_SIDE)
            if v % f:
                raise ValueError(f"{name} must be a multiple of {f} (the VAE's downsampling factor); got {v}")
            sides.append(v)
        return sides[0], sides[1]

    def _check_latents(self, latents: Any, shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"latents must be a torch.Tensor of shape {shape}; got {type(latents).__name__}")
        if tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} (batch, channels, height/{self.vae_scale_factor}, "
                             f"width/{self.vae_scale_factor}); got {tuple(latents.shape)}")
        if not latents.is_floating_point():
            raise TypeError(f"latents must be a floating-point tensor; got {latents.dtype}")
        if latents.device.type == "meta":
            raise ValueError("latents are on the meta device (they hold no values); create them on the CPU")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or inf")
        return latents.to(self.device, torch.float32)

    def _image_tensor(self, image: Any, batch: int) -> torch.Tensor:
        """PIL RGB image(s), or a tensor (B, 3, H, W) / (3, H, W) or array (B, H, W, 3) / (H, W, 3)
        in [0, 1] (diffusers' convention) -> (B, 3, H, W) in [-1, 1] (the VAE's range) on the device."""
        from sdlearn.data import to_tensor

        if isinstance(image, np.ndarray):                                     # (H, W, 3) / (B, H, W, 3)
            if image.ndim not in (3, 4) or image.shape[-1] != 3:
                raise ValueError(f"an image array must be (H, W, 3) or (B, H, W, 3) in [0, 1]; got shape {image.shape}")
            image = torch.from_numpy(np.ascontiguousarray(image)).movedim(-1, -3)
        if isinstance(image, torch.Tensor):
            x = image if image.dim() == 4 else (image[None] if image.dim() == 3 else None)
            if x is None or x.shape[1] != 3:
                raise ValueError(f"image tensor must have 3 (RGB) channels, shape (B, 3, H, W) or (3, H, W); "
                                 f"got {tuple(image.shape)}")
            if not x.is_floating_point():
                raise TypeError(f"image tensor must be floating point in [0, 1]; got {x.dtype} "
                                "(for 0-255 values use image.float() / 255)")
            if x.device.type == "meta":
                raise ValueError("image is on the meta device (it holds no values)")
            if not torch.isfinite(x).all():
                raise ValueError("image contains NaN or inf")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"image tensors must be in [0, 1] (diffusers' convention); got values in "
                                 f"[{lo:.3g}, {hi:.3g}]" + (" (divide 0-255 values by 255)" if hi > 1.5 else
                                                            " (from [-1, 1] use (x + 1) / 2)" if lo < 0 else ""))
            x = x.float() * 2 - 1
        else:
            images = list(image) if isinstance(image, (list, tuple)) else [image]
            if not images:
                raise ValueError("image is an empty list")
            for im in images:
                if not isinstance(im, Image.Image):
                    raise TypeError(f"image must be a PIL image, a list of them, a tensor or an array; "
                                    f"got {type(im).__name__}")
                if im.mode != "RGB":
                    raise ValueError(f"image must be RGB; got mode {im.mode!r} (use image.convert('RGB'))")
            if len({im.size for im in images}) > 1:
                raise ValueError(f"all images must have the same size; got {sorted({im.size for im in images})}")
            if 0 in images[0].size:
                raise ValueError(f"image is empty ({images[0].size[0]}x{images[0].size[1]})")
            x = torch.stack([to_tensor(im) for im in images])
        self._check_size(x.shape[-2], x.shape[-1])
        if x.shape[0] == 1 and batch > 1:
            x = x.expand(batch, -1, -1, -1)
        if x.shape[0] != batch:
            raise ValueError(f"got {x.shape[0]} images for {batch} prompts; give one image, or one per prompt")
        return x.to(self.device, torch.float32)

    def _mask_tensor(self, mask: Any, batch: int, height: int, width: int) -> torch.Tensor:
        """PIL mask(s) or a tensor/array in [0, 1] -> binary (B, 1, H, W); white/1 = repaint."""
        if isinstance(mask, (list, tuple)) and mask and all(isinstance(m, Image.Image) for m in mask):
            return self._stack_masks(mask, batch, height, width)
        if isinstance(mask, Image.Image):
            m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
        elif isinstance(mask, (torch.Tensor, np.ndarray)):
            m = torch.as_tensor(mask)
            if m.dtype == torch.bool:
                m = m.float()
            if not m.is_floating_point():
                raise TypeError(f"mask tensor must be floating point (or bool) in [0, 1]; got {m.dtype}")
            if m.device.type == "meta":
                raise ValueError("mask is on the meta device (it holds no values)")
            m = m.float().cpu()
            m = m[None, None] if m.dim() == 2 else (m[None] if m.dim() == 3 else m)
            if m.dim() != 4:
                raise ValueError(f"mask must be (H, W), (1, H, W) or (B, 1, H, W); got {tuple(mask.shape)}")
            if not torch.isfinite(m).all():
                raise ValueError("mask contains NaN or inf")
            if float(m.min()) < 0 or float(m.max()) > 1:
                raise ValueError(f"mask values must be in [0, 1] (1 = repaint); got [{float(m.min()):.3g}, "
                                 f"{float(m.max()):.3g}]")
        else:
            raise TypeError(f"mask must be a PIL image, a list of them, a tensor or an array; got {type(mask).__name__}")
        if tuple(m.shape[-2:]) != (height, width) or m.shape[1] != 1:
            raise ValueError(f"mask must be 1 x {height} x {width} (the image's size); got {tuple(m.shape)}")
        if m.shape[0] not in (1, batch):
            raise ValueError(f"got {m.shape[0]} masks for {batch} prompts; give one mask, or one per prompt")
        m = (m >= 0.5).float()
        return (m.expand(batch, -1, -1, -1) if m.shape[0] == 1 else m).to(self.device)

    def _stack_masks(self, masks: Sequence[Image.Image], batch: int, height: int, width: int) -> torch.Tensor:
        if len(masks) not in (1, batch):
            raise ValueError(f"got {len(masks)} masks for {batch} prompts; give one mask, or one per prompt")
        m = torch.cat([self._mask_tensor(mk, 1, height, width) for mk in masks])
        return m.expand(batch, -1, -1, -1) if m.shape[0] == 1 else m


# ---------------------------------------------------------------------- argument checks
MAX_GUIDANCE = 1000.0        # far above any useful scale (SD: 3-15); larger ones overflow to NaN
MAX_SIDE = 8192              # pixels; a 8192x8192 SD image already needs a large GPU
OUTPUT_TYPES = ("pil", "pt", "np", "latent")


@dataclass
class _Run:
    """What one call shares with its sampling loop."""
    batch: int
    context: torch.Tensor            # (2B, 77, d) [uncond; cond] when guiding, else (B, 77, d)
    scheduler: Any                   # this call's own copy
    generator: Generators
    steps: int
    guidance_scale: float
    output_type: str
    callback: Callback | None
    prompts: list[str]
    excite: Excite | None = None     # Attend-and-Excite, when asked for


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """An integer in [lo, hi]: anything ``operator.index`` accepts (int, numpy integers), not bool."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}; got {v}")
    return v


def _check_real(name: str, value: Any, lo: float, hi: float) -> float:
    """A finite real number in [lo, hi] (int, float, numpy scalars; not str, bool or None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [{lo:g}, {hi:g}]; got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be a finite number in [{lo:g}, {hi:g}]; got {value!r}")
    return v


def _check_prompts(prompt: Prompt, negative_prompt: Prompt | None) -> tuple[list[str], list[str]]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompt must be a string or a non-empty list of strings; got {type(prompt).__name__}")
    prompts = list(prompts)
    if negative_prompt is None:
        return prompts, [""] * len(prompts)
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
    if not isinstance(negatives, (list, tuple)) or not all(isinstance(p, str) for p in negatives):
        raise TypeError(f"negative_prompt must be a string or a list of strings; got {type(negative_prompt).__name__}")
    if len(negatives) != len(prompts):
        raise ValueError(f"negative_prompt has {len(negatives)} entries but prompt has {len(prompts)}; "
                         "give one negative prompt per prompt (or a single string)")
    return prompts, list(negatives)


def _check_generator(seed: Any, generator: Any, batch: int) -> Generators:
    """``seed`` (an integer in [0, 2**64)) or ``generator`` (a CPU torch.Generator, or a list of
    them, one per prompt, as diffusers takes it) -> what the noise is drawn from."""
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    if seed is not None:
        return torch.Generator("cpu").manual_seed(_check_int("seed", seed, 0, 2**64 - 1))
    if generator is None:
        return None
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    for g in gens:
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or a list of them; got {type(g).__name__}")
        if g.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (got one on {g.device}); sdlearn draws "
                             "noise on the CPU so that every device starts from the same latents")
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"generator is a list of {len(generator)} but there are {batch} prompts; "
                             "give one generator per prompt (or a single one)")
        return list(generator)
    return generator


def _check_scheduler(scheduler: Any, current: Any) -> Any:
    """A sampler name from ``sdlearn.schedulers.SCHEDULERS`` (built from the current scheduler's config)
    or a scheduler object (ours or diffusers')."""
    if isinstance(scheduler, str):
        return make_scheduler(scheduler, current.config)
    if not all(callable(getattr(scheduler, a, None)) for a in ("set_timesteps", "step", "scale_model_input")):
        raise TypeError(f"scheduler must be a sampler name ({', '.join(ours.SCHEDULERS)}) or a scheduler object with "
                        f"set_timesteps/step/scale_model_input; got {type(scheduler).__name__}")
    return scheduler


def _load_tokenizer(folder: Path) -> Any:
    """Our CLIP tokenizer, with the padding token a diffusers ``tokenizer/`` folder asks for
    (SD v1 pads with <|endoftext|>, SD v2 with "!")."""
    from sdlearn.tokenizer import CLIPTokenizer
    from sdlearn.weights import read_config

    tokenizer = CLIPTokenizer()
    path = folder / "special_tokens_map.json"
    pad = read_config(path).get("pad_token") if path.exists() else None
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if pad is not None:
        tokenizer.pad_id = tokenizer.encoder.get(pad, tokenizer.encoder.get(pad + "</w>", tokenizer.pad_id))
    return tokenizer


def _load_scheduler(folder: Path) -> Any:
    """Our scheduler for a diffusers ``scheduler/`` folder (DPM-Solver++ when it's one we lack)."""
    from sdlearn.weights import read_config

    path = folder / "scheduler_config.json"
    config = read_config(path) if path.exists() else {}
    try:
        return _our_scheduler(config.get("_class_name"), config)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}") from err


def _our_scheduler(diffusers_name: Any, config: Mapping[str, Any]) -> ours.Scheduler:
    """Our sampler for a diffusers scheduler class and config. Stable Diffusion v1.5 ships PNDM,
    which sdlearn does not implement: DPM-Solver++ takes the place of any class we lack."""
    try:
        cls = ours.scheduler_class(diffusers_name)
    except ValueError:
        cls = ours.DPMSolverPP
    return cls.from_config(config)


def _download(repo_id: str) -> Path:
    """Fetch a hub repo's configs and safetensors (needs the network; never used by the tests).

    As diffusers: a name that is no folder must be a valid hub id (``owner/name``) and the hub must be
    reachable (not ``HF_HUB_OFFLINE``); otherwise a ValueError says it is neither, with the path."""
    local = Path(repo_id)
    if local.exists():
        raise ValueError(f"{local} is a file, not a folder: from_pretrained reads a diffusers folder "
                         "(an original single-file checkpoint loads with from_single_file)")
    neither = f"{repo_id!r} is neither a local folder (no directory {local.absolute()}) nor "
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(neither + f"a valid hub id ('owner/name' of letters, digits, '-', '_', '.'): {err}") \
            from None
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise ValueError(neither + "a hub id that can be fetched: HF_HUB_OFFLINE is set, and real Stable "
                         "Diffusion weights need an internet connection (e.g. on Colab)")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "unet/*.safetensors",
                                                              "vae/*.safetensors", "text_encoder/*.safetensors"],
                                      ignore_patterns=["*.fp16.safetensors", "*non_ema*", "*.ckpt", "*.bin"]))
    except (OSError, ValueError) as err:  # RepositoryNotFoundError, no connection, ... (all OSErrors)
        raise ValueError(neither + f"a model on the Hugging Face hub that could be downloaded: {err}") from err
