"""The check of the submitted, fully trained model: safe to open, the student's own honest work.

The model file is read as data and run only in the sandbox (:mod:`coursekit.model_files`).
What comes back (its configuration, its predictions on the test images and on training
images the grader draws, the weights a lab asks for) is judged here, in the grader:

- the model obeys the lab's architecture rules, exactly as the build function's model must;
- its structure is one the submitted build function produces (:func:`layer_signature`);
- it reaches the lab's accuracy bar on the 10,000 test images;
- it does not do better on the test images than on training images: a model trained
  on the test set, or one that memorised it, does. Where the evidence is only
  suggestive, the submission keeps its points and is flagged for the instructor.
"""

import secrets
from dataclasses import dataclass, field

import numpy as np

import course_config
from coursekit.checks import (
    balanced_subset,
    expect,
    flag_for_instructor,
    input_shape,
    leaf_layers,
    record_measurement,
    remembered,
)
from coursekit.model_files import (
    NORMALISATION_AND_REGULARISATION,
    SAFE_LAYERS,
    read_model_file,
    rebuild_architecture,
    run_model_file,
)

# Layers left out of a model's structure, which keeps the layers that compute: Dense, convolutions,
# pooling, merges. Left out are those that are off at inference (regularisation, augmentation),
# those students write either as a layer or as an argument (activations, an explicit input layer),
# reshaping and scaling, and the normalisation layers that build functions switch on and off with an
# argument (batch_norm=False), as they do dropout (dropout_rate=0) and augmentation (augment=False).
IGNORED_IN_SIGNATURE = frozenset(
    {
        "InputLayer",
        "Activation",
        "Softmax",
        "ReLU",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "Identity",
        "Reshape",
        "Flatten",
        "Rescaling",
        "Normalization",
        *NORMALISATION_AND_REGULARISATION,
    }
) | {kind for kind in SAFE_LAYERS if kind.startswith("Random")}


@dataclass
class SavedModel:
    """What the grader learnt about a submitted model file."""

    name: str
    sha256: str
    architecture: object = field(repr=False)  # rebuilt from its configuration, fresh weights
    test_accuracy: float = 0.0
    train_accuracy: float = 0.0
    train_images: int = 0
    test_images: int = 10_000
    weights_summary: object = None  # what the lab's ``summarise_weights`` returned


def evaluate_saved_model(path, data, settings, weights_of=(), summarise_weights=None):
    """Open the model file ``path`` safely and measure it; remembered per file content.

    Parameters
    ----------
    path : path-like
    data : ((x_train, y_train), (x_test, y_test)), loaded by the grader
    settings : a lab's settings (course_config)
    weights_of : layer class names whose weights the sandbox sends back
    summarise_weights : callable, optional
        ``summarise_weights(weights) -> JSON-able``, computed here from the returned
        weights (e.g. which layers differ from ImageNet's); kept with the accuracies.
    """
    model_file = read_model_file(path)
    architecture = rebuild_architecture(model_file)
    (x_train, y_train), (x_test, y_test) = data

    def measure():
        # Training images drawn afresh (the student cannot know which), the same number of each class.
        picked = balanced_subset(y_train, settings.saved_model_train_images, secrets.randbits(32))
        images = {"test": x_test.astype("float32"), "train": x_train[picked].astype("float32")}
        outcome = run_model_file(model_file, images, settings.model_timeout_s, weights_of)
        scores = {
            name: _accuracy(outcome["predictions"][name], labels, model_file.name, settings.num_classes)
            for name, labels in (("test", y_test), ("train", y_train[picked]))
        }
        summary = summarise_weights(outcome["weights"]) if summarise_weights else None
        return {
            "test": scores["test"],
            "train": scores["train"],
            "train_images": int(len(picked)),
            "test_images": int(len(y_test)),
            "weights_summary": summary,
        }

    value = remembered("saved_model", model_file.content + repr((settings, tuple(weights_of))).encode(), measure)
    return SavedModel(
        model_file.name,
        model_file.sha256,
        architecture,
        value["test"],
        value["train"],
        value["train_images"],
        value["test_images"],
        value["weights_summary"],
    )


def _accuracy(predictions, labels, name, num_classes):
    predictions = np.asarray(predictions)
    expect(
        predictions.ndim == 2 and predictions.shape == (len(labels), num_classes),
        f"{name} should give {num_classes} class scores per image; for {len(labels):,} images it gave an "
        f"array of shape {predictions.shape}.",
    )
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, np.nan_to_num(predictions, nan=-np.inf).argmax(axis=-1)))


def layer_signature(model):
    """The kinds of a model's computing layers in order, nested models flattened, repeated blocks once.

    ``Conv2D, Conv2D, MaxPooling2D`` twice over, then ``Flatten, Dense, Dense``, becomes ``Conv2D,
    MaxPooling2D, Dense``: a network built with other sizes or another number of blocks by the same
    build function has the same signature. :data:`IGNORED_IN_SIGNATURE` lists what is left out.
    """
    kinds = [type(layer).__name__ for layer in leaf_layers(model)]
    kinds = [kind for kind in kinds if kind not in IGNORED_IN_SIGNATURE]
    changed = True
    while changed:
        changed = False
        for length in range(1, len(kinds) // 2 + 1):
            for start in range(len(kinds) - 2 * length + 1):
                if kinds[start : start + length] == kinds[start + length : start + 2 * length]:
                    del kinds[start + length : start + 2 * length]
                    changed = True
                    break
            if changed:
                break
    return tuple(kinds)


def _is_subsequence(short, long):
    remaining = iter(long)
    return all(kind in remaining for kind in short)


def check_built_by(saved, build_models, build_function, build_error=""):
    """The saved model's structure is one ``build_function`` produces: its signature is the built
    model's, or that with parts left out (a build function may switch parts off with arguments).

    Whatever a lab requires of every network (e.g. two convolutions) its architecture rules check.
    With no built model, ``build_error`` (why the student's ``build_function`` gave none: a notebook
    that cannot be read, an exception) is the message.
    """
    expect(
        build_models or not build_error,
        f"The saved model {saved.name} must be a network that your {build_function} builds, and "
        f"{build_function} gave no model to compare it with: {build_error}",
    )
    signature = layer_signature(saved.architecture)
    built = [layer_signature(model) for model in build_models]
    expect(
        any(_is_subsequence(signature, other) for other in built),
        f"The saved model {saved.name} is not a network that your {build_function} builds: its layers are "
        f"{' → '.join(signature)}, while {build_function} gives {' → '.join(built[0]) if built else 'no model'}. "
        f"Save the model that {build_function} built and the notebook trained.",
    )


def check_honest_accuracy(saved, settings):
    """The saved model does not know the test set, and reaches the bar.

    Test accuracy may exceed the accuracy on the drawn training images by chance, more so for a
    weak model and few images: the margin is ``SAVED_MODEL_TEST_ABOVE_TRAIN_MAX``, or four standard
    errors of the difference when that is larger, so honest work fails it about once in 30,000.
    """
    record_measurement("saved_model_test_accuracy", saved.test_accuracy)
    record_measurement("saved_model_train_accuracy", saved.train_accuracy)
    gap = saved.test_accuracy - saved.train_accuracy
    expect(
        gap <= test_above_train_margin(saved),
        f"Your saved model is more accurate on the test images ({saved.test_accuracy:.4f}) than on "
        f"{saved.train_images:,} training images the grader picked ({saved.train_accuracy:.4f}): a model "
        "trained on the training set never is, by this much. Train only on the training images (with a "
        "validation split taken from them) and leave the test set for the final evaluation.",
    )
    expect(
        saved.test_accuracy >= settings.saved_model_min_accuracy,
        f"Your saved model reached {saved.test_accuracy:.4f} accuracy on the 10,000 test images (raw pixels "
        f"0-255); the course bar is {settings.saved_model_min_accuracy:.3f}.",
    )
    if gap >= -course_config.SAVED_MODEL_LEVEL_FLAG:
        flag_for_instructor(
            f"{saved.name}: test accuracy {saved.test_accuracy:.4f} is level with its accuracy on "
            f"{saved.train_images:,} training images ({saved.train_accuracy:.4f}); a model trained on the "
            "training images is usually better on them. Was the test set used for training?"
        )


def test_above_train_margin(saved):
    """How far test accuracy may exceed the accuracy on the drawn training images (see above)."""
    variance = sum(
        accuracy * (1 - accuracy) / max(count, 1)
        for accuracy, count in ((saved.test_accuracy, saved.test_images), (saved.train_accuracy, saved.train_images))
    )
    return max(course_config.SAVED_MODEL_TEST_ABOVE_TRAIN_MAX, 4 * variance**0.5)


def check_saved_model(saved, settings, architecture_rules, build_models, build_function, build_error=""):
    """Every requirement of the saved model, in the order a student should fix them."""
    shape = input_shape(saved.architecture)
    expect(shape == (28, 28), f"The saved model should take raw 28×28 images; its input shape is {shape}.")
    architecture_rules(saved.architecture, f"The saved model {saved.name}")
    check_built_by(saved, build_models, build_function, build_error)
    check_honest_accuracy(saved, settings)
