"""sdcomp helpers: Stable Diffusion latents as a lossy image codec, measured against classic codecs."""

__version__ = "0.1.0"

from .errors import SDCError  # noqa: F401
