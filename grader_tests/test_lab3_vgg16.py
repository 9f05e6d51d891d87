"""Hidden checks for Lab 3, VGG16 transfer learning.

Every test is marked with the grade id of the notebook's test cell it scores. The
student's functions run once, in a sandbox (the ``student`` fixture); what comes
back (model configurations, weights, figure descriptions) is checked here against
VGG16 as the grader loads it itself, from the kit's local copy of the ImageNet
weights. Models are rebuilt, trained and evaluated in the grader's own process.
"""

import numpy as np
import pytest

from course_config import LAB3
from coursekit.checks import (
    check_figures_in_outputs,
    close,
    conv_layers,
    dense_layers,
    expect,
    find_line,
    grading_rng,
    input_shape,
    model_from_config,
    output_activation,
    random_history,
    value_of,
)
from coursekit.data import ensure_vgg16_weights
from coursekit.isolation import sandbox_readable_file
from coursekit.sandbox import Call, run_student_functions
from coursekit.saved_model import check_saved_model, evaluate_saved_model
from coursekit.vgg16 import (
    IMAGENET_BGR_MEAN,
    VGG16_CONV_KINDS,
    check_head_retraining,
    expect_vgg16_base,
    first_difference,
    imagenet_base,
    imagenet_conv_weights,
    imagenet_features_model,
    preprocessed,
)

# Hidden cases: drawn afresh for each grading from a seed the student cannot predict (the same for
# every check of one grading; coursekit.checks.grading_rng).
RNG = grading_rng("lab3_vgg16")
PIXELS = RNG.integers(0, 256, size=(4, 28, 28)).astype(np.uint8)
PADDED_SIZES = (32, 36)
RESIZED_SIZE = 48
# The feature maps the head is built for: VGG16's output at LAB3.feature_layer for 32×32 inputs.
FEATURE_SHAPE = tuple(imagenet_features_model(LAB3.feature_layer, LAB3.feature_image_size).output_shape[1:])
# Two (head, fine-tuning) history pairs of different lengths: the plot must draw the ones it is given.
STAGE_HISTORIES = [
    (random_history(RNG, int(RNG.integers(3, 7))), random_history(RNG, int(RNG.integers(2, 5)))) for _ in range(2)
]


def _calls(weights):
    return [
        *[
            Call(
                "build_input_adapter",
                kwargs={"method": "pad", "image_size": size},
                returns="model",
                name=f"adapter_pad_{size}",
            )
            for size in PADDED_SIZES
        ],
        Call(
            "build_input_adapter",
            kwargs={"method": "resize", "image_size": RESIZED_SIZE},
            returns="model",
            name="adapter_resize",
        ),
        Call("load_vgg16_base", kwargs={"image_size": 32, "weights": weights}, returns="model_weights"),
        Call("build_transfer_model", kwargs={"weights": weights}, returns="model"),
        Call("build_classifier_head", (FEATURE_SHAPE,), returns="model"),
        *[
            Call("plot_fine_tuning_history", pair, returns="figure", name=f"plot_fine_tuning_history_{index}")
            for index, pair in enumerate(STAGE_HISTORIES)
        ],
    ]


@pytest.fixture(scope="session")
def student(notebook_path):
    """Results of all calls of the student's functions, made once in the sandbox."""
    weights = sandbox_readable_file(ensure_vgg16_weights())  # the kit's copy may sit in root's home
    return run_student_functions(notebook_path, _calls(str(weights)))


def _expect_base(model, what):
    """The model's VGG16 convolutions: at least the ones LAB3 requires, in VGG16's order."""
    return expect_vgg16_base(model, what, LAB3.base_conv_layers)


def _changed_vgg16_layers(weights):
    """Names of the saved model's VGG16 convolutions whose kernels differ from ImageNet's."""
    reference = imagenet_conv_weights()
    kernels = [(name, arrays[0]) for name, arrays in weights.items() if arrays]
    return [
        name
        for (name, kernel), (imagenet_kernel, _) in zip(kernels, reference)
        if np.shape(kernel) != np.shape(imagenet_kernel)
        or not np.allclose(kernel, imagenet_kernel, atol=LAB3.weights_tolerance)
    ]


@pytest.fixture(scope="session")
def saved(submission_dir, fashion_mnist):
    """The submitted fine-tuned model, opened and run in the sandbox once (coursekit.saved_model)."""
    return evaluate_saved_model(
        submission_dir / LAB3.model_file,
        fashion_mnist,
        LAB3,
        weights_of=("Conv2D",),
        summarise_weights=_changed_vgg16_layers,
    )


@pytest.fixture(scope="session")
def saved_model(saved):
    """The saved model's architecture (with its layers' trainable flags), rebuilt from its configuration."""
    return saved.architecture


# Input adaptation and architecture ------------------------------------------------------------


def _adapted(student, name):
    adapter = model_from_config(value_of(student[name])["json"])
    expect(
        input_shape(adapter) == (28, 28),
        f"build_input_adapter should take raw 28×28 images (keras.Input(shape=(28, 28))); its input "
        f"shape is {input_shape(adapter)}.",
    )
    return np.asarray(adapter(PIXELS.astype("float32")))


@pytest.mark.grade_id("test_architecture")
@pytest.mark.parametrize("size", PADDED_SIZES)
def test_padding_adapter(student, size):
    adapted = _adapted(student, f"adapter_pad_{size}")
    expected = preprocessed(PIXELS, size, "pad")
    expect(
        adapted.shape == expected.shape,
        f"build_input_adapter('pad', {size}) should give VGG16 inputs of shape {expected.shape[1:]} "
        f"({size}×{size}, three channels); it gave {adapted.shape[1:]}.",
    )
    expect(
        close(adapted, expected, tolerance=1e-3),
        f"build_input_adapter('pad', {size}) should zero-pad the raw pixels (0-255) to {size}×{size}, copy "
        "the grey value into three channels and apply VGG16's preprocessing (subtract the mean ImageNet "
        f"pixel {IMAGENET_BGR_MEAN.round(3).tolist()} in BGR order, no scaling to [0, 1]); its values "
        f"differ by up to {np.abs(adapted - expected).max():.3g}.",
    )


@pytest.mark.grade_id("test_architecture")
def test_resizing_adapter(student):
    adapted = _adapted(student, "adapter_resize")
    expected = preprocessed(PIXELS, RESIZED_SIZE, "resize")
    expect(
        adapted.shape == expected.shape,
        f"build_input_adapter('resize', {RESIZED_SIZE}) should give VGG16 inputs of shape "
        f"{expected.shape[1:]}; it gave {adapted.shape[1:]}.",
    )
    # Any reasonable interpolation keeps each image's mean brightness; the channels must differ by
    # exactly the differences of VGG16's channel means (grey copied into B, G and R).
    channel_offsets = (adapted - adapted[..., :1]).mean(axis=(0, 1, 2))
    expect(
        np.allclose(channel_offsets, IMAGENET_BGR_MEAN[0] - IMAGENET_BGR_MEAN, atol=1e-2),
        f"build_input_adapter('resize', {RESIZED_SIZE}) should copy the grey value into three channels and "
        "subtract VGG16's mean ImageNet pixel per channel (BGR order), as preprocess_input does.",
    )
    expect(
        np.allclose(adapted.mean(axis=(1, 2, 3)), expected.mean(axis=(1, 2, 3)), atol=2.0),
        f"build_input_adapter('resize', {RESIZED_SIZE}) should resize the raw pixels (0-255) and then "
        "apply VGG16's preprocessing; the brightness of its images differs from that.",
    )


@pytest.fixture(scope="session")
def transfer_model(student):
    """The student's feature-extraction model, rebuilt in the grader's process from its configuration."""
    return model_from_config(value_of(student["build_transfer_model"])["json"])


@pytest.mark.grade_id("test_architecture")
def test_transfer_model_structure(transfer_model):
    shape = input_shape(transfer_model)
    expect(
        shape == (28, 28),
        f"build_transfer_model() should take raw 28×28 images (the input adapter inside "
        f"the model); its input shape is {shape}.",
    )
    convs = _expect_base(transfer_model, "build_transfer_model()")
    expect(
        convs[0].kernel.shape[2] == 3,
        f"VGG16's first convolution should see three channels (the grey image copied three times); in your "
        f"model it sees {convs[0].kernel.shape[2]}.",
    )
    denses = dense_layers(transfer_model)
    units = denses[-1].units if denses else None
    expect(
        units == LAB3.num_classes and output_activation(transfer_model) == "softmax",
        f"The head should end in Dense({LAB3.num_classes}, activation='softmax'); found Dense({units}) with "
        f"activation '{output_activation(transfer_model)}'.",
    )


@pytest.mark.grade_id("test_architecture")
def test_base_is_frozen_for_feature_extraction(transfer_model):
    trainable = [layer.name for layer in conv_layers(transfer_model, VGG16_CONV_KINDS) if layer.trainable]
    expect(
        not trainable,
        "In feature extraction the VGG16 base must be frozen (base.trainable = False), so that training "
        f"changes only the new head; these of its layers are trainable: {', '.join(trainable)}.",
    )
    expect(
        any(layer.trainable and layer.weights for layer in dense_layers(transfer_model)),
        "The classifier head must stay trainable: none of its Dense layers is.",
    )


# The pretrained weights ----------------------------------------------------------------------


@pytest.mark.grade_id("test_imagenet_weights")
def test_base_has_the_imagenet_weights(student):
    result = value_of(student["load_vgg16_base"])
    base = model_from_config(result["json"])
    expect_vgg16_base(base, "load_vgg16_base()")
    reference = [array for pair in imagenet_conv_weights() for array in pair]
    weights = list(result["weights"])
    differs = first_difference(weights, reference, LAB3.weights_tolerance)
    first = conv_layers(imagenet_base(), VGG16_CONV_KINDS)[min(differs or 0, 25) // 2].name
    expect(
        len(weights) == len(reference) and differs is None,
        "load_vgg16_base(weights=...) returned a VGG16 base whose weights are not VGG16's ImageNet weights "
        f"(the first that differ: {first}). "
        "Pass the `weights` argument on to keras.applications.VGG16 (weights=None gives random weights).",
    )


# Brief retraining of the head by the grader ----------------------------------------------------


@pytest.mark.grade_id("test_head_retraining")
def test_head_learns_on_vgg16_features(student, fashion_mnist):
    head = model_from_config(value_of(student["build_classifier_head"])["json"])
    denses = dense_layers(head)
    expect(
        denses and denses[-1].units == LAB3.num_classes and output_activation(head) == "softmax",
        f"build_classifier_head should end in Dense({LAB3.num_classes}, activation='softmax').",
    )
    check_head_retraining(head, fashion_mnist, LAB3)


# Fine-tuning -------------------------------------------------------------------------------------


def _is_fine_tuned(name):
    return name.startswith(LAB3.fine_tuned_layers)


def _fine_tunable():
    return ", ".join(prefix + "*" for prefix in LAB3.fine_tuned_layers)


@pytest.mark.grade_id("test_fine_tuning")
def test_only_the_top_blocks_are_trainable(saved_model):
    convs = _expect_base(saved_model, f"The saved model {LAB3.model_file}")
    wrong = [layer.name for layer in convs if layer.trainable and not _is_fine_tuned(layer.name)]
    expect(
        not wrong,
        f"In the fine-tuned model only VGG16's layers {_fine_tunable()} may be trainable and the ones below "
        f"them stay frozen; these are trainable too: {', '.join(wrong)}. Unfreeze from "
        f"{LAB3.first_fine_tuned_layer} on (unfreeze_top_layers) and keep the blocks below it frozen.",
    )
    expect(
        any(layer.trainable for layer in convs),
        f"In the fine-tuned model none of VGG16's layers is trainable: fine-tuning unfreezes {_fine_tunable()} "
        f"(from {LAB3.first_fine_tuned_layer} on, unfreeze_top_layers) and trains them.",
    )


@pytest.mark.grade_id("test_fine_tuning")
def test_frozen_blocks_keep_imagenet_weights_and_top_block_moved(saved, saved_model):
    _expect_base(saved_model, f"The saved model {LAB3.model_file}")
    changed = saved.weights_summary
    frozen_changed = [name for name in changed if not _is_fine_tuned(name)]
    expect(
        not frozen_changed,
        f"The frozen layers of VGG16 should keep their ImageNet weights, but in the saved model these differ: "
        f"{', '.join(frozen_changed)}. Load the ImageNet weights and keep the layers before "
        f"{LAB3.first_fine_tuned_layer} frozen while training.",
    )
    expect(
        any(_is_fine_tuned(name) for name in changed),
        f"VGG16's layers {_fine_tunable()} in the saved model still have exactly their ImageNet weights: they "
        "were not fine-tuned. Train them (with a low learning rate) after unfreezing them, then save the model.",
    )


def _panel_shows(ax, head, fine):
    """Whether the panel shows a curve over both stages: one line, or one per stage, on one epoch axis."""
    n_head, n_fine = len(head), len(fine)
    joined = find_line(ax, list(head) + list(fine))
    if joined is not None:
        return np.allclose(joined["x"], np.arange(1, n_head + n_fine + 1)) or np.allclose(
            joined["x"], np.arange(n_head + n_fine)
        )
    first, second = find_line(ax, head), find_line(ax, fine)
    return first is not None and second is not None and second["x"][0] > first["x"][-1]


@pytest.mark.grade_id("test_fine_tuning_plot")
@pytest.mark.parametrize("index", range(len(STAGE_HISTORIES)))
@pytest.mark.parametrize("panel", ["loss", "accuracy"])
def test_fine_tuning_panel(student, index, panel):
    HEAD_HISTORY, FINE_HISTORY = STAGE_HISTORIES[index]
    figure = value_of(student[f"plot_fine_tuning_history_{index}"])
    axes = figure["axes"]
    expect(len(axes) >= 2, f"plot_fine_tuning_history should draw two panels (loss and accuracy); it drew {len(axes)}.")
    holding = [ax for ax in axes if _panel_shows(ax, HEAD_HISTORY[panel], FINE_HISTORY[panel])]
    expect(
        holding,
        f"No panel shows the training {panel} of both stages on one epoch axis: the fine-tuning "
        "epochs should be numbered after the head's (e.g. epochs 1-10, then 11-20).",
    )
    ax = holding[0]
    expect(
        _panel_shows(ax, HEAD_HISTORY[f"val_{panel}"], FINE_HISTORY[f"val_{panel}"]),
        f"The {panel} panel should also show the validation {panel} of both stages.",
    )
    boundary = len(HEAD_HISTORY[panel])
    vertical = [
        line for line in ax["lines"] if len(set(line["x"])) == 1 and boundary - 1 <= line["x"][0] <= boundary + 1
    ]
    expect(vertical, f"Mark where fine-tuning starts in the {panel} panel with a vertical line (ax.axvline).")
    expect(
        ax["xlabel"].strip() and ax["ylabel"].strip() and ax["legend"],
        f"Label both axes of the {panel} panel and add a legend.",
    )


REQUIRED_FIGURES = {
    "the adapted inputs": r"build_input_adapter\(",
    "the cut-point comparison": r"(?i)where to cut VGG16",
    "the fine-tuning curves": r"plot_fine_tuning_history\(",
    "the confusion matrix": r"(?i)confusion",
    "the comparison chart": r"(?i)comparison",
}


@pytest.mark.grade_id("test_figures")
def test_required_figures_in_outputs(notebook_path):
    check_figures_in_outputs(notebook_path, REQUIRED_FIGURES)


# The submitted, fully trained model -------------------------------------------------------------


def architecture_rules(model, subject="The model"):
    """The rules the transfer model and the saved, fine-tuned model both obey."""
    _expect_base(model, subject)
    denses = dense_layers(model)
    units = denses[-1].units if denses else None
    expect(
        units == LAB3.num_classes,
        f"{subject} should end in Dense({LAB3.num_classes}), one output per class; found Dense({units}).",
    )


@pytest.mark.grade_id("test_saved_model")
def test_saved_model_is_honest_work_that_reaches_the_bar(saved, student):
    transfer = student["build_transfer_model"]
    built = [model_from_config(transfer.value["json"])] if transfer.ok else []
    check_saved_model(saved, LAB3, architecture_rules, built, "build_transfer_model", transfer.error)
