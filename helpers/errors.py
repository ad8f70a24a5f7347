"""User-facing errors: one line that names the problem and the fix; :func:`guarded` turns them into the
CLI's ``error: ...`` line and exit status 2 (the package's command-line entry points all use it)."""

import sys


class SDCError(Exception):
    """Base class for every error the package raises on bad input or missing resources.

    The message is a single line meant for the user; the CLI prints it without a traceback.
    """


class ModelNotFoundError(SDCError):
    """Weights could not be found or loaded."""


class BitstreamError(SDCError):
    """A compressed file is truncated, corrupted, foreign or of an unsupported version."""


class ImageInputError(SDCError):
    """An input image is missing, unreadable or of an unsupported size."""


class BudgetError(SDCError):
    """A byte budget cannot be met."""


class UnavailableError(SDCError):
    """An optional component (codec, metric backbone) is not available here."""


class OutOfMemoryError(SDCError):
    """An allocation failed (numpy, ONNX Runtime or torch) while coding an image of a given size."""


#: how ONNX Runtime (std::bad_alloc, "Failed to allocate memory"), torch ("DefaultCPUAllocator: can't allocate
#: memory", CUDA/MPS "out of memory"), numpy ("Unable to allocate") and thread creation under an address-space
#: limit report a failed allocation
_OOM_PATTERNS = (
    "bad_alloc",
    "failed to allocate",
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "unable to allocate",
    "can't start new thread",
    "failed to create thread",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` is a failed allocation: MemoryError, torch's OutOfMemoryError, or a RuntimeError /
    ONNX Runtime error whose message says so."""
    import errno

    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" and not isinstance(exc, SDCError):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    if isinstance(exc, RuntimeError) or type(exc).__module__.startswith("onnxruntime"):
        text = str(exc).lower()
        return any(p in text for p in _OOM_PATTERNS)
    return False


def out_of_memory(what: str, width: int, height: int) -> OutOfMemoryError:
    """The one line for a failed allocation while ``what`` (e.g. "decoding") a width x height image."""
    mp = width * height / 1e6
    smaller = max(1, width * height // 4)
    return OutOfMemoryError(
        f"out of memory while {what} a {width}x{height} image ({mp:.1f} megapixels): run it "
        f"where more memory is free, or refuse images this large with --max-pixels "
        f"(e.g. --max-pixels {smaller})"
    )


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines from library messages included) as one space."""
    return " ".join(str(text).split())


def import_or_unavailable(who: str, pip: str, *names: str):
    """Import the modules ``names`` for an optional component, or raise one :class:`UnavailableError` line:
    "<who> is unavailable: cannot import <name> (<error>); pip install <pip>". Returns the module, or a
    list of modules for several names."""
    import importlib

    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:
            raise UnavailableError(
                one_line(f"{who} is unavailable: cannot import {name} ({type(exc).__name__}: {exc}); pip install {pip}")
            ) from None
    return modules[0] if len(modules) == 1 else modules


def guarded(func, *args, interrupted: str = "interrupted"):
    """Run ``func(*args)``; a user-facing SDCError becomes one ``error: ...`` line and exit status 2."""
    try:
        return func(*args)
    except SDCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, ... while reading or writing files
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}; check the path, permissions and free space", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        print("error: out of memory; lower --max-pixels, use a smaller image, or free memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
