"""The latent coding methods by name and header id, and the container's knowledge of them.

Importing this module registers every shipped method with the container
(:func:`helpers.bitstream.register_method`): the container imports no method code, the methods import the
container's :class:`~helpers.bitstream.Header`, this module imports the methods, and :mod:`helpers.codec` imports
this module, so anything that encodes or decodes through the codec (or the CLI) has them. A new method is a
folder under ``helpers/methods/`` and one line in :data:`SHIPPED`.
"""

from __future__ import annotations

from .. import bitstream
from ..errors import SDCError
from .base import LatentMethod
from .palette.method import KMEANS, LIQ, RAW
from .tc.method import TC

#: every shipped method, in header-id order
SHIPPED: tuple[LatentMethod, ...] = (LIQ, KMEANS, RAW, TC)
#: the library's, the CLI's and the benchmark's default: the best method
DEFAULT = "tc"
#: names that pick a method by the latent's channel count: the 2022 palette method is libimagequant for SD's
#: 4 channels and latent k-means otherwise ('auto' is its older name, kept for the CLI)
ALIASES = {
    "palette": lambda channels: "liq" if channels == 4 else "kmeans",
    "auto": lambda channels: "liq" if channels == 4 else "kmeans",
}


def register(method: LatentMethod) -> LatentMethod:
    """Make a method known to the codec and the container (its id and coder ids must be free)."""
    return bitstream.register_method(method)


def get(name: str) -> LatentMethod:
    """The registered method called ``name`` (no aliases)."""
    if name not in bitstream.METHOD_SPECS:
        raise SDCError(f"unknown method '{name}': use {', '.join(names())}")
    return bitstream.METHOD_SPECS[name]


def by_id(method_id: int) -> LatentMethod:
    """The registered method with header id ``method_id``."""
    if method_id not in bitstream.METHOD_NAMES:
        raise SDCError(f"no latent coding method has id {method_id}: upgrade sdcomp-notebooks")
    return bitstream.METHOD_SPECS[bitstream.METHOD_NAMES[method_id]]


def names() -> list[str]:
    """Every name :func:`resolve` accepts: the default first, then the aliases, then the other methods."""
    rest = [n for n in bitstream.METHOD_SPECS if n != DEFAULT]
    return [DEFAULT, *ALIASES, *rest]


def coder_names() -> list[str]:
    """Every lossless coder some method writes (the CLI's ``--coder`` choices)."""
    return sorted(bitstream.CODER_IDS)


def resolve(name: str | None, channels: int) -> LatentMethod:
    """A method name or alias (None: :data:`DEFAULT`) -> the method that codes a ``channels``-channel latent."""
    name = DEFAULT if name is None else name
    if name in ALIASES:
        name = ALIASES[name](channels)
    method = get(name)
    method.check_channels(channels)
    return method


for _method in SHIPPED:
    register(_method)
