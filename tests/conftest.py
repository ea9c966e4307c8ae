"""Suite-wide settings, and the helpers every test folder imports (``models``, the worker scripts).

Backend. Unless ``HF_SYMBOLIC_MODE`` is already set, the optimizers the
suite builds with ``mode=None`` run in PyTensor's FAST_COMPILE mode (Python
thunks, few rewrites, less the one that is wrong: ``WRONG_REWRITES`` in
``hf_symbolic/model/checks.py``). Most tests check the graphs hf_symbolic
builds and what the solver makes of their numbers, not the backend; under the
library's default, the C VM, each small test model compiled its own C modules,
which a fresh machine has in no cache (788 modules, about 870 s). Scans whose
own ``mode`` is unset still compile their inner graphs in C (PyTensor's rule).
The C backend, its BLAS, its vector math and hf_symbolic's rewrites are tested
where they are the point, with :func:`models.production_mode` (``tests/graph``,
the parallel-compile test, an autoencoder example run), and
``tests/graph/test_backends.py`` compares the C VM, Numba and JAX with
FAST_COMPILE. Subprocesses started by the tests inherit the setting.

Threads. The README's test command runs two test processes (``-n 2``), one
per core of the 2-core machines the suite is timed on, so each process (and
each subprocess it starts) gets one BLAS and OpenMP thread unless the
environment says otherwise: two threads per process would put four on two
cores, and on the suite's small products a second OpenBLAS thread was many
times slower even alone (README, "Backends"). Set here, before anything in
the test process loads numpy or OpenBLAS.
"""
import os
import sys

os.environ.setdefault("HF_SYMBOLIC_MODE", "FAST_COMPILE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
