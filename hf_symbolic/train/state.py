"""What a checkpoint of a training run holds, validated before anything is restored."""

from __future__ import annotations

import math

import numpy as np

from hf_symbolic.errors import ArgumentError, CheckpointCorruptError, CheckpointError, CheckpointMismatchError
from hf_symbolic.train.stats import UpdateStats

__all__ = ["parameter_signature", "save_dataset_states", "check_signature", "restore_dataset_states",
           "checked_state", "check_dataset"]


def parameter_signature(opt):
    """Names, shapes and dtypes of the parameters: what a checkpoint must match."""
    return [[x.name or f"p{i}", list(s), str(x.dtype)] for i, (x, s) in enumerate(zip(opt.p, opt.layout.shapes))]


def save_dataset_states(datasets, arrays, states):
    """Store each dataset's ``state_dict()``: JSON part in ``states[name]``, arrays as ``arrays["name/key"]``."""
    for name, ds in datasets.items():
        if ds is not None and hasattr(ds, "state_dict"):
            st = ds.state_dict()
            states[name] = st["json"]
            for k, v in st["arrays"].items():
                arrays[f"{name}/{k}"] = v


def check_signature(path, meta, signature):
    """Refuse a checkpoint whose parameters (names, shapes, dtypes) are not ``signature``."""
    if meta.get("signature") != signature:
        raise CheckpointMismatchError(
            f"checkpoint {path} belongs to another model: its parameters are {meta.get('signature')!r:.200}, "
            f"this model's are {signature}"
        )


def restore_dataset_states(datasets, arrays, states, path=None):
    """Inverse of :func:`save_dataset_states`, all or nothing.

    Each dataset validates its own state, so a later one can still refuse after
    an earlier one was restored: those are then put back as they were.  A
    refusal (a :class:`~hf_symbolic.errors.CheckpointError`) is raised again
    with the dataset's name, and the checkpoint ``path`` when given, in front
    of its message.
    """
    restored = []
    try:
        for name, ds in datasets.items():
            st = states.get(name)
            if ds is None or st is None or not hasattr(ds, "load_state_dict"):
                continue
            prefix = f"{name}/"
            before = ds.state_dict() if hasattr(ds, "state_dict") else None
            own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            try:
                ds.load_state_dict({"json": st, "arrays": own})
            except CheckpointError as exc:
                where = f"checkpoint {path}: {name}" if path is not None else name
                raise type(exc)(f"{where}: {exc}") from exc
            restored.append((ds, before))
    except BaseException:
        for ds, before in reversed(restored):
            if before is not None:
                ds.load_state_dict(before)
        raise


def check_dataset(ds, name):
    if ds is None or not hasattr(ds, "iterate") or not hasattr(ds, "update"):
        raise ArgumentError(
            f"{name} must be a dataset with iterate(update) and update() methods "
            f"(hf_symbolic.SequenceDataset or BatchDataset), got {type(ds).__name__}"
        )


def checked_state(path, arrays, meta, n, dtype, vectors=("cg_x",), damping=True):
    """The training state of a checkpoint, validated before anything is restored.

    The digest only shows that a file is as it was written; a file written by
    other means, with its digest recomputed, must still hold a state a run can
    continue from: finite parameter vectors of the parameters' dtype, counters
    that are ints in range, a finite positive lambda, one history record per update.

    Parameters
    ----------
    vectors : tuple of str, default ("cg_x",)
        The method's own arrays of shape ``(n,)``, checked like ``theta`` and
        ``best_theta`` (HF's CG warm start; SGD passes ``("velocity",)``).
    damping : bool, default True
        Whether the state holds a damping ``lambda`` (HF does, SGD does not).

    Raises
    ------
    CheckpointMismatchError
        A parameter vector is missing or not of shape ``(n,)``.
    CheckpointCorruptError
        Any other field is missing or invalid; the message names it, its value
        and what was expected.
    """
    def bad(what, value, expected):
        raise CheckpointCorruptError(f"checkpoint {path}: {what} is {value!r:.80}; expected {expected}")

    def integer(key, lo, hi=None):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            bad(repr(key), v, f"an int >= {lo}" + ("" if hi is None else f" and <= {hi}"))
        return v

    state = {}
    for key in ("theta", "best_theta", *vectors):
        a = arrays.get(key)
        if a is None or a.shape != (n,):
            raise CheckpointMismatchError(f"checkpoint {path}: array {key!r} missing or not of shape ({n},)")
        if a.dtype != dtype:
            bad(f"the dtype of array {key!r}", str(a.dtype), f"{dtype}, the parameters' dtype")
        if not np.all(np.isfinite(a)):
            raise CheckpointCorruptError(f"checkpoint {path}: array {key!r} holds {int(np.sum(~np.isfinite(a)))} "
                                         "non-finite value(s); expected finite values")
        state[key] = a.copy()
    state["update"] = update = integer("update", 0)
    state["best_update"] = integer("best_update", 0, update)
    state["failures"] = integer("failures", 0)
    if damping:
        lam = meta.get("lambda")
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (math.isfinite(lam) and lam > 0):
            bad("'lambda'", lam, "a finite number > 0")
        state["lambda"] = float(lam)
    bv = meta.get("best_validation")
    if bv is not None and not (isinstance(bv, list) and bv
                               and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bv)):
        bad("'best_validation'", bv, "null or a non-empty list of numbers")
    if bv is not None and not math.isfinite(bv[0]):  # only a finite first cost is ever recorded as the best
        bad("'best_validation'[0]", bv[0], "a finite number (the best validation cost)")
    state["best_validation"] = None if bv is None else tuple(float(v) for v in bv)
    if not isinstance(meta.get("datasets"), dict):
        bad("'datasets'", meta.get("datasets"), "an object holding the datasets' states")
    records = meta.get("history")
    if not isinstance(records, list):
        bad("'history'", records, "a list of update records")
    if len(records) != update:
        raise CheckpointCorruptError(f"checkpoint {path}: 'history' holds {len(records)} update records but "
                                     f"'update' is {update}; expected one record per update")
    try:
        history = [UpdateStats.from_json(d) for d in records]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorruptError(f"checkpoint {path}: 'history' holds a malformed update record: {exc!r}") from exc
    if [s.update for s in history] != list(range(1, update + 1)):
        bad("the update numbering of 'history'", [s.update for s in history], f"1, 2, ..., {update}")
    state["history"] = history
    return state
