"""hf_symbolic's own graph rewrites: one registration table, one on/off gate.

Each module of this package defines plain PyTensor rewriters; :data:`REWRITES`
says where each one runs in PyTensor's rewrite database (``optdb``): its name
there, its tags, its position, and the kinds of mode it applies to. Importing
this package registers every entry once, wrapped so that it acts only inside
:func:`active` (which :func:`hf_symbolic.graph.backend.compile_flags` enters
for hf_symbolic's own compiles, including the inner functions of ``scan``),
for a compile of a kind of mode it applies to, and while its environment
switch is on. Every other PyTensor function of the process is compiled as
before.

Positions are those of PyTensor 3.0.7's ``optdb``: ``scan_eqopt2`` is at 1.6,
BLAS specialisation at 1.7, elementwise fusion at 49 and the in-place
rewrites after it.

Adding a rewrite: a new module here defining the rewriter, and one line in
:data:`REWRITES`.

Examples
--------
>>> [entry.name for entry in REWRITES][:2]
['hf_symbolic_seed_as_initial_state', 'hf_symbolic_outer_product_as_mul']
>>> is_active("c")
False
>>> with active("c"):
...     is_active("c"), is_active("other")
(True, False)
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from pytensor.compile import optdb
from pytensor.graph.rewriting.basic import GraphRewriter

from hf_symbolic._env import env_flag

from .binary_elemwise import binary_associative_elemwise
from .rank_one import outer_product_as_mul
from .row_loops import row_elemwise_rewriter
from .scan_seeds import last_step_seed, seed_as_initial_state
from .views import flatten_moved_axis

__all__ = ["MODE_KINDS", "REWRITES", "Rewrite", "active", "is_active", "register"]

#: Kinds of compile the gate tells apart: ``"c"`` for modes that run PyTensor's
#: C code (C VM, C linkers), ``"python"`` for modes that run its Python thunks
#: (FAST_COMPILE, the Python VM), ``"other"`` for the rest (Numba, JAX).
MODE_KINDS = ("c", "python", "other")


@dataclass(frozen=True)
class Rewrite:
    """One line of the registration table.

    Attributes
    ----------
    name : str
        Its name in ``optdb``.
    rewriter : GraphRewriter
        The rewriter, as its module defines it (not gated).
    position : float
        Its position in ``optdb``.
    tags : tuple of str
        ``optdb`` tags (``"fast_run"``: part of PyTensor's default pipeline;
        ``"fast_compile"``: part of FAST_COMPILE's).
    modes : tuple of str
        The kinds of mode (:data:`MODE_KINDS`) whose compiles it acts on.
    switch : str
        The environment variable that turns it off when ``0``/``false``/``no``/``off``.
    """

    name: str
    rewriter: GraphRewriter
    position: float
    tags: tuple = ("fast_run",)
    modes: tuple = ("c",)
    switch: str = "HF_SYMBOLIC_ROW_LOOPS"


# One line per rewrite, in the order of their positions. Every rewrite is
# switched off by HF_SYMBOLIC_ROW_LOOPS=0, as before the table existed.
REWRITES = (
    # before scan_eqopt2 (1.6), whose trace reductions then see the new recurrence
    Rewrite("hf_symbolic_seed_as_initial_state", seed_as_initial_state, 1.55),
    # after scan_eqopt2 (1.6: products stay in loop bodies), before BLAS (1.7)
    Rewrite("hf_symbolic_outer_product_as_mul", outer_product_as_mul, 1.65),
    # before fusion and the in-place rewrites: the new views then take part in them
    Rewrite("hf_symbolic_flatten_moved_axis", flatten_moved_axis, 48.9),
    Rewrite("hf_symbolic_last_step_seed", last_step_seed, 48.91),
    # Python thunks only, in FAST_COMPILE's rewrite set (which has no fusion)
    Rewrite("hf_symbolic_binary_associative_elemwise", binary_associative_elemwise, 48.95,
            tags=("fast_compile",), modes=("python",)),
    # after fusion and the in-place rewrites
    Rewrite("hf_symbolic_row_elemwise", row_elemwise_rewriter, 99.5),
)

_state = threading.local()  # per thread: {mode kind: number of open active() contexts}


def _open() -> dict:
    if not hasattr(_state, "open"):
        _state.open = dict.fromkeys(MODE_KINDS, 0)
    return _state.open


@contextlib.contextmanager
def active(kind: str = "c"):
    """Context in which this thread's compiles of mode kind ``kind`` get the table's rewrites.

    Contexts nest; each thread has its own. A rewrite acts when a context is
    open for one of its ``modes`` and its ``switch`` is on.
    """
    if kind not in MODE_KINDS:
        raise ValueError(f"mode kind must be one of {MODE_KINDS}; got {kind!r}")
    counts = _open()
    counts[kind] += 1
    try:
        yield
    finally:
        counts[kind] -= 1


def is_active(kind: str) -> bool:
    """Whether an :func:`active` context for ``kind`` is open in this thread."""
    return _open().get(kind, 0) > 0


class _Gated(GraphRewriter):
    """Runs a table entry's rewriter only inside :func:`active` for its modes, with its switch on."""

    def __init__(self, entry: Rewrite):
        self.entry = entry

    def add_requirements(self, fgraph):
        self.entry.rewriter.add_requirements(fgraph)

    def apply(self, fgraph):
        entry = self.entry
        if any(is_active(kind) for kind in entry.modes) and env_flag(entry.switch):
            return entry.rewriter.apply(fgraph)
        return None


def register(table=REWRITES) -> None:
    """Register each entry of ``table`` in ``optdb`` (gated), unless a rewrite of that name is there already."""
    for entry in table:
        if entry.name not in optdb:
            optdb.register(entry.name, _Gated(entry), *entry.tags, position=entry.position)


register()
