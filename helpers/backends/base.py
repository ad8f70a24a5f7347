"""The backend protocol: what the codec, the CLI and the benchmark may ask of an autoencoder, on any runtime.

Torch-free on purpose (``tests/test_architecture.py`` checks it): the ONNX Runtime backend implements it
without torch, and code that only holds a backend (the codec's pipeline, the container, the CLI's ONNX path)
imports this module and nothing heavier. Implementations subclass :class:`Backend` explicitly:

* :class:`helpers.backends.torch_base.TorchBackend` (PyTorch, any device): SD1.x
  (:class:`helpers.backends.sd.SDBackend`) and TAEF2 (:class:`helpers.backends.taef2.TAEF2Backend`);
* :class:`helpers.backends.onnx_runtime.OnnxTAEF2Backend` (TAEF2 on ONNX Runtime, CPU only).

Where a backend runs is a plain string (:attr:`Backend.device_name`, torch's spelling: ``cpu``, ``cuda``,
``cuda:1``, ``mps``), so no caller needs torch to ask; :meth:`Backend.synchronize` waits for queued GPU work
(timings) and is a no-op on the CPU. PyTorch backends also carry their ``torch.device`` as ``device``, for
the torch code that moves tensors (denoising, refinement, notebooks); that is not part of the protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from ..errors import SDCError

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import numpy as np


class Backend(ABC):
    """An autoencoder that maps RGB in [-1, 1] to raw latents and back, as numpy arrays.

    Attributes every implementation sets:

    * ``model_id``: what the file header records (hub id, folder's ``_name_or_path``, ``taef2``);
    * ``kind``: ``"sd"`` or ``"taef2"``; ``runtime``: ``"torch"`` or ``"onnx"``;
    * ``device_name``: where it runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``);
    * ``latent_channels``, ``downsample`` (8), ``quant_span`` (the 8-bit quantization span of its latents);
    * ``fingerprint``: a CRC of the decoder weights, so a file decoded with other weights fails loudly;
    * ``load_seconds``: how long loading took.
    """

    model_id: str
    kind: str
    runtime: str
    device_name: str
    latent_channels: int
    downsample: int
    quant_span: float
    fingerprint: int
    load_seconds: float
    #: the encoder this backend encodes with: ``stock`` (the model's own) or a shipped variant
    #: (:data:`helpers.backends.taef2_spec.ENCODER_VARIANTS`); decoding never depends on it
    encoder_name: str = "stock"

    def encoder_names(self) -> tuple[str, ...]:
        """The encoders :meth:`with_encoder` can switch to (``stock`` only, unless the model has variants)."""
        return ("stock",)

    def with_encoder(self, name: str) -> Backend:
        """This model with encoder ``name`` (one of :meth:`encoder_names`): the same decoder, fingerprint and
        files; only the latents an image encodes to differ. Returns ``self`` when it already encodes so."""
        if name == self.encoder_name:
            return self
        raise SDCError(
            f"--encoder {name}: '{self.model_id}' has only its own encoder; pass --encoder stock or a TAEF2 --model"
        )

    @property
    def device_type(self) -> str:
        """``cpu``, ``cuda`` or ``mps``: :attr:`device_name` without its index."""
        return self.device_name.split(":", 1)[0]

    @property
    def has_unet(self) -> bool:
        """True when the model has a UNet for the optional denoising (SD)."""
        return False

    @property
    def random_weights(self) -> bool:
        """True for models with random weights (the tiny test pipeline, the full-size SD v1.4 stand-in):
        real classes and code path, meaningless pictures."""
        return False

    def synchronize(self) -> None:
        """Wait until queued work on the device is done (for timings); a no-op on the CPU."""

    @abstractmethod
    def describe(self) -> str:
        """One line: model, device, precision and runtime."""

    @abstractmethod
    def encode_array(self, x: np.ndarray, seed: int = 0) -> np.ndarray:
        """(N, 3, H, W) float32 in [-1, 1] (H, W multiples of ``downsample``) -> raw latents (N, C, h, w) float32;
        SD samples its posterior with ``seed``, TAEF2 is deterministic."""

    @abstractmethod
    def decode_array(self, z: np.ndarray) -> np.ndarray:
        """Raw latents (N, C, h, w) -> (N, 3, H, W) float32 in about [-1, 1]."""

    def decode_uint8(self, z: np.ndarray) -> np.ndarray:
        """Raw latents (1, C, h, w) -> (H, W, 3) uint8 pixels (:func:`helpers.images.signed_to_uint8`). TAEF2
        overrides it to convert tile by tile; other models convert their whole float output."""
        from ..images import signed_to_uint8

        return signed_to_uint8(self.decode_array(z))
