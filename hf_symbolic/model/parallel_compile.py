"""Compile the functions :meth:`hf_optimizer.train` needs, building their C modules in two processes.

On a cold compile cache nearly all of the first compile is g++: PyTensor's
C backend builds one module per distinct operation (77 for the 100-unit tanh
RNN of ``examples/example_RNN.py``: 0.3 s to 2 s each, about 0.25 s of which
is parsing the Python and numpy headers), one after the other, holding a
lock on the compile directory. Measured there with cProfile (2 cores, empty
cache): 44 s in all, 36.5 s of it waiting for g++, about 4 s in PyTensor's
graph rewrites and 3.6 s in the partial evaluation of the cached curvature
product; data generation takes 0.02 s.

:func:`compile_for_training` forks one process that compiles the gradient
and cost functions (one of two processes compiling into the same cache
directory would wait for the other's lock: the child compiles into a private
directory with its own lock), while this process compiles the curvature
product into the shared cache. The two share what they build: before
compiling a module, each looks up its library name (the hash of its source)
in the list of modules the other one has finished, and takes that module
instead (this process moves it into the shared cache, under its lock; the
child loads this process's copy). When this process is done, it waits for
the child, moves the child's remaining modules into the shared cache
(skipping any it built too) and compiles the gradient and cost itself, which
now only rewrites their graphs and loads the modules. When the cache turns
out to be warm (this process built no module) the child is stopped at once.
A failure of the child only means its functions are compiled here as usual:
the compiled functions are PyTensor's own, the same C code wherever it was
built.

Measured on the example (2 shared cores, other jobs running, load 4-5; empty
cache each time, two runs each): one process 94.2 and 95.1 s (38.4 and 38.9 s
of CPU), two processes 82.0 and 82.9 s (44.9 and 45.3 s of CPU: the modules
both started at the same moment are built twice).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
import warnings

__all__ = ["TITLES", "compile_for_training", "training_functions"]

log = logging.getLogger(__name__)

#: The names of the compiled PyTensor functions, as reported.
TITLES = {
    "gradient": "hf_gradient",
    "cost": "hf_cost",
    "gauss_newton": "hf_gauss_newton",
    "gauss_newton_cached": "hf_forward_cache + hf_gauss_newton_cached",
    "hessian": "hf_hessian",
}


def training_functions(opt):
    """Names of the functions ``train`` compiles for ``opt``: gradient, cost, curvature product."""
    return list(opt.functions_needed())


def _compile_one(opt, name):
    if name == "gauss_newton_cached":
        opt._cached_gv_functions()
    else:
        opt.compile((name,))


def _timed(opt, name, report, note=""):
    t0 = time.perf_counter()
    _compile_one(opt, name)
    dt = time.perf_counter() - t0
    log.debug("compiled %s in %.2f s%s", TITLES[name], dt, note)
    if report is not None:
        report(TITLES[name], dt, note)


def _can_fork(opt):
    import multiprocessing

    from hf_symbolic.graph.backend import _runs_c

    return "fork" in multiprocessing.get_all_start_methods() and _runs_c(opt._mode)


def compile_for_training(opt, processes=2, report=None, names=None):
    """Compile every function ``opt.train`` uses, in two processes that share the C modules they build.

    Parameters
    ----------
    opt : hf_optimizer
    processes : int
        2 forks one compiling process (when the backend compiles C code and
        the platform can fork); 1 compiles everything here, one after the other.
    report : callable, optional
        ``report(title, seconds, note)`` after each function is compiled.
    names : list of str, optional
        The functions (default :func:`training_functions`; SGD needs only
        ``["gradient", "cost"]``): the first two are compiled by the second
        process, the others here.

    Returns
    -------
    opt
    """
    names = list(names or training_functions(opt))
    if processes < 2 or len(names) < 2 or not _can_fork(opt):
        for name in names:
            _timed(opt, name, report)
        return opt
    # compiled outside the module cache on first use: build them before forking
    import pytensor.link.c.cutils  # noqa: F401
    import pytensor.link.c.lazylinker_c  # noqa: F401
    from pytensor.compile.compilelock import lock_ctx
    from pytensor.link.c.basic import get_module_cache

    t0 = time.perf_counter()
    cache = get_module_cache()  # reads the index of every module in the cache
    if report is not None and time.perf_counter() - t0 > 0.5:
        report("read PyTensor's compile cache index", time.perf_counter() - t0,
               f" ({len(cache.module_hash_to_key_data)} modules)")
    shared = cache.dirname
    private = tempfile.mkdtemp(prefix="hf_symbolic_compile_", dir=os.path.dirname(os.path.abspath(shared)))
    here, there = (names[2:], names[:2]) if len(names) > 2 else (names[1:], names[:1])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os._exit(_child(opt, there, private))

    def adopt(path):  # a module the child built: move it into the shared cache, then PyTensor finds it there
        with lock_ctx():
            _move_modules(private, shared, only=os.path.basename(os.path.dirname(path)))
        cache.refresh(cleanup=False)

    sharing = _Sharing(cache, private, "parent", adopt)
    try:
        before = len(cache.module_hash_to_key_data)
        with sharing:
            for name in here:
                _timed(opt, name, report)
        if len(cache.module_hash_to_key_data) == before:  # every module was in the cache already
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pid = None
            for name in there:
                _timed(opt, name, report)
            return opt
        t0 = time.perf_counter()
        status = os.waitpid(pid, 0)[1]
        pid = None
        waited = time.perf_counter() - t0
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            with lock_ctx():
                _move_modules(private, shared)
            cache.refresh(cleanup=False)
            note = (f" (built by a second process at the same time, which shared C modules with this one: "
                    f"{sharing.adopted} of its modules used here; waited {waited:.1f} s for it)")
        else:
            log.warning("the compiling process failed (status %d); compiling its functions here", status)
            note = ""
        for name in there:
            _timed(opt, name, report, note)
            note = ""
        return opt
    finally:
        if pid is not None:  # an exception above: do not leave the child running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        shutil.rmtree(private, ignore_errors=True)


class _Sharing:
    """Replaces ``cache.module_from_key`` while active: a module the other process built is taken, not rebuilt.

    Each process appends ``<library name> <path>`` to its own list in
    ``private`` for every module it gets; before compiling one, it looks for
    the module's library name (the hash of its source code) in the other's list.
    """

    def __init__(self, cache, private, me, adopt):
        self.cache, self.adopt, self.adopted = cache, adopt, 0
        self.mine = os.path.join(private, f".modules_{me}")
        self.theirs = os.path.join(private, ".modules_" + ("child" if me == "parent" else "parent"))

    def __enter__(self):
        self.original = self.cache.module_from_key
        self.cache.module_from_key = self
        return self

    def __exit__(self, *exc):
        del self.cache.module_from_key  # the class's method again
        return False

    def _lookup(self, name):
        try:
            with open(self.theirs) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        for line in lines:
            lib, _, path = line.partition(" ")
            if lib == name and os.path.exists(path):
                return path
        return None

    def __call__(self, key, lnk):
        name = None
        if hasattr(lnk, "get_dynamic_module"):
            lnk.get_src_code()  # sets code_hash, the module's library name
            name = getattr(lnk.get_dynamic_module(), "code_hash", None)
        module = self.cache._get_from_key(key)
        if module is None and name is not None:
            path = self._lookup(name)
            if path is not None:
                module = self.adopt(path)
                self.adopted += 1
        if module is None:
            module = self.original(key, lnk)
        if name is not None:
            with open(self.mine, "a") as f:
                f.write(f"{name} {module.__file__}\n")
        return module


def _child(opt, names, private):  # pragma: no cover - runs in the forked child
    """Compile ``names`` with PyTensor's module cache and lock in ``private``; the exit status."""
    try:
        import functools

        import pytensor.link.c.basic as basic
        import pytensor.link.c.cmodule as cmodule
        from pytensor.compile import compilelock

        warnings.simplefilter("ignore")  # "module cache instance with different dirname"
        basic.lock_ctx = cmodule.lock_ctx = functools.partial(compilelock.lock_ctx, private)
        cmodule._module_cache = cmodule.ModuleCache(private)
        def load(path):  # the same library may be loaded already, from its earlier place in `private`
            import sys

            d, lib = os.path.split(path)
            return sys.modules.get(f"{os.path.basename(d)}.{lib.split('.')[0]}") or cmodule.dlimport(path)

        with _Sharing(cmodule._module_cache, private, "child", load):
            for name in names:
                _compile_one(opt, name)
        return 0
    except BaseException:  # noqa: BLE001 - the parent compiles it again
        log.debug("compiling process failed", exc_info=True)
        return 1


def _move_modules(private, shared, only=None):
    """Move the finished modules of ``private`` (or only its directory ``only``) into ``shared``.

    The caller holds the lock of ``shared``. A module directory holds
    ``key.pkl``, ``mod.cpp`` and ``m<hash>.so``; one whose library name is
    already in ``shared`` is skipped (built by both processes). Directory
    names are kept: PyTensor recognizes a moved ``tmp*`` directory by its name.
    """
    have = set()
    for d in os.listdir(shared):
        path = os.path.join(shared, d)
        if d.startswith("tmp") and os.path.isdir(path):
            have.update(f for f in os.listdir(path) if f.endswith(".so"))
    moved = 0
    for d in sorted(os.listdir(private)) if only is None else [only]:
        src = os.path.join(private, d)
        if not (d.startswith("tmp") and os.path.isdir(src)):
            continue
        files = os.listdir(src)
        libs = [f for f in files if f.endswith(".so")]
        dst = os.path.join(shared, d)
        if "key.pkl" not in files or len(libs) != 1 or libs[0] in have or os.path.exists(dst):
            continue
        shutil.move(src, dst)
        moved += 1
    return moved
