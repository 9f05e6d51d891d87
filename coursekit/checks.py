"""Helpers for writing hidden checks.

A check fails through :class:`CheckFailed`, whose message is shown to the
student as it is: say what was expected and what was found, in one or two
sentences, without the hidden test data. Any other exception in a check is
reported as a grader problem, not as the student's fault.
"""

import hashlib
import json
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Layers that compute nothing spatial: what a "dense network" may contain.
DENSE_TYPE_LAYERS = frozenset({
    "InputLayer", "Rescaling", "Normalization", "Reshape", "Flatten",
    "Dense", "Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise",
    "BatchNormalization", "LayerNormalization",
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
    "RandomFlip", "RandomTranslation", "RandomZoom", "RandomRotation", "RandomContrast",
})
DROPOUT_LAYERS = frozenset({"Dropout", "AlphaDropout", "GaussianDropout", "SpatialDropout1D",
                            "SpatialDropout2D", "SpatialDropout3D"})


class CheckFailed(AssertionError):
    """A hidden check failed; the message is for the student."""


def expect(condition, message):
    """Fail the current check with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


# Notes for the instructor's review from this grading run: the student keeps the points (the pytest
# plugin writes them into the report, class grading lists them).
INSTRUCTOR_FLAGS = []


def flag_for_instructor(message):
    """Note something suggestive but not certain (e.g. a test accuracy level with the training accuracy)."""
    if message not in INSTRUCTOR_FLAGS:
        INSTRUCTOR_FLAGS.append(message)


# What the graders measured in this run (e.g. the saved model's test accuracy), for the class report.
GRADER_MEASUREMENTS = {}


def record_measurement(name, value):
    """Keep a number the grader computed itself, whether or not the check passes."""
    GRADER_MEASUREMENTS[name] = float(value)


def lower_first(text):
    """``text`` with its first letter in lower case, for a subject in mid-sentence."""
    return text[:1].lower() + text[1:]


def value_of(result):
    """The value a sandboxed call returned, or fail the check with the call's error."""
    expect(result.ok, result.error)
    return result.value


def close(actual, expected, tolerance=1e-5):
    """True when two arrays have the same shape and values within ``tolerance``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    return actual.shape == expected.shape and bool(np.allclose(actual, expected, atol=tolerance, rtol=tolerance))


def model_from_config(model_json):
    """Rebuild a Keras model in the grader's process from the JSON a student's function produced.

    Deserialisation runs in Keras's safe mode: Lambda layers with Python code and
    unknown (custom) layer classes are refused.
    """
    import keras

    try:
        config = json.loads(model_json)
        return keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as error:
        raise CheckFailed(
            "The model your build function returns could not be rebuilt from its configuration "
            f"({type(error).__name__}: {str(error)[:200]}). Use only Keras's built-in layers: "
            "no Lambda or custom layer classes."
        ) from None


def input_shape(model):
    """Shape of one input example, e.g. ``(28, 28)``."""
    return tuple(model.inputs[0].shape[1:])


def layer_classes(model):
    """Class names of a model's layers, nested models flattened."""
    return [type(layer).__name__ for layer in leaf_layers(model)]


def leaf_layers(model):
    """The model's layers, nested models (e.g. a pretrained base) replaced by their own layers."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from leaf_layers(layer)
        else:
            yield layer


def dropout_rates(model):
    """Rates of the model's dropout-type layers (0 for those without a rate)."""
    return [float(getattr(layer, "rate", 0.0) or 0.0) for layer in leaf_layers(model)
            if type(layer).__name__ in DROPOUT_LAYERS]


def dense_layers(model):
    """The model's Dense layers in order, nested models flattened."""
    return [layer for layer in leaf_layers(model) if type(layer).__name__ == "Dense"]


def output_activation(model):
    """Name of the activation that produces the model's output ('' if unknown)."""
    last = model.layers[-1]
    while hasattr(last, "layers") and last.layers:
        last = last.layers[-1]
    kind = type(last).__name__
    if kind == "Softmax":
        return "softmax"
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", str(activation or ""))


def accuracy(model, images, labels, batch_size=512):
    """Accuracy of ``model`` on raw images, computed by the grader (scikit-learn's metric)."""
    from sklearn.metrics import accuracy_score

    probabilities = np.asarray(model.predict(images, batch_size=batch_size, verbose=0))
    return float(accuracy_score(labels, probabilities.argmax(axis=-1)))


def balanced_subset(labels, size, seed):
    """Indices of ``size`` examples, the same number from each class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    per_class = size // len(np.unique(labels))
    return np.concatenate([rng.choice(np.flatnonzero(labels == label), per_class, replace=False)
                           for label in np.unique(labels)])


def remembered(kind, content, compute):
    """``compute()``, or the value it returned before for the same ``kind`` and ``content``.

    The graders use it for the scores they compute themselves (never for anything a
    student's code produced): the key is a hash of ``content`` (bytes or text, e.g. a
    model's configuration with the grading recipe, or a model file), of this module's
    source, of the source of the module that defines ``compute`` and of the Keras version, so a
    change of recipe or code makes a new entry.
    """
    import keras

    import course_config

    digest = hashlib.sha256()
    caller = getattr(getattr(compute, "__code__", None), "co_filename", __file__)
    sources = [open(path, "rb").read() for path in sorted({__file__, caller}) if os.path.isfile(path)]
    for part in (kind, keras.__version__, *sources, content):
        digest.update(part if isinstance(part, bytes) else str(part).encode("utf-8"))
    path = course_config.GRADER_CACHE_DIR / kind / f"{digest.hexdigest()}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({"value": value}), encoding="utf-8")
    os.replace(partial, path)  # atomic: parallel graders never read half a file
    return value


def retraining_score(model, data, settings):
    """:func:`brief_retraining` of ``model``'s architecture, remembered per architecture and recipe."""
    return remembered("retraining", model.to_json() + repr(settings),
                      lambda: brief_retraining(model, data, settings))


def brief_retraining(model, data, settings, seed=None):
    """Train ``model`` (freshly built) with the grader's fixed recipe; return its test accuracy.

    The recipe (subset size, epochs, batch size, learning rate, seed) comes from
    ``settings``, a lab's entry in course_config.py. The reference runs measure the
    same function on the reference architecture, which is where the bar comes from.
    """
    import keras

    (x_train, y_train), (x_test, y_test) = data
    seed = settings.retrain_seed if seed is None else seed
    keras.utils.set_random_seed(seed)
    model = keras.models.clone_model(model)  # fresh weights drawn under the grader's seed
    model.compile(optimizer=keras.optimizers.Adam(settings.retrain_learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    subset = balanced_subset(y_train, settings.retrain_train_size, seed)
    model.fit(x_train[subset].astype("float32"), y_train[subset], epochs=settings.retrain_epochs,
              batch_size=settings.retrain_batch_size, shuffle=True, verbose=0)
    return accuracy(model, x_test.astype("float32"), y_test)


# Convolutional networks ---------------------------------------------------------------------

CONV_LAYERS = frozenset({"Conv2D", "SeparableConv2D", "DepthwiseConv2D"})
POOLING_LAYERS = frozenset({"MaxPooling2D", "AveragePooling2D"})


def conv_layers(model):
    """The model's 2-D convolution layers in order, nested models flattened."""
    return [layer for layer in leaf_layers(model) if type(layer).__name__ in CONV_LAYERS]


def downsampling_layers(model):
    """Layers that shrink the feature maps: local pooling, or convolutions with a stride above 1."""
    return [layer for layer in leaf_layers(model)
            if type(layer).__name__ in POOLING_LAYERS
            or (type(layer).__name__ in CONV_LAYERS and max(getattr(layer, "strides", (1,))) > 1)]


# Figures ------------------------------------------------------------------------------------

def find_line(axes, values):
    """The line of a described axes (see the sandbox's figure description) whose y data is ``values``."""
    for line in axes["lines"]:
        if len(line["y"]) == len(values) and np.allclose(line["y"], values, atol=1e-6):
            return line
    return None


def check_history_panel(figure, history, panel, train_key, val_key):
    """The history plot's ``panel`` shows both curves of ``history``, with axis labels and a legend."""
    axes = figure["axes"]
    expect(len(axes) >= 2, f"plot_history should draw two panels (loss and accuracy); it drew {len(axes)}.")
    holding = [ax for ax in axes if find_line(ax, history[train_key]) or find_line(ax, history[val_key])]
    expect(holding, f"No panel shows the {panel} curves of the history it was given.")
    ax = holding[0]
    expect(find_line(ax, history[train_key]) and find_line(ax, history[val_key]),
           f"The {panel} panel should show both the training and the validation curve "
           f"(history['{train_key}'] and history['{val_key}']).")
    expect(ax["xlabel"].strip() and ax["ylabel"].strip(), f"Label both axes of the {panel} panel.")
    expect(ax["legend"] and len(ax["legend"]) >= 2, f"The {panel} panel needs a legend naming its two curves.")


def _code_cells_with_images(notebook_path):
    from coursekit.notebooks import NotebookProblem, read_submission

    try:
        notebook = read_submission(notebook_path)
    except NotebookProblem as problem:
        raise CheckFailed(str(problem)) from None
    cells = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        has_image = any("image/png" in (output.get("data") or {}) for output in cell.get("outputs", []))
        cells.append((source, has_image))
    return cells


def check_figures_in_outputs(notebook_path, required):
    """Each required figure (name -> regular expression for the code that draws it) is in the outputs."""
    import re

    cells = _code_cells_with_images(notebook_path)
    missing = [name for name, pattern in required.items()
               if not any(has_image and re.search(pattern, source) for source, has_image in cells)]
    expect(not missing, f"The submitted notebook's outputs lack these figures: {'; '.join(missing)}. "
                        "Run all cells before submitting, so the figures are saved in the notebook.")


# Checks that every lab runs on its model ---------------------------------------------------

def check_retraining(model, data, settings):
    """The grader's brief retraining of the student's architecture reaches the lab's bar."""
    shape = input_shape(model)
    expect(shape == (28, 28), f"The grader can only retrain a model that takes raw 28×28 images; "
                              f"your model's input shape is {shape}.")
    score = retraining_score(model, data, settings)
    record_measurement("retraining_accuracy", score)
    expect(score >= settings.retrain_min_accuracy,
           f"The grader trained your default architecture for {settings.retrain_epochs} epochs on "
           f"{settings.retrain_train_size:,} images (Adam, lr {settings.retrain_learning_rate}, batch "
           f"{settings.retrain_batch_size}); it reached {score:.3f} test accuracy, below the bar of "
           f"{settings.retrain_min_accuracy:.3f}. Check that every layer can learn (trainable weights, "
           "sensible activations and initialisation).")
