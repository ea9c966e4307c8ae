"""On/off switches read from the environment (``HF_SYMBOLIC_ROW_LOOPS=0`` and the like).

A bottom-level module: it imports only :mod:`os`, so any module of the
package (including the ones that must run before PyTensor is imported) can
use it.
"""

from __future__ import annotations

import os

__all__ = ["env_flag"]

_OFF = ("0", "false", "no", "off")


def env_flag(name: str, default: bool = True) -> bool:
    """Whether the environment switch ``name`` is on.

    Parameters
    ----------
    name : str
        The environment variable, e.g. ``"HF_SYMBOLIC_ROW_LOOPS"``.
    default : bool, default True
        The answer when the variable is unset or blank.

    Returns
    -------
    bool
        False when the variable is ``0``, ``false``, ``no`` or ``off`` (any
        case, surrounding spaces ignored), True for any other non-blank value,
        ``default`` when it is unset or blank. Read at every call, so a switch
        changed at run time takes effect at the next read.

    Examples
    --------
    >>> import os
    >>> os.environ["HF_SYMBOLIC_EXAMPLE_SWITCH"] = " Off "
    >>> env_flag("HF_SYMBOLIC_EXAMPLE_SWITCH")
    False
    >>> del os.environ["HF_SYMBOLIC_EXAMPLE_SWITCH"]
    >>> env_flag("HF_SYMBOLIC_EXAMPLE_SWITCH"), env_flag("HF_SYMBOLIC_EXAMPLE_SWITCH", default=False)
    (True, False)
    """
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in _OFF
