"""Checks on their own: honest variants a student would write pass, plausible wrong ones and tricks fail.

The grader functions are called here on results of implementations run in this process (the
sandbox's figure description included), which is much cheaper than a full grading: the full
gradings of coursekit.submissions (tests/test_graders.py) cover the same checks end to end.
"""

import importlib.util
import math
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import course_config  # noqa: E402
from coursekit._sandbox_child import _describe_figure  # noqa: E402
from coursekit.checks import CheckFailed, check_history_panel, random_history  # noqa: E402
from coursekit.sandbox import CallResult  # noqa: E402


def grader(name):
    """A hidden grader module, imported in this process (its hidden cases drawn for this session)."""
    path = course_config.GRADER_TESTS_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_grader_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lab1():
    return grader("test_lab1_dense")


@pytest.fixture(scope="module")
def lab2():
    return grader("test_lab2_cnn")


def run_calls(module, implementations):
    """{call name: CallResult} of the grader's calls of ``implementations`` (function name -> callable)."""
    results = {}
    for call in module.CALLS:
        if call.function not in implementations:
            continue
        try:
            value = implementations[call.function](*call.args, **call.kwargs)
            if call.returns == "figure":
                value = _describe_figure(value)
                plt.close("all")
            elif call.returns == "arrays":
                value = tuple(np.asarray(item) for item in value)
            results[call.name] = CallResult(call.name, True, value=value)
        except Exception as error:  # noqa: BLE001
            results[call.name] = CallResult(call.name, False, error=f"raised {type(error).__name__}: {error}")
    return results


def passes(check, *args):
    try:
        check(*args)
    except CheckFailed:
        return False
    return True


# split_validation -----------------------------------------------------------------------------


def split_sklearn(images, labels, val_fraction=0.1, seed=42):
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=val_fraction, stratify=labels, random_state=seed
    )
    return x_train, y_train, x_val, y_val


def split_numpy_per_class(images, labels, val_fraction=0.1, seed=42):
    rng = np.random.default_rng(seed)
    val = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == label))[: round(val_fraction * np.sum(labels == label))]
            for label in np.unique(labels)
        ]
    )
    train = np.setdiff1d(np.arange(len(labels)), val)
    return images[train], labels[train], images[val], labels[val]


def split_stratified_shuffle(images, labels, val_fraction=0.1, seed=42):
    from sklearn.model_selection import StratifiedShuffleSplit

    train, val = next(StratifiedShuffleSplit(1, test_size=val_fraction, random_state=seed).split(images, labels))
    return images[train], labels[train], images[val], labels[val]


def split_first(images, labels, val_fraction=0.1, seed=42):
    n = int(round(len(images) * val_fraction))
    return images[n:], labels[n:], images[:n], labels[:n]


def split_last(images, labels, val_fraction=0.1, seed=42):
    cut = len(images) - int(round(len(images) * val_fraction))
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


def split_every_kth(images, labels, val_fraction=0.1, seed=42):
    val = np.arange(len(images))[:: int(round(1 / val_fraction))]
    train = np.setdiff1d(np.arange(len(images)), val)
    return images[train], labels[train], images[val], labels[val]


def split_random_not_stratified(images, labels, val_fraction=0.1, seed=42):
    order = np.random.default_rng(seed).permutation(len(images))
    n = int(round(len(images) * val_fraction))
    return images[order[n:]], labels[order[n:]], images[order[:n]], labels[order[:n]]


def split_seed_ignored(images, labels, val_fraction=0.1, seed=42):
    return split_sklearn(images, labels, val_fraction, seed=0)


def split_unseeded(images, labels, val_fraction=0.1, seed=42):
    return split_sklearn(images, labels, val_fraction, seed=None)


def split_labels_detached(images, labels, val_fraction=0.1, seed=42):
    x_train, y_train, x_val, y_val = split_sklearn(images, labels, val_fraction, seed)
    return x_train, np.sort(y_train), x_val, y_val


SPLIT_CHECKS = ("test_split_validation", "test_split_validation_follows_its_seed")


@pytest.mark.parametrize("split", [split_sklearn, split_numpy_per_class, split_stratified_shuffle])
def test_honest_splits_pass(lab1, split):
    student = run_calls(lab1, {"split_validation": split})
    for name in SPLIT_CHECKS:
        getattr(lab1, name)(student)


@pytest.mark.parametrize(
    "split",
    [
        split_first,
        split_last,
        split_every_kth,
        split_random_not_stratified,
        split_seed_ignored,
        split_unseeded,
        split_labels_detached,
    ],
)
def test_wrong_splits_fail(lab1, split):
    student = run_calls(lab1, {"split_validation": split})
    assert not all(passes(getattr(lab1, name), student) for name in SPLIT_CHECKS)


def test_hidden_labels_do_not_make_an_unshuffled_split_look_stratified(lab1):
    n_val = lab1.SPLIT_N_VAL
    for block in (lab1.SPLIT_LABELS[:n_val], lab1.SPLIT_LABELS[-n_val:]):
        assert np.bincount(block, minlength=10).tolist() != [n_val // 10] * 10


# Convolution arithmetic ------------------------------------------------------------------------


def conv_size_honest(size, kernel_size, stride=1, padding="valid"):
    if padding == "same":
        return math.ceil(size / stride)
    return math.floor((size - kernel_size) / stride) + 1


def conv_size_with_pad(size, kernel_size, stride=1, padding="valid"):
    pad = (kernel_size - 1) // 2 if padding == "same" else 0
    if padding == "same":
        return (size + stride - 1) // stride
    return (size + 2 * pad - kernel_size) // stride + 1


def conv_size_ignores_stride(size, kernel_size, stride=1, padding="valid"):
    return size if padding == "same" else size - kernel_size + 1


def conv_size_rounds(size, kernel_size, stride=1, padding="valid"):
    return round(size / stride) if padding == "same" else round((size - kernel_size) / stride) + 1


def conv_size_same_floor(size, kernel_size, stride=1, padding="valid"):
    return size // stride if padding == "same" else (size - kernel_size) // stride + 1


# What a student copies from an old feedback message: the answers of fixed hidden cases.
OLD_TABLE = {
    (28, 3, 1, "valid"): 26,
    (28, 5, 2, "valid"): 12,
    (28, 3, 1, "same"): 28,
    (28, 3, 2, "same"): 14,
    (7, 2, 2, "valid"): 3,
    (13, 4, 3, "same"): 5,
}


def conv_size_from_table(size, kernel_size, stride=1, padding="valid"):
    return OLD_TABLE.get((size, kernel_size, stride, padding), 0)


def conv_params_honest(kernel_size, in_channels, filters, use_bias=True):
    return kernel_size**2 * in_channels * filters + (filters if use_bias else 0)


def conv_params_bias_always(kernel_size, in_channels, filters, use_bias=True):
    return kernel_size**2 * in_channels * filters + filters


def conv_params_no_channels(kernel_size, in_channels, filters, use_bias=True):
    return kernel_size**2 * filters + (filters if use_bias else 0)


def _conv_arithmetic_passes(module, sizes, params):
    student = run_calls(module, {"conv_output_size": sizes, "conv_params": params})
    return all(passes(module.test_conv_output_size, student, index) for index in range(len(module.CONV_SIZES))) and all(
        passes(module.test_conv_params, student, index) for index in range(len(module.CONV_PARAMS))
    )


@pytest.mark.parametrize("sizes", [conv_size_honest, conv_size_with_pad])
def test_honest_conv_arithmetic_passes(lab2, sizes):
    assert _conv_arithmetic_passes(lab2, sizes, conv_params_honest)


@pytest.mark.parametrize(
    "sizes", [conv_size_ignores_stride, conv_size_rounds, conv_size_same_floor, conv_size_from_table]
)
def test_wrong_conv_output_sizes_fail(lab2, sizes):
    assert not _conv_arithmetic_passes(lab2, sizes, conv_params_honest)


@pytest.mark.parametrize("params", [conv_params_bias_always, conv_params_no_channels])
def test_wrong_conv_params_fail(lab2, params):
    assert not _conv_arithmetic_passes(lab2, conv_size_honest, params)


def test_conv_messages_give_no_hidden_answers(lab2):
    student = run_calls(lab2, {"conv_output_size": conv_size_from_table, "conv_params": conv_params_no_channels})
    failures = 0
    for index, (size, kernel, stride, padding) in enumerate(lab2.CONV_SIZES):
        if passes(lab2.test_conv_output_size, student, index):
            continue  # the table's answer of this size happens to be right (e.g. 0 is never, 28 may be)
        failures += 1
        with pytest.raises(CheckFailed) as failure:
            lab2.test_conv_output_size(student, index)
        answer = lab2.expected_conv_output_size(size, kernel, stride, padding)
        # The rule's own numbers (the stride it names, the "+ 1" of the formula) are no answers.
        rule_text = str(failure.value).replace(f"stride {stride}", "stride").replace("+ 1 pixels", "pixels")
        assert f"{size}-pixel" not in str(failure.value) and f" {answer} " not in f" {rule_text} "
    assert failures
    for index in range(len(lab2.CONV_PARAMS)):
        if passes(lab2.test_conv_params, student, index):
            continue  # on a single input channel, forgetting the channels gives the right count
        with pytest.raises(CheckFailed) as failure:
            lab2.test_conv_params(student, index)
        kernel, channels, filters, use_bias = lab2.CONV_PARAMS[index]
        assert f"{conv_params_honest(kernel, channels, filters, use_bias):,}" not in str(failure.value)
        assert str(conv_params_honest(kernel, channels, filters, use_bias)) not in str(failure.value)


# Hidden inputs drawn afresh for each grading --------------------------------------------------


def _hidden_cases_of_a_fresh_grading(replay=None):
    code = (
        "import importlib.util,sys,json;sys.path.insert(0,'.');"
        "spec=importlib.util.spec_from_file_location('g','grader_tests/test_lab2_cnn.py');"
        "m=importlib.util.module_from_spec(spec);spec.loader.exec_module(m);"
        "print(json.dumps([m.CONV_SIZES,m.CONV_PARAMS,m.HISTORIES[0]['loss']]))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("COURSEKIT_GRADING_SEED", None)
    if replay is not None:
        env["COURSEKIT_GRADING_SEED"] = str(replay)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=course_config.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_hidden_cases_change_with_each_grading_and_can_be_replayed():
    assert _hidden_cases_of_a_fresh_grading() != _hidden_cases_of_a_fresh_grading()
    assert _hidden_cases_of_a_fresh_grading(1234) == _hidden_cases_of_a_fresh_grading(1234)


# The history plot -------------------------------------------------------------------------------


def history_reference(history):
    history = getattr(history, "history", history)
    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, panels = plt.subplots(1, 2)
    for ax, key in zip(panels, ("loss", "accuracy")):
        ax.plot(epochs, history[key], label="training")
        ax.plot(epochs, history["val_" + key], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    return figure


def history_pyplot_state(history):
    plt.figure(figsize=(10, 4))
    for position, key in ((1, "loss"), (2, "accuracy")):
        plt.subplot(1, 2, position)
        plt.plot(history[key], label=f"train {key}")
        plt.plot(history[f"val_{key}"], label=f"val {key}")
        plt.xlabel("Epoch")
        plt.ylabel(key.title())
        plt.legend()
    return plt.gcf()


def history_stacked_with_grid(history):
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True)
    for ax, key in ((bottom, "accuracy"), (top, "loss")):  # accuracy drawn first, in the lower panel
        ax.plot(range(len(history[key])), history[key], "o-", label="train")
        ax.plot(range(len(history[key])), history[f"val_{key}"], "s--", label="val")
        ax.set(xlabel="epoch", ylabel=key)
        ax.grid(True)
        ax.legend(loc="best")
    return figure


FIXED = {
    "loss": [1.9, 1.2, 0.9, 0.7, 0.6, 0.55],
    "val_loss": [2.1, 1.4, 1.1, 1.0, 0.98, 1.02],
    "accuracy": [0.41, 0.58, 0.69, 0.75, 0.79, 0.81],
    "val_accuracy": [0.37, 0.52, 0.63, 0.66, 0.68, 0.67],
}


def history_ignores_argument(history):
    return history_reference(FIXED)


def history_one_panel_and_decoy(history):
    figure, (ax, decoy) = plt.subplots(1, 2)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        ax.plot(history[key], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    ax.legend()
    decoy.plot([], [], label="a")
    decoy.plot([], [], label="b")
    decoy.set_xlabel("epoch")
    decoy.set_ylabel("accuracy")
    decoy.legend()
    return figure


def history_training_only(history):
    figure, panels = plt.subplots(1, 2)
    for ax, key in zip(panels, ("loss", "accuracy")):
        ax.plot(history[key], label="training")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    return figure


def history_swapped_curves(history):
    figure, panels = plt.subplots(1, 2)
    for ax, (first, second) in zip(panels, (("loss", "val_accuracy"), ("accuracy", "val_loss"))):
        ax.plot(history[first], label=first)
        ax.plot(history[second], label=second)
        ax.set_xlabel("epoch")
        ax.set_ylabel("value")
        ax.legend()
    return figure


def history_without_legend(history):
    figure = history_reference(history)
    for ax in figure.axes:
        ax.get_legend().remove()
    return figure


def history_first_epochs_only(history):
    return history_reference({key: values[:3] for key, values in history.items()})


def _plot_passes(module, plot):
    student = run_calls(module, {"plot_history": plot})
    return all(
        passes(check_history_panel, student[f"plot_history_{index}"].value, history, panel, panel, f"val_{panel}")
        for index, history in enumerate(module.HISTORIES)
        for panel in ("loss", "accuracy")
        if student[f"plot_history_{index}"].ok
    )


@pytest.mark.parametrize("plot", [history_reference, history_pyplot_state, history_stacked_with_grid])
def test_honest_history_plots_pass(lab1, plot):
    assert _plot_passes(lab1, plot)


@pytest.mark.parametrize(
    "plot",
    [
        history_ignores_argument,
        history_one_panel_and_decoy,
        history_training_only,
        history_swapped_curves,
        history_without_legend,
        history_first_epochs_only,
    ],
)
def test_wrong_history_plots_fail(lab1, plot):
    assert not _plot_passes(lab1, plot)


def test_graders_draw_several_different_histories(lab1, lab2):
    for module in (lab1, lab2):
        lengths = {len(history["loss"]) for history in module.HISTORIES}
        assert len(module.HISTORIES) >= 2 and module.HISTORIES[0] != module.HISTORIES[1]
    assert random_history(np.random.default_rng(0)) != random_history(np.random.default_rng(1))
    assert lengths


# The figures in the outputs ----------------------------------------------------------------------


def _png(width, height):
    import base64
    import io

    buffer = io.BytesIO()
    figure = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _notebook(tmp_path, cells):
    import nbformat

    notebook = nbformat.v4.new_notebook()
    for source, images in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": image}) for image in images]
        notebook.cells.append(cell)
    path = tmp_path / "figures.ipynb"
    nbformat.write(notebook, path)
    return path


REQUIRED = {
    "the history": r"plot_history\(",
    "the confusion matrix": r"(?i)confusion",
    "the comparison": r"(?i)comparison",
}


def test_figures_each_drawn_by_its_own_code_pass(tmp_path):
    from coursekit.checks import check_figures_in_outputs

    image = _png(400, 300)
    path = _notebook(
        tmp_path,
        [
            ("plot_history(history)", [image]),
            ("ConfusionMatrixDisplay.from_predictions(y, p)\nplt.title('Confusion matrix')", [image]),
            ("comparison = {'a': 1}\nplt.bar(comparison.keys(), comparison.values())", [image]),
        ],
    )
    check_figures_in_outputs(path, REQUIRED)
    # Two figures drawn in one cell, two images: each has its own.
    path = _notebook(
        tmp_path,
        [
            ("plot_history(h)\nplt.show()\nconfusion_matrix(y, p)\nplt.show()", [image, image]),
            ("plt.bar(comparison.keys(), comparison.values())", [image]),
        ],
    )
    check_figures_in_outputs(path, REQUIRED)


@pytest.mark.parametrize(
    "cells",
    [
        # Comments naming every figure next to one small plot.
        [("# plot_history(history)\n# confusion matrix\n# comparison chart\nplt.subplots(1, 1)", ["BIG"])],
        # A string naming them all, one image.
        [("print('plot_history( confusion comparison')\nplt.plot([1])", ["BIG"])],
        # Every figure named in code, but one image for all of them.
        [("plot_history(h); confusion_matrix(y, p); comparison = 1", ["BIG"])],
        # Images of 1x1 pixels.
        [("plot_history(h)", ["TINY"]), ("confusion_matrix(y, p)", ["TINY"]), ("comparison = 1", ["TINY"])],
    ],
)
def test_figures_named_but_not_drawn_fail(tmp_path, cells):
    from coursekit.checks import check_figures_in_outputs

    images = {"BIG": _png(400, 300), "TINY": _png(1, 1)}
    path = _notebook(tmp_path, [(source, [images[name] for name in names]) for source, names in cells])
    with pytest.raises(CheckFailed, match="lack these figures"):
        check_figures_in_outputs(path, REQUIRED)


# Lab 2: augmentation -------------------------------------------------------------------------------


def augmentation_shifts_and_flips():
    from keras import layers

    return keras_sequential(
        [
            layers.RandomFlip("horizontal"),
            layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", interpolation="nearest"),
        ]
    )


def augmentation_zoom_and_contrast():
    from keras import layers

    return keras_sequential([layers.RandomTranslation(0.1, 0.1), layers.RandomZoom(0.1), layers.RandomContrast(0.1)])


def augmentation_noise_only():
    from keras import layers

    return keras_sequential([layers.GaussianNoise(0.1)])


def augmentation_erasing_and_blur():
    from keras import layers

    return keras_sequential([layers.RandomErasing(value_range=(0, 1)), layers.RandomGaussianBlur(value_range=(0, 1))])


def augmentation_identity():
    from keras import layers

    return keras_sequential([layers.Identity()])


def augmentation_always_on():
    from keras import layers

    return keras_sequential([layers.Rescaling(0.5)])  # not random, and it changes test images too


def augmentation_cropping():
    from keras import layers

    return keras_sequential([layers.RandomFlip("horizontal"), layers.RandomCrop(24, 24)])  # 28x28 becomes 24x24


def keras_sequential(steps):
    import keras

    return keras.Sequential([keras.Input(shape=(28, 28, 1)), *steps])


def _augmentation_passes(module, build):
    student = {"build_augmentation": CallResult("build_augmentation", True, value={"json": build().to_json()})}
    return passes(module.test_augmentation_layers, student)


@pytest.mark.parametrize(
    "build",
    [
        augmentation_shifts_and_flips,
        augmentation_zoom_and_contrast,
        augmentation_noise_only,
        augmentation_erasing_and_blur,
    ],
)
def test_honest_augmentations_pass(lab2, build):
    assert _augmentation_passes(lab2, build)


@pytest.mark.parametrize("build", [augmentation_identity, augmentation_always_on, augmentation_cropping])
def test_wrong_augmentations_fail(lab2, build):
    assert not _augmentation_passes(lab2, build)
