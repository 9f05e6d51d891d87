"""Hidden checks for Lab 1, the dense network.

Every test is marked with the grade id of the notebook's test cell it scores. The
student's functions run once, in a sandbox (the ``student`` fixture); models are
rebuilt, trained and evaluated here, in the grader's own process, on data the
grader loads itself.
"""

import numpy as np
import pytest

from course_config import LAB1
from coursekit.checks import (
    DENSE_TYPE_LAYERS,
    check_figures_in_outputs,
    check_history_panel,
    check_retraining,
    close,
    dense_layers,
    dropout_rates,
    expect,
    grading_rng,
    input_shape,
    layer_classes,
    lower_first,
    model_from_config,
    output_activation,
    random_history,
    value_of,
)
from coursekit.sandbox import Call, run_student_functions
from coursekit.saved_model import check_saved_model, evaluate_saved_model

# Hidden cases: drawn afresh for each grading from a seed the student cannot predict (the same for
# every check of one grading; coursekit.checks.grading_rng).
RNG = grading_rng("lab1_dense")
PIXELS = RNG.integers(0, 256, size=(4, 28, 28)).astype(np.uint8)
PIXELS[0, 0, 0], PIXELS[0, 0, 1] = 0, 255
TRAIN_IMAGES = RNG.normal(RNG.uniform(60, 100), RNG.uniform(20, 40), size=(50, 28, 28)).astype(np.float32)
OTHER_IMAGES = RNG.normal(RNG.uniform(120, 160), RNG.uniform(5, 15), size=(20, 28, 28)).astype(np.float32)
SPLIT_COUNT, SPLIT_FRACTION = 200, 0.2
SPLIT_N_VAL = int(round(SPLIT_COUNT * SPLIT_FRACTION))
SPLIT_IMAGES = np.zeros((SPLIT_COUNT, 28, 28), dtype=np.uint8)
SPLIT_IMAGES[:, 0, 0], SPLIT_IMAGES[:, 0, 1] = np.arange(SPLIT_COUNT) // 256, np.arange(SPLIT_COUNT) % 256


def _unordered_labels(rng):
    """Ten balanced classes in a random order in which neither the first nor the last validation-sized
    block is balanced: a split that takes the first or the last images cannot look stratified."""
    while True:
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), SPLIT_COUNT // 10))
        blocks = (labels[:SPLIT_N_VAL], labels[-SPLIT_N_VAL:], labels[:: SPLIT_COUNT // SPLIT_N_VAL])
        if all(np.bincount(block, minlength=10).tolist() != [SPLIT_N_VAL // 10] * 10 for block in blocks):
            return labels


SPLIT_LABELS = _unordered_labels(RNG)
SPLIT_SEED, SPLIT_OTHER_SEED = (int(seed) for seed in RNG.choice(10_000, size=2, replace=False))
ACTIVATION_INPUT = np.concatenate([[-1000.0, -50.0, -1.0, 0.0, 1e-3, 2.5, 50.0, 1000.0], RNG.normal(0, 3, 24)])
LARGE_LOGITS = np.array([1000.0, 1001.0, 1002.0]) + RNG.integers(0, 500)
LOGIT_BATCH = np.vstack([RNG.normal(0, 50, size=(5, 10)), np.full((1, 10), -800.0)])
# Several histories of different lengths: plot_history must draw the one it is given.
HISTORIES = [random_history(RNG) for _ in range(3)]
CUSTOM_UNITS = [64, 48, 32, 16]

CALLS = [
    Call("scale_images", (PIXELS,), return_args=True),
    Call("standardize", (TRAIN_IMAGES, OTHER_IMAGES), returns="arrays"),
    Call(
        "split_validation",
        (SPLIT_IMAGES, SPLIT_LABELS),
        {"val_fraction": SPLIT_FRACTION, "seed": SPLIT_SEED},
        returns="arrays",
    ),
    Call(
        "split_validation",
        (SPLIT_IMAGES, SPLIT_LABELS),
        {"val_fraction": SPLIT_FRACTION, "seed": SPLIT_SEED},
        returns="arrays",
        name="split_same_seed",
    ),
    Call(
        "split_validation",
        (SPLIT_IMAGES, SPLIT_LABELS),
        {"val_fraction": SPLIT_FRACTION, "seed": SPLIT_OTHER_SEED},
        returns="arrays",
        name="split_other_seed",
    ),
    Call("relu", (ACTIVATION_INPUT,)),
    Call("sigmoid", (ACTIVATION_INPUT,)),
    Call("tanh", (ACTIVATION_INPUT,)),
    Call("softmax", (LARGE_LOGITS,), name="softmax_large"),
    Call("softmax", (LOGIT_BATCH,), name="softmax_batch"),
    Call("build_dense_model", returns="model"),
    Call("build_dense_model", kwargs={"hidden_units": CUSTOM_UNITS}, returns="model", name="build_custom"),
    *[
        Call("plot_history", (history,), returns="figure", name=f"plot_history_{index}")
        for index, history in enumerate(HISTORIES)
    ],
]


@pytest.fixture(scope="session")
def student(notebook_path):
    """Results of all calls of the student's functions, made once in the sandbox."""
    return run_student_functions(notebook_path, CALLS)


@pytest.fixture(scope="session")
def student_model(student):
    """The student's default model, rebuilt in the grader's process from its configuration."""
    return model_from_config(value_of(student["build_dense_model"])["json"])


# Preprocessing -----------------------------------------------------------------------


@pytest.mark.grade_id("test_scale_images")
def test_scale_images(student):
    result = student["scale_images"]
    scaled = value_of(result)
    expect(
        scaled.shape == PIXELS.shape, f"scale_images should keep the shape {PIXELS.shape}; it returned {scaled.shape}."
    )
    expect(scaled.dtype == np.float32, f"scale_images should return float32 values; it returned {scaled.dtype}.")
    expect(
        close(scaled, PIXELS / 255.0),
        f"scale_images should map pixel values 0..255 to [0, 1] (divide by 255); it returned values "
        f"from {scaled.min():.3g} to {scaled.max():.3g}.",
    )
    expect(np.array_equal(result.args_after[0], PIXELS), "scale_images must not modify the array it is given.")


@pytest.mark.grade_id("test_standardize")
def test_standardize(student):
    arrays = value_of(student["standardize"])
    expect(len(arrays) == 2, f"standardize should return two arrays (train, other); it returned {len(arrays)}.")
    train, other = arrays
    mean, std = TRAIN_IMAGES.mean(), TRAIN_IMAGES.std()
    expect(
        close(train, (TRAIN_IMAGES - mean) / std, 1e-3),
        "standardize should return the training images minus their mean, divided by their standard "
        "deviation (one mean and one std over all training pixels).",
    )
    expect(
        close(other, (OTHER_IMAGES - mean) / std, 1e-3),
        "standardize should scale the other images with the TRAINING mean and std, not with their own: "
        "statistics come from the training data only.",
    )


@pytest.mark.grade_id("test_split_validation")
def test_split_validation(student):
    arrays = value_of(student["split_validation"])
    expect(
        len(arrays) == 4,
        f"split_validation should return (x_train, y_train, x_val, y_val); it returned {len(arrays)} items.",
    )
    x_train, y_train, x_val, y_val = arrays
    n_val = int(round(SPLIT_COUNT * SPLIT_FRACTION))
    expect(
        len(x_val) == len(y_val) == n_val and len(x_train) == len(y_train) == SPLIT_COUNT - n_val,
        f"With {SPLIT_COUNT} images and val_fraction={SPLIT_FRACTION}, expected {SPLIT_COUNT - n_val} training "
        f"and {n_val} validation examples; got {len(x_train)} and {len(x_val)}.",
    )

    def ids(images):
        return images[:, 0, 0].astype(int) * 256 + images[:, 0, 1].astype(int)

    train_ids, val_ids = ids(x_train), ids(x_val)
    expect(not set(train_ids) & set(val_ids), "The same image appears in both the training and the validation part.")
    expect(
        sorted(np.concatenate([train_ids, val_ids])) == list(range(SPLIT_COUNT)),
        "The two parts together should hold every image exactly once.",
    )
    expect(
        np.array_equal(SPLIT_LABELS[train_ids], y_train) and np.array_equal(SPLIT_LABELS[val_ids], y_val),
        "Images and labels were separated: each label must stay with its image.",
    )
    expect(
        not np.array_equal(val_ids, np.arange(SPLIT_COUNT - n_val, SPLIT_COUNT))
        and not np.array_equal(val_ids, np.arange(n_val)),
        "The validation part should be a random sample, not simply the first or the last images.",
    )
    expect(
        np.bincount(y_val, minlength=10).tolist() == [n_val // 10] * 10,
        "The validation part should keep the class proportions (stratify by label).",
    )


def _validation_ids(arrays):
    expect(
        len(arrays) == 4,
        f"split_validation should return (x_train, y_train, x_val, y_val); it returned {len(arrays)} items.",
    )
    images = arrays[2]
    return sorted(images[:, 0, 0].astype(int) * 256 + images[:, 0, 1].astype(int))


@pytest.mark.grade_id("test_split_validation")
def test_split_validation_follows_its_seed(student):
    first = _validation_ids(value_of(student["split_validation"]))
    expect(
        first == _validation_ids(value_of(student["split_same_seed"])),
        "split_validation gave different splits for the same seed: draw the split from the seed argument "
        "(e.g. random_state=seed), so that it can be reproduced.",
    )
    expect(
        first != _validation_ids(value_of(student["split_other_seed"])),
        "split_validation gave the same split for two different seeds: the seed argument should choose "
        "the random split.",
    )


# Activation functions -------------------------------------------------------------------


def _reference_sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


@pytest.mark.grade_id("test_activations")
@pytest.mark.parametrize(
    "name, reference",
    [
        ("relu", lambda x: np.maximum(x, 0.0)),
        ("sigmoid", _reference_sigmoid),
        ("tanh", np.tanh),
    ],
)
def test_activation(student, name, reference):
    values = np.asarray(value_of(student[name]), dtype=float)
    expect(values.shape == ACTIVATION_INPUT.shape, f"{name} should work elementwise and keep the input's shape.")
    expect(
        np.all(np.isfinite(values)),
        f"{name} returned inf or nan for large inputs such as ±1000: make it numerically stable.",
    )
    expect(close(values, reference(ACTIVATION_INPUT), 1e-6), f"{name} returned wrong values for some inputs.")


def _reference_softmax(z):
    shifted = np.exp(z - z.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@pytest.mark.grade_id("test_softmax")
def test_softmax_large_logits(student):
    values = np.asarray(value_of(student["softmax_large"]), dtype=float)
    expect(
        np.all(np.isfinite(values)),
        "softmax([1000, 1001, 1002]) gave inf or nan: subtract the largest logit before np.exp.",
    )
    expect(
        close(values, _reference_softmax(LARGE_LOGITS), 1e-6), "softmax returned wrong probabilities for large logits."
    )


@pytest.mark.grade_id("test_softmax")
def test_softmax_batch(student):
    values = np.asarray(value_of(student["softmax_batch"]), dtype=float)
    expect(
        values.shape == LOGIT_BATCH.shape,
        f"softmax of a {LOGIT_BATCH.shape} batch should keep that shape; got {values.shape}.",
    )
    expect(
        np.all(np.isfinite(values)) and close(values.sum(axis=-1), np.ones(len(LOGIT_BATCH)), 1e-6),
        "For a batch of logits, each row of softmax should sum to 1 (normalise along the last axis).",
    )
    expect(
        close(values, _reference_softmax(LOGIT_BATCH), 1e-6),
        "softmax returned wrong probabilities for a batch of logits.",
    )


# Architecture ---------------------------------------------------------------------------
# One set of rules for the model the build function returns and for the saved, trained model.


def rule_dense_type_layers(model, subject="The model"):
    others = sorted(set(layer_classes(model)) - DENSE_TYPE_LAYERS)
    expect(
        not others,
        f"This lab is about dense networks, but {lower_first(subject)} contains {', '.join(others)}. "
        "Use Dense, Dropout, BatchNormalization, activation and preprocessing layers only.",
    )


def rule_depth_and_budget(model, subject="The model"):
    denses = dense_layers(model)
    expect(denses, f"{subject} has no Dense layer.")
    hidden = len(denses) - 1
    expect(
        hidden >= LAB1.min_hidden_layers,
        f"{subject} should have at least {LAB1.min_hidden_layers} hidden Dense layers; it has {hidden}.",
    )
    expect(
        denses[-1].units == LAB1.num_classes,
        f"{subject} should end in Dense({LAB1.num_classes}), one output per class; found Dense({denses[-1].units}).",
    )
    params = model.count_params()
    expect(params <= LAB1.max_params, f"{subject} has {params:,} parameters; the budget is {LAB1.max_params:,}.")


def architecture_rules(model, subject="The model"):
    """The rules the build function's model and the saved, trained model both obey: layer kinds, depth,
    outputs, parameter budget. (Dropout and the softmax output are asked of the build function only:
    dropout does nothing at inference, and a saved model may output logits.)"""
    rule_dense_type_layers(model, subject)
    rule_depth_and_budget(model, subject)


@pytest.mark.grade_id("test_architecture")
def test_only_dense_type_layers(student_model):
    rule_dense_type_layers(student_model)


@pytest.mark.grade_id("test_architecture")
def test_input_takes_raw_images(student_model):
    shape = input_shape(student_model)
    expect(
        shape == (28, 28),
        f"The model should take raw 28×28 images (keras.Input(shape=(28, 28))); its input shape is {shape}.",
    )


@pytest.mark.grade_id("test_architecture")
def test_depth_dropout_and_output(student_model):
    rule_depth_and_budget(student_model)
    expect(
        any(rate > 0 for rate in dropout_rates(student_model)),
        "No Dropout layer with a rate above 0 found: the default model should use dropout against overfitting.",
    )
    expect(
        output_activation(student_model) == "softmax",
        f"The output should be Dense({LAB1.num_classes}, activation='softmax'); found activation "
        f"'{output_activation(student_model)}'.",
    )


@pytest.mark.grade_id("test_architecture")
def test_hidden_units_argument_is_used(student):
    model = model_from_config(value_of(student["build_custom"])["json"])
    units = [layer.units for layer in dense_layers(model)]
    expect(
        units == CUSTOM_UNITS + [LAB1.num_classes],
        f"build_dense_model(hidden_units={CUSTOM_UNITS}) should give Dense layers of {CUSTOM_UNITS + [10]} "
        f"units; it gave {units}.",
    )


# Brief retraining by the grader ---------------------------------------------------------------


@pytest.mark.grade_id("test_retraining")
def test_retrained_architecture_learns(student_model, fashion_mnist):
    check_retraining(student_model, fashion_mnist, LAB1)


# Plots ----------------------------------------------------------------------------------------


@pytest.mark.grade_id("test_history_plot")
@pytest.mark.parametrize("index", range(len(HISTORIES)))
@pytest.mark.parametrize(
    "panel, train_key, val_key", [("loss", "loss", "val_loss"), ("accuracy", "accuracy", "val_accuracy")]
)
def test_history_panel(student, index, panel, train_key, val_key):
    check_history_panel(value_of(student[f"plot_history_{index}"]), HISTORIES[index], panel, train_key, val_key)


REQUIRED_FIGURES = {
    "a grid of sample images": r"imshow",
    "the activation functions with their derivatives": r"derivative",
    "the training history": r"plot_history\(",
    "the confusion matrix": r"(?i)confusion",
    "the overfitting comparison": r"(?i)overfit",
}


@pytest.mark.grade_id("test_figures")
def test_required_figures_in_outputs(notebook_path):
    check_figures_in_outputs(notebook_path, REQUIRED_FIGURES)


# The submitted, fully trained model -------------------------------------------------------------


@pytest.mark.grade_id("test_saved_model")
def test_saved_model_is_honest_work_that_reaches_the_bar(submission_dir, fashion_mnist, student):
    saved = evaluate_saved_model(submission_dir / LAB1.model_file, fashion_mnist, LAB1)
    built = [
        model_from_config(student[name].value["json"])
        for name in ("build_dense_model", "build_custom")
        if student[name].ok
    ]
    check_saved_model(saved, LAB1, architecture_rules, built, "build_dense_model", student["build_dense_model"].error)
