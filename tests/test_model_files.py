"""A submitted model file is untrusted input, and must be the student's own honest work (issue 12).

Each class of problem has failing variants and honest variants that pass:

- the file is read as data and refused before anything is loaded (layers that load or run other
  files, custom classes, odd archive members), and its HDF5 weights may not reach outside it
  (external storage, external and soft links, virtual datasets): refused in the sandbox child;
- the model is opened, run and evaluated only in the sandbox, with time limits;
- it obeys the lab's rules, is a network the build function builds, and does not know the test set.

Models here are small and trained for seconds on a few thousand images: the whole graders run in
tests/test_graders.py (test_trained_on_test_set, test_cnn_saved, test_dense_saved, ...).
"""

import dataclasses
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import course_config
from coursekit import checks
from coursekit.checks import CheckFailed
from coursekit.model_files import read_model_file, rebuild_architecture, run_model_file
from coursekit.saved_model import (
    check_built_by,
    check_honest_accuracy,
    evaluate_saved_model,
    layer_signature,
)

LAB1, LAB2 = course_config.LAB1, course_config.LAB2
# Small data for the honesty checks: 3,000 training and 1,000 test images of the real data.
SMALL = dataclasses.replace(LAB1, saved_model_train_images=1000, saved_model_min_accuracy=0.5, model_timeout_s=120)


@pytest.fixture(scope="module")
def data():
    from coursekit.data import load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    return (x_train[:3000], y_train[:3000]), (x_test[:1000], y_test[:1000])


def dense_model(units=(64, 32, 32), softmax=True, noise=False):
    import keras
    from keras import layers

    inputs = keras.Input((28, 28))
    x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
    for count in units:
        x = layers.Dense(count, activation="relu")(x)
        if noise:
            x = layers.BatchNormalization()(layers.Dropout(0.1)(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax" if softmax else None)(x))


def trained(model, images, labels, epochs=3, from_logits=False):
    import keras

    keras.utils.set_random_seed(0)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    model.fit(images.astype("float32"), labels, epochs=epochs, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def honest_file(tmp_path_factory, data):
    (x_train, y_train), _ = data
    path = tmp_path_factory.mktemp("honest") / LAB1.model_file
    # Ten epochs: a model that has learnt its training images, as honest work has (three left it
    # underfitted, level on training and test images within the noise of 1,000 images).
    trained(dense_model(), x_train, y_train, epochs=10).save(path)
    return path


def rewrite(src, dst, config_change=None, weights_change=None, extra=None):
    """Copy a .keras file, changing its configuration and/or its HDF5 weights file."""
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if config_change:
        config = json.loads(members["config.json"])
        config_change(config)
        members["config.json"] = json.dumps(config).encode()
    if weights_change:
        h5 = dst.parent / "weights.h5"
        h5.write_bytes(members["model.weights.h5"])
        weights_change(h5)
        members["model.weights.h5"] = h5.read_bytes()
    members.update(extra or {})
    with zipfile.ZipFile(dst, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return dst


def set_last_layer(class_name, module="keras.layers", registered=None, config=None):
    def change(model_config):
        layer = model_config["config"]["layers"][-1]
        layer.update(class_name=class_name, module=module, registered_name=registered)
        layer["config"].update(config or {})

    return change


# Refused as data, before anything is loaded ----------------------------------------------------------

REFUSED_CONFIGS = {
    "TFSMLayer loading a SavedModel": (
        set_last_layer("TFSMLayer", config={"filepath": "/tmp/exported"}),
        "contains a TFSMLayer layer",
    ),
    "Lambda layer": (
        set_last_layer("Lambda", config={"function": {"class_name": "__lambda__"}}),
        "contains a Lambda layer",
    ),
    "custom layer class": (set_last_layer("Backdoor", module="evil.layers"), "not one of Keras's own classes"),
    "class from the os module": (set_last_layer("system", module="os"), "not one of Keras's own classes"),
    "registered custom object": (
        set_last_layer("Dense", registered="my_package>Dense"),
        "registered as a custom object",
    ),
    "lambda inside a layer's config": (
        lambda config: config["config"]["layers"][-1]["config"].update(
            activation={"class_name": "__lambda__", "config": {"code": "x"}}
        ),
        "__lambda__ is not one of Keras's own classes",
    ),
    "function from builtins": (
        lambda config: config["config"]["layers"][-1]["config"].update(
            activation={"module": "builtins", "class_name": "function", "config": "exec", "registered_name": "function"}
        ),
        "function is not one of Keras's own classes",
    ),
    "type spec from another module": (
        lambda config: config["config"]["layers"][-1]["config"].update(
            kernel_initializer={"class_name": "__typespec__", "module": "os", "spec_name": "system"}
        ),
        "not one of Keras's own classes",
    ),
    "nested Sequential with a Lambda": (
        lambda config: config["config"]["layers"].insert(
            1,
            {
                "module": "keras",
                "class_name": "Sequential",
                "config": {"layers": [{"module": "keras.layers", "class_name": "Lambda", "config": {}}]},
            },
        ),
        "contains a Lambda layer",
    ),
    "not a model at the top": (lambda config: config.update(class_name="Dense"), "does not describe a Keras model"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_CONFIGS))
def test_model_configuration_is_refused_before_loading(honest_file, tmp_path, case):
    change, phrase = REFUSED_CONFIGS[case]
    target = rewrite(honest_file, tmp_path / LAB1.model_file, config_change=change)
    with pytest.raises(CheckFailed, match="cannot be graded") as error:
        read_model_file(target)
    assert phrase in str(error.value)


REFUSED_ARCHIVES = {
    "an extra member": ({"assets/payload.py": b"import os"}, "holds files a saved Keras model does not have"),
    "a path out of the archive": ({"../../escape.txt": b"x"}, "holds files a saved Keras model does not have"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_ARCHIVES))
def test_archive_with_other_members_is_refused(honest_file, tmp_path, case):
    extra, phrase = REFUSED_ARCHIVES[case]
    with pytest.raises(CheckFailed, match=phrase):
        read_model_file(rewrite(honest_file, tmp_path / LAB1.model_file, extra=extra))


def test_a_model_file_that_is_a_link_is_refused(honest_file, tmp_path):
    link = tmp_path / LAB1.model_file
    link.symlink_to(honest_file)
    with pytest.raises(CheckFailed, match="missing"):
        read_model_file(link)


# Refused in the sandbox: HDF5 weights that reach outside the file -----------------------------------------


def first_dataset(h5_file):
    import h5py

    found = []
    h5_file.visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Dataset) else None)
    return found[0]


def external_storage(outside):
    def change(path):
        import h5py

        with h5py.File(path, "r+") as handle:
            name = first_dataset(handle)
            shape, dtype = handle[name].shape, handle[name].dtype
            del handle[name]
            size = int(np.prod(shape)) * dtype.itemsize
            handle.create_dataset(name, shape, dtype, external=[(str(outside), 0, size)])

    return change


def external_link(outside):
    def change(path):
        import h5py

        with h5py.File(path, "r+") as handle:
            name = first_dataset(handle)
            del handle[name]
            handle[name] = h5py.ExternalLink(str(outside), "/data")

    return change


def soft_link(path):
    import h5py

    with h5py.File(path, "r+") as handle:
        handle["shortcut"] = h5py.SoftLink("/" + first_dataset(handle))


def virtual_dataset(outside):
    def change(path):
        import h5py

        with h5py.File(path, "r+") as handle:
            name = first_dataset(handle)
            shape, dtype = handle[name].shape, handle[name].dtype
            del handle[name]
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            layout[...] = h5py.VirtualSource(str(outside), "data", shape=shape)
            handle.create_virtual_dataset(name, layout)

    return change


@pytest.fixture
def outside_file(tmp_path):
    """A file on the grading machine that the model's weights try to reach (like the reference model)."""
    import h5py

    path = tmp_path / "outside.h5"
    with h5py.File(path, "w") as handle:
        handle["data"] = np.ones((784, 64), dtype="float32")
    os.chmod(path, 0o644)
    os.chmod(tmp_path, 0o755)
    return path


def shape_bomb(outside):
    def change(path):
        import h5py

        with h5py.File(path, "r+") as handle:
            name = first_dataset(handle)
            del handle[name]  # declares 64 GB, stores almost nothing (chunked, never written)
            handle.create_dataset(name, shape=(2**17, 2**17), dtype="float32", chunks=(64, 64))

    return change


HDF5_CASES = {
    "a dataset declaring 64 GB": (shape_bomb, "declares"),
    "external storage": (external_storage, "stores"),
    "external link": (external_link, "ExternalLink"),
    "soft link": (lambda outside: soft_link, "SoftLink"),
    "virtual dataset": (virtual_dataset, "virtual dataset"),
}


@pytest.mark.parametrize("case", sorted(HDF5_CASES))
def test_weights_that_reach_outside_the_file_are_refused(honest_file, tmp_path, outside_file, data, case):
    make, phrase = HDF5_CASES[case]
    target = rewrite(honest_file, tmp_path / "submitted.keras", weights_change=make(outside_file))
    model_file = read_model_file(target)  # the configuration is fine: the weights are the problem
    _, (x_test, _) = data
    with pytest.raises(CheckFailed, match="could not be evaluated") as error:
        run_model_file(model_file, {"test": x_test[:10].astype("float32")}, timeout=120)
    assert phrase in str(error.value)


# Opened and run in the sandbox only ---------------------------------------------------------------------


def test_loading_happens_in_the_sandbox_not_in_the_graders_process(honest_file, data):
    """The grader's process never imports Keras's loader for a submitted file: it reads data only."""
    probe = (
        "import sys; import keras.saving\n"
        "calls = []\n"
        "keras.saving.load_model = lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(RuntimeError('loaded'))\n"
        "from coursekit.model_files import read_model_file, rebuild_architecture\n"
        f"model_file = read_model_file({str(honest_file)!r})\n"
        "print(rebuild_architecture(model_file).count_params(), len(calls))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "0"


def test_evaluation_in_the_sandbox_cannot_read_course_files(honest_file, data):
    from coursekit.isolation import isolation

    if not isolation().drops_privileges:
        pytest.skip("the sandbox cannot switch to its own user on this machine (see docs/threat_model.md)")
    assert os.stat(course_config.REFERENCE_DIR).st_mode & 0o007 == 0  # the sandbox's user cannot enter it


def test_a_model_too_slow_to_evaluate_fails_with_the_limit(honest_file, data):
    _, (x_test, _) = data
    with pytest.raises(CheckFailed, match="took longer than 1 s"):
        run_model_file(read_model_file(honest_file), {"test": x_test.astype("float32")}, timeout=1)


def test_a_model_with_the_wrong_outputs_says_so(tmp_path, data):
    (x_train, y_train), _ = data
    import keras
    from keras import layers

    inputs = keras.Input((28, 28))
    model = keras.Model(inputs, layers.Dense(5, activation="softmax")(layers.Flatten()(inputs)))
    model.save(tmp_path / LAB1.model_file)
    with pytest.raises(CheckFailed, match="should give 10 class scores per image"):
        evaluate_saved_model(tmp_path / LAB1.model_file, data, SMALL)


# Honest model files pass ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["with optimizer", "without optimizer", "logits"])
def test_honest_model_files_are_evaluated(tmp_path, data, variant):
    (x_train, y_train), _ = data
    path = tmp_path / LAB1.model_file
    model = trained(dense_model(softmax=variant != "logits"), x_train, y_train, from_logits=variant == "logits")
    if variant == "without optimizer":  # an uncompiled copy: the file holds no optimizer state
        import keras

        fresh = keras.models.clone_model(model)
        fresh.set_weights(model.get_weights())
        fresh.save(path)
    else:
        model.save(path)
    saved = evaluate_saved_model(path, data, SMALL)
    assert saved.test_accuracy > 0.7 and saved.train_accuracy > 0.7
    check_honest_accuracy(saved, SMALL)


def test_a_model_saved_by_another_keras_3_version_is_evaluated(data):
    path = course_config.ROOT / "tests" / "data" / "dense_saved_by_keras_3_8.keras"
    metadata = json.loads(zipfile.ZipFile(path).read("metadata.json"))
    assert metadata["keras_version"].startswith("3.8")
    _, (x_test, _) = data
    outcome = run_model_file(read_model_file(path), {"test": x_test[:100].astype("float32")}, timeout=120)
    assert outcome["predictions"]["test"].shape == (100, 10)


# The student's own honest work ---------------------------------------------------------------------------


def test_a_model_trained_on_the_test_set_loses_the_points(tmp_path, data):
    _, (x_test, y_test) = data
    path = tmp_path / LAB1.model_file
    trained(dense_model(), x_test, y_test, epochs=15).save(path)
    saved = evaluate_saved_model(path, data, SMALL)
    with pytest.raises(CheckFailed, match="more accurate on the test images"):
        check_honest_accuracy(saved, SMALL)


def lookup_table(x_test, y_test):
    """Dense layers that store the test images and their labels: a nearest-neighbour memory."""
    import keras
    from keras import layers

    templates = x_test.reshape(len(x_test), -1).astype("float32") / 255.0
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    inputs = keras.Input((28, 28))
    x = layers.UnitNormalization()(layers.Flatten()(layers.Rescaling(1 / 255)(inputs)))
    match = layers.Dense(len(x_test), use_bias=False)
    x = layers.Softmax()(layers.Rescaling(500.0)(match(x)))
    labels = layers.Dense(10, use_bias=False)
    model = keras.Model(inputs, labels(x))
    match.set_weights([templates.T])
    labels.set_weights([np.eye(10, dtype="float32")[y_test]])
    return model


def test_a_lookup_table_of_the_test_set_loses_the_points(tmp_path, data):
    _, (x_test, y_test) = data
    path = tmp_path / LAB1.model_file
    lookup_table(x_test, y_test).save(path)
    saved = evaluate_saved_model(path, data, SMALL)
    assert saved.test_accuracy == 1.0
    with pytest.raises(CheckFailed, match="more accurate on the test images"):
        check_honest_accuracy(saved, SMALL)


@pytest.mark.parametrize(
    "test_accuracy, train_accuracy, outcome",
    [
        (0.93, 0.96, "passes"),  # the usual gap of an honest model
        (0.93, 0.933, "flagged"),  # level: suggestive (trained on both?), points kept
        (0.94, 0.93, "flagged"),  # a little above: within the noise of 5,000 images, points kept
        (0.715, 0.69, "flagged"),  # a weak model: more noise, a wider margin (four standard errors)
        (0.95, 0.92, "fails"),  # well past the margin
        (0.957, 0.861, "fails"),  # trained on the test set
    ],
)
def test_test_accuracy_above_training_accuracy(test_accuracy, train_accuracy, outcome):
    from coursekit.saved_model import SavedModel

    saved = SavedModel(LAB1.model_file, "", None, test_accuracy, train_accuracy, 5000)
    no_bar = dataclasses.replace(LAB1, saved_model_min_accuracy=0.0)
    checks.INSTRUCTOR_FLAGS.clear()
    if outcome == "fails":
        with pytest.raises(CheckFailed, match="more accurate on the test images"):
            check_honest_accuracy(saved, no_bar)
    else:
        check_honest_accuracy(saved, no_bar)
        flagged = any("level with its accuracy" in flag for flag in checks.INSTRUCTOR_FLAGS)
        assert flagged == (outcome == "flagged")
    checks.INSTRUCTOR_FLAGS.clear()


def test_an_honest_model_is_not_flagged(honest_file, data):
    saved = evaluate_saved_model(honest_file, data, SMALL)
    checks.INSTRUCTOR_FLAGS.clear()
    check_honest_accuracy(saved, SMALL)
    assert saved.train_accuracy > saved.test_accuracy
    assert not checks.INSTRUCTOR_FLAGS


def cnn(filters=(8, 16), head="flatten", separable=False):
    import keras
    from keras import layers

    inputs = keras.Input((28, 28))
    x = layers.Rescaling(1 / 255)(layers.Reshape((28, 28, 1))(inputs))
    for count in filters:
        conv = layers.SeparableConv2D if separable else layers.Conv2D
        x = layers.MaxPooling2D()(layers.BatchNormalization()(conv(count, 3, padding="same", activation="relu")(x)))
        x = layers.Dropout(0.25)(x)
    x = layers.GlobalAveragePooling2D()(x) if head == "gap" else layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Dense(32, activation="relu")(x)))


def test_structure_ignores_sizes_block_counts_and_switchable_layers():
    assert layer_signature(cnn((8, 16))) == layer_signature(cnn((4, 8, 16, 32))) == ("Conv2D", "MaxPooling2D", "Dense")
    assert layer_signature(dense_model((64, 32, 32))) == layer_signature(dense_model((8, 8), noise=True))


@pytest.mark.parametrize(
    "saved_network, built_networks, matches",
    [
        ("cnn 3 blocks", ["cnn"], True),
        ("cnn without dropout", ["cnn"], True),
        ("cnn gap head", ["cnn"], False),
        ("separable cnn", ["cnn"], False),
        ("dense", ["cnn"], True),  # parts left out; the lab's rules (two convolutions) catch this one
        ("cnn", ["dense"], False),
        ("cnn gap head", ["cnn", "cnn gap head"], True),
    ],
)
def test_the_saved_model_must_be_a_network_the_build_function_builds(saved_network, built_networks, matches):
    import keras
    from keras import layers

    def network(name):
        if name == "cnn 3 blocks":
            return cnn((8, 16, 32))
        if name == "cnn without dropout":
            inputs = keras.Input((28, 28))
            x = layers.Reshape((28, 28, 1))(inputs)
            for count in (8, 16):
                x = layers.MaxPooling2D()(layers.Conv2D(count, 3, activation="relu")(x))
            return keras.Model(inputs, layers.Dense(10)(layers.Dense(32)(layers.Flatten()(x))))
        return {
            "cnn": cnn,
            "cnn gap head": lambda: cnn(head="gap"),
            "separable cnn": lambda: cnn(separable=True),
            "dense": dense_model,
        }[name]()

    from coursekit.saved_model import SavedModel

    saved = SavedModel(LAB2.model_file, "", network(saved_network))
    built = [network(name) for name in built_networks]
    if matches:
        check_built_by(saved, built, "build_cnn_model")
    else:
        with pytest.raises(CheckFailed, match="is not a network that your build_cnn_model builds"):
            check_built_by(saved, built, "build_cnn_model")


def test_the_architecture_rebuilt_from_a_file_has_no_trained_weights(honest_file):
    model_file = read_model_file(honest_file)
    rebuilt = rebuild_architecture(model_file)
    assert rebuilt.count_params() > 0 and model_file.sha256
