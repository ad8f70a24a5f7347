"""User-facing errors: one line that names the problem and the fix."""


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
        except Exception as exc:  # noqa: BLE001 - a broken install raises more than ImportError
            raise UnavailableError(one_line(f"{who} is unavailable: cannot import {name} ({type(exc).__name__}: "
                                            f"{exc}); pip install {pip}")) from None
    return modules[0] if len(modules) == 1 else modules
