"""Task generators and data loaders for hf_symbolic examples, tests and benchmarks.

Numpy only.  Recurrent tasks return inputs time-major ``(T, n, n_in)`` and
targets ``(n, n_out)`` read at the last step (noiseless memorization:
``(5, n, 2)`` for the last 5 steps); image data is ``(cases, features)``.
Float arrays take a ``dtype`` argument whose default ``"floatX"`` means
PyTensor's ``config.floatX`` (float64 when PyTensor is not importable).
Every generator takes a ``seed`` (int, ``numpy.random.Generator``,
``SeedSequence`` or None); the same int gives identical arrays.

Modules
-------
memorization
    The 100-step memorization problem of the 2012 HF release.
pathological
    The seven pathological problems of Martens & Sutskever 2011 and the
    :data:`TASKS` registry.
curves
    A synthetic CURVES-like image set (our stand-in, not the original data).
fashion_mnist, idx
    Fashion-MNIST from Debian's ``dataset-fashion-mnist`` files; IDX reader
    and writer.
"""

from .curves import CurvesData, curves, curves_data, render_curves
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    FashionMNIST,
    load_fashion_mnist,
    load_idx_images,
    load_sample,
    sample_paths,
    write_sample,
)
from .idx import IDX_DTYPES, read_idx, write_idx
from .memorization import MEMORIZATION_TASK, MemorizationData, memorization, memorization_data, memorization_error
from .pathological import (
    ADDITION_TOLERANCE,
    MAX_WRONG_FRACTION,
    N_MEMORIZED_BITS,
    N_SYMBOLS_PERMUTATION,
    PATHOLOGICAL_TASKS,
    TASKS,
    addition,
    get_task,
    multiplication,
    noiseless_memorization,
    noiseless_memorization_success,
    random_permutation,
    temporal_order,
    temporal_order_3bit,
    xor,
)
from .task import SuccessResult, Task, binary_success, class_success, regression_success

__all__ = [
    "ADDITION_TOLERANCE",
    "CurvesData",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "FashionMNIST",
    "IDX_DTYPES",
    "MAX_WRONG_FRACTION",
    "MEMORIZATION_TASK",
    "MemorizationData",
    "N_MEMORIZED_BITS",
    "N_SYMBOLS_PERMUTATION",
    "PATHOLOGICAL_TASKS",
    "SuccessResult",
    "TASKS",
    "Task",
    "addition",
    "binary_success",
    "class_success",
    "curves",
    "curves_data",
    "get_task",
    "load_fashion_mnist",
    "load_idx_images",
    "load_sample",
    "memorization",
    "memorization_data",
    "memorization_error",
    "multiplication",
    "noiseless_memorization",
    "noiseless_memorization_success",
    "random_permutation",
    "read_idx",
    "regression_success",
    "render_curves",
    "sample_paths",
    "temporal_order",
    "temporal_order_3bit",
    "write_idx",
    "write_sample",
    "xor",
]
