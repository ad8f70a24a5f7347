"""Model loading: Stable Diffusion 1.x (VAE, UNet, CLIP, scheduler) and the TAEF2 tiny autoencoder.

Every backend exposes the same small interface used by the codec:

* ``encode(x)``: RGB tensor in [-1, 1], shape (B, 3, H, W) -> raw (unscaled) latents
* ``decode(z)``: raw latents -> RGB tensor in [-1, 1]
* ``latent_channels``, ``downsample`` (8), ``quant_span`` (the 8-bit quantization span),
  ``model_id`` (what the file header records) and ``fingerprint`` (a CRC of the decoder weights,
  so a file decoded with different weights fails loudly instead of producing garbage).

``load_backend(spec)`` resolves a hub id, a diffusers directory, a TAEF2 directory or ``"auto"``.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ModelNotFoundError, SDCError
# torch-free model-spec helpers live in helpers.runtime (the CLI resolves specs without importing torch)
from .runtime import (DEFAULT_SD_MODEL, STANDIN_MODEL_ID, TAEF2_DECODER, TAEF2_ENCODER, TAEF2_MODEL_ID,  # noqa: F401
                      TAEF2_TILE, TINY_MODEL_ID, _expand, check_model_spec, default_taef2_dir, hub_reachable,
                      taef2_weight_files)
from .runtime import tile_side as _tile_side

#: SD v1 latent scaling factor (latents * 0.18215 have roughly unit variance).
SD_SCALING = 0.18215
#: The 2022 notebook's quantization span for unscaled SD latents: q = z / (255 * 0.18215) + 0.5.
SD_QUANT_SPAN = 255 * SD_SCALING
#: TAEF2 latents sit within about +-3 (rare peaks to +-5): [-4, 4] maps to [0, 1]; measured on kodim23,
#: span 8 gives 32.45 dB after 8-bit rounding vs 32.33 dB for the TAESD convention span 6.
TAEF2_QUANT_SPAN = 8.0


def select_device(preference: str | None = None) -> torch.device:
    """Pick the device once: an explicit preference, else cuda > mps > cpu."""
    if preference and preference != "auto":
        try:
            dev = torch.device(preference)
        except RuntimeError as exc:
            raise SDCError(f"unknown device '{preference}': use cpu, cuda, cuda:N, mps or auto") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SDCError(f"device '{preference}' requested but CUDA is not available here: use --device cpu")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise SDCError(f"device '{preference}' requested but MPS is not available here: use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPU, fp32 on CPU (CPU fp16 convolutions are slow and less accurate)."""
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def weights_fingerprint(module: torch.nn.Module) -> int:
    """CRC32 over a dtype-independent sample of every parameter (first/last 64 values in fp16)."""
    crc = 0
    for name, p in sorted(module.state_dict().items()):
        flat = p.detach().reshape(-1)
        sample = torch.cat([flat[:64], flat[-64:]]).float().cpu().half().numpy().tobytes()
        crc = zlib.crc32(name.encode() + sample, crc)
    return crc & 0xFFFFFFFF


@dataclass
class Backend:
    """Common base: an autoencoder that maps RGB in [-1, 1] to raw latents and back."""

    model_id: str
    kind: str  # "sd" or "taef2"
    device: torch.device
    dtype: torch.dtype
    latent_channels: int
    quant_span: float
    downsample: int = 8
    fingerprint: int = 0
    load_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def has_unet(self) -> bool:
        return False

    @property
    def random_weights(self) -> bool:
        """True for the tiny random test pipeline and the full-size random SD v1.4 stand-in (helpers.sd14):
        real classes and code path, meaningless pictures."""
        return self.model_id in (TINY_MODEL_ID, STANDIN_MODEL_ID)

    def components(self) -> dict[str, torch.nn.Module]:  # pragma: no cover - overridden
        return {}

    def describe(self) -> str:
        return f"{self.kind}:{self.model_id} on {self.device} ({str(self.dtype).replace('torch.', '')})"

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    runtime = "torch"

    def encode_array(self, x: np.ndarray, seed: int = 0) -> np.ndarray:
        """(N, 3, H, W) float32 array in [-1, 1] -> raw latents (N, C, h, w) float32 (the codec's entry point,
        shared with :class:`helpers.onnx_runtime.OnnxTAEF2Backend`); SD samples its posterior with ``seed``."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return self.encode(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), generator=gen
                           ).float().cpu().numpy()

    def decode_array(self, z: np.ndarray) -> np.ndarray:
        """Raw latents (N, C, h, w) -> (N, 3, H, W) float32 array in about [-1, 1]."""
        return self.decode(torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))).float().cpu().numpy()

    def decode_uint8(self, z: np.ndarray) -> np.ndarray:
        """Raw latents (1, C, h, w) -> (H, W, 3) uint8 pixels (:func:`helpers.images.signed_to_uint8`). TAEF2
        overrides it to convert tile by tile; other models convert their whole float output."""
        from .images import signed_to_uint8

        return signed_to_uint8(self.decode_array(z))


def _inplace_relu(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    module = copy.deepcopy(module)
    for m in module.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = True
    return module


class TAEF2Backend(Backend):
    """The real pretrained TAEF2 tiny autoencoder (32 latent channels, 8x downsampling).

    Encode and decode run tiled (:mod:`helpers.tiling`) so memory stays bounded for any image size: the
    pixel-resolution layers run on overlapping tiles whose halos cover their receptive field
    (:func:`helpers.taef2.halos`: 72 pixels for the encoder, 9 latent samples for the decoder), and the
    GroupNorm blocks, whose statistics are global, run untiled at latent resolution. The result equals the
    untiled network's up to float summation order. Images up to one tile run in one piece.
    """

    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module, device, dtype, model_id=TAEF2_MODEL_ID):
        from .taef2 import halos, split_decoder, split_encoder

        super().__init__(model_id=model_id, kind="taef2", device=device, dtype=dtype,
                         latent_channels=32, quant_span=TAEF2_QUANT_SPAN)
        self.encoder = encoder.to(device=device, dtype=dtype).eval()
        self.decoder = decoder.to(device=device, dtype=dtype).eval()
        self.fingerprint = weights_fingerprint(self.decoder)
        enc_local, self.enc_global = split_encoder(self.encoder)
        self.dec_global, dec_local = split_decoder(self.decoder)
        # the tiled parts run with in-place ReLUs (same numbers, one activation less at the peak); copies, so
        # self.encoder / self.decoder stay as they are for autograd users
        self.enc_local, self.dec_local = _inplace_relu(enc_local), _inplace_relu(dec_local)
        self.enc_halo, self.dec_halo = halos()
        self.tile = _tile_side()  # core tile side in pixels (a multiple of 64)
        self.progress: bool | None = None  # tile progress bar: None = on a terminal only

    def components(self) -> dict[str, torch.nn.Module]:
        return {"TAEF2 encoder": self.encoder, "TAEF2 decoder": self.decoder}

    def _run(self, module, to_unit: bool = False):
        def fn(t: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(t).to(self.device, self.dtype)
                if to_unit:  # [-1, 1] -> [0, 1] per tile: no second full-size copy of the image
                    x = (x + 1) / 2
                return module(x).float().cpu().numpy()

        return fn

    @torch.inference_mode()
    def encode(self, x, generator=None):
        from .tiling import tiled_apply

        # TAESD-family models take RGB in [0, 1]; the encoder is deterministic (no sampling).
        if x.shape[-1] * x.shape[-2] <= self.tile ** 2:
            return self.encoder((x.to(self.device, self.dtype) + 1) / 2).float()
        feats = tiled_apply(x.float().cpu().numpy(), self._run(self.enc_local, to_unit=True), scale=Fraction(1, 8),
                            tile=self.tile, halo=self.enc_halo, align=8, progress=self.progress,
                            desc="TAEF2 encode tiles")
        return self.enc_global(torch.from_numpy(feats).to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def decode(self, z):
        from .tiling import tiled_apply

        if z.shape[-1] * z.shape[-2] * 64 <= self.tile ** 2:
            return self.decoder(z.to(self.device, self.dtype)).float() * 2 - 1
        feats = self.dec_global(z.to(self.device, self.dtype)).float().cpu().numpy()
        y = tiled_apply(feats, self._run(self.dec_local), scale=8, tile=self.tile // 8, halo=self.dec_halo,
                        progress=self.progress, desc="TAEF2 decode tiles")
        del feats
        y = torch.from_numpy(y)
        return y.mul_(2).sub_(1)

    def _torch_fn(self, module):
        def fn(*arrays):
            with torch.inference_mode():
                args = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype) for a in arrays]
                return module(*args).float().cpu().numpy()

        return fn

    def decode_uint8(self, z: np.ndarray) -> np.ndarray:
        """Raw latents (1, 32, h, w) -> (H, W, 3) uint8, with no full-size float image: each tile's output goes
        straight into the 8-bit result. Up to one tile the pixels are those of :meth:`decode` (the same float
        operations, converted at once); above :data:`helpers.taef2.STREAM_GLOBAL_ABOVE` latent positions the
        GroupNorm blocks run streamed too (:func:`helpers.tiling.streamed_global`), so memory is two
        64-channel feature maps at latent resolution plus one tile, whatever the image size."""
        from .images import signed_to_uint8
        from .taef2 import BLOCK_HALO, HEAD_HALO, STREAM_GLOBAL_ABOVE, split_global_decoder
        from .tiling import streamed_global, tiled_apply

        z = np.ascontiguousarray(z, dtype=np.float32)
        n, _, h, w = z.shape
        if n != 1:
            raise ValueError(f"decode_uint8 takes one latent, got a batch of {n}")
        if h * w * 64 <= self.tile ** 2:
            return signed_to_uint8(self.decode_array(z))
        if h * w > STREAM_GLOBAL_ABOVE:
            head, blocks, eps, groups = split_global_decoder(self.decoder)
            feats = streamed_global(z, self._torch_fn(head), [(self._torch_fn(a), self._torch_fn(b)) for a, b in blocks],
                                    tile=self.tile // 8, head_halo=HEAD_HALO, block_halo=BLOCK_HALO,
                                    groups=groups, eps=eps)
        else:
            with torch.inference_mode():
                feats = self.dec_global(torch.from_numpy(z).to(self.device, self.dtype)).float().cpu().numpy()
        out = np.empty((8 * h, 8 * w, 3), dtype=np.uint8)

        def sink(place, t):
            y0, y1, x0, x1 = place
            t = t * np.float32(2)  # the same float32 operations as decode(): * 2 - 1, then clamp and round
            t -= np.float32(1)
            signed_to_uint8(t, out[y0:y1, x0:x1])

        tiled_apply(feats, self._run(self.dec_local), scale=8, tile=self.tile // 8, halo=self.dec_halo,
                    progress=self.progress, desc="TAEF2 decode tiles", sink=sink)
        return out


class SDBackend(Backend):
    """Stable Diffusion 1.x VAE, with UNet/CLIP/scheduler loaded on first use for denoising."""

    def __init__(self, vae, source: str, device, dtype, model_id: str, local_only: bool):
        super().__init__(model_id=model_id, kind="sd", device=device, dtype=dtype,
                         latent_channels=int(vae.config.latent_channels), quant_span=SD_QUANT_SPAN,
                         downsample=2 ** (len(vae.config.block_out_channels) - 1))
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
        self._set_tiling(z.shape[-1] * z.shape[-2] * self.downsample ** 2)
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
            te = _from_pretrained(CLIPTextModel, self.source, "text_encoder", "CLIP text encoder",
                                  torch_dtype=self.dtype, **kw)
            sched = load_scheduler(self.source, **kw)
            self._denoiser = dict(unet=unet.to(self.device).eval(), tokenizer=tok,
                                  text_encoder=te.to(self.device).eval(), scheduler=sched,
                                  load_seconds=time.perf_counter() - t0)
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
            config = diffusers.DDIMScheduler.load_config(source, subfolder="scheduler",
                                                         local_files_only=local_files_only)
    except Exception as exc:  # noqa: BLE001 - turned into a one-line error
        raise ModelNotFoundError(_missing_message("SD scheduler", source, exc)) from None
    cls = getattr(diffusers, config.get("_class_name", "PNDMScheduler"), diffusers.PNDMScheduler)
    return cls.from_config(config)


def _missing_message(what: str, source: str, exc: BaseException) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if Path(source).exists():
        return (f"could not load the {what} from local directory '{source}' ({reason[:160]}); "
                f"fix: point --model at a complete diffusers SD1.x folder (model_index.json, vae/, unet/, ...)")
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as cache
    except ImportError:  # pragma: no cover
        cache = "~/.cache/huggingface/hub"
    return (f"could not load the {what} for '{source}': not in the local Hugging Face cache ({cache}) and the hub is "
            f"unreachable or the id is unknown ({reason[:120]}); fix: run once online "
            f"(`huggingface-cli download {source}`), pass --model a local diffusers directory, "
            f"or use the offline TAEF2 backend (--model taef2)")


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
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError), or an invalid id
        return None


def _from_pretrained(cls, source: str, subfolder: str, what: str, **kwargs):
    try:
        with _quiet_hub():
            return cls.from_pretrained(source, subfolder=subfolder, **kwargs)
    except Exception as exc:  # noqa: BLE001 - turned into a one-line error
        raise ModelNotFoundError(_missing_message(what, source, exc)) from None


def load_sd(source: str = DEFAULT_SD_MODEL, device: str | torch.device | None = None,
            dtype: torch.dtype | None = None) -> SDBackend:
    """Load an SD1.x VAE from a hub id or a local diffusers directory (UNet etc. load on demand).

    Hub ids are looked up in the local cache first; the network is only tried when the hub answers,
    so offline machines fail in seconds with a one-line error instead of minutes of retries.
    """
    from diffusers import AutoencoderKL

    dev = device if isinstance(device, torch.device) else select_device(device)
    dtype = dtype or default_dtype(dev)
    t0 = time.perf_counter()
    path = _expand(source)
    if path.exists():
        if not path.is_dir() or not ((path / "vae").is_dir() or (path / "model_index.json").is_file()):
            raise ModelNotFoundError(f"'{source}' is not a diffusers SD directory (no vae/ or model_index.json) "
                                     f"and holds no {TAEF2_ENCODER}: pass a diffusers SD1.x folder, a TAEF2 "
                                     f"folder or a hub id such as {DEFAULT_SD_MODEL}")
        vae = _from_pretrained(AutoencoderKL, str(path), "vae", "SD VAE", torch_dtype=dtype)
        model_id, local_only = _model_id_of_dir(path), True
    else:
        try:
            snapshot = _local_snapshot(source)  # the cache lookup without diffusers' hub call
            if snapshot is None:
                raise FileNotFoundError(f"{source} is not in the local Hugging Face cache")
            with _quiet_hub():
                vae = AutoencoderKL.from_pretrained(snapshot, subfolder="vae", torch_dtype=dtype,
                                                    local_files_only=True)
            local_only = True
        except Exception as exc:  # noqa: BLE001
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


def load_taef2(directory: str | Path | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None) -> TAEF2Backend:
    """Load TAEF2 from a directory holding taef2_encoder.pth and taef2_decoder.pth."""
    from .taef2 import make_decoder, make_encoder

    directory = Path(directory) if directory is not None else default_taef2_dir()
    dev = device if isinstance(device, torch.device) else select_device(device)
    # TAEF2 is tiny: fp32 everywhere except CUDA, where fp16 is safe and fast.
    dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    t0 = time.perf_counter()
    enc, dec = make_encoder(), make_decoder()
    for module, f in zip((enc, dec), taef2_weight_files(directory)):
        fname = f.name
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ModelNotFoundError(f"{f} is not a TAEF2 state dict ({first}); fix: re-download {fname}") from None
    backend = TAEF2Backend(enc, dec, dev, dtype)
    backend.load_seconds = time.perf_counter() - t0
    return backend


def load_backend(spec: str | None = "auto", device: str | torch.device | None = None) -> Backend:
    """Resolve a model spec to a backend.

    ``"auto"``/None: SD v1.4 when its weights are cached or downloadable, else TAEF2 (offline path).
    ``"taef2"``: TAEF2 from the default folder. A directory holding taef2_*.pth: TAEF2 from there.
    Any other directory or string: an SD1.x diffusers directory or hub id.
    """
    if spec in (None, "", "auto"):
        try:
            return load_sd(DEFAULT_SD_MODEL, device=device)
        except ModelNotFoundError:
            return load_taef2(device=device)
    spec = check_model_spec(spec)
    if spec == TAEF2_MODEL_ID:
        return load_taef2(device=device)
    path = Path(spec).expanduser()
    if path.is_dir() and (path / TAEF2_ENCODER).exists():
        return load_taef2(path, device=device)
    return load_sd(spec, device=device)


def load_with_fallback(spec: str | None, fallback: str | None = TAEF2_MODEL_ID,
                       device: str | torch.device | None = None) -> tuple[Backend, str | None]:
    """``load_backend(spec)``, or ``load_backend(fallback)`` when that fails; returns (backend, why it fell back)."""
    try:
        return load_backend(spec, device=device), None
    except SDCError as exc:
        if not fallback or fallback == spec:
            raise
        return load_backend(fallback, device=device), str(exc)


def memory_usage(device: torch.device | None = None) -> dict[str, float]:
    """Resident memory of this process (MiB, psutil) or its peak (ru_maxrss), plus CUDA tensors on a GPU."""
    try:
        import psutil

        out = {"rss_MiB": psutil.Process().memory_info().rss / 2**20}
    except ImportError:  # pragma: no cover - psutil ships with jupyter
        import resource

        out = {"peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}
    if device is not None and device.type == "cuda":
        out["cuda_MiB"] = torch.cuda.memory_allocated(device) / 2**20
    return out


# --------------------------------------------------------------------------------------------
# Tiny random SD components (tests, CI notebooks): same classes, same loading code path.
# --------------------------------------------------------------------------------------------

def _byte_unicode() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE uses for raw bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_tiny_sd(directory: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised SD1.x-architecture pipeline folder (VAE, UNet, CLIP, PNDM).

    Tiny channel counts so it runs in seconds on a CPU, but the real diffusers/transformers classes,
    saved with ``save_pretrained`` and read back by :func:`load_sd` like any SD checkpoint.
    The VAE keeps SD's 8x downsampling and 4 latent channels.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8, layers_per_block=1,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64,
    )
    vae.save_pretrained(directory / "vae")
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
    )
    unet.save_pretrained(directory / "unet")
    te = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, vocab_size=600, max_position_embeddings=77,
                                      bos_token_id=514, eos_token_id=515, pad_token_id=515))
    te.save_pretrained(directory / "text_encoder")
    tok_dir = directory / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    chars = _byte_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 514, "<|endoftext|>": 515})
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77).save_pretrained(tok_dir)
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False).save_pretrained(directory / "scheduler")
    (directory / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1", "_name_or_path": TINY_MODEL_ID,
        "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
    }, indent=2))
    return directory


def parameter_count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def latent_to_numpy(z: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> (C, H, W) float32 array."""
    return z.detach().float().cpu().numpy()[0]
