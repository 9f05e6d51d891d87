"""Lab 3's graders before its reference run exists (it needs a GPU; README.md).

``tests/test_graders.py`` grades Lab 3's demo submissions, which are made from the
reference run's notebook and model, and skips the lab until they exist. Meanwhile
these tests grade the source notebook's own solution code (no outputs, no model):
the checks that need no trained model must pass on it and fail on flawed code,
and the others must fail with a message that says what is missing.
"""

import pytest

import course_config
from conftest import reference_exists
from coursekit.data import WeightsNotFoundError, ensure_vgg16_weights
from coursekit.grading import grade_notebook
from coursekit.reference import solution_notebook
from coursekit.submissions import LAB3_SUBMISSIONS, _several

LAB3 = course_config.LAB3
NEEDS_NO_MODEL = {"test_architecture", "test_imagenet_weights", "test_head_retraining", "test_fine_tuning_plot"}
FLAWS = {s.student: s for s in LAB3_SUBMISSIONS}


def _local_weights_missing():
    try:
        ensure_vgg16_weights()
    except WeightsNotFoundError:
        return True
    return False


pytestmark = [
    pytest.mark.skipif(reference_exists(LAB3), reason="tests/test_graders.py grades Lab 3's submissions"),
    pytest.mark.skipif(
        _local_weights_missing(),
        reason="no local copy of VGG16's ImageNet weights "
        "(course_config.VGG16_WEIGHTS_SOURCES, or $VGG16_WEIGHTS): the graders never download",
    ),
]


def _graded(folder, edit=None):
    import nbformat

    notebook = solution_notebook(course_config.SOURCE_DIR / LAB3.assignment / LAB3.notebook)
    if edit:
        notebook = nbformat.from_dict(notebook)
        edit(notebook)
    path = folder / LAB3.notebook
    nbformat.write(nbformat.from_dict(notebook), path)
    return grade_notebook(path, LAB3.assignment, timeout=1200)


def test_solution_code_passes_the_checks_that_need_no_model(tmp_path):
    report = _graded(tmp_path)
    assert not report.problem
    failed = {grade_id: result.message for grade_id, result in report.checks.items() if not result.passed}
    assert set(failed) == {"test_fine_tuning", "test_saved_model", "test_figures"}, failed
    assert "lab3_vgg16_model.keras is missing" in failed["test_saved_model"]
    assert "lab3_vgg16_model.keras is missing" in failed["test_fine_tuning"]
    assert "lack these figures" in failed["test_figures"]


def test_flawed_code_fails_those_checks_with_its_messages(tmp_path):
    edit = _several(
        FLAWS["demo_random_weights"].edit, FLAWS["demo_single_channel"].edit, FLAWS["test_head_and_plot_flaws"].edit
    )
    report = _graded(tmp_path, edit)
    assert not report.problem
    failed = {grade_id: result.message for grade_id, result in report.checks.items() if not result.passed}
    assert NEEDS_NO_MODEL <= set(failed)
    assert "three channels" in failed["test_architecture"]
    assert "are not VGG16's ImageNet weights" in failed["test_imagenet_weights"]
    assert "below the bar" in failed["test_head_retraining"]
    assert "numbered after the head's" in failed["test_fine_tuning_plot"]
