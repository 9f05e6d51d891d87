"""Fashion-MNIST without internet: the cache is filled from local files, or a clear error."""

import subprocess
import sys

import numpy as np
import pytest

import course_config
from coursekit import data


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    return tmp_path / "keras-home"


def test_cache_is_filled_from_debian_files(empty_keras_home):
    folder = data.ensure_keras_cache(course_config.FASHION_MNIST_DIRS)
    assert folder == empty_keras_home / "datasets" / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(data.FILES)


def test_loader_reads_the_original_files(empty_keras_home):
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(course_config.FASHION_MNIST_DIRS)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.max() == 9
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_keras_own_loader_uses_the_filled_cache(empty_keras_home):
    data.ensure_keras_cache(course_config.FASHION_MNIST_DIRS)
    code = "import keras; (x, y), (xt, yt) = keras.datasets.fashion_mnist.load_data(); print(x.shape, xt.shape)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(60000, 28, 28) (10000, 28, 28)" in done.stdout


def test_without_files_the_error_says_how_to_fix_it(empty_keras_home, tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as raised:
        data.ensure_keras_cache([tmp_path / "nowhere"])
    message = str(raised.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(empty_keras_home / "datasets" / "fashion-mnist") in message
    assert "urllib" not in message and "Traceback" not in message


def test_data_command_fails_cleanly_without_files_or_network(empty_keras_home, tmp_path, monkeypatch):
    code = (
        "import course_config, pathlib; course_config.FASHION_MNIST_DIRS[:] = [pathlib.Path('/nonexistent')]; "
        "from coursekit.cli import main; raise SystemExit(main(['data']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Fashion-MNIST was not found" in done.stderr
    assert "Traceback" not in done.stderr


# VGG16's ImageNet weights (Lab 3) -----------------------------------------------------------------


def _local_weights():
    found = [path for path in course_config.VGG16_WEIGHTS_SOURCES if path.is_file()]
    if not found and not data.vgg16_weights_cache_file().is_file():
        pytest.skip("no local copy of VGG16's ImageNet weights on this machine (course_config.VGG16_WEIGHTS_SOURCES)")
    return found[0] if found else data.vgg16_weights_cache_file()


def test_vgg16_weights_are_copied_into_keras_cache_and_configured(tmp_path, monkeypatch):
    source = _local_weights()  # found before KERAS_HOME moves
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.delenv(course_config.VGG16_WEIGHTS_ENV, raising=False)
    assert data.configure_vgg16_weights() == ""  # nothing local yet: the notebooks fall back to the download
    copy = data.ensure_vgg16_weights([source])
    assert copy == tmp_path / "keras-home" / "models" / course_config.VGG16_WEIGHTS_FILE_NAME
    assert data.configure_vgg16_weights() == str(copy)
    monkeypatch.setenv(course_config.VGG16_WEIGHTS_ENV, "/my/own/weights.h5")
    assert data.configure_vgg16_weights() == "/my/own/weights.h5"  # a user's own setting is kept


def test_vgg16_weights_without_a_good_file_say_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    forged = tmp_path / course_config.VGG16_WEIGHTS_FILE_NAME
    forged.write_bytes(b"not the weights")
    with pytest.raises(data.WeightsNotFoundError) as raised:
        data.ensure_vgg16_weights([tmp_path / "nowhere.h5", forged])
    message = str(raised.value)
    assert "VGG16_WEIGHTS" in message and "make data" in message and str(forged) in message
    assert not data.vgg16_weights_cache_file().exists()  # a file with the wrong checksum is never copied
