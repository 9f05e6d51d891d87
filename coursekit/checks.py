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

from coursekit._model_child import leaf_layers  # one definition, shared with the model child
from coursekit.atomic_files import write_text_atomically

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Layers that compute nothing spatial: what a "dense network" may contain.
DENSE_TYPE_LAYERS = frozenset(
    {
        "InputLayer",
        "Rescaling",
        "Normalization",
        "Reshape",
        "Flatten",
        "Dense",
        "Dropout",
        "AlphaDropout",
        "GaussianDropout",
        "GaussianNoise",
        "BatchNormalization",
        "LayerNormalization",
        "Activation",
        "ReLU",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "Softmax",
        "RandomFlip",
        "RandomTranslation",
        "RandomZoom",
        "RandomRotation",
        "RandomContrast",
    }
)
DROPOUT_LAYERS = frozenset(
    {"Dropout", "AlphaDropout", "GaussianDropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"}
)


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


# Hidden inputs are drawn afresh for each grading (one pytest session of the graders) from a seed the
# student cannot predict, and are the same for every check of that grading. COURSEKIT_GRADING_SEED
# replays one grading (the instructor's, e.g. to investigate a complaint); students cannot set it.
GRADING_SEED_ENV = "COURSEKIT_GRADING_SEED"
_GRADING_SEED = []


def grading_seed():
    """This grading's seed: drawn once per process with :mod:`secrets` (or from COURSEKIT_GRADING_SEED)."""
    import secrets

    if not _GRADING_SEED:
        replay = os.environ.get(GRADING_SEED_ENV, "").strip()
        _GRADING_SEED.append(int(replay) if replay else secrets.randbits(63))
    return _GRADING_SEED[0]


def grading_rng(purpose):
    """A random generator for one grader file's hidden inputs, deterministic within one grading.

    ``purpose`` (e.g. the lab's name) gives each grader file its own stream.
    """
    digest = hashlib.sha256(f"{grading_seed()}:{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def random_history(rng, epochs=None):
    """A training history as Keras writes it, drawn with ``rng``: loss falls, accuracy rises, with noise."""
    epochs = int(rng.integers(4, 13)) if epochs is None else epochs
    steps = np.arange(epochs)
    history = {}
    for key, start, end in (
        ("loss", rng.uniform(1.2, 2.4), rng.uniform(0.2, 0.6)),
        ("val_loss", rng.uniform(1.2, 2.4), rng.uniform(0.3, 0.8)),
    ):
        curve = end + (start - end) * np.exp(-steps / rng.uniform(1.0, 3.0)) + rng.normal(0, 0.02, epochs)
        history[key] = [round(float(value), 4) for value in curve]
    for key, start, end in (
        ("accuracy", rng.uniform(0.3, 0.6), rng.uniform(0.82, 0.95)),
        ("val_accuracy", rng.uniform(0.3, 0.6), rng.uniform(0.78, 0.92)),
    ):
        curve = end - (end - start) * np.exp(-steps / rng.uniform(1.0, 3.0)) + rng.normal(0, 0.01, epochs)
        history[key] = [round(float(np.clip(value, 0.0, 1.0)), 4) for value in curve]
    return history


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


def dropout_rates(model):
    """Rates of the model's dropout-type layers (0 for those without a rate)."""
    return [
        float(getattr(layer, "rate", 0.0) or 0.0)
        for layer in leaf_layers(model)
        if type(layer).__name__ in DROPOUT_LAYERS
    ]


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
    return np.concatenate(
        [rng.choice(np.flatnonzero(labels == label), per_class, replace=False) for label in np.unique(labels)]
    )


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
    write_text_atomically(path, json.dumps({"value": value}))  # parallel graders never read half a file
    return value


def retraining_score(model, data, settings):
    """:func:`brief_retraining` of ``model``'s architecture, remembered per architecture and recipe."""
    return remembered("retraining", model.to_json() + repr(settings), lambda: brief_retraining(model, data, settings))


# Initializers the grader keeps when it rebuilds a student's architecture for retraining: Keras's own
# random and simple ones, whose parameters are numbers. Any other (Constant with an array of trained
# values, Identity, custom...) is replaced by the default of the layer's class.
STANDARD_INITIALIZERS = frozenset(
    {
        "GlorotUniform",
        "GlorotNormal",
        "HeUniform",
        "HeNormal",
        "LecunUniform",
        "LecunNormal",
        "RandomUniform",
        "RandomNormal",
        "TruncatedNormal",
        "VarianceScaling",
        "Orthogonal",
        "OrthogonalInitializer",
        "Zeros",
        "Ones",
    }
)


def _default_initializer(class_name, key):
    """The default of ``key`` (e.g. "kernel_initializer") in keras.layers.``class_name``'s constructor."""
    import inspect

    import keras

    layer_class = getattr(keras.layers, class_name, None)
    try:
        default = inspect.signature(layer_class.__init__).parameters[key].default
    except (TypeError, ValueError, KeyError):
        default = inspect.Parameter.empty
    if default is inspect.Parameter.empty or default is None:
        default = (
            "zeros"
            if "bias" in key or "beta" in key or "mean" in key
            else ("ones" if "gamma" in key or "variance" in key else "glorot_uniform")
        )
    return keras.initializers.serialize(keras.initializers.get(default))


def _is_standard_initializer(config):
    if isinstance(config, str):
        return True  # a name such as "he_normal" names one of Keras's initializers
    if not isinstance(config, dict):
        return config is None
    name = config.get("class_name")
    if name in STANDARD_INITIALIZERS:
        return True
    value = (config.get("config") or {}).get("value")
    return name == "Constant" and isinstance(value, (int, float))  # Constant(0.1), not Constant(array)


def fresh_config(config, class_name=None):
    """A copy of a Keras configuration in which every layer is trainable and every initializer standard.

    What a build function could hand the grader to make its "fresh" model a trained one, closed:
    ``trainable=False`` (on a layer or a whole model) and initializers that carry trained arrays
    (``keras.initializers.Constant(trained_kernel)``; any non-standard initializer is replaced by
    its layer class's default).
    """
    if isinstance(config, list):
        return [fresh_config(item, class_name) for item in config]
    if not isinstance(config, dict):
        return config
    if "class_name" in config and isinstance(config.get("config"), dict):
        class_name = config["class_name"]
    fresh = {}
    for key, value in config.items():
        if key == "trainable":
            fresh[key] = True
        elif key.endswith("_initializer") and not _is_standard_initializer(value):
            fresh[key] = _default_initializer(class_name, key)
        else:
            fresh[key] = fresh_config(value, class_name)
    return fresh


def fresh_model(model, seed):
    """``model``'s architecture rebuilt from its configuration with fresh, trainable weights drawn under ``seed``.

    The configuration is cleaned with :func:`fresh_config`; no weight of ``model`` is copied.
    """
    import keras

    keras.utils.set_random_seed(seed)
    config = fresh_config(json.loads(model.to_json()))
    fresh = keras.saving.deserialize_keras_object(config, safe_mode=True)
    for layer in fresh._flatten_layers(include_self=True):
        layer.trainable = True
    return fresh


def batch_norm_layers(model):
    """The model's BatchNormalization layers, nested models flattened."""
    return [layer for layer in leaf_layers(model) if type(layer).__name__ == "BatchNormalization"]


def recompute_batch_norm_statistics(model, images, batch_size=None):
    """Set every BatchNormalization layer's moving mean and variance to the statistics of ``images``.

    After a brief training the moving averages depend on the student's momentum (Keras's default
    0.99 has hardly moved from its initial values after 125 steps). The grader evaluates on
    statistics it computes itself: one forward pass in training mode over ``images`` with momentum 0,
    so each layer's moving statistics become those of this batch, whatever momentum the student chose.
    Nothing else changes (no gradient step). Returns the number of layers recomputed.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(np.asarray(images, dtype="float32"), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def brief_retraining(model, data, settings, seed=None):
    """Train ``model``'s architecture from fresh weights with the grader's recipe; return its test accuracy.

    The architecture is rebuilt from its configuration with every layer trainable and every weight
    drawn afresh (:func:`fresh_model`); after training, batch-norm statistics are recomputed on the
    grader's training images (:func:`recompute_batch_norm_statistics`), so the score does not depend
    on the student's momentum. The recipe (subset size, epochs, batch size, learning rate, seed) comes
    from ``settings``, a lab's entry in course_config.py; its bar comes from
    benchmarks/retraining_calibration.py (docs/measurements/).
    """
    (x_train, y_train), (x_test, y_test) = data
    seed = settings.retrain_seed if seed is None else seed
    subset = balanced_subset(y_train, settings.retrain_train_size, seed)
    return train_fresh_and_score(
        model, (x_train[subset].astype("float32"), y_train[subset]), (x_test.astype("float32"), y_test), settings, seed
    )


def lab_retraining(model, data, settings, seed=None):
    """The score of the retraining check of ``model``'s lab: :func:`brief_retraining`, or for a
    transfer lab (Lab 3) :func:`coursekit.vgg16.head_retraining`, where ``model`` is the classifier head."""
    import course_config

    if isinstance(settings, course_config.TransferLabSettings):
        from coursekit.vgg16 import head_retraining

        return head_retraining(model, data, settings, seed=seed)
    return brief_retraining(model, data, settings, seed=seed)


def train_fresh_and_score(model, train, test, settings, seed):
    """The grader's recipe on ``model``'s architecture; its accuracy on ``test``.

    Fresh, trainable weights (:func:`fresh_model`), Adam with ``settings.retrain_learning_rate``,
    ``settings.retrain_epochs`` epochs of ``train`` (images, labels) in batches of
    ``settings.retrain_batch_size``, then batch-norm statistics recomputed on
    ``settings.retrain_bn_images`` of those images (:func:`recompute_batch_norm_statistics`). Used by
    :func:`brief_retraining` (a whole network on images) and :func:`coursekit.vgg16.head_retraining`
    (a classifier head on VGG16's features).
    """
    import keras

    (x_train, y_train), (x_test, y_test) = train, test
    model = fresh_model(model, seed)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.retrain_learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        x_train,
        y_train,
        epochs=settings.retrain_epochs,
        batch_size=settings.retrain_batch_size,
        shuffle=True,
        verbose=0,
    )
    statistics = np.random.default_rng(seed).choice(
        len(x_train), min(settings.retrain_bn_images, len(x_train)), replace=False
    )
    recompute_batch_norm_statistics(model, x_train[statistics])
    return accuracy(model, x_test, y_test)


# Convolutional networks ---------------------------------------------------------------------

CONV_LAYERS = frozenset({"Conv2D", "SeparableConv2D", "DepthwiseConv2D"})
POOLING_LAYERS = frozenset({"MaxPooling2D", "AveragePooling2D"})


def conv_layers(model, kinds=CONV_LAYERS):
    """The model's 2-D convolution layers in order, nested models flattened.

    ``kinds``: the layer class names that count (default: ``Conv2D``, ``SeparableConv2D``,
    ``DepthwiseConv2D``; VGG16's base has ``Conv2D`` layers only).
    """
    return [layer for layer in leaf_layers(model) if type(layer).__name__ in kinds]


def downsampling_layers(model):
    """Layers that shrink the feature maps: local pooling, or convolutions with a stride above 1."""
    return [
        layer
        for layer in leaf_layers(model)
        if type(layer).__name__ in POOLING_LAYERS
        or (type(layer).__name__ in CONV_LAYERS and max(getattr(layer, "strides", (1,))) > 1)
    ]


# Figures ------------------------------------------------------------------------------------


def find_line(axes, values):
    """The line of a described axes (see the sandbox's figure description) whose y data is ``values``."""
    for line in axes["lines"]:
        if len(line["y"]) == len(values) and np.allclose(line["y"], values, atol=1e-6):
            return line
    return None


def check_history_panel(figure, history, panel, train_key, val_key):
    """The history plot's ``panel`` shows both curves of ``history``, with axis labels and a legend.

    The panel must hold its own two curves of the history the function was given (the grader draws
    several histories afresh for each grading), and not the other panel's: one panel with all four
    curves next to an empty decoy panel does not count.
    """
    axes = figure["axes"]
    expect(len(axes) >= 2, f"plot_history should draw two panels (loss and accuracy); it drew {len(axes)}.")
    holding = [ax for ax in axes if find_line(ax, history[train_key]) or find_line(ax, history[val_key])]
    expect(
        holding,
        f"No panel shows the {panel} curves of the history it was given: plot the values of the history argument.",
    )
    both = [ax for ax in holding if find_line(ax, history[train_key]) and find_line(ax, history[val_key])]
    expect(
        both,
        f"The {panel} panel should show both the training and the validation curve "
        f"(history['{train_key}'] and history['{val_key}']).",
    )
    other_keys = ("accuracy", "val_accuracy") if panel == "loss" else ("loss", "val_loss")
    own = [ax for ax in both if not any(find_line(ax, history[key]) for key in other_keys)]
    expect(
        own,
        "Loss and accuracy should be drawn in two separate panels, each with its own two curves "
        f"(the {panel} panel also shows the {'accuracy' if panel == 'loss' else 'loss'} curves).",
    )
    ax = own[0]
    expect(ax["xlabel"].strip() and ax["ylabel"].strip(), f"Label both axes of the {panel} panel.")
    expect(ax["legend"] and len(ax["legend"]) >= 2, f"The {panel} panel needs a legend naming its two curves.")


def _without_comments(source):
    """``source`` with its comments removed (a comment naming a figure draws nothing)."""
    import io
    import tokenize

    try:
        tokens = [
            token for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type != tokenize.COMMENT
        ]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return "\n".join(line.split("#", 1)[0] for line in source.splitlines())


def _png_size(data):
    """(width, height) of a base64-encoded PNG, (0, 0) when it is not one."""
    import base64

    try:
        head = base64.b64decode("".join(data) if isinstance(data, list) else data)[:24]
    except (ValueError, TypeError):
        return 0, 0
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _code_cells_with_images(notebook_path):
    """[(code without comments, number of figures it drew)] of the notebook's code cells."""
    from coursekit.notebooks import NotebookProblem, read_submission

    import course_config

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
        images = sum(
            1
            for output in cell.get("outputs", [])
            if isinstance(output, dict)
            and min(_png_size((output.get("data") or {}).get("image/png", ""))) >= course_config.FIGURE_MIN_PIXELS
        )
        cells.append((_without_comments(source), images))
    return cells


def _assign_figures(needs, capacity):
    """The figures that cannot each get an image of their own: a bipartite matching of figures to images.

    ``needs`` maps a figure's name to the cells whose code draws it; ``capacity`` is each cell's
    number of images. Augmenting paths (the sizes are tiny).
    """
    slots = [(cell, k) for cell, count in enumerate(capacity) for k in range(count)]
    owner = {}

    def place(name, seen):
        for slot in slots:
            if slot[0] in needs[name] and slot not in seen:
                seen.add(slot)
                if slot not in owner or place(owner[slot], seen):
                    owner[slot] = name
                    return True
        return False

    return [name for name in needs if not place(name, set())]


def check_figures_in_outputs(notebook_path, required):
    """Each required figure (name -> regular expression for the code that draws it) is in the outputs.

    A figure counts when a code cell whose code (comments removed) matches its pattern has an image
    in its outputs, and every required figure needs an image of its own: one small plot next to
    comments or strings naming every figure shows at most one of them. The plotting functions
    themselves are checked on the grader's data by their own checks.
    """
    import re

    cells = _code_cells_with_images(notebook_path)
    needs = {
        name: {index for index, (source, images) in enumerate(cells) if images and re.search(pattern, source)}
        for name, pattern in required.items()
    }
    missing = [name for name, where in needs.items() if not where]
    if not missing:
        missing = _assign_figures(needs, [images for _, images in cells])
    expect(
        not missing,
        f"The submitted notebook's outputs lack these figures: {'; '.join(missing)}. "
        "Run all cells before submitting, so the figures are saved in the notebook "
        "(each figure drawn by its own code, not named in a comment).",
    )


# Checks that every lab runs on its model ---------------------------------------------------


def check_retraining(model, data, settings):
    """The grader's brief retraining of the student's architecture reaches the lab's bar."""
    shape = input_shape(model)
    expect(
        shape == (28, 28),
        f"The grader can only retrain a model that takes raw 28×28 images; your model's input shape is {shape}.",
    )
    score = retraining_score(model, data, settings)
    record_measurement("retraining_accuracy", score)
    expect(
        score >= settings.retrain_min_accuracy,
        f"The grader trained your default architecture for {settings.retrain_epochs} epochs on "
        f"{settings.retrain_train_size:,} images (Adam, lr {settings.retrain_learning_rate}, batch "
        f"{settings.retrain_batch_size}); it reached {score:.3f} test accuracy, below the bar of "
        f"{settings.retrain_min_accuracy:.3f}. Check that every layer can learn (trainable weights, "
        "sensible activations and initialisation).",
    )
