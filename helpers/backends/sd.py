"""Stable Diffusion 1.x in PyTorch: the VAE (hub id or local diffusers folder), with UNet, CLIP and scheduler
loaded on first use for denoising (:mod:`helpers.backends.denoise`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelNotFoundError
from .resolve import DEFAULT_SD_MODEL, expand_path, hub_reachable
from .taef2_spec import TAEF2_ENCODER
from .torch_base import TorchBackend, default_dtype, select_device, weights_fingerprint

#: SD v1 latent scaling factor (latents * 0.18215 have roughly unit variance).
SD_SCALING = 0.18215
#: The 2022 notebook's quantization span for unscaled SD latents: q = z / (255 * 0.18215) + 0.5.
SD_QUANT_SPAN = 255 * SD_SCALING


class SDBackend(TorchBackend):
    """Stable Diffusion 1.x VAE, with UNet/CLIP/scheduler loaded on first use for denoising."""

    def __init__(self, vae, source: str, device, dtype, model_id: str, local_only: bool):
        super().__init__(
            model_id=model_id,
            kind="sd",
            device=device,
            dtype=dtype,
            latent_channels=int(vae.config.latent_channels),
            quant_span=SD_QUANT_SPAN,
            downsample=2 ** (len(vae.config.block_out_channels) - 1),
        )
        self.vae = vae.to(device).eval()
        self.source = source
        self.local_only = local_only
        self.fingerprint = weights_fingerprint(self.vae.decoder)
        self._denoiser: dict[str, Any] | None = None

    @property
    def has_unet(self) -> bool:
        return True

    def components(self) -> dict[str, torch.nn.Module]:
        out = {"VAE encoder": self.vae.encoder, "VAE decoder": self.vae.decoder}
        if self._denoiser is not None:
            out.update({"UNet": self._denoiser["unet"], "CLIP text encoder": self._denoiser["text_encoder"]})
        return out

    #: images with more pixels than this run through diffusers' own tiled VAE (``vae.enable_tiling()``: tiles
    #: of ``vae.config.sample_size`` pixels, 512 for SD v1.4, blended over a 25 % overlap), so memory stays
    #: bounded; smaller ones run in one piece, exactly as the 2022 notebook did.
    tile_threshold_pixels: int = 1024 * 1024

    def _set_tiling(self, pixels: int) -> None:
        use = pixels > self.tile_threshold_pixels
        if use and not self.vae.use_tiling:
            self.vae.enable_tiling()
        elif not use and self.vae.use_tiling:
            self.vae.disable_tiling()

    @torch.inference_mode()
    def encode(self, x, generator=None):
        self._set_tiling(x.shape[-1] * x.shape[-2])
        dist = self.vae.encode(x.to(self.device, self.dtype)).latent_dist
        # The 2022 notebook sampled the posterior with a fixed seed; we do the same.
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(0)
        noise = torch.randn(dist.mean.shape, generator=generator, device="cpu", dtype=torch.float32)
        return (dist.mean.float() + dist.std.float() * noise.to(self.device)).float()

    @torch.inference_mode()
    def decode(self, z):
        self._set_tiling(z.shape[-1] * z.shape[-2] * self.downsample**2)
        return self.vae.decode(z.to(self.device, self.dtype)).sample.float()

    def denoiser(self) -> dict[str, Any]:
        """UNet, tokenizer, text encoder and scheduler, loaded once."""
        if self._denoiser is None:
            from diffusers import UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer

            kw = dict(local_files_only=self.local_only)
            t0 = time.perf_counter()
            unet = _from_pretrained(UNet2DConditionModel, self.source, "unet", "SD UNet", torch_dtype=self.dtype, **kw)
            tok = _from_pretrained(CLIPTokenizer, self.source, "tokenizer", "CLIP tokenizer", **kw)
            te = _from_pretrained(
                CLIPTextModel, self.source, "text_encoder", "CLIP text encoder", torch_dtype=self.dtype, **kw
            )
            sched = load_scheduler(self.source, **kw)
            self._denoiser = dict(
                unet=unet.to(self.device).eval(),
                tokenizer=tok,
                text_encoder=te.to(self.device).eval(),
                scheduler=sched,
                load_seconds=time.perf_counter() - t0,
            )
        return self._denoiser

    def release_denoiser(self) -> None:
        """Drop the UNet and text encoder (3.9 GB in fp32 at SD v1.4's size) once a caller is done denoising:
        the CLI's decode frees them before the VAE decoder runs, so the two peaks do not add up."""
        if self._denoiser is not None:
            self._denoiser = None
            import gc

            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def load_scheduler(source: str, local_files_only: bool = True):
    """The checkpoint's own scheduler class and config (PNDM for SD v1.4)."""
    import diffusers

    try:
        with _quiet_hub():
            config = diffusers.DDIMScheduler.load_config(
                source, subfolder="scheduler", local_files_only=local_files_only
            )
    except Exception as exc:
        raise ModelNotFoundError(_missing_message("SD scheduler", source, exc)) from None
    cls = getattr(diffusers, config.get("_class_name", "PNDMScheduler"), diffusers.PNDMScheduler)
    return cls.from_config(config)


def _missing_message(what: str, source: str, exc: BaseException) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if Path(source).exists():
        return (
            f"could not load the {what} from local directory '{source}' ({reason[:160]}); "
            f"fix: point --model at a complete diffusers SD1.x folder (model_index.json, vae/, unet/, ...)"
        )
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as cache
    except ImportError:  # pragma: no cover
        cache = "~/.cache/huggingface/hub"
    return (
        f"could not load the {what} for '{source}': not in the local Hugging Face cache ({cache}) and the hub is "
        f"unreachable or the id is unknown ({reason[:120]}); fix: run once online "
        f"(`huggingface-cli download {source}`), pass --model a local diffusers directory, "
        f"or use the offline TAEF2 backend (--model taef2)"
    )


def _quiet_hub():
    """diffusers (0.42) passes huggingface_hub's deprecated ``local_dir_use_symlinks`` to ``hf_hub_download``,
    which then warns before our own one-line message; our code never passes it, and this silences that one
    warning around diffusers' loaders."""
    import contextlib
    import warnings

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message=r".*local_dir_use_symlinks.*")
    return stack


def _local_snapshot(repo: str) -> str | None:
    """The local hub-cache folder of ``repo`` (huggingface_hub's own lookup, no network), or None."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo, local_files_only=True)
    except Exception:
        return None


def _from_pretrained(cls, source: str, subfolder: str, what: str, **kwargs):
    try:
        with _quiet_hub():
            return cls.from_pretrained(source, subfolder=subfolder, **kwargs)
    except Exception as exc:
        raise ModelNotFoundError(_missing_message(what, source, exc)) from None


def load_sd(
    source: str = DEFAULT_SD_MODEL, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> SDBackend:
    """Load an SD1.x VAE from a hub id or a local diffusers directory (UNet etc. load on demand).

    Hub ids are looked up in the local cache first; the network is only tried when the hub answers,
    so offline machines fail in seconds with a one-line error instead of minutes of retries.
    """
    from diffusers import AutoencoderKL

    dev = device if isinstance(device, torch.device) else select_device(device)
    dtype = dtype or default_dtype(dev)
    t0 = time.perf_counter()
    path = expand_path(source)
    if path.exists():
        if not path.is_dir() or not ((path / "vae").is_dir() or (path / "model_index.json").is_file()):
            raise ModelNotFoundError(
                f"'{source}' is not a diffusers SD directory (no vae/ or model_index.json) "
                f"and holds no {TAEF2_ENCODER}: pass a diffusers SD1.x folder, a TAEF2 "
                f"folder or a hub id such as {DEFAULT_SD_MODEL}"
            )
        vae = _from_pretrained(AutoencoderKL, str(path), "vae", "SD VAE", torch_dtype=dtype)
        model_id, local_only = _model_id_of_dir(path), True
    else:
        try:
            snapshot = _local_snapshot(source)  # the cache lookup without diffusers' hub call
            if snapshot is None:
                raise FileNotFoundError(f"{source} is not in the local Hugging Face cache")
            with _quiet_hub():
                vae = AutoencoderKL.from_pretrained(snapshot, subfolder="vae", torch_dtype=dtype, local_files_only=True)
            local_only = True
        except Exception as exc:
            if not hub_reachable():
                raise ModelNotFoundError(_missing_message("SD VAE", source, exc)) from None
            vae = _from_pretrained(AutoencoderKL, source, "vae", "SD VAE", torch_dtype=dtype)
            local_only = False
        model_id = source
    backend = SDBackend(vae, str(path) if path.exists() else source, dev, dtype, model_id, local_only)
    backend.load_seconds = time.perf_counter() - t0
    return backend


def _model_id_of_dir(path: Path) -> str:
    """A stable id for a local directory: its `_name_or_path` if recorded, else the folder name."""
    try:
        name = json.loads((path / "model_index.json").read_text()).get("_name_or_path")
    except (OSError, ValueError):
        name = None
    return name or path.resolve().name


def write_model_index(directory: Path, name_or_path: str) -> None:
    """``model_index.json`` of an SD1.x diffusers folder (VAE, UNet, CLIP text encoder and tokenizer, PNDM), naming
    the model ``name_or_path`` (what :func:`load_sd` reads back as the model id) - for the folders we build."""
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "_name_or_path": name_or_path,
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
    }
    (Path(directory) / "model_index.json").write_text(json.dumps(index, indent=2))
