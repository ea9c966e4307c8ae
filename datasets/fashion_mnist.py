"""Loader of Fashion-MNIST from local IDX files (no download at run time).

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence) has MNIST's layout:
60,000 training and 10,000 test 28x28 grey images in 10 classes.  On Debian
and Ubuntu the package ``dataset-fashion-mnist`` installs the four gzipped
IDX files under ``/usr/share/datasets/fashion-mnist/``::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz

Uncompressed copies with the same names minus ``.gz`` are accepted too.

The package also ships a five-image IDX pair of its own (simple geometric
shapes, not Fashion-MNIST) for tests and examples; see :func:`load_sample`
and :func:`write_sample`.
"""

import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DataNotFoundError, DatasetError
from ._common import FLOATX, resolve_dtype
from .idx import read_idx, write_idx

__all__ = [
    "load_fashion_mnist",
    "load_idx_images",
    "FashionMNIST",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_CLASSES",
    "load_sample",
    "write_sample",
    "sample_paths",
]

logger = logging.getLogger(__name__)

#: Where Debian's ``dataset-fashion-mnist`` puts the files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: Environment variable naming another directory to search first.
FASHION_MNIST_ENV = "HF_SYMBOLIC_FASHION_MNIST"
#: split -> (images file, labels file), without the optional ``.gz``.
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Class names in label order.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_INSTALL_HINT = (
    "install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass path=<directory "
    f"holding the IDX files>, or set the environment variable {FASHION_MNIST_ENV}"
)

_DATA_DIR = Path(__file__).resolve().parent
_SAMPLE_FILES = ("sample-images-idx3-ubyte.gz", "sample-labels-idx1-ubyte.gz")


class FashionMNIST(NamedTuple):
    """Images and labels of one split.

    Attributes
    ----------
    images : ndarray, shape (n, 784)
        Pixel values scaled to ``[0, 1]`` (byte / 255), rows flattened row-major.
    labels : ndarray of int64, shape (n,)
        Class indices in ``0..9``.
    """

    images: np.ndarray
    labels: np.ndarray


def load_idx_images(images_path, labels_path, dtype=FLOATX, n_classes=None):
    """Load an IDX image file and its IDX label file as flat floats and int64 labels.

    Parameters
    ----------
    images_path, labels_path : str or os.PathLike
        IDX files (plain or gzip): ``uint8`` images ``(n, rows, cols)`` and
        ``uint8`` labels ``(n,)``.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of the images.
    n_classes : int, optional
        If given, every label must be in ``[0, n_classes)``.

    Returns
    -------
    FashionMNIST
        ``images (n, rows*cols)`` in ``[0, 1]`` and ``labels (n,)`` int64.

    Raises
    ------
    hf_symbolic.errors.DatasetError
        Corrupt files, wrong element types or ranks, mismatched counts, or
        labels out of range.

    Examples
    --------
    >>> images_path, labels_path = sample_paths()
    >>> d = load_idx_images(images_path, labels_path, dtype="float64")
    >>> d.images.shape, d.labels.dtype
    ((5, 784), dtype('int64'))
    """
    dtype = resolve_dtype(dtype)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetError(
            f"image file {os.fspath(images_path)!r} holds a {images.ndim}-d {images.dtype} array; "
            "expected 3-d uint8 (n, rows, cols)"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(
            f"label file {os.fspath(labels_path)!r} holds a {labels.ndim}-d {labels.dtype} array; "
            "expected 1-d uint8 (n,)"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images.shape[0]} images in {os.fspath(images_path)!r} but {labels.shape[0]} labels in "
            f"{os.fspath(labels_path)!r}; expected equal counts"
        )
    if n_classes is not None and labels.size and int(labels.max()) >= n_classes:
        raise DatasetError(
            f"label file {os.fspath(labels_path)!r} has label {int(labels.max())}; expected labels in "
            f"[0, {n_classes})"
        )
    flat = images.reshape(images.shape[0], -1).astype(dtype)
    flat /= dtype.type(255)
    return FashionMNIST(flat, labels.astype(np.int64))


def _candidate_dirs(path):
    if path is not None:
        return [Path(path)]
    dirs = []
    env = os.environ.get(FASHION_MNIST_ENV)
    if env:
        dirs.append(Path(env))
    dirs.append(Path(FASHION_MNIST_DIR))
    return dirs


def _find(directory, stem):
    """``directory/stem.gz`` or ``directory/stem``, whichever exists (gz first), else None."""
    for name in (stem + ".gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(split="train", path=None, dtype=FLOATX):
    """Load one split of Fashion-MNIST from locally installed IDX files.

    Parameters
    ----------
    split : {'train', 'test'}, default 'train'
        ``'train'`` (60,000 images) or ``'test'`` (10,000 images, the
        ``t10k`` files).
    path : str or os.PathLike, optional
        Directory holding the files.  By default the directory named by the
        environment variable ``HF_SYMBOLIC_FASHION_MNIST`` (if set) is searched,
        then ``/usr/share/datasets/fashion-mnist``.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of the images.

    Returns
    -------
    FashionMNIST
        ``images (n, 784)`` in ``[0, 1]``, ``labels (n,)`` int64 in ``0..9``.

    Raises
    ------
    hf_symbolic.errors.DataNotFoundError
        Neither the ``.gz`` nor the plain files exist in any searched
        directory; the message lists the paths looked for and how to install
        the data.
    hf_symbolic.errors.DatasetError
        Unknown ``split`` or corrupt files.

    Examples
    --------
    >>> import os
    >>> if os.path.isdir(FASHION_MNIST_DIR):
    ...     d = load_fashion_mnist("test")
    ...     assert d.images.shape == (10000, 784)
    """
    if split not in FASHION_MNIST_FILES:
        raise DatasetError(f"split={split!r}; expected one of {sorted(FASHION_MNIST_FILES)}")
    image_stem, label_stem = FASHION_MNIST_FILES[split]
    looked = []
    for directory in _candidate_dirs(path):
        images_path = _find(directory, image_stem)
        labels_path = _find(directory, label_stem)
        if images_path is not None and labels_path is not None:
            logger.info("loading Fashion-MNIST %s split from %s", split, directory)
            return load_idx_images(images_path, labels_path, dtype=dtype, n_classes=len(FASHION_MNIST_CLASSES))
        for stem in (image_stem, label_stem):
            looked += [str(directory / (stem + ".gz")), str(directory / stem)]
    raise DataNotFoundError(
        f"Fashion-MNIST {split!r} files not found; looked for: {', '.join(looked)}; {_INSTALL_HINT}"
    )


# ---------------------------------------------------------------------------
# Shipped sample


def _sample_arrays():
    """Five 28x28 uint8 shape images (disc, ring, bar, cross, triangle) and labels 0..4."""
    r, c = np.mgrid[0:28, 0:28] + 0.5
    dist = np.hypot(r - 14, c - 14)
    disc = dist <= 9
    ring = (dist <= 11) & (dist >= 7)
    bar = (np.abs(c - 14) <= 3) & (np.abs(r - 14) <= 12)
    cross = (np.abs(r - c) <= 2) | (np.abs(r + c - 28) <= 2)
    triangle = (r >= 5) & (r <= 23) & (np.abs(c - 14) <= (r - 5) / 2)
    masks = np.stack([disc, ring, bar, cross, triangle])
    # Grey level varies with the row so that pixel values are not all 0/255.
    shade = np.linspace(128, 255, 28)[None, :, None]
    images = np.rint(masks * shade).astype(np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    return images, labels


def write_sample(directory):
    """Write the five-image sample IDX pair into ``directory``.

    The images are simple geometric shapes (disc, ring, bar, cross, triangle;
    labels 0-4), not Fashion-MNIST images; they are what the package ships
    as ``sample-images-idx3-ubyte.gz`` / ``sample-labels-idx1-ubyte.gz``.

    Parameters
    ----------
    directory : str or os.PathLike
        Existing directory.

    Returns
    -------
    tuple of pathlib.Path
        ``(images_path, labels_path)``.

    Examples
    --------
    >>> import tempfile
    >>> images_path, labels_path = write_sample(tempfile.mkdtemp())
    >>> images_path.name
    'sample-images-idx3-ubyte.gz'
    """
    directory = Path(directory)
    images, labels = _sample_arrays()
    images_path, labels_path = directory / _SAMPLE_FILES[0], directory / _SAMPLE_FILES[1]
    write_idx(images_path, images)
    write_idx(labels_path, labels)
    return images_path, labels_path


def sample_paths():
    """Paths of the sample IDX pair shipped inside the package.

    Examples
    --------
    >>> [p.name for p in sample_paths()]
    ['sample-images-idx3-ubyte.gz', 'sample-labels-idx1-ubyte.gz']
    """
    return _DATA_DIR / _SAMPLE_FILES[0], _DATA_DIR / _SAMPLE_FILES[1]


def load_sample(dtype=FLOATX):
    """Load the shipped five-image sample (shapes, not Fashion-MNIST) like a Fashion-MNIST split.

    Returns
    -------
    FashionMNIST
        ``images (5, 784)`` in ``[0, 1]``, ``labels`` ``[0, 1, 2, 3, 4]``.

    Examples
    --------
    >>> load_sample(dtype="float32").labels.tolist()
    [0, 1, 2, 3, 4]
    """
    images_path, labels_path = sample_paths()
    return load_idx_images(images_path, labels_path, dtype=dtype)


if __name__ == "__main__":  # regenerate the shipped sample files
    logging.basicConfig(level=logging.INFO)
    for written in write_sample(_DATA_DIR):
        logger.info("wrote %s", written)
