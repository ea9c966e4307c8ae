"""Named errors raised by hf_symbolic.

Every error derives from :class:`HFError`, and most also from the builtin
exception a user would catch for that kind of problem (``ValueError`` for bad
arguments, ``OSError`` for file trouble), so both ``except HFError`` and the
builtin work.
"""


class HFError(Exception):
    """Base class of every error raised by hf_symbolic."""


class ModelSpecError(HFError, ValueError):
    """The model given to the optimizer is malformed (bad ``p``, ``s``, ``costs``, ``h``/``ha``, options)."""


class BatchError(HFError, ValueError):
    """A minibatch does not match the symbolic ``inputs`` (count, ndim, dtype, case count)."""


class VectorSizeError(HFError, ValueError):
    """A flat parameter-space vector has the wrong length, ndim or values."""


class DatasetError(HFError, ValueError):
    """A dataset was built from data it cannot serve (empty, ragged, bad sizes)."""


class DataNotFoundError(HFError, FileNotFoundError):
    """A data set that must be installed separately (e.g. Fashion-MNIST) is absent."""


class CheckpointError(HFError):
    """Base class of checkpoint errors; the file on disk is never modified when one is raised."""


class CheckpointCorruptError(CheckpointError, ValueError):
    """The checkpoint file is truncated, tampered with, or holds forbidden content (object arrays)."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint belongs to another model or another training configuration."""


class CheckpointVersionError(CheckpointError, ValueError):
    """The checkpoint was written by a newer, unknown format version."""


class CheckpointLockedError(CheckpointError, RuntimeError):
    """Another live run holds the lock on this checkpoint path."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing the checkpoint failed; the previous checkpoint is intact."""


class NumericalFailureError(HFError, FloatingPointError):
    """Training stopped after too many consecutive non-finite costs, gradients or curvature products."""


class ArgumentError(HFError, ValueError):
    """A numeric argument of a routine (CG, damping rule, line search) is outside its valid range."""
