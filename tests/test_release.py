"""release/ is what nbgrader makes from source/, holds nothing hidden, and the reference runs source's code."""

import json

import nbformat
import pytest

import course_config
from conftest import released_course
from coursekit.reference import solution_notebook

LAB = course_config.LAB1
HIDDEN_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "BEGIN MARK SCHEME", "Hidden check")


def released_notebook(folder):
    return nbformat.read(folder / "release" / LAB.assignment / LAB.notebook, as_version=4)


@pytest.fixture(scope="module")
def fresh_release(tmp_path_factory):
    """generate_assignment run now, on a copy of source/, in an empty course folder."""
    return released_notebook(released_course(tmp_path_factory.mktemp("course")))


def comparable(notebook):
    return [(cell.cell_type, cell.source, cell.metadata.get("nbgrader", {})) for cell in notebook.cells]


def test_release_is_up_to_date_with_source(fresh_release):
    committed = released_notebook(course_config.ROOT)
    assert comparable(committed) == comparable(fresh_release), "release/ is stale: run `make release` and commit"


def test_release_holds_no_solutions_hidden_tests_or_mark_schemes():
    for path in (course_config.RELEASE_DIR).rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            for marker in HIDDEN_MARKERS:
                assert marker not in text, f"{path} contains {marker!r}"
    assert not (course_config.RELEASE_DIR / LAB.assignment / LAB.model_file).exists()


def test_release_keeps_the_graded_function_signatures(fresh_release):
    code = "\n".join(cell.source for cell in fresh_release.cells if cell.cell_type == "code")
    for name in ("scale_images", "standardize", "split_validation", "relu", "sigmoid", "tanh", "softmax",
                 "build_dense_model", "plot_history"):
        assert f"def {name}(" in code
    assert "raise NotImplementedError" in code


def test_reference_notebook_runs_the_source_solution_code():
    expected = [cell.source for cell in solution_notebook(course_config.SOURCE_DIR / LAB.assignment / LAB.notebook).cells
                if cell.cell_type == "code"]
    reference = nbformat.read(course_config.REFERENCE_DIR / LAB.assignment / LAB.notebook, as_version=4)
    assert [cell.source for cell in reference.cells if cell.cell_type == "code"] == expected, \
        "reference_solution/ was not produced from the current source notebook: run `make reference`"


def test_reference_results_are_recorded():
    results = json.loads((course_config.REFERENCE_DIR / LAB.assignment / "results.json").read_text())
    assert len(results["runs"]) == len(course_config.REFERENCE_SEEDS)
    for key in ("hardware", "keras_backend", "versions", "test_accuracy_mean", "test_accuracy_std", "grader_retraining"):
        assert key in results
    assert all(run["seed"] in course_config.REFERENCE_SEEDS and "train_seconds" in run for run in results["runs"])
    # The course's bars are set from these measurements, never above them.
    assert LAB.saved_model_min_accuracy <= results["test_accuracy_min"]
    assert LAB.retrain_min_accuracy <= results["grader_retraining"]["min"]
