"""One progress line per update while ``train`` runs, shown when the caller has not configured logging.

The training loops log one line per update at ``INFO`` on their logger
(``hf_symbolic.train``, for every method). A script that
only calls ``train`` has configured no logging, and ``INFO`` records would go
nowhere; the 2012 ``hf.py`` printed a line per update, and so does ``train``
by default, like scipy's ``disp``:

- ``verbose=None`` (the default): when no handler is set on the training
  logger, on ``hf_symbolic`` or on the root logger, a handler writing to
  ``sys.stderr`` is added for the duration of ``train`` (and the logger's level
  lowered to ``INFO`` if needed). A caller who configured logging gets exactly
  what it configured: no handler is added, no line is duplicated.
- ``verbose=False``: no handler is added (warnings still reach Python's
  last-resort handler when logging is unconfigured).
- ``verbose=True``: the handler is added even when logging is configured; the
  logger then stops propagating to the caller's handlers while ``train`` runs,
  so no line appears twice (warnings go through the added handler).

Everything is restored when ``train`` returns or raises.
"""

from __future__ import annotations

import contextlib
import logging
import sys

from hf_symbolic.errors import ArgumentError

__all__ = ["show_progress", "start", "stop", "sgd_line"]


class _Format(logging.Formatter):
    """The message alone for ``INFO``; ``WARNING: message`` for the other levels."""

    def format(self, record):
        msg = record.getMessage()
        return msg if record.levelno == logging.INFO else f"{record.levelname}: {msg}"


def _check(verbose):
    if verbose is not None and not isinstance(verbose, bool):
        raise ArgumentError(f"verbose={verbose!r} is invalid: expected None, True or False")


def start(verbose, name):
    """Add the progress handler to logger ``name`` if ``verbose`` asks for it; a token for :func:`stop`.

    Parameters
    ----------
    verbose : bool or None
        None: only when logging is not configured (no handler on ``name``, its
        ancestors or the root logger); True: always; False: never.
    name : str
        The training loop's logger.

    Returns
    -------
    tuple or None
        What :func:`stop` needs to undo the change (None: nothing was changed).
    """
    _check(verbose)
    logger = logging.getLogger(name)
    if verbose is False or (verbose is None and logger.hasHandlers()):
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    handler.setLevel(logging.INFO)
    token = (logger, handler, logger.level, logger.propagate)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if verbose is True and logger.hasHandlers():
        logger.propagate = False  # the caller's handlers would print the same lines
    logger.addHandler(handler)
    return token


def stop(token):
    """Undo :func:`start` (``token`` None: nothing to undo)."""
    if token is None:
        return
    logger, handler, level, propagate = token
    logger.removeHandler(handler)
    handler.flush()
    logger.setLevel(level)
    logger.propagate = propagate


@contextlib.contextmanager
def show_progress(verbose, name="hf_symbolic.train"):
    """Context of one ``train`` call: :func:`start` on entry, :func:`stop` on exit."""
    token = start(verbose, name)
    try:
        yield
    finally:
        stop(token)


def sgd_line(s):
    """The ``INFO`` line of one SGD update (``s`` an :class:`~hf_symbolic.train.stats.UpdateStats`)."""
    val = "" if s.validation is None else " valid=" + ",".join(f"{v:.5g}" for v in s.validation)
    failed = "" if s.accepted else f" rejected({s.failure})"
    return f"update {s.update}: cost {s.costs[0]:.6g}{val} lr={s.step:.3g} |v|={s.step_norm:.3g}{failed} {s.seconds:.2f}s"
