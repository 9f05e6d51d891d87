"""Each hidden check passes the reference and fails the submission made to fail it, with its message."""

import json

import pytest

import course_config
from coursekit.submissions import SUBMISSIONS_BY_LAB

LAB1, LAB2, LAB3 = course_config.LAB1, course_config.LAB2, course_config.LAB3

# A phrase that each flawed submission's message must contain: the student learns what was wrong.
# A submission that fails several checks has one phrase per grade id.
EXPECTED_MESSAGES = {
    LAB1.assignment: {
        "demo_no_dropout": "No Dropout layer",
        "demo_conv_layer": "Conv2D",
        "demo_train_only_plot": "both the training and the validation curve",
        "demo_syntax_error": "SyntaxError",
        "demo_missing_function": "defines no function `standardize`",
        "demo_low_accuracy": "the course bar is",
        "demo_cannot_learn": "below the bar",
        "test_function_flaws": {
            "test_scale_images": "float32",
            "test_split_validation": "random sample",
            "test_activations": "relu returned wrong values",
            "test_history_plot": "Label both axes",
            "test_figures": "lack these figures",
        },
        "test_ignores_hidden_units": "should give Dense layers of",
        "test_too_shallow": "at least 3 hidden Dense layers; it has 2",
        "test_flat_input": "raw 28×28 images",
        "test_trained_on_test_set": "more accurate on the test images",
        "test_cnn_saved": "contains Conv2D",
        "test_gamed_checks": {
            "test_history_plot": "curves of the history it was given",
            "test_split_validation": "not simply the first or the last images",
            "test_figures": "lack these figures",
        },
    },
    LAB2.assignment: {
        "demo_dense_only": {
            "test_architecture": "at least 2 convolutional layers (Conv2D); it has 0",
            "test_saved_model": "is not a network that your build_cnn_model builds",
        },
        "demo_no_pooling": {
            "test_architecture": "never downsamples",
            "test_saved_model": "is not a network that your build_cnn_model builds",
        },
        "demo_eleven_outputs": "found Dense(11)",
        "demo_low_accuracy": "the course bar is",
        "demo_no_confusion_matrix": "the confusion matrix",
        "demo_cannot_learn": "below the bar",
        "test_ignores_filters": "should give convolutional layers with [8, 16, 24] filters",
        "test_preprocessing_flaws": {
            "test_prepare_images": "should add a channel axis",
            "test_conv_arithmetic": "plus one bias per filter",
            "test_augmentation": "random preprocessing layers",
        },
        "test_plot_flaws": {
            "test_history_plot": "both the training and the validation curve",
            "test_misclassified_plot": "should show those 6",
        },
        "test_dense_saved": "at least 2 convolutional layers (Conv2D); it has 0",
        "test_other_network_saved": "is not a network that your build_cnn_model builds",
        "test_gamed_plot_and_table": {
            "test_history_plot": "two separate panels",
            "test_conv_arithmetic": "conv_output_size is wrong for stride",
        },
    },
    LAB3.assignment: {
        "demo_base_not_frozen": "the VGG16 base must be frozen",
        "demo_random_weights": "are not VGG16's ImageNet weights",
        "demo_whole_base_unfrozen": "these are trainable too: block1_conv1",
        "demo_single_channel": {
            "test_architecture": "three channels",
            "test_saved_model": "is not a network that your build_transfer_model builds",
        },
        "demo_low_accuracy": "the course bar is",
        "test_head_and_plot_flaws": {
            "test_head_retraining": "below the bar",
            "test_fine_tuning_plot": "numbered after the head's",
            "test_figures": "the comparison chart",
        },
    },
}
LABS = {lab.assignment: lab for lab in (LAB1, LAB2, LAB3)}
CASES = [(assignment, s.student) for assignment, subs in SUBMISSIONS_BY_LAB.items() for s in subs]


def grade_ids(assignment):
    """The autograded test cells' grade ids of a lab's source notebook."""
    lab = LABS[assignment]
    notebook = json.loads((course_config.SOURCE_DIR / lab.assignment / lab.notebook).read_text(encoding="utf-8"))
    ids = []
    for cell in notebook["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("grade") and not meta.get("solution"):
            ids.append(meta["grade_id"])
    return ids


def expected_phrase(assignment, student, grade_id):
    phrase = EXPECTED_MESSAGES[assignment][student]
    return phrase[grade_id] if isinstance(phrase, dict) else phrase


@pytest.mark.parametrize("assignment", sorted(SUBMISSIONS_BY_LAB))
def test_every_check_has_a_submission_that_fails_it(assignment):
    failing = set().union(*(s.fails for s in SUBMISSIONS_BY_LAB[assignment]))
    assert set(grade_ids(assignment)) == failing


@pytest.mark.parametrize("assignment", sorted(SUBMISSIONS_BY_LAB))
def test_every_flawed_submission_has_an_expected_message(assignment):
    flawed = {s.student: s for s in SUBMISSIONS_BY_LAB[assignment] if s.fails}
    assert set(EXPECTED_MESSAGES[assignment]) == set(flawed)
    for student, phrase in EXPECTED_MESSAGES[assignment].items():
        if isinstance(phrase, dict):
            assert set(phrase) == set(flawed[student].fails)


@pytest.mark.parametrize("assignment, student", CASES)
def test_submission_fails_exactly_its_checks(lab_reports, assignment, student):
    report = lab_reports(LABS[assignment], student)
    assert not report.problem
    assert set(report.checks) == set(grade_ids(assignment))
    failed = {grade_id for grade_id, result in report.checks.items() if not result.passed}
    submission = {s.student: s for s in SUBMISSIONS_BY_LAB[assignment]}[student]
    assert failed == set(submission.fails), {g: report.checks[g].message for g in failed}
    for grade_id in failed:
        assert expected_phrase(assignment, student, grade_id) in report.checks[grade_id].message


@pytest.mark.parametrize("assignment", sorted(SUBMISSIONS_BY_LAB))
def test_messages_do_not_leak_hidden_test_code(lab_reports, assignment):
    for student in EXPECTED_MESSAGES[assignment]:
        for result in lab_reports(LABS[assignment], student).checks.values():
            assert "def test_" not in result.message and "grader_tests" not in result.message
            assert len(result.message) <= course_config.FEEDBACK_MESSAGE_CHARS
