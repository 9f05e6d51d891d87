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

from nbformat.v4 import new_output
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_grade, is_solution

from coursekit.grading import grade_notebook


def is_autograder_test(cell):
    """An nbgrader autograder test cell: a graded code cell that is not an answer cell."""
    return cell.cell_type == "code" and is_grade(cell) and not is_solution(cell)


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
        for cell in nb.cells:
            if is_autograder_test(cell):
                result = report.result_for(cell.metadata["nbgrader"]["grade_id"])
                cell.outputs = verdict_outputs(result)
                self.log.info("%s: %s", result.grade_id, "passed" if result.passed else "failed: " + result.message)
        return nb, resources
