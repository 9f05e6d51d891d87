"""Hidden checks for Lab 2, the convolutional network.

Every test is marked with the grade id of the notebook's test cell it scores. The
student's functions run once, in a sandbox (the ``student`` fixture); models are
rebuilt, trained and evaluated here, in the grader's own process, on data the
grader loads itself.
"""

import numpy as np
import pytest

from course_config import LAB2
from coursekit.checks import (
    check_figures_in_outputs,
    check_history_panel,
    check_retraining,
    close,
    conv_layers,
    dense_layers,
    downsampling_layers,
    expect,
    grading_rng,
    input_shape,
    layer_classes,
    model_from_config,
    output_activation,
    random_history,
    value_of,
)
from coursekit.sandbox import Call, run_student_functions
from coursekit.saved_model import check_saved_model, evaluate_saved_model

# Hidden cases: drawn afresh for each grading from a seed the student cannot predict (the same for
# every check of one grading; coursekit.checks.grading_rng). Messages never list them with answers.
RNG = grading_rng("lab2_cnn")
PIXELS = RNG.integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
PIXELS[0, 0, 0], PIXELS[0, 0, 1] = 0, 255
ODD_PIXELS = RNG.integers(0, 256, size=(3, int(RNG.integers(8, 20)), int(RNG.integers(8, 20)))).astype(np.uint8)
# Layers that change images in training only: Keras's Random* preprocessing layers and its noise layers.
NOISE_LAYERS = {"GaussianNoise", "GaussianDropout"}


def is_augmentation_layer(class_name):
    return class_name.startswith("Random") or class_name in NOISE_LAYERS


def expected_conv_output_size(size, kernel, stride, padding):
    """Keras's output size of a convolution along one axis."""
    return -(-size // stride) if padding == "same" else (size - kernel) // stride + 1


def _conv_size_cases(rng):
    """(size, kernel_size, stride, padding) for every stride 1-3 with each padding, sizes that stride does
    not divide among them, kernels 1-7. With stride 3 the remainder is the one where rounding differs from
    Keras's floor (valid: 2 thirds left over) and ceiling (same: 1 third), so that round() never passes."""
    cases = []
    for stride in (1, 2, 3):
        for padding in ("valid", "same"):
            kernel = int(rng.integers(1, 8))
            size = int(rng.integers(kernel + stride, 64))
            if stride > 1 and size % stride == 0:
                size += 1
            if stride == 3:
                remainder, wanted = ((size - kernel) % 3, 2) if padding == "valid" else (size % 3, 1)
                size += (wanted - remainder) % 3
            cases.append((size, kernel, stride, padding))
    return cases


CONV_SIZES = _conv_size_cases(RNG)
# (kernel_size, in_channels, filters, use_bias): both with and without biases, one input channel among them.
CONV_PARAMS = [
    (int(RNG.integers(1, 8)), 1, int(RNG.integers(2, 129)), True),
    (int(RNG.integers(1, 8)), int(RNG.integers(2, 129)), int(RNG.integers(2, 129)), True),
    (int(RNG.integers(1, 8)), int(RNG.integers(2, 129)), int(RNG.integers(2, 129)), False),
]
CUSTOM_FILTERS = [8, 16, 24]
# Several histories of different lengths: plot_history must draw the one it is given.
HISTORIES = [random_history(RNG) for _ in range(3)]
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
GRID_SIZE = 12
GRID_IMAGES = RNG.integers(0, 256, size=(GRID_SIZE, 28, 28)).astype(np.uint8)
GRID_TRUE = RNG.integers(0, 10, GRID_SIZE)
GRID_WRONG = np.sort(RNG.choice(GRID_SIZE, 6, replace=False))  # where the prediction is wrong
GRID_PREDICTED = GRID_TRUE.copy()
GRID_PREDICTED[GRID_WRONG] = (GRID_TRUE[GRID_WRONG] + RNG.integers(1, 10, len(GRID_WRONG))) % 10
GRID_COUNT = 4

CALLS = [
    Call("prepare_images", (PIXELS,), return_args=True),
    Call("prepare_images", (ODD_PIXELS,), name="prepare_odd_size"),
    Call("build_augmentation", returns="model"),
    *[Call("conv_output_size", args, name=f"conv_output_size_{index}") for index, args in enumerate(CONV_SIZES)],
    *[
        Call("conv_params", args[:3], {"use_bias": args[3]}, name=f"conv_params_{index}")
        for index, args in enumerate(CONV_PARAMS)
    ],
    Call("build_cnn_model", returns="model"),
    Call("build_cnn_model", kwargs={"filters": CUSTOM_FILTERS}, returns="model", name="build_custom"),
    *[
        Call("plot_history", (history,), returns="figure", name=f"plot_history_{index}")
        for index, history in enumerate(HISTORIES)
    ],
    Call("plot_misclassified", (GRID_IMAGES, GRID_TRUE, GRID_PREDICTED, CLASS_NAMES), returns="figure"),
    Call(
        "plot_misclassified",
        (GRID_IMAGES, GRID_TRUE, GRID_PREDICTED, CLASS_NAMES),
        {"count": GRID_COUNT},
        returns="figure",
        name="plot_misclassified_few",
    ),
]


@pytest.fixture(scope="session")
def student(notebook_path):
    """Results of all calls of the student's functions, made once in the sandbox."""
    return run_student_functions(notebook_path, CALLS)


@pytest.fixture(scope="session")
def student_model(student):
    """The student's default model, rebuilt in the grader's process from its configuration."""
    return model_from_config(value_of(student["build_cnn_model"])["json"])


# Preprocessing ----------------------------------------------------------------------------


@pytest.mark.grade_id("test_prepare_images")
def test_prepare_images(student):
    result = student["prepare_images"]
    prepared = value_of(result)
    expected_shape = PIXELS.shape + (1,)
    expect(
        prepared.shape == expected_shape,
        f"prepare_images should add a channel axis: {PIXELS.shape} -> {expected_shape}; it returned {prepared.shape}.",
    )
    expect(prepared.dtype == np.float32, f"prepare_images should return float32 values; it returned {prepared.dtype}.")
    expect(
        close(prepared[..., 0], PIXELS / 255.0),
        f"prepare_images should scale pixel values 0..255 to [0, 1]; it returned values from "
        f"{prepared.min():.3g} to {prepared.max():.3g}.",
    )
    expect(np.array_equal(result.args_after[0], PIXELS), "prepare_images must not modify the array it is given.")
    odd = value_of(student["prepare_odd_size"])
    expect(
        odd.shape == ODD_PIXELS.shape + (1,),
        f"prepare_images should work for any image size: {ODD_PIXELS.shape} -> {ODD_PIXELS.shape + (1,)}; "
        f"it returned {odd.shape}.",
    )


@pytest.mark.grade_id("test_augmentation")
def test_augmentation_layers(student):
    augmentation = model_from_config(value_of(student["build_augmentation"])["json"])
    kinds = set(layer_classes(augmentation))
    expect(
        any(is_augmentation_layer(kind) for kind in kinds),
        "build_augmentation should contain random preprocessing layers (RandomFlip, RandomTranslation, "
        f"GaussianNoise, ...); it contains {', '.join(sorted(kinds)) or 'no layers'}.",
    )
    batch = PIXELS[:4, :, :, None].astype("float32") / 255.0
    changed = np.asarray(augmentation(batch, training=True))
    expect(
        changed.shape == batch.shape,
        f"The augmentation should keep the image shape {batch.shape}; it returned {changed.shape}.",
    )
    expect(not np.allclose(changed, batch), "In training the augmentation should change the images; it did not.")
    expect(
        np.allclose(np.asarray(augmentation(batch, training=False)), batch, atol=1e-5),
        "Outside training (evaluate, predict) the augmentation must leave images unchanged.",
    )


@pytest.mark.grade_id("test_conv_arithmetic")
@pytest.mark.parametrize("index", range(len(CONV_SIZES)))
def test_conv_output_size(student, index):
    size, kernel, stride, padding = CONV_SIZES[index]
    got = value_of(student[f"conv_output_size_{index}"])
    rule = (
        "with 'same' padding the output has ceil(size / stride) pixels"
        if padding == "same"
        else "with 'valid' padding the output has floor((size - kernel_size) / stride) + 1 pixels"
    )
    expect(
        np.ndim(got) == 0 and int(got) == expected_conv_output_size(size, kernel, stride, padding),
        f"conv_output_size is wrong for stride {stride} with '{padding}' padding ({rule}).",
    )


@pytest.mark.grade_id("test_conv_arithmetic")
@pytest.mark.parametrize("index", range(len(CONV_PARAMS)))
def test_conv_params(student, index):
    kernel, channels, filters, use_bias = CONV_PARAMS[index]
    got = value_of(student[f"conv_params_{index}"])
    expected = kernel * kernel * channels * filters + (filters if use_bias else 0)
    expect(
        np.ndim(got) == 0 and int(got) == expected,
        f"conv_params is wrong {'with' if use_bias else 'without'} biases"
        f"{' on a single input channel' if channels == 1 else ''}: a Conv2D layer has a kernel per filter and "
        f"input channel{', plus one bias per filter' if use_bias else ' (use_bias=False: no biases)'}.",
    )


# Architecture ---------------------------------------------------------------------------
# One set of rules for the model the build function returns and for the saved, trained model.


def rule_convolutions_and_downsampling(model, subject="The model"):
    convs = conv_layers(model)
    expect(
        len(convs) >= LAB2.min_conv_layers,
        f"{subject} should have at least {LAB2.min_conv_layers} convolutional layers (Conv2D); it has "
        f"{len(convs)}. This lab is about convolutional networks.",
    )
    expect(
        downsampling_layers(model),
        f"{subject} never downsamples its feature maps: add pooling (MaxPooling2D or AveragePooling2D) or a "
        "convolution with strides=2 between convolutional blocks.",
    )


def rule_outputs_and_budget(model, subject="The model"):
    denses = dense_layers(model)
    units = denses[-1].units if denses else None
    expect(
        units == LAB2.num_classes,
        f"{subject} should end in Dense({LAB2.num_classes}), one output per class; found Dense({units}).",
    )
    params = model.count_params()
    expect(params <= LAB2.max_params, f"{subject} has {params:,} parameters; the budget is {LAB2.max_params:,}.")


def architecture_rules(model, subject="The model"):
    """The rules the build function's model and the saved, trained model both obey (the softmax
    output is asked of the build function only: a saved model may output logits)."""
    rule_convolutions_and_downsampling(model, subject)
    rule_outputs_and_budget(model, subject)


@pytest.mark.grade_id("test_architecture")
def test_convolutions_and_downsampling(student_model):
    rule_convolutions_and_downsampling(student_model)


@pytest.mark.grade_id("test_architecture")
def test_input_output_and_budget(student_model):
    shape = input_shape(student_model)
    expect(
        shape == (28, 28),
        f"The model should take raw 28×28 images (keras.Input(shape=(28, 28))); its input shape is {shape}.",
    )
    rule_outputs_and_budget(student_model)
    expect(
        output_activation(student_model) == "softmax",
        f"The output should be Dense({LAB2.num_classes}, activation='softmax'), one probability per class; "
        f"found activation '{output_activation(student_model)}'.",
    )


@pytest.mark.grade_id("test_architecture")
def test_filters_argument_is_used(student):
    model = model_from_config(value_of(student["build_custom"])["json"])
    filters = sorted({layer.filters for layer in conv_layers(model) if hasattr(layer, "filters")})
    expect(
        filters == sorted(CUSTOM_FILTERS),
        f"build_cnn_model(filters={CUSTOM_FILTERS}) should give convolutional layers with {CUSTOM_FILTERS} "
        f"filters; it gave {filters}.",
    )


# Brief retraining by the grader ------------------------------------------------------------


@pytest.mark.grade_id("test_retraining")
def test_retrained_architecture_learns(student_model, fashion_mnist):
    check_retraining(student_model, fashion_mnist, LAB2)


# Plots ----------------------------------------------------------------------------------------


@pytest.mark.grade_id("test_history_plot")
@pytest.mark.parametrize("index", range(len(HISTORIES)))
@pytest.mark.parametrize(
    "panel, train_key, val_key", [("loss", "loss", "val_loss"), ("accuracy", "accuracy", "val_accuracy")]
)
def test_history_panel(student, index, panel, train_key, val_key):
    check_history_panel(value_of(student[f"plot_history_{index}"]), HISTORIES[index], panel, train_key, val_key)


def _image_panels(figure):
    return [ax for ax in figure["axes"] if ax["images"]]


@pytest.mark.grade_id("test_misclassified_plot")
def test_misclassified_grid_shows_the_mistakes(student):
    panels = _image_panels(value_of(student["plot_misclassified"]))
    expect(
        len(panels) == len(GRID_WRONG),
        f"Given {len(GRID_TRUE)} images of which {len(GRID_WRONG)} are misclassified, plot_misclassified "
        f"should show those {len(GRID_WRONG)}; it showed {len(panels)} images.",
    )
    for ax, index in zip(panels, GRID_WRONG):
        true_name, predicted_name = CLASS_NAMES[GRID_TRUE[index]], CLASS_NAMES[GRID_PREDICTED[index]]
        expect(
            true_name in ax["title"] and predicted_name in ax["title"],
            f"Each image's title should name its true and its predicted class (e.g. 'true: {true_name}\\n"
            f"pred: {predicted_name}'); found the title {ax['title']!r}.",
        )


@pytest.mark.grade_id("test_misclassified_plot")
def test_misclassified_grid_respects_count(student):
    panels = _image_panels(value_of(student["plot_misclassified_few"]))
    expect(
        len(panels) == GRID_COUNT,
        f"plot_misclassified(..., count={GRID_COUNT}) should show {GRID_COUNT} images; it showed {len(panels)}.",
    )


REQUIRED_FIGURES = {
    "the augmented images": r"augmentation\(",
    "the training history": r"plot_history\(",
    "the confusion matrix": r"(?i)confusion",
    "the misclassified images": r"plot_misclassified\(",
    "the comparison chart": r"(?i)comparison",
}


@pytest.mark.grade_id("test_figures")
def test_required_figures_in_outputs(notebook_path):
    check_figures_in_outputs(notebook_path, REQUIRED_FIGURES)


# The submitted, fully trained model -------------------------------------------------------------


@pytest.mark.grade_id("test_saved_model")
def test_saved_model_is_honest_work_that_reaches_the_bar(submission_dir, fashion_mnist, student):
    saved = evaluate_saved_model(submission_dir / LAB2.model_file, fashion_mnist, LAB2)
    built = [
        model_from_config(student[name].value["json"])
        for name in ("build_cnn_model", "build_custom")
        if student[name].ok
    ]
    check_saved_model(saved, LAB2, architecture_rules, built, "build_cnn_model", student["build_cnn_model"].error)
