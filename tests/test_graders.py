"""Each hidden check passes the reference and fails the submission made to fail it, with its message."""

import json

import pytest

import course_config
from coursekit.submissions import LAB1_SUBMISSIONS

from conftest import SUBMISSIONS

# A phrase that each flawed submission's message must contain: the student learns what was wrong.
EXPECTED_MESSAGES = {
    "demo_no_dropout": "No Dropout layer",
    "demo_conv_layer": "Conv2D",
    "demo_train_only_plot": "both the training and the validation curve",
    "demo_syntax_error": "SyntaxError",
    "demo_missing_function": "defines no function `standardize`",
    "demo_low_accuracy": "the course bar is",
    "demo_cannot_learn": "below the bar",
    "test_wrong_scaling": "float32",
    "test_unshuffled_split": "random sample",
    "test_leaky_relu": "relu returned wrong values",
    "test_no_outputs": "lack these figures",
    "test_ignores_hidden_units": "should give Dense layers of",
    "test_too_shallow": "at least 3 hidden Dense layers; it has 2",
    "test_unlabelled_plot": "Label both axes",
    "test_flat_input": "raw 28×28 images",
}


def lab1_grade_ids():
    notebook = json.loads((course_config.SOURCE_DIR / "lab1_dense" / "lab1_dense.ipynb").read_text())
    ids = []
    for cell in notebook["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("grade") and not meta.get("solution"):
            ids.append(meta["grade_id"])
    return ids


def test_every_check_has_a_submission_that_fails_it():
    failing = set().union(*(s.fails for s in LAB1_SUBMISSIONS))
    assert set(lab1_grade_ids()) == failing


def test_every_flawed_submission_has_an_expected_message():
    assert set(EXPECTED_MESSAGES) == {s.student for s in LAB1_SUBMISSIONS if s.fails}


@pytest.mark.parametrize("student", sorted(SUBMISSIONS))
def test_submission_fails_exactly_its_checks(lab1_reports, student):
    report = lab1_reports(student)
    assert not report.problem
    assert set(report.checks) == set(lab1_grade_ids())
    failed = {grade_id for grade_id, result in report.checks.items() if not result.passed}
    assert failed == set(SUBMISSIONS[student].fails), {g: report.checks[g].message for g in failed}
    for grade_id in failed:
        assert EXPECTED_MESSAGES[student] in report.checks[grade_id].message


def test_messages_do_not_leak_hidden_test_code(lab1_reports):
    for student in EXPECTED_MESSAGES:
        for result in lab1_reports(student).checks.values():
            assert "def test_" not in result.message and "grader_tests" not in result.message
            assert len(result.message) <= course_config.FEEDBACK_MESSAGE_CHARS
