"""The shuffled-items machinery shared by the datasets: position, epochs, RNG, saved state.

See :mod:`hf_symbolic.train.data` for the behaviour it gives both dataset classes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping

import numpy as np

from hf_symbolic.errors import CheckpointCorruptError, CheckpointMismatchError, DatasetError

_log = logging.getLogger("hf_symbolic.train.data")

_ARRAY_REF = "__array__"


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_int(value, name: str, minimum: int = 1) -> int:
    if not _is_int(value) or value < minimum:
        raise DatasetError(f"{name} = {value!r}; expected an int >= {minimum}")
    return int(value)


def _make_rng(seed) -> np.random.Generator | None:
    """``None`` -> global legacy RNG mode; otherwise an own Generator."""
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence) or (_is_int(seed) and seed >= 0):
        return np.random.default_rng(seed)
    raise DatasetError(
        f"seed = {seed!r}; expected None (numpy's global RNG), a non-negative int, "
        "a numpy.random.SeedSequence or a numpy.random.Generator"
    )


# ---------------------------------------------------------------------------
# JSON/array splitting of RNG states
# ---------------------------------------------------------------------------


def _split_arrays(obj, prefix: str, arrays: dict):
    """Copy ``obj`` as JSON data, moving ndarrays into ``arrays`` under dotted names."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj.copy()
        return {_ARRAY_REF: prefix}
    if isinstance(obj, Mapping):
        return {str(k): _split_arrays(v, f"{prefix}.{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{prefix}.{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return obj


def _join_arrays(obj, arrays: Mapping):
    """Inverse of :func:`_split_arrays`."""
    if isinstance(obj, Mapping):
        if set(obj) == {_ARRAY_REF}:
            name = obj[_ARRAY_REF]
            if name not in arrays:
                raise CheckpointCorruptError(f"dataset state refers to array {name!r}, which is missing")
            return np.asarray(arrays[name])
        return {k: _join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays) for v in obj]
    return obj


# ---------------------------------------------------------------------------
# Shared behaviour
# ---------------------------------------------------------------------------


def _check_growth(growth, max_batches, number_batches):
    """Validate the batch-growth settings; returns ``(growth, max_batches)``."""
    if isinstance(growth, (bool, np.bool_)) or not isinstance(growth, (int, float, np.integer, np.floating)) \
            or not math.isfinite(growth) or growth < 1.0:
        raise DatasetError(f"growth = {growth!r}; expected a finite number >= 1 (1: a fixed number of batches)")
    if max_batches is not None:
        max_batches = _check_int(max_batches, "max_batches")
        if max_batches < number_batches:
            raise DatasetError(
                f"max_batches = {max_batches}; expected None or an int >= number_batches ({number_batches})"
            )
    return float(growth), max_batches


class _ShuffledItems:
    """Position / epoch / RNG / state logic shared by both datasets."""

    def __init__(self, number_batches, seed, growth=1.0, max_batches=None):
        self._initial_batches = self._number_batches = _check_int(number_batches, "number_batches")
        self._growth, self._max_batches = _check_growth(growth, max_batches, self._initial_batches)
        self._updates = 0
        self._rng = _make_rng(seed)
        self._position = 0
        self._order = np.zeros(0, dtype=np.intp)

    # -- hooks for subclasses -------------------------------------------------
    def _item(self, index: int) -> list:
        raise NotImplementedError

    def _reshuffle(self) -> None:
        raise NotImplementedError

    def _order_length(self) -> int:
        raise NotImplementedError

    def _config(self) -> dict:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    # -- batch growth -----------------------------------------------------------
    def _growth_config(self) -> dict:
        """The growth settings for :meth:`_config` (nothing when the number of batches is fixed,
        so that states saved before growth existed still match)."""
        if self._growth == 1.0 and self._max_batches is None:
            return {}
        return {"growth": self._growth, "max_batches": self._max_batches}

    def _scheduled_batches(self, updates: int) -> int:
        """``min(cap, floor(number_batches * growth**updates))``; the cap is ``max_batches``, else ``len(self)``."""
        if self._growth == 1.0:
            return self._initial_batches
        cap = self._max_batches if self._max_batches is not None else max(self._initial_batches, len(self))
        log_n = math.log(self._initial_batches) + updates * math.log(self._growth)
        if log_n >= math.log(cap):
            return cap
        # floor with a relative slack: an exact product such as 4 * 1.5**2 = 9 comes out of exp/log as 8.999...
        return max(self._initial_batches, min(cap, math.floor(math.exp(log_n) * (1.0 + 1e-12))))

    @property
    def growth(self) -> float:
        """Factor by which the number of batches grows per :meth:`update` (1: fixed)."""
        return self._growth

    @property
    def max_batches(self) -> int | None:
        """Most batches a growing dataset yields (None: all items)."""
        return self._max_batches

    @property
    def updates(self) -> int:
        """Number of :meth:`update` calls so far (it sets the number of batches of a growing dataset)."""
        return self._updates

    # -- RNG ------------------------------------------------------------------
    def _permutation(self, n: int) -> np.ndarray:
        if self._rng is None:
            return np.random.permutation(n)
        return self._rng.permutation(n)

    @property
    def rng_mode(self) -> str:
        """``"global"`` (numpy's global legacy RNG) or ``"own"`` (a private Generator)."""
        return "global" if self._rng is None else "own"

    # -- iteration ------------------------------------------------------------
    @property
    def number_batches(self) -> int:
        """Items yielded by one :meth:`iterate` call."""
        return self._number_batches

    @property
    def position(self) -> int:
        """Index, in the current order, of the first item the next :meth:`iterate` yields."""
        return self._position

    def iterate(self, update: bool = True) -> Iterator[list]:
        """Yield ``number_batches`` items from the current position, wrapping around.

        Parameters
        ----------
        update : bool, default True
            Call :meth:`update` after the last item (only if the generator is
            run to the end).

        Yields
        ------
        list of numpy.ndarray
            One array per symbolic input (a fresh list each time; the arrays
            are views of the data where possible, so do not modify them).
        """
        n = len(self)
        for b in range(self._number_batches):
            yield self._item((self._position + b) % n)
        if update:
            self.update()

    def update(self) -> None:
        """Advance by ``number_batches`` items; at the end of an epoch reshuffle and restart at 0.

        A growing dataset (``growth > 1``) then takes its next number of batches.
        """
        if self._position + self._number_batches >= len(self):
            self._reshuffle()
            self._position = 0
            _log.debug("%s: epoch finished, reshuffled", type(self).__name__)
        else:
            self._position += self._number_batches
        self._updates += 1
        if self._growth != 1.0:
            n = self._scheduled_batches(self._updates)
            if n != self._number_batches:
                _log.debug("%s: %d batches per iterate() after %d updates", type(self).__name__, n, self._updates)
            self._number_batches = n

    # -- state ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume: ``{"json": {...}, "arrays": {...}}`` (see module docs).

        Returns
        -------
        dict
            ``"json"``: JSON-serialisable dict (class, configuration, position,
            RNG mode and state with array fields replaced by references);
            ``"arrays"``: ``{"order": int64 array, "rng.<field>": array, ...}``.
            All arrays are copies.
        """
        if self._rng is None:
            rng_state = np.random.get_state(legacy=False)
        else:
            rng_state = self._rng.bit_generator.state
        arrays: dict[str, np.ndarray] = {"order": self._order.astype(np.int64)}
        rng_json = _split_arrays(rng_state, "rng", arrays)
        state_json = {
            "kind": type(self).__name__,
            "config": self._config(),
            "position": int(self._position),
            "updates": int(self._updates),
            "rng_mode": self.rng_mode,
            "rng": rng_json,
        }
        return {"json": state_json, "arrays": arrays}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state from :meth:`state_dict` (in ``seed=None`` mode, also numpy's global RNG).

        The state is fully validated before anything changes.

        Raises
        ------
        CheckpointMismatchError
            The state comes from another dataset class, another configuration
            (number of items, sizes, batch settings, data shapes) or RNG mode.
        CheckpointCorruptError
            The state is malformed (missing fields, position out of range,
            order not a permutation, invalid RNG state).
        """
        name = type(self).__name__
        if not isinstance(state, Mapping) or not isinstance(state.get("json"), Mapping) \
                or not isinstance(state.get("arrays"), Mapping):
            raise CheckpointCorruptError(
                f"{name} state must be a dict with a 'json' dict and an 'arrays' dict, got {state!r:.200}"
            )
        js, arrays = state["json"], state["arrays"]
        missing = {"kind", "config", "position", "rng_mode", "rng"} - set(js)
        if missing:
            raise CheckpointCorruptError(f"{name} state lacks the field(s) {sorted(missing)}")
        if js["kind"] != name:
            raise CheckpointMismatchError(f"state was saved by a {js['kind']!r}, cannot load it into a {name!r}")
        mine = self._config()
        saved = js["config"]
        if not isinstance(saved, Mapping):
            raise CheckpointCorruptError(f"{name} state has config {saved!r:.200}; expected a dict")
        diffs = [f"{k}: saved {saved.get(k)!r}, current {mine.get(k)!r}"
                 for k in sorted(set(mine) | set(saved)) if saved.get(k) != mine.get(k)]
        if diffs:
            raise CheckpointMismatchError(
                f"{name} state does not match this dataset ({len(self)} items): " + "; ".join(diffs)
            )
        if js["rng_mode"] != self.rng_mode:
            raise CheckpointMismatchError(
                f"{name} state uses rng_mode {js['rng_mode']!r} but this dataset uses {self.rng_mode!r}; "
                "construct it with the same kind of seed (None for the global RNG, else an int/Generator)"
            )
        position = js["position"]
        if not _is_int(position) or not 0 <= position < len(self):
            raise CheckpointCorruptError(
                f"{name} state has position {position!r}; expected an int in [0, {len(self)})"
            )
        updates = js.get("updates", 0)  # states saved before the field existed: a fixed number of batches
        if not _is_int(updates) or updates < 0:
            raise CheckpointCorruptError(f"{name} state has updates {updates!r}; expected an int >= 0")
        if "order" not in arrays:
            raise CheckpointCorruptError(f"{name} state lacks the 'order' array")
        order = np.asarray(arrays["order"])
        n_order = self._order_length()
        if order.dtype.kind not in "iu" or order.shape != (n_order,) \
                or not np.array_equal(np.sort(order), np.arange(n_order)):
            raise CheckpointCorruptError(
                f"{name} state has an 'order' array of dtype {order.dtype} and shape {order.shape}; "
                f"expected a permutation of range({n_order})"
            )
        rng_state = _join_arrays(js["rng"], arrays)
        try:
            if self._rng is None:
                np.random.RandomState().set_state(rng_state)  # validate on a scratch generator
            else:
                bit_gen = self._rng.bit_generator
                saved_kind = rng_state.get("bit_generator") if isinstance(rng_state, Mapping) else rng_state
                if saved_kind != type(bit_gen).__name__:
                    raise CheckpointMismatchError(
                        f"{name} state holds a {saved_kind!r} generator state "
                        f"but this dataset uses {type(bit_gen).__name__}"
                    )
                type(bit_gen)().state = rng_state  # validate on a scratch bit generator
        except CheckpointMismatchError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointCorruptError(f"{name} state has an invalid RNG state: {exc}") from exc
        # Everything is valid: apply.
        if self._rng is None:
            np.random.set_state(rng_state)
        else:
            self._rng.bit_generator.state = rng_state
        self._order = order.astype(np.intp)
        self._position = int(position)
        self._updates = int(updates)
        self._number_batches = self._scheduled_batches(self._updates)
