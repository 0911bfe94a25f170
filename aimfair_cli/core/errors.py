"""Typed errors raised by the library.

Every error carries a one-line message meant for the user. The CLI turns any `AimfairError` into
`Error: <message>` on stderr and a non-zero exit (see `aimfair_cli/cli/errors.py`); anything else is a bug
and keeps its traceback.
"""


class AimfairError(Exception):
    """Base class: a problem the user can fix. `str(err)` is the whole one-line message."""


class UsageError(AimfairError):
    """An option value that cannot be used (bad bias ratio, k <= 0, unknown strategy, ...)."""


class OutputError(UsageError):
    """An output path that would overwrite an input, has the wrong suffix, or cannot be written."""


class WriteError(AimfairError):
    """Writing an output failed part-way (disk full, permission denied, file too large)."""


class TrainingError(AimfairError):
    """Training diverged (non-finite loss or weights); no checkpoint is written."""


class ConfigError(AimfairError):
    """A run-folder config file that is malformed or names unknown keys."""


class DataError(AimfairError):
    """A dataset on disk that does not have the expected layout or contents."""


class ManifestError(DataError):
    """A manifest file that is missing, malformed, or holds invalid rows."""


class ImageError(DataError):
    """An image file that is missing or cannot be decoded."""


class CheckpointError(AimfairError):
    """A model checkpoint that is missing, not safetensors, or does not fit."""


class MaskError(AimfairError):
    """A parameter mask that is malformed or does not fit the model."""


class GeneratorError(AimfairError):
    """An image generator that cannot be loaded or run."""


class PromptWriterError(AimfairError):
    """A prompt writer (template or LLM) that cannot produce valid prompts."""


class NotBuiltError(AimfairError):
    """A command or option that exists in the interface but is not implemented yet."""
