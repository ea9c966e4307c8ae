"""Argument checks shared by the options of every layer: a bad value is named with what was expected."""

from __future__ import annotations

import math
from numbers import Integral, Real

from hf_symbolic.errors import ArgumentError

__all__ = ["bad", "check_int", "check_real", "check_bool"]


def bad(name, value, expected):
    """Raise :class:`~hf_symbolic.errors.ArgumentError` ``"{name}={value!r} is invalid: expected {expected}"``."""
    raise ArgumentError(f"{name}={value!r:.80} is invalid: expected {expected}")


def check_int(name, value, minimum, expected=None):
    """``value`` as an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        bad(name, value, expected or f"an integer >= {minimum}")
    return int(value)


def check_real(name, value, ok, expected):
    """``value`` as a float when it is a real number (not a bool or a string) for which ``ok(value)`` holds.

    ``ok`` sees a float; NaN fails every comparison, so it is refused unless ``ok`` says otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        bad(name, value, expected)
    v = float(value)
    if not ok(v):
        bad(name, value, expected)
    return v


def check_bool(name, value):
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        bad(name, value, "True or False")
    return bool(value)


finite = math.isfinite
