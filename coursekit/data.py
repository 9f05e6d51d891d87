"""Fashion-MNIST without internet.

Notebooks call the plain ``keras.datasets.fashion_mnist.load_data()``, which reads
``$KERAS_HOME/datasets/fashion-mnist/`` (default ``~/.keras``) and downloads only
what is missing there. On a machine without internet this module fills that cache
from local copies of the four original files (Debian's ``dataset-fashion-mnist``
package puts them in ``/usr/share/datasets/fashion-mnist/``), so the same notebook
works offline and on Colab.

The graders read the files themselves (``load_fashion_mnist``): they never depend
on a download, nor on anything a student's code could have changed.
"""

import gzip
import os
import shutil
from pathlib import Path

import numpy as np

from coursekit.atomic_files import write_atomically

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


class DatasetNotFoundError(FileNotFoundError):
    """Fashion-MNIST is neither in Keras's cache nor in any local source folder."""


def keras_home():
    """Keras's own folder: ``$KERAS_HOME``, default ``~/.keras``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def keras_cache_dir():
    """Folder where ``keras.datasets.fashion_mnist.load_data()`` looks for the files."""
    return keras_home() / "datasets" / "fashion-mnist"


def _missing(folder):
    return [name for name in FILES if not (Path(folder) / name).is_file()]


def _not_found_message(cache, sources):
    searched = "\n".join(f"  - {path}" for path in [cache, *sources])
    return (
        "Fashion-MNIST was not found and cannot be downloaded here. Looked in:\n"
        f"{searched}\n"
        "Fix it in one of these ways:\n"
        "  - on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist, then run `make data`;\n"
        f"  - copy the four files ({', '.join(FILES)}) into {cache};\n"
        "  - or run once on a machine with internet, where Keras downloads them itself."
    )


def ensure_keras_cache(sources=None, allow_download=False):
    """Make sure Keras's cache holds the four Fashion-MNIST files; return the cache folder.

    Files already in the cache are kept. Missing ones are copied from the first
    source folder that has all four; failing that, and if ``allow_download``,
    Keras downloads them.

    Raises
    ------
    DatasetNotFoundError
        If the cache is incomplete and no source folder has the files.
    """
    if sources is None:
        from course_config import FASHION_MNIST_DIRS as sources
    cache = keras_cache_dir()
    if not _missing(cache):
        return cache
    for source in sources:
        if not _missing(source):
            cache.mkdir(parents=True, exist_ok=True)
            for name in _missing(cache):
                shutil.copyfile(Path(source) / name, cache / name)
            return cache
    if allow_download and _keras_download():
        return cache
    raise DatasetNotFoundError(_not_found_message(cache, list(sources)))


def _keras_download():
    """Let Keras fetch the files into its cache; False when there is no network."""
    try:
        import keras

        keras.datasets.fashion_mnist.load_data()
        return not _missing(keras_cache_dir())
    except Exception:
        return False


def _read_idx(path):
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    offset = 16 if "images" in Path(path).name else 8
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    return array.reshape(-1, 28, 28) if offset == 16 else array


def load_fashion_mnist(sources=None):
    """Return ``(x_train, y_train), (x_test, y_test)`` as uint8 arrays, like Keras's loader.

    Reads the cached files directly, never the network.
    """
    folder = ensure_keras_cache(sources)
    x_train, y_train, x_test, y_test = (_read_idx(folder / name) for name in FILES)
    return (x_train, y_train), (x_test, y_test)


# VGG16 ImageNet weights (Lab 3) ---------------------------------------------------------------


class WeightsNotFoundError(FileNotFoundError):
    """VGG16's ImageNet weights are neither configured nor in any known local place."""


def vgg16_weights_cache_file():
    """Where ``make data`` keeps the local copy of VGG16's weights: next to Keras's own downloads."""
    import course_config

    return keras_home() / "models" / course_config.VGG16_WEIGHTS_FILE_NAME


def _sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_not_found_message(searched):
    import course_config

    listed = "\n".join(f"  - {path}" for path in searched)
    return (
        "VGG16's ImageNet weights were not found and cannot be downloaded here. Looked in:\n"
        f"{listed}\n"
        "Fix it in one of these ways:\n"
        f"  - put {course_config.VGG16_WEIGHTS_FILE_NAME} (the convolutional base, a Keras 3 weights file) "
        f"into one of those places, or set {course_config.VGG16_WEIGHTS_ENV}=/path/to/that/file, then run "
        "`make data`;\n"
        "  - or run on a machine with internet, where keras.applications.VGG16(weights='imagenet') "
        "downloads them itself."
    )


def ensure_vgg16_weights(sources=None):
    """Copy VGG16's ImageNet weights into Keras's cache folder (checked by sha256); return that file.

    A file already in the cache is kept when its checksum is right. ``sources`` defaults
    to the file named by ``$VGG16_WEIGHTS`` (when it is a path) and
    ``course_config.VGG16_WEIGHTS_SOURCES``.

    Raises
    ------
    WeightsNotFoundError
        If neither the cache nor any source holds the right file.
    """
    import course_config

    cache = vgg16_weights_cache_file()
    if sources is None:
        configured = os.environ.get(course_config.VGG16_WEIGHTS_ENV, "")
        sources = ([Path(configured)] if configured not in ("", "imagenet") else []) + list(
            course_config.VGG16_WEIGHTS_SOURCES
        )
    if cache.is_file() and _sha256(cache) == course_config.VGG16_WEIGHTS_SHA256:
        return cache
    for source in map(Path, sources):
        if source.is_file() and _sha256(source) == course_config.VGG16_WEIGHTS_SHA256:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(cache, lambda partial, source=source: shutil.copyfile(source, partial))
            return cache
    raise WeightsNotFoundError(_weights_not_found_message([cache, *sources]))


def configure_vgg16_weights():
    """Point ``$VGG16_WEIGHTS`` at the local copy of the weights, for the notebooks and graders the kit runs.

    Keeps a value the user has set. Returns the value in force, or "" when there is
    no local copy (then the notebooks fall back to Keras's download).
    """
    import course_config

    name = course_config.VGG16_WEIGHTS_ENV
    if os.environ.get(name):
        return os.environ[name]
    cache = vgg16_weights_cache_file()
    if cache.is_file():
        os.environ[name] = str(cache)
        return os.environ[name]
    return ""
