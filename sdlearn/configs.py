"""The real Stable Diffusion architectures as config dicts (the ``config.json`` files that
diffusers/transformers ship), so tests, benchmarks and notebooks can build them offline with
random weights: ``UNet.from_config(SD15_UNET)`` is the 859.5M-parameter SD v1.5 UNet."""

SD15_UNET: dict = {
    "_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "attention_head_dim": 8,
    "cross_attention_dim": 768, "norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu",
    "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1, "mid_block_scale_factor": 1,
    "center_input_sample": False, "use_linear_projection": False, "upcast_attention": False,
}
#: SD v2.1 (768-v): per-block head counts, linear projections, 1024-wide OpenCLIP context.
SD21_UNET: dict = SD15_UNET | {
    "sample_size": 96, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
    "use_linear_projection": True, "upcast_attention": True,
}
#: The inpainting UNet (sd-v1-5-inpainting): 4 latent + 1 mask + 4 masked-image channels in.
SD15_INPAINT_UNET: dict = SD15_UNET | {"in_channels": 9}

#: Stable Diffusion v1's training noise schedule with the series' default sampler, DPM-Solver++ 2M: what
#: the tiny model was trained on and ships in ``scheduler/scheduler_config.json``.
SCHEDULER_CONFIG: dict = {
    "_class_name": "DPMSolverMultistepScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
    "algorithm_type": "dpmsolver++", "solver_order": 2, "lower_order_final": True,
    "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False,
}

SD_VAE: dict = {
    "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
    "act_fn": "silu", "sample_size": 512, "scaling_factor": 0.18215,
}

#: SD v1's text encoder: OpenAI CLIP ViT-L/14's text tower.
CLIP_VIT_L_TEXT: dict = {
    "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
}
#: SD v2's text encoder: OpenCLIP ViT-H/14's text tower as diffusers ships it (23 of 24 layers).
OPENCLIP_VIT_H_TEXT: dict = CLIP_VIT_L_TEXT | {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
    "hidden_act": "gelu", "projection_dim": 512,
}
