"""nbgrader preprocessor that scores autograder test cells with the hidden graders.

nbgrader scores a test cell from its outputs after re-executing the notebook in
the student's kernel, where the student's code could have changed anything. This
preprocessor runs after that execution and *replaces* the outputs of every
autograder test cell with the verdict of the hidden graders, which ran in their
own process on the submitted files (:func:`coursekit.grading.grade_notebook`):

- passed: a line on stdout, so nbgrader gives full points;
- failed: an error output holding the student's message, so nbgrader gives 0.

It goes in ``Autograde.autograde_preprocessors`` just before ``SaveAutoGrades``
(see ``nbgrader_config.py``). Whatever the kernel printed in a test cell,
including stderr, no longer decides the grade.
"""

from pathlib import Path
from types import SimpleNamespace

from nbformat.v4 import new_output
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor, OverwriteCells
from nbgrader.utils import is_grade, is_solution

from coursekit.grading import grade_notebook


def is_autograder_test(cell):
    """An nbgrader autograder test cell: a graded code cell that is not an answer cell."""
    return cell.cell_type == "code" and is_grade(cell) and not is_solution(cell)


def gradebook_cells(resources):
    """Every nbgrader cell of this notebook as released, by grade id, from the gradebook.

    The submission's own metadata can be edited by the student; the gradebook was
    written by ``nbgrader generate_assignment`` from the instructor's source. Each
    entry has the source cell's fields (name, cell_type, locked, source, checksum)
    and its role: ``grade``, ``solution``, ``task``, ``points``.
    """
    info = resources["nbgrader"]
    cells = {}
    with Gradebook(info["db_url"]) as gradebook:
        notebook = gradebook.find_notebook(info["notebook"], info["assignment"])
        graded = {cell.name: cell.max_score for cell in notebook.grade_cells}
        tasks = {cell.name: cell.max_score for cell in notebook.task_cells}
        solutions = {cell.name for cell in notebook.solution_cells}
        for source in notebook.source_cells:
            cells[source.name] = SimpleNamespace(
                name=source.name, cell_type=source.cell_type, locked=source.locked, source=source.source,
                checksum=source.checksum, grade=source.name in graded, solution=source.name in solutions,
                task=source.name in tasks, points=graded.get(source.name, tasks.get(source.name)))
    return cells


def autograder_tests(resources):
    """The released notebook's autograder test cells, by grade id (see :func:`gradebook_cells`)."""
    return {name: cell for name, cell in gradebook_cells(resources).items()
            if cell.grade and not cell.solution and cell.cell_type == "code"}


def verdict_outputs(result):
    """Cell outputs that make nbgrader award full points (passed) or none (failed)."""
    if result.passed:
        return [new_output("stream", name="stdout", text="Passed the hidden check.\n")]
    return [new_output("error", ename="Check failed", evalue=result.message,
                       traceback=[f"Check failed: {result.message}"])]


class HiddenGraders(NbGraderPreprocessor):
    """Score autograder test cells with the hidden graders in grader_tests/."""

    def submitted_notebook(self, resources):
        info = resources["nbgrader"]
        coursedir = CourseDirectory(config=self.config)
        folder = coursedir.format_path(coursedir.submitted_directory, info["student"], info["assignment"])
        return Path(folder) / f"{info['notebook']}.ipynb"

    def preprocess(self, nb, resources):
        notebook = self.submitted_notebook(resources)
        self.log.info("Running the hidden graders on %s", notebook)
        report = grade_notebook(notebook, resources["nbgrader"]["assignment"])
        if report.problem:
            self.log.error("Hidden graders failed on %s: %s", notebook, report.problem)
        # The gradebook, not the submission's metadata, says which cells are autograder tests.
        tests = autograder_tests(resources)
        scored = set()
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in tests and grade_id not in scored:
                cell.metadata.nbgrader.update(grade=True, solution=False, points=tests[grade_id].points)
                self._score(cell, report.result_for(grade_id))
                scored.add(grade_id)
        for grade_id in sorted(set(tests) - scored):  # a test cell the student deleted comes back, scored
            self.log.warning("Test cell %s is missing from the submission; adding it back", grade_id)
            cell = OverwriteCells(parent=self).missing_cell_transform(tests[grade_id], tests[grade_id].points)
            self._score(cell, report.result_for(grade_id))
            nb.cells.append(cell)
        return nb, resources

    def _score(self, cell, result):
        cell.outputs = verdict_outputs(result)
        self.log.info("%s: %s", result.grade_id, "passed" if result.passed else "failed: " + result.message)


class RestoreGradedCells(NbGraderPreprocessor):
    """Sanitizing step: put back the nbgrader roles of the released cells, from the gradebook.

    nbgrader's ``OverwriteCells`` restores a cell's type, lock, points and (locked)
    source, but not its role: a test cell the student marked as an answer cell
    (``solution: true``) fails nbgrader's checksum test and the whole submission goes
    ungraded, and a cell with an invented grade id keeps ``grade: true`` without an id
    and fails validation. This preprocessor runs before ``OverwriteCells`` in
    ``Autograde.sanitize_preprocessors`` (see ``nbgrader_config.py``): cells with a
    released grade id get that cell's role and points back (the last one wins, as in
    nbgrader's ``DeduplicateIds``); any other nbgrader metadata is dropped.
    """

    def preprocess(self, nb, resources):
        released = gradebook_cells(resources)
        seen = set()
        for cell in reversed(nb.cells):
            meta = cell.metadata.get("nbgrader")
            if meta is None:
                continue
            grade_id = meta.get("grade_id")
            if grade_id not in released or grade_id in seen:
                self.log.warning("Dropping nbgrader metadata the release does not have (grade id %r)", grade_id)
                del cell.metadata["nbgrader"]
                continue
            seen.add(grade_id)
            entry = released[grade_id]
            meta.update(grade=entry.grade, solution=entry.solution, task=entry.task, locked=entry.locked)
            if entry.grade or entry.task:
                meta["points"] = entry.points
            else:
                meta.pop("points", None)
        return nb, resources
