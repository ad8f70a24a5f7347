"""Optional UNet denoising of dithered latents, as in the 2022 notebook.

The palette + dithering noise is treated like the tail of a diffusion trajectory: the scaled latents
(``z * 0.18215``) run through the last few steps of the checkpoint's own scheduler (PNDM for SD v1.4)
with the empty-prompt CLIP embedding and no classifier-free guidance, then are unscaled again.
With the defaults (66 steps, strength 0.04, steps_offset 1) that is the last 3 steps. No fresh noise
is added, so the result is deterministic.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ..errors import SDCError
from .sd import SD_SCALING

DEFAULT_STEPS = 66
DEFAULT_STRENGTH = 0.04


def denoise_timesteps(scheduler, steps: int = DEFAULT_STEPS, strength: float = DEFAULT_STRENGTH):
    """The timesteps the denoiser runs: the last ``int(steps * strength) + steps_offset`` of the schedule."""
    if not 0 < strength <= 1 or steps < 1:
        raise SDCError(f"denoising needs 0 < strength <= 1 and steps >= 1, got strength={strength}, steps={steps}")
    scheduler.set_timesteps(steps)
    offset = scheduler.config.get("steps_offset", 0)
    init = min(int(steps * strength) + offset, steps)
    t_start = max(steps - init + offset, 0)
    return scheduler.timesteps[t_start:]


@torch.inference_mode()
def empty_prompt_embedding(parts: dict) -> torch.Tensor:
    tok, te = parts["tokenizer"], parts["text_encoder"]
    max_len = min(int(getattr(tok, "model_max_length", 77) or 77), int(te.config.max_position_embeddings))
    ids = tok([""], padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").input_ids
    return te(ids.to(te.device))[0]


@torch.inference_mode()
def denoise_latents(
    backend, z: torch.Tensor, strength: float = DEFAULT_STRENGTH, steps: int = DEFAULT_STEPS, progress: bool = True
) -> torch.Tensor:
    """Denoise raw (unscaled) latents (1, 4, h, w) with the backend's UNet; returns raw latents (float32)."""
    if not getattr(backend, "has_unet", False):
        raise SDCError(
            f"UNet denoising needs a Stable Diffusion backend, but '{backend.model_id}' ({backend.kind}) "
            f"has no UNet: decode without denoising (--no-denoise) or pass --model an SD1.x id/folder"
        )
    parts = backend.denoiser()
    unet = parts["unet"]
    scheduler = type(parts["scheduler"]).from_config(parts["scheduler"].config)  # fresh state each call
    emb = empty_prompt_embedding(parts).to(unet.dtype)
    latents = (z.to(backend.device, torch.float32) * SD_SCALING).to(unet.dtype)
    timesteps = denoise_timesteps(scheduler, steps, strength)
    seconds = []
    for t in tqdm(timesteps, desc="UNet denoise", disable=not progress, leave=False):
        t0 = time.perf_counter()
        inp = scheduler.scale_model_input(latents, t)
        eps = unet(inp, t, encoder_hidden_states=emb).sample
        latents = scheduler.step(eps, t, latents).prev_sample
        if latents.device.type == "cuda":
            torch.cuda.synchronize(latents.device)
        seconds.append(time.perf_counter() - t0)
    # what ran, for callers that report it (the CLI's decode line, helpers.bench, scripts/measure_sd_fullsize.py)
    backend.extras["last_denoise"] = {
        "steps_run": len(timesteps),
        "schedule_steps": steps,
        "strength": strength,
        "timesteps": [int(t) for t in timesteps],
        "unet_step_seconds": seconds,
    }
    return latents.float() / SD_SCALING
