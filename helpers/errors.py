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
