"""The optional experiments are not re-run when a notebook is graded (``course_config.NOT_RERUN_TAG``).

Their submitted outputs stay in the autograded notebook and the feedback, with a note, so a TA grades
the questions about them against the student's own results, and the quick-mode re-run spends its time
on the rest. Every other cell is cleared and re-run as before. Both flows do this: class grading's
worker (:func:`coursekit.class_worker._run_quick_mode`) and ``nbgrader autograde`` (its sanitize
step, :class:`coursekit.nbgrader_preprocessors.ClearOutputExceptNotRerun`, then SandboxedExecute).
"""

import ast
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

import course_config
from coursekit.class_worker import _run_quick_mode
from coursekit.nbgrader_preprocessors import ClearOutputExceptNotRerun
from coursekit.notebooks import is_not_rerun, not_rerun_note
from coursekit.reference import solution_notebook
from test_time_limits import texts


def submitted(text):
    return [new_output("stream", name="stdout", text=text)]


def submitted_notebook():
    """An earlier cell, an experiment (tagged) and a later cell, each with the outputs of the student's run."""
    experiment = new_code_cell(
        "print('the experiment ran again')",
        metadata={"tags": [course_config.NOT_RERUN_TAG]},
        outputs=submitted("mine: 0.91\n"),
    )
    return new_notebook(
        cells=[
            new_code_cell("print('setup')", outputs=submitted("stale setup\n")),
            experiment,
            new_code_cell("print('after')", outputs=submitted("stale after\n")),
            new_code_cell("print('untagged')", metadata={"tags": ["other"]}, outputs=submitted("stale untagged\n")),
        ]
    )


def test_class_grading_keeps_the_experiment_as_submitted_and_re_runs_the_rest(tmp_path):
    notebook = submitted_notebook()
    _run_quick_mode(notebook, tmp_path, time.monotonic() + 120, "python3", "here", 120)
    setup, experiment, after, untagged = notebook.cells
    assert texts(experiment) == "mine: 0.91\n" + not_rerun_note()  # not run: "ran again" never printed
    assert texts(setup) == "setup\n" and texts(after) == "after\n"  # cleared and run again
    assert texts(untagged) == "untagged\n"  # another tag changes nothing


def test_nbgrader_s_sanitize_step_clears_every_output_but_the_experiments():
    notebook = submitted_notebook()
    ClearOutputExceptNotRerun().preprocess(notebook, {})
    assert [texts(cell) for cell in notebook.cells] == ["", "mine: 0.91\n", "", ""]


def test_nbgrader_autograde_uses_that_step_instead_of_clear_output():
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_config.ROOT)).load_config()
    names = [step.__name__ for step in config.Autograde.sanitize_preprocessors]
    assert "ClearOutputExceptNotRerun" in names and "ClearOutput" not in names


@pytest.mark.parametrize(
    "metadata",
    [{}, {"tags": "experiment"}, {"tags": [["experiment"]]}, "not a dict", {"tags": None}],
)
def test_only_a_list_of_tags_that_holds_the_tag_marks_a_cell(metadata):
    cell = nbformat.from_dict({"cell_type": "code", "source": "", "metadata": metadata, "outputs": []})
    assert not is_not_rerun(cell)
    assert is_not_rerun(new_code_cell("", metadata={"tags": ["x", course_config.NOT_RERUN_TAG]}))
    assert not is_not_rerun(nbformat.v4.new_markdown_cell("", metadata={"tags": [course_config.NOT_RERUN_TAG]}))


def assigned_and_read(source):
    tree = ast.parse(source)
    assigned, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            assigned.add(node.name)
        elif isinstance(node, ast.Name):
            (assigned if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, ast.alias):
            assigned.add((node.asname or node.name).split(".")[0])
    return assigned, read


@pytest.mark.parametrize("lab", course_config.LABS, ids=lambda lab: lab.assignment)
def test_no_cell_after_an_experiment_needs_what_only_the_experiment_defines(lab):
    """Otherwise the graded re-run, which skips the experiment, would fail with a NameError there."""
    cells = [cell for cell in solution_notebook(course_config.SOURCE_DIR / lab.assignment / lab.notebook).cells]
    code = [cell for cell in cells if cell.cell_type == "code"]
    defined_outside = set()
    for cell in code:
        if not is_not_rerun(cell):
            defined_outside |= assigned_and_read(cell.source)[0]
    for index, cell in enumerate(code):
        if not is_not_rerun(cell):
            continue
        only_here = assigned_and_read(cell.source)[0] - defined_outside
        for later in code[index + 1 :]:
            if not is_not_rerun(later):
                needed = only_here & assigned_and_read(later.source)[1]
                assert not needed, (
                    f"{lab.assignment}: {sorted(needed)} come only from a cell tagged {course_config.NOT_RERUN_TAG!r}"
                )


@pytest.mark.parametrize("lab", course_config.LABS, ids=lambda lab: lab.assignment)
def test_a_notebook_with_experiments_says_they_are_not_re_run_and_its_reference_carries_the_tags(lab):
    source = nbformat.read(course_config.SOURCE_DIR / lab.assignment / lab.notebook, as_version=4)
    tagged = [cell.id for cell in source.cells if is_not_rerun(cell)]
    released = nbformat.read(course_config.RELEASE_DIR / lab.assignment / lab.notebook, as_version=4)
    assert [cell.id for cell in released.cells if is_not_rerun(cell)] == tagged
    if tagged:
        text = "\n".join(cell.source for cell in released.cells if cell.cell_type == "markdown")
        assert f"tagged `{course_config.NOT_RERUN_TAG}`" in text
    reference = course_config.REFERENCE_DIR / lab.assignment / lab.notebook
    if reference.exists():
        kept = nbformat.read(reference, as_version=4)
        source_code = [is_not_rerun(cell) for cell in source.cells if cell.cell_type == "code"]
        assert [is_not_rerun(cell) for cell in kept.cells if cell.cell_type == "code"] == source_code
