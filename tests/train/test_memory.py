"""``hf_symbolic.memory.reuse_freed_memory``: large blocks come from the reused heap inside it, and not after it."""

import ctypes
import os

import numpy as np
import pytest

from hf_symbolic.train import memory

MB = 1 << 20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo():
    libc = ctypes.CDLL("libc.so.6")
    try:
        fn = libc.mallinfo2
    except AttributeError:
        pytest.skip("glibc without mallinfo2")
    fn.restype = _Mallinfo2
    return fn()


needs_glibc = pytest.mark.skipif(not memory.available(), reason="not glibc")


# The allocation checks run in a fresh interpreter: a long test session may already hold
# memory mapped by other libraries or arenas, which blurs the counters.
_PROBE = r"""
import ctypes, os, sys
import numpy as np
from hf_symbolic.train import memory

class M(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = M
mapped = lambda: libc.mallinfo2().hblkhd
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
size = 64 << 20
nested = sys.argv[1] == "nested"
with memory.reuse_freed_memory():
    if nested:
        with memory.reuse_freed_memory():
            pass
    before = mapped()
    a = np.ones(size, dtype=np.uint8)  # touched: resident
    inside = mapped() - before
    rss_before_free = rss()
    del a
    rss_kept = rss()
rss_after = rss()
before = mapped()
b = np.empty(size, dtype=np.uint8)
after_exit = mapped() - before
print(inside, rss_before_free - rss_kept, rss_kept - rss_after, after_exit)
"""


def _probe(kind):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PROBE, kind], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [int(x) for x in out.stdout.split()]


@needs_glibc
@pytest.mark.parametrize("kind", ["single", "nested"])
def test_large_blocks_come_from_the_heap_inside_and_from_mmap_after(kind):
    size = 64 * MB
    mapped_inside, released_inside, released_on_exit, mapped_after = _probe(kind)
    assert mapped_inside < size, "a 64 MB block was still mmapped inside the context"
    assert released_inside < size // 2, "the freed block was given back inside the context"
    assert released_on_exit >= size // 2, "the kept memory was not given back on exit"
    assert mapped_after >= size, "mmap was not restored after the context"


def test_disabled_does_nothing():
    size = 64 * MB
    with memory.reuse_freed_memory(False):
        before = _mallinfo().hblkhd if memory.available() else 0
        a = np.empty(size, dtype=np.uint8)
        if memory.available():
            assert _mallinfo().hblkhd - before >= size
        del a


def test_training_gives_the_same_parameters_with_and_without_it():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where models.py is
    from models import rnn

    from hf_symbolic import BatchDataset, hf_optimizer

    m = rnn(structural=True, n=12, T=5, seed=3)
    opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha)
    theta0 = opt.get_flat()
    X, Y = m.batch
    results = []
    for reuse in (True, False):
        opt.set_flat(theta0)
        grad_ds = BatchDataset([X, Y], 12, case_axis=[1, 0], seed=0)
        cg_ds = BatchDataset([X, Y], 7, case_axis=[1, 0], seed=1)
        opt.train(grad_ds, cg_ds, num_updates=3, reuse_memory=reuse)
        results.append(opt.get_flat())
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], theta0)
