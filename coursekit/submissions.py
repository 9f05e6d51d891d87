"""Demo and test submissions: the reference solution and flawed variants of it.

Each flawed submission is the executed reference notebook with one deliberate
mistake, written as an edit (replace or delete one function, break one cell,
clear the outputs, or submit a weak model). Defining them as edits keeps them in
step with the source notebook. ``fails`` names the grade ids that the submission
must fail, and no others: the tests assert exactly that, and ``make demo`` shows it.
"""

import ast
import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import dedent
from typing import Callable, Optional

import course_config


# Notebook edits ------------------------------------------------------------------------------


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _find_function(notebook, name):
    """(cell, first line index, end line index) of the top-level ``def name`` in a code cell."""
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(_source(cell))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
                return cell, first, node.end_lineno
    raise LookupError(f"no code cell defines {name}()")


def replace_function(notebook, name, new_source):
    """Replace the definition of ``name`` with ``new_source``."""
    cell, first, end = _find_function(notebook, name)
    lines = _source(cell).splitlines()
    cell["source"] = "\n".join(lines[:first] + dedent(new_source).strip("\n").splitlines() + lines[end:])


def remove_function(notebook, name):
    replace_function(notebook, name, "")


def break_function_syntax(notebook, name):
    """Drop the colon of ``def name(...):``, a typical syntax error."""
    cell, first, _ = _find_function(notebook, name)
    lines = _source(cell).splitlines()
    for index in range(first, len(lines)):
        if lines[index].lstrip().startswith("def ") and lines[index].rstrip().endswith(":"):
            lines[index] = lines[index].rstrip()[:-1]
            break
    cell["source"] = "\n".join(lines)


def clear_cell_outputs(notebook, marker):
    """Clear the outputs of the code cell whose source contains ``marker`` (a figure never drawn)."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and marker in _source(cell):
            cell["outputs"], cell["execution_count"] = [], None
            return
    raise LookupError(f"no code cell contains {marker!r}")


def clear_outputs(notebook):
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None


# The flawed functions --------------------------------------------------------------------------

DENSE_WITHOUT_DROPOUT = '''
def build_dense_model(hidden_units=(512, 256, 128), activation="relu", dropout_rate=0.3, **options):
    """A dense network that forgot its dropout."""
    model = keras.Sequential([keras.Input(shape=(28, 28)), layers.Rescaling(1 / 255), layers.Flatten()])
    for units in hidden_units:
        model.add(layers.Dense(units, activation=activation))
    model.add(layers.Dense(10, activation="softmax"))
    return model
'''

DENSE_WITH_CONVOLUTION = '''
def build_dense_model(hidden_units=(512, 256, 128), activation="relu", dropout_rate=0.3, **options):
    """A "dense" network that sneaks in a convolution."""
    inputs = keras.Input(shape=(28, 28))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Reshape((28, 28, 1))(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    x = layers.Flatten()(x)
    for units in hidden_units:
        x = layers.Dense(units, activation=activation)(x)
        x = layers.Dropout(dropout_rate)(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
'''

DENSE_THAT_CANNOT_LEARN = '''
def build_dense_model(hidden_units=(512, 256, 128), activation="relu", dropout_rate=0.3, **options):
    """All hidden weights start at zero: ReLU units stay dead and no gradient flows."""
    model = keras.Sequential([keras.Input(shape=(28, 28)), layers.Rescaling(1 / 255), layers.Flatten()])
    for units in hidden_units:
        model.add(layers.Dense(units, activation=activation, kernel_initializer="zeros"))
        model.add(layers.Dropout(dropout_rate))
    model.add(layers.Dense(10, activation="softmax", kernel_initializer="zeros"))
    return model
'''

HISTORY_PLOT_TRAINING_ONLY = '''
def plot_history(history):
    """Draws the training curves only."""
    history = getattr(history, "history", history)
    epochs = range(1, len(history["loss"]) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, key in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(epochs, history[key], label="training")
        axes.set_title(key.capitalize())
        axes.set_xlabel("epoch")
        axes.set_ylabel(key)
        axes.legend()
    return figure
'''

DENSE_IGNORING_HIDDEN_UNITS = '''
def build_dense_model(hidden_units=(512, 256, 128), activation="relu", dropout_rate=0.3, **options):
    """Always the same layers, whatever hidden_units says."""
    model = keras.Sequential([keras.Input(shape=(28, 28)), layers.Rescaling(1 / 255), layers.Flatten()])
    for units in (512, 256, 128):
        model.add(layers.Dense(units, activation=activation))
        model.add(layers.Dropout(dropout_rate))
    model.add(layers.Dense(10, activation="softmax"))
    return model
'''

DENSE_TOO_SHALLOW = '''
def build_dense_model(hidden_units=(256, 128), activation="relu", dropout_rate=0.3, **options):
    """Two hidden layers by default, one short of the brief."""
    model = keras.Sequential([keras.Input(shape=(28, 28)), layers.Rescaling(1 / 255), layers.Flatten()])
    for units in hidden_units:
        model.add(layers.Dense(units, activation=activation))
        model.add(layers.Dropout(dropout_rate))
    model.add(layers.Dense(10, activation="softmax"))
    return model
'''

DENSE_ON_FLAT_INPUT = '''
def build_dense_model(hidden_units=(512, 256, 128), activation="relu", dropout_rate=0.3, **options):
    """Expects images already flattened to 784 values."""
    model = keras.Sequential([keras.Input(shape=(784,)), layers.Rescaling(1 / 255)])
    for units in hidden_units:
        model.add(layers.Dense(units, activation=activation))
        model.add(layers.Dropout(dropout_rate))
    model.add(layers.Dense(10, activation="softmax"))
    return model
'''

HISTORY_PLOT_WITHOUT_AXIS_LABELS = '''
def plot_history(history):
    """Both curves and a legend, but unlabelled axes."""
    history = getattr(history, "history", history)
    figure, axes_pair = plt.subplots(1, 2, figsize=(11, 4))
    for axes, key in zip(axes_pair, ("loss", "accuracy")):
        axes.plot(history[key], label="training")
        axes.plot(history["val_" + key], label="validation")
        axes.set_title(key)
        axes.legend()
    return figure
'''

SCALING_BY_256 = '''
def scale_images(images):
    """Off by one, and float64."""
    return images / 256
'''

SPLIT_WITHOUT_SHUFFLING = '''
def split_validation(images, labels, val_fraction=0.1, seed=42):
    """Takes the last images as validation data."""
    cut = len(images) - int(round(len(images) * val_fraction))
    return images[:cut], labels[:cut], images[cut:], labels[cut:]
'''

LEAKY_RELU = '''
def relu(x):
    """Leaky, which is not what was asked."""
    return np.where(x > 0, x, 0.01 * x)
'''


def figures_named_in_comments(notebook):
    """Keep no figure but one small plot, in a new cell whose comments name every required figure."""
    image = None
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if "image/png" in (output.get("data") or {}):
                image = image or output
            else:
                kept.append(output)
        cell["outputs"] = kept
    notebook["cells"].append(
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [copy.deepcopy(image)],
            "source": (
                "# Figures: imshow grid of samples, activation derivative plot, plot_history(history),\n"
                "# confusion matrix, overfitting comparison, augmentation(images), plot_misclassified(...),\n"
                "# comparison chart\nfigure, ax = plt.subplots(1, 1, figsize=(1, 1))"
            ),
        }
    )


HISTORY_PLOT_OF_A_FIXED_HISTORY = """
def plot_history(history):
    \"\"\"Draws the history the grader used to pass, whatever it is given.\"\"\"
    history = {"loss": [1.9, 1.2, 0.9, 0.7, 0.6, 0.55], "val_loss": [2.1, 1.4, 1.1, 1.0, 0.98, 1.02],
               "accuracy": [0.41, 0.58, 0.69, 0.75, 0.79, 0.81], "val_accuracy": [0.37, 0.52, 0.63, 0.66, 0.68, 0.67]}
    figure, panels = plt.subplots(1, 2, figsize=(11, 4))
    for axes, key in zip(panels, ("loss", "accuracy")):
        axes.plot(history[key], label="training")
        axes.plot(history["val_" + key], label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(key)
        axes.legend()
    return figure
"""

SPLIT_TAKING_THE_FIRST_IMAGES = """
def split_validation(images, labels, val_fraction=0.1, seed=42):
    \"\"\"The first images as validation data: no shuffle, the seed ignored.\"\"\"
    count = int(round(len(images) * val_fraction))
    return images[count:], labels[count:], images[:count], labels[:count]
"""

HISTORY_PLOT_ONE_PANEL_AND_DECOY = """
def plot_history(history):
    \"\"\"All four curves in one panel, and an empty labelled decoy panel next to it.\"\"\"
    history = getattr(history, "history", history)
    figure, (axes, decoy) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        axes.plot(history[key], label=key)
    for panel, name in ((axes, "value"), (decoy, "accuracy")):
        panel.plot([], [], label="training")
        panel.plot([], [], label="validation")
        panel.set_xlabel("epoch")
        panel.set_ylabel(name)
        panel.legend()
    return figure
"""

# The answers that old feedback messages listed for the fixed hidden cases, returned from a table.
CONV_ARITHMETIC_FROM_A_TABLE = """
def conv_output_size(size, kernel_size, stride=1, padding="valid"):
    \"\"\"Looks the answer up in the table the feedback once printed.\"\"\"
    table = {(28, 3, 1, "valid"): 26, (28, 5, 2, "valid"): 12, (28, 3, 1, "same"): 28,
             (28, 3, 2, "same"): 14, (7, 2, 2, "valid"): 3, (13, 4, 3, "same"): 5}
    return table.get((size, kernel_size, stride, padding), 1)


def conv_params(kernel_size, in_channels, filters, use_bias=True):
    \"\"\"Looks the answer up in the table the feedback once printed.\"\"\"
    table = {(3, 1, 32, True): 320, (3, 32, 64, True): 18_496, (5, 16, 8, False): 3_200}
    return table.get((kernel_size, in_channels, filters, use_bias), 1)
"""

# Honest work written differently from the reference: it must pass every check.
SPLIT_WITH_NUMPY_PER_CLASS = """
def split_validation(images, labels, val_fraction=0.1, seed=42):
    \"\"\"Per class, a seeded random share of the images goes to validation.\"\"\"
    rng = np.random.default_rng(seed)
    val_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        val_parts.append(rng.permutation(members)[:int(round(len(members) * val_fraction))])
    val = np.sort(np.concatenate(val_parts))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return images[train], labels[train], images[val], labels[val]
"""

HISTORY_PLOT_PYPLOT_STYLE = """
def plot_history(history):
    \"\"\"pyplot's state machine, epochs from 0, panels one above the other.\"\"\"
    if hasattr(history, "history"):
        history = history.history
    plt.figure(figsize=(6, 8))
    for position, metric in enumerate(["loss", "accuracy"], start=1):
        plt.subplot(2, 1, position)
        plt.plot(history[metric], "o-", label="train " + metric)
        plt.plot(history["val_" + metric], "s--", label="val " + metric)
        plt.xlabel("Epoch")
        plt.ylabel(metric.title())
        plt.grid(True)
        plt.legend(loc="best")
    plt.tight_layout()
    return plt.gcf()
"""

CNN_WITH_DEFAULT_BATCH_NORM = """
def build_cnn_model(filters=(32, 64), dense_units=256, dropout_rate=0.25, dense_dropout_rate=0.5,
                    augment=True):
    \"\"\"The reference network with Keras's default BatchNormalization() (momentum 0.99), Sequential.\"\"\"
    model = keras.Sequential([keras.Input(shape=(28, 28)), layers.Reshape((28, 28, 1)), layers.Rescaling(1 / 255)])
    if augment:
        model.add(build_augmentation())
    for count in filters:
        for _ in range(2):
            model.add(layers.Conv2D(count, 3, padding="same", use_bias=False))
            model.add(layers.BatchNormalization())
            model.add(layers.Activation("relu"))
        model.add(layers.MaxPooling2D())
        model.add(layers.Dropout(dropout_rate))
    model.add(layers.Flatten())
    model.add(layers.Dense(dense_units, use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.Activation("relu"))
    model.add(layers.Dropout(dense_dropout_rate))
    model.add(layers.Dense(10, activation="softmax"))
    return model
"""

CONV_ARITHMETIC_WITH_MATH = """
def conv_output_size(size, kernel_size, stride=1, padding="valid"):
    \"\"\"With the padding written out, as in the lecture.\"\"\"
    import math
    if padding == "same":
        return math.ceil(size / stride)
    return math.floor((size - kernel_size) / stride) + 1


def conv_params(kernel_size, in_channels, filters, use_bias=True):
    weights = kernel_size * kernel_size * in_channels * filters
    return int(weights + filters) if use_bias else int(weights)
"""


def _several(*edits):
    def edit(notebook):
        for one in edits:
            one(notebook)

    return edit


@dataclass(frozen=True)
class DemoSubmission:
    """One demo or test submission.

    Attributes
    ----------
    student : str
        nbgrader student id.
    summary : str
        What is wrong with it, for people.
    fails : frozenset
        Grade ids it must fail; all others it must pass.
    edit : callable, optional
        Changes the reference notebook (a dict) in place.
    weak_model : bool
        Submit a briefly trained model instead of the reference model.
    model_edit : callable, optional
        Changes the reference model (loaded with Keras) in place; the changed model is submitted.
    make_model : callable, optional
        ``make_model(path)`` writes the model file that is submitted instead of the reference model.
    in_demo : bool
        Shown by ``make demo`` (all are used by the tests).
    """

    student: str
    summary: str
    fails: frozenset = field(default_factory=frozenset)
    edit: Optional[Callable] = None
    weak_model: bool = False
    model_edit: Optional[Callable] = None
    make_model: Optional[Callable] = None
    in_demo: bool = True


LAB1_SUBMISSIONS = (
    DemoSubmission("demo_reference", "the reference solution"),
    DemoSubmission(
        "demo_no_dropout",
        "build_dense_model has no dropout",
        frozenset({"test_architecture"}),
        lambda nb: replace_function(nb, "build_dense_model", DENSE_WITHOUT_DROPOUT),
    ),
    DemoSubmission(
        "demo_conv_layer",
        "a Conv2D layer in the dense lab",
        frozenset({"test_architecture"}),
        lambda nb: replace_function(nb, "build_dense_model", DENSE_WITH_CONVOLUTION),
    ),
    DemoSubmission(
        "demo_train_only_plot",
        "plot_history draws only the training curves",
        frozenset({"test_history_plot"}),
        lambda nb: replace_function(nb, "plot_history", HISTORY_PLOT_TRAINING_ONLY),
    ),
    DemoSubmission(
        "demo_syntax_error",
        "a syntax error in the softmax cell",
        frozenset({"test_softmax"}),
        lambda nb: break_function_syntax(nb, "softmax"),
    ),
    DemoSubmission(
        "demo_missing_function",
        "standardize was deleted",
        frozenset({"test_standardize"}),
        lambda nb: remove_function(nb, "standardize"),
    ),
    DemoSubmission(
        "demo_low_accuracy",
        "the saved model was trained for one short epoch",
        frozenset({"test_saved_model"}),
        weak_model=True,
    ),
    DemoSubmission(
        "demo_cannot_learn",
        "zero-initialised ReLU layers that cannot learn",
        frozenset({"test_retraining"}),
        lambda nb: replace_function(nb, "build_dense_model", DENSE_THAT_CANNOT_LEARN),
    ),
    DemoSubmission(
        "test_function_flaws",
        "scale_images divides by 256 and returns float64; split_validation "
        "takes the last images; relu is leaky; plot_history leaves the axes unlabelled; submitted "
        "without running (no figures in the outputs)",
        frozenset(
            {"test_scale_images", "test_split_validation", "test_activations", "test_history_plot", "test_figures"}
        ),
        _several(
            lambda nb: replace_function(nb, "scale_images", SCALING_BY_256),
            lambda nb: replace_function(nb, "split_validation", SPLIT_WITHOUT_SHUFFLING),
            lambda nb: replace_function(nb, "relu", LEAKY_RELU),
            lambda nb: replace_function(nb, "plot_history", HISTORY_PLOT_WITHOUT_AXIS_LABELS),
            clear_outputs,
        ),
        in_demo=False,
    ),
    DemoSubmission(
        "test_ignores_hidden_units",
        "build_dense_model ignores its hidden_units argument",
        frozenset({"test_architecture"}),
        lambda nb: replace_function(nb, "build_dense_model", DENSE_IGNORING_HIDDEN_UNITS),
        in_demo=False,
    ),
    DemoSubmission(
        "test_too_shallow",
        "two hidden layers by default",
        frozenset({"test_architecture"}),
        lambda nb: replace_function(nb, "build_dense_model", DENSE_TOO_SHALLOW),
        in_demo=False,
    ),
    DemoSubmission(
        "test_flat_input",
        "the model expects flattened 784-value inputs",
        frozenset({"test_architecture", "test_retraining"}),
        lambda nb: replace_function(nb, "build_dense_model", DENSE_ON_FLAT_INPUT),
        in_demo=False,
    ),
    DemoSubmission(
        "test_trained_on_test_set",
        "the saved model was trained on the 10,000 test images",
        frozenset({"test_saved_model"}),
        make_model=lambda path: train_on_test_set(path),
        in_demo=False,
    ),
    DemoSubmission(
        "test_cnn_saved",
        "the saved model is Lab 2's convolutional network",
        frozenset({"test_saved_model"}),
        make_model=lambda path: copy_reference_model(course_config.LAB2, path),
        in_demo=False,
    ),
    DemoSubmission(
        "test_gamed_checks",
        "plot_history draws a fixed history whatever it is given; split_validation "
        "takes the first images, ignoring the seed; the figures are named in comments next to one "
        "small plot",
        frozenset({"test_history_plot", "test_split_validation", "test_figures"}),
        _several(
            lambda nb: replace_function(nb, "plot_history", HISTORY_PLOT_OF_A_FIXED_HISTORY),
            lambda nb: replace_function(nb, "split_validation", SPLIT_TAKING_THE_FIRST_IMAGES),
            figures_named_in_comments,
        ),
        in_demo=False,
    ),
    DemoSubmission(
        "test_honest_variants",
        "honest work written differently: a NumPy per-class split, a pyplot-style history plot with the panels stacked",
        frozenset(),
        _several(
            lambda nb: replace_function(nb, "split_validation", SPLIT_WITH_NUMPY_PER_CLASS),
            lambda nb: replace_function(nb, "plot_history", HISTORY_PLOT_PYPLOT_STYLE),
        ),
        in_demo=False,
    ),
)


# Saved models that are not the student's honest work -------------------------------------------------


def copy_reference_model(settings, path):
    """Submit another lab's reference model (a network of the wrong kind for this lab)."""
    shutil.copyfile(reference_files(settings)[1], path)


def train_on_test_set(path, settings=course_config.LAB1, epochs=20, seed=0):
    """The reference architecture trained from fresh weights on the test images only."""
    import keras

    from coursekit.data import load_fashion_mnist

    reference = keras.saving.load_model(reference_files(settings)[1], compile=False)
    keras.utils.set_random_seed(seed)
    model = keras.models.clone_model(reference)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, (x_test, y_test) = load_fashion_mnist()
    model.fit(x_test.astype("float32"), y_test, epochs=epochs, batch_size=128, verbose=0)
    model.save(path)


def other_network(path):
    """A convolutional network with a global-average-pooling head, which build_cnn_model never builds."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28))
    x = layers.Rescaling(1 / 255)(layers.Reshape((28, 28, 1))(inputs))
    for filters in (16, 32):
        x = layers.MaxPooling2D()(layers.Conv2D(filters, 3, padding="same", activation="relu")(x))
    x = layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, layers.Dense(10, activation="softmax")(x)).save(path)


# Lab 2's flawed functions -------------------------------------------------------------------------

CNN_WITHOUT_CONVOLUTIONS = '''
def build_cnn_model(filters=(32, 64), dense_units=256, dropout_rate=0.25, dense_dropout_rate=0.5, augment=True):
    """A dense network handed in as a CNN."""
    inputs = keras.Input(shape=(28, 28))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Flatten()(x)
    for units in (512, dense_units):
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(dense_dropout_rate)(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
'''

CNN_WITHOUT_POOLING = '''
def build_cnn_model(filters=(8, 16), dense_units=64, dropout_rate=0.25, dense_dropout_rate=0.5, augment=True):
    """Convolutions at full resolution all the way: no pooling, no stride."""
    inputs = keras.Input(shape=(28, 28))
    x = layers.Reshape((28, 28, 1))(inputs)
    x = layers.Rescaling(1 / 255)(x)
    for count in filters:
        x = layers.Conv2D(count, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    x = layers.Dropout(dense_dropout_rate)(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
'''

CNN_WITH_ELEVEN_OUTPUTS = '''
def build_cnn_model(filters=(32, 64), dense_units=256, dropout_rate=0.25, dense_dropout_rate=0.5, augment=True):
    """One output too many ("an extra class for unknown items")."""
    inputs = keras.Input(shape=(28, 28))
    x = layers.Reshape((28, 28, 1))(inputs)
    x = layers.Rescaling(1 / 255)(x)
    for count in filters:
        x = layers.Conv2D(count, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout_rate)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    x = layers.Dropout(dense_dropout_rate)(x)
    return keras.Model(inputs, layers.Dense(11, activation="softmax")(x))
'''

CNN_IGNORING_FILTERS = '''
def build_cnn_model(filters=(32, 64), dense_units=256, dropout_rate=0.25, dense_dropout_rate=0.5, augment=True):
    """Always 32 and 64 filters, whatever `filters` says."""
    inputs = keras.Input(shape=(28, 28))
    x = layers.Reshape((28, 28, 1))(inputs)
    x = layers.Rescaling(1 / 255)(x)
    for count in (32, 64):
        x = layers.Conv2D(count, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout_rate)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    x = layers.Dropout(dense_dropout_rate)(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
'''

CNN_THAT_CANNOT_LEARN = '''
def build_cnn_model(filters=(32, 64), dense_units=256, dropout_rate=0.25, dense_dropout_rate=0.5, augment=True):
    """All kernels start at zero: every ReLU stays at 0 and no gradient reaches the weights."""
    inputs = keras.Input(shape=(28, 28))
    x = layers.Reshape((28, 28, 1))(inputs)
    x = layers.Rescaling(1 / 255)(x)
    for count in filters:
        x = layers.Conv2D(count, 3, padding="same", activation="relu", kernel_initializer="zeros")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu", kernel_initializer="zeros")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", kernel_initializer="zeros")(x))
'''

PREPARE_WITHOUT_CHANNEL_AXIS = '''
def prepare_images(images):
    """Scales, but forgets the channel axis."""
    return np.asarray(images, dtype=np.float32) / 255.0
'''

CONV_PARAMS_WITHOUT_BIAS = '''
def conv_params(kernel_size, in_channels, filters, use_bias=True):
    """Forgets the biases."""
    return kernel_size * kernel_size * in_channels * filters
'''

AUGMENTATION_WITHOUT_RANDOM_LAYERS = '''
def build_augmentation(max_shift=2, flip=True, noise=0.0):
    """Changes nothing."""
    return keras.Sequential([layers.Identity()], name="augmentation")
'''

MISCLASSIFIED_PLOT_OF_ANY_IMAGES = '''
def plot_misclassified(images, true_labels, predicted_labels, class_names, count=16):
    """Shows the first images, right or wrong."""
    figure, axes = plt.subplots(4, 4, figsize=(9, 10))
    for ax, index in zip(axes.flat, range(min(count, len(images)))):
        ax.imshow(images[index], cmap="gray_r")
        ax.set_title(f"true: {class_names[true_labels[index]]}\\npred: {class_names[predicted_labels[index]]}")
        ax.axis("off")
    return figure
'''


LAB2_SUBMISSIONS = (
    DemoSubmission("demo_reference", "the reference solution"),
    # The reference model is submitted with these two, which their build functions cannot build.
    DemoSubmission(
        "demo_dense_only",
        "build_cnn_model has no convolutions",
        frozenset({"test_architecture", "test_saved_model"}),
        lambda nb: replace_function(nb, "build_cnn_model", CNN_WITHOUT_CONVOLUTIONS),
    ),
    DemoSubmission(
        "demo_no_pooling",
        "convolutions without pooling or strides",
        frozenset({"test_architecture", "test_saved_model"}),
        lambda nb: replace_function(nb, "build_cnn_model", CNN_WITHOUT_POOLING),
    ),
    DemoSubmission(
        "demo_eleven_outputs",
        "the output layer has 11 units",
        frozenset({"test_architecture"}),
        lambda nb: replace_function(nb, "build_cnn_model", CNN_WITH_ELEVEN_OUTPUTS),
    ),
    DemoSubmission(
        "demo_low_accuracy",
        "the saved model was trained for one short epoch",
        frozenset({"test_saved_model"}),
        weak_model=True,
    ),
    DemoSubmission(
        "demo_no_confusion_matrix",
        "the confusion matrix was never drawn",
        frozenset({"test_figures"}),
        lambda nb: clear_cell_outputs(nb, "ConfusionMatrixDisplay("),
    ),
    DemoSubmission(
        "demo_cannot_learn",
        "zero-initialised kernels that cannot learn",
        frozenset({"test_retraining"}),
        lambda nb: replace_function(nb, "build_cnn_model", CNN_THAT_CANNOT_LEARN),
    ),
    DemoSubmission(
        "test_ignores_filters",
        "build_cnn_model ignores its filters argument",
        frozenset({"test_architecture"}),
        lambda nb: replace_function(nb, "build_cnn_model", CNN_IGNORING_FILTERS),
        in_demo=False,
    ),
    DemoSubmission(
        "test_preprocessing_flaws",
        "no channel axis, conv_params without biases, no random layers",
        frozenset({"test_prepare_images", "test_conv_arithmetic", "test_augmentation"}),
        _several(
            lambda nb: replace_function(nb, "prepare_images", PREPARE_WITHOUT_CHANNEL_AXIS),
            lambda nb: replace_function(nb, "conv_params", CONV_PARAMS_WITHOUT_BIAS),
            lambda nb: replace_function(nb, "build_augmentation", AUGMENTATION_WITHOUT_RANDOM_LAYERS),
        ),
        in_demo=False,
    ),
    DemoSubmission(
        "test_plot_flaws",
        "training curves only; the misclassified grid shows any images",
        frozenset({"test_history_plot", "test_misclassified_plot"}),
        _several(
            lambda nb: replace_function(nb, "plot_history", HISTORY_PLOT_TRAINING_ONLY),
            lambda nb: replace_function(nb, "plot_misclassified", MISCLASSIFIED_PLOT_OF_ANY_IMAGES),
        ),
        in_demo=False,
    ),
    DemoSubmission(
        "test_dense_saved",
        "the saved model is Lab 1's dense network",
        frozenset({"test_saved_model"}),
        make_model=lambda path: copy_reference_model(course_config.LAB1, path),
        in_demo=False,
    ),
    DemoSubmission(
        "test_other_network_saved",
        "the saved model is a network build_cnn_model does not build",
        frozenset({"test_saved_model"}),
        make_model=other_network,
        in_demo=False,
    ),
    DemoSubmission(
        "test_gamed_plot_and_table",
        "one history panel with all four curves next to an empty decoy; "
        "the conv arithmetic returned from a table of old answers",
        frozenset({"test_history_plot", "test_conv_arithmetic"}),
        _several(
            lambda nb: replace_function(nb, "plot_history", HISTORY_PLOT_ONE_PANEL_AND_DECOY),
            lambda nb: replace_function(nb, "conv_output_size", CONV_ARITHMETIC_FROM_A_TABLE.split("\n\n\n")[0]),
            lambda nb: replace_function(nb, "conv_params", CONV_ARITHMETIC_FROM_A_TABLE.split("\n\n\n")[1]),
        ),
        in_demo=False,
    ),
    DemoSubmission(
        "test_honest_variants",
        "honest work written differently: Keras's default batch-norm momentum in "
        "a Sequential network, a pyplot-style history plot, the conv arithmetic with math.floor/ceil",
        frozenset(),
        _several(
            lambda nb: replace_function(nb, "build_cnn_model", CNN_WITH_DEFAULT_BATCH_NORM),
            lambda nb: replace_function(nb, "plot_history", HISTORY_PLOT_PYPLOT_STYLE),
            lambda nb: replace_function(nb, "conv_output_size", CONV_ARITHMETIC_WITH_MATH.split("\n\n\n")[0]),
            lambda nb: replace_function(nb, "conv_params", CONV_ARITHMETIC_WITH_MATH.split("\n\n\n")[1]),
        ),
        in_demo=False,
    ),
)


# Lab 3 ----------------------------------------------------------------------------------------------

VGG16_WITH_RANDOM_WEIGHTS = '''
def load_vgg16_base(image_size=32, weights=None):
    """VGG16 with random weights: the weights argument is never passed on."""
    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
'''

TRANSFER_MODEL_WITH_TRAINABLE_BASE = '''
def build_transfer_model(method="pad", image_size=32, cut="block4_pool", units=256, dropout_rate=0.5, weights=None):
    """Forgets to freeze the base: feature extraction trains all of VGG16."""
    base = base_part(load_vgg16_base(image_size, weights), upto=cut)
    head = build_classifier_head(base.output_shape[1:], units, dropout_rate)
    inputs = keras.Input(shape=(28, 28))
    features = base(build_input_adapter(method, image_size)(inputs), training=False)
    return keras.Model(inputs, head(features), name="vgg16_transfer")
'''

SINGLE_CHANNEL_ADAPTER = '''
def build_input_adapter(method="pad", image_size=32):
    """Pads or resizes, but keeps one grey channel."""
    inputs = keras.Input(shape=(28, 28))
    x = layers.Reshape((28, 28, 1))(inputs)
    if method == "pad":
        x = layers.ZeroPadding2D((image_size - 28) // 2)(x)
    else:
        x = layers.Resizing(image_size, image_size)(x)
    outputs = layers.Normalization(mean=[103.939], variance=[1.0])(x)
    return keras.Model(inputs, outputs, name=f"adapt_{method}_{image_size}")
'''

UNFREEZE_THE_WHOLE_BASE = '''
def unfreeze_top_layers(base, first_trainable="block4_conv1"):
    """Unfreezes every layer of the base, not just the top block."""
    base.trainable = True
    for layer in base.layers:
        layer.trainable = True
    return [layer.name for layer in base.layers if layer.trainable and layer.weights]
'''

HEAD_THAT_CANNOT_LEARN = '''
def build_classifier_head(feature_shape, units=256, dropout_rate=0.5):
    """All weights start at zero: the ReLU units stay dead and only the output biases learn."""
    return keras.Sequential([
        keras.Input(shape=tuple(feature_shape)),
        layers.Flatten(),
        layers.BatchNormalization(),
        layers.Dense(units, activation="relu", kernel_initializer="zeros"),
        layers.Dropout(dropout_rate),
        layers.Dense(10, activation="softmax", kernel_initializer="zeros"),
    ], name="classifier_head")
'''

FINE_TUNING_PLOT_RESTARTING_EPOCHS = '''
def plot_fine_tuning_history(head_history, fine_history):
    """Draws each stage from epoch 1 again, without marking where fine-tuning starts."""
    head_history = getattr(head_history, "history", head_history)
    fine_history = getattr(fine_history, "history", fine_history)
    figure, panels = plt.subplots(1, 2, figsize=(12, 4))
    for axes, key in zip(panels, ["loss", "accuracy"]):
        for name, history in (("head", head_history), ("fine-tuning", fine_history)):
            epochs = np.arange(1, len(history[key]) + 1)
            axes.plot(epochs, history[key], label=f"{name} training")
            axes.plot(epochs, history[f"val_{key}"], label=f"{name} validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(key)
        axes.legend()
    return figure
'''


def unfreeze_whole_base(model):
    """The saved model of UNFREEZE_THE_WHOLE_BASE: every layer of VGG16 trainable."""
    base = model.get_layer("vgg16")
    base.trainable = True
    for layer in base.layers:  # Keras keeps a sublayer's own trainable=False when its parent is unfrozen
        layer.trainable = True


def confuse_two_classes(model):
    """A fine-tuned model that swaps its answers for shirts and T-shirts and for pullovers and coats."""
    output = model.get_layer("classifier_head").layers[-1]
    kernel, bias = output.get_weights()
    order = [6, 1, 4, 3, 2, 5, 0, 7, 8, 9]
    output.set_weights([kernel[:, order], bias[order]])


LAB3_SUBMISSIONS = (
    DemoSubmission("demo_reference", "the reference solution"),
    DemoSubmission(
        "demo_base_not_frozen",
        "the VGG16 base is not frozen for feature extraction",
        frozenset({"test_architecture"}),
        lambda nb: replace_function(nb, "build_transfer_model", TRANSFER_MODEL_WITH_TRAINABLE_BASE),
    ),
    DemoSubmission(
        "demo_random_weights",
        "VGG16 with random instead of ImageNet weights",
        frozenset({"test_imagenet_weights"}),
        lambda nb: replace_function(nb, "load_vgg16_base", VGG16_WITH_RANDOM_WEIGHTS),
    ),
    DemoSubmission(
        "demo_whole_base_unfrozen",
        "fine-tuning unfreezes the whole base",
        frozenset({"test_fine_tuning"}),
        lambda nb: replace_function(nb, "unfreeze_top_layers", UNFREEZE_THE_WHOLE_BASE),
        model_edit=unfreeze_whole_base,
    ),
    DemoSubmission(
        "demo_single_channel",
        "the input adapter keeps a single grey channel (and the model file "
        "handed in is not one its build_transfer_model builds)",
        frozenset({"test_architecture", "test_saved_model"}),
        lambda nb: replace_function(nb, "build_input_adapter", SINGLE_CHANNEL_ADAPTER),
    ),
    DemoSubmission(
        "demo_low_accuracy",
        "the saved model confuses two pairs of classes",
        frozenset({"test_saved_model"}),
        model_edit=confuse_two_classes,
    ),
    DemoSubmission(
        "test_head_and_plot_flaws",
        "a head that cannot learn; curves restart at epoch 1 without a boundary; the comparison chart was never drawn",
        frozenset({"test_head_retraining", "test_fine_tuning_plot", "test_figures"}),
        _several(
            lambda nb: replace_function(nb, "build_classifier_head", HEAD_THAT_CANNOT_LEARN),
            lambda nb: replace_function(nb, "plot_fine_tuning_history", FINE_TUNING_PLOT_RESTARTING_EPOCHS),
            lambda nb: clear_cell_outputs(nb, "# Comparison chart"),
        ),
        in_demo=False,
    ),
)

# The demo and test submissions of each lab, by assignment name.
SUBMISSIONS_BY_LAB = {
    course_config.LAB1.assignment: LAB1_SUBMISSIONS,
    course_config.LAB2.assignment: LAB2_SUBMISSIONS,
    course_config.LAB3.assignment: LAB3_SUBMISSIONS,
}


# Writing submissions --------------------------------------------------------------------------------


def reference_files(settings=course_config.LAB1):
    """The executed reference notebook and its saved model, as kept in reference_solution/."""
    folder = course_config.REFERENCE_DIR / settings.assignment
    return folder / settings.notebook, folder / settings.model_file


def make_weak_model(path, settings=course_config.LAB1, seed=0):
    """Save a model of the reference architecture trained for one epoch on 1,000 images."""
    import keras

    from coursekit.data import load_fashion_mnist

    _, model_path = reference_files(settings)
    reference = keras.saving.load_model(model_path, compile=False)
    keras.utils.set_random_seed(seed)
    weak = keras.models.clone_model(reference)
    weak.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    (x_train, y_train), _ = load_fashion_mnist()
    weak.fit(x_train[:1000].astype("float32"), y_train[:1000], epochs=1, batch_size=128, verbose=0)
    weak.save(path)


def write_submission(submission, folder, settings=course_config.LAB1, weak_model_path=None):
    """Write ``submission``'s notebook and model file into ``folder``; return the notebook path."""
    notebook_path, model_path = reference_files(settings)
    notebook = copy.deepcopy(json.loads(notebook_path.read_text(encoding="utf-8")))
    if submission.edit:
        submission.edit(notebook)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / settings.notebook
    target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if submission.weak_model:
        if weak_model_path is None:
            weak_model_path = folder / settings.model_file
            make_weak_model(weak_model_path, settings)
        else:
            shutil.copyfile(weak_model_path, folder / settings.model_file)
    elif submission.make_model:
        submission.make_model(folder / settings.model_file)
    elif submission.model_edit:
        import keras

        model = keras.saving.load_model(model_path, compile=False)
        submission.model_edit(model)
        model.save(folder / settings.model_file)
    else:
        shutil.copyfile(model_path, folder / settings.model_file)
    return target
