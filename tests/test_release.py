"""release/ is what nbgrader makes from source/, holds nothing hidden, and the reference runs source's code."""

import json

import nbformat
import pytest

import course_config
from conftest import released_course, require_reference
from coursekit.reference import solution_notebook

HIDDEN_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "BEGIN MARK SCHEME", "Hidden check")
GRADED_FUNCTIONS = {
    course_config.LAB1.assignment: (
        "scale_images",
        "standardize",
        "split_validation",
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "build_dense_model",
        "plot_history",
    ),
    course_config.LAB2.assignment: (
        "prepare_images",
        "build_augmentation",
        "conv_output_size",
        "conv_params",
        "build_cnn_model",
        "plot_history",
        "plot_misclassified",
    ),
    course_config.LAB3.assignment: (
        "load_vgg16_base",
        "build_input_adapter",
        "build_classifier_head",
        "build_transfer_model",
        "unfreeze_top_layers",
        "plot_fine_tuning_history",
    ),
}
# The lowest saved-model bar a lab may have, whatever the reference reached (issue: never below 92 % for the CNN).
# Lab 3's floor is its measured reference (just below its lowest seed, results.json), not the unmeasured 0.92 of old.
BAR_FLOORS = {course_config.LAB2.assignment: 0.92, course_config.LAB3.assignment: 0.91}
LABS = pytest.mark.parametrize("lab", course_config.LABS, ids=lambda lab: lab.assignment)


def released_notebook(folder, lab):
    return nbformat.read(folder / "release" / lab.assignment / lab.notebook, as_version=4)


@pytest.fixture(scope="module")
def fresh_release_folder(tmp_path_factory):
    """generate_assignment run now, on a copy of source/, in an empty course folder."""
    return released_course(tmp_path_factory.mktemp("course"), course_config.LABS)


def comparable(notebook):
    return [(cell.cell_type, cell.source, cell.metadata.get("nbgrader", {})) for cell in notebook.cells]


@LABS
def test_release_is_up_to_date_with_source(fresh_release_folder, lab):
    committed = released_notebook(course_config.ROOT, lab)
    assert comparable(committed) == comparable(released_notebook(fresh_release_folder, lab)), (
        "release/ is stale: run `make release` and commit"
    )


def test_release_holds_no_solutions_hidden_tests_or_mark_schemes():
    for path in (course_config.RELEASE_DIR).rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            for marker in HIDDEN_MARKERS:
                assert marker not in text, f"{path} contains {marker!r}"
    for lab in course_config.LABS:
        assert not (course_config.RELEASE_DIR / lab.assignment / lab.model_file).exists()


@LABS
def test_release_keeps_the_graded_function_signatures(fresh_release_folder, lab):
    code = "\n".join(
        cell.source for cell in released_notebook(fresh_release_folder, lab).cells if cell.cell_type == "code"
    )
    for name in GRADED_FUNCTIONS[lab.assignment]:
        assert f"def {name}(" in code
    assert "raise NotImplementedError" in code


@LABS
def test_reference_notebook_runs_the_source_solution_code(lab):
    require_reference(lab)
    source = solution_notebook(course_config.SOURCE_DIR / lab.assignment / lab.notebook)
    expected = [cell.source for cell in source.cells if cell.cell_type == "code"]
    reference = nbformat.read(course_config.REFERENCE_DIR / lab.assignment / lab.notebook, as_version=4)
    assert [cell.source for cell in reference.cells if cell.cell_type == "code"] == expected, (
        "reference_solution/ was not produced from the current source notebook: run `make reference`"
    )


@LABS
def test_reference_results_are_recorded(lab):
    require_reference(lab)
    results = json.loads((course_config.REFERENCE_DIR / lab.assignment / "results.json").read_text())
    assert results["runs"], "no reference run recorded"
    for key in (
        "hardware",
        "keras_backend",
        "versions",
        "test_accuracy_mean",
        "test_accuracy_std",
        "grader_retraining",
    ):
        assert key in results
    assert all(run["seed"] in course_config.REFERENCE_SEEDS and "train_seconds" in run for run in results["runs"])
    # The course's bars are set from these measurements, never above them.
    assert lab.saved_model_min_accuracy <= results["test_accuracy_min"]
    assert lab.retrain_min_accuracy <= results["grader_retraining"]["min"]
    assert lab.saved_model_min_accuracy >= BAR_FLOORS.get(lab.assignment, 0.0)


def test_a_release_that_changes_cells_handed_in_says_what_to_do(tmp_path):
    """nbgrader refuses to add or remove cells of an assignment with submissions; the kit says why and what to do."""
    from nbgrader.api import Gradebook

    from coursekit.course import NbgraderError, generate_release

    root = released_course(tmp_path)
    lab = course_config.LAB1
    with Gradebook(f"sqlite:///{root / course_config.GRADEBOOK_FILE}") as gradebook:
        gradebook.add_student("ada")
        gradebook.add_submission(lab.assignment, "ada")
    path = root / "source" / lab.assignment / lab.notebook
    notebook = nbformat.read(path, as_version=4)
    generate_release(root, [lab.assignment])  # the same cells: released again
    question = nbformat.v4.new_markdown_cell("**Question.** A new question?")
    question.metadata["nbgrader"] = {
        "grade": False,
        "grade_id": "task_new",
        "locked": True,
        "points": 1,
        "schema_version": 3,
        "solution": False,
        "task": True,
    }
    notebook.cells.append(question)
    nbformat.write(notebook, path)
    with pytest.raises(NbgraderError, match="already holds submissions of lab1_dense") as error:
        generate_release(root, [lab.assignment])
    assert "make clean-demo" in str(error.value) and "change their text only" in str(error.value)
