"""The instructor's nbgrader flow, step by step, on a course folder.

Each step runs nbgrader's own command line in the course folder (where
``nbgrader_config.py`` is), so what the kit does is what an instructor would type.
"""

import json
import os
import subprocess
import sys
from contextlib import contextmanager

from nbgrader.api import Gradebook, MissingEntry

from coursekit.course_layout import CourseLayout


class NbgraderError(RuntimeError):
    """An nbgrader command failed; the message holds the end of its log."""


def nbgrader(root, *args, timeout=None):
    """Run ``nbgrader ARGS`` in the course folder ``root``; return its log."""
    command = [sys.executable, "-m", "nbgrader", *args]
    done = subprocess.run(
        command, cwd=root, env=nbgrader_environment(), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise NbgraderError(f"`nbgrader {' '.join(args)}` failed in {root}:\n{tail}")
    return done.stdout + done.stderr


def nbgrader_environment(env=None):
    """A copy of ``env`` (default: this process's environment) with this environment's scripts first on PATH.

    nbgrader runs the ``alembic`` script it finds on PATH when it creates a gradebook; it must be
    the one installed beside this interpreter, whatever PATH the instructor's shell has.
    """
    env = dict(os.environ if env is None else env)
    scripts = os.path.dirname(sys.executable)
    if scripts not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    return env


@contextmanager
def scripts_on_path():
    """While the block runs nbgrader in this process: PATH as :func:`nbgrader_environment` has it; put back after."""
    saved = os.environ.get("PATH")
    os.environ["PATH"] = nbgrader_environment()["PATH"]
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved


def generate_release(root, assignments):
    """source/A -> release/A with nbgrader generate_assignment (solutions and hidden tests removed)."""
    for assignment in assignments:
        try:
            nbgrader(root, "generate_assignment", assignment, "--force")
        except NbgraderError as error:
            if "Cannot add or remove cells" not in str(error):
                raise
            raise NbgraderError(
                f"source/{assignment} adds or removes cells, and the gradebook of {root} already holds submissions "
                f"of {assignment}: nbgrader does not change the cells of an assignment that students handed in. "
                "Before a course (or for this kit's demo gradebook): `make clean-demo`, then release again. During "
                "a course: keep the cells and change their text only, or release the change as a new assignment."
            ) from error


def autograde(root, assignment, student=None):
    """Autograde every submission of ``assignment`` (or one student's)."""
    args = ["autograde", assignment, "--force"]
    if student:
        args.append(f"--student={student}")
    return nbgrader(root, *args)


def generate_feedback(root, assignment):
    return nbgrader(root, "generate_feedback", assignment, "--force")


def export_grades(root, csv_path, platform="csv"):
    """nbgrader export into ``csv_path``: nbgrader's CSV, or a platform's import layout
    (``"canvas"``, ``"moodle"``: :mod:`coursekit.exports`)."""
    from coursekit.exports import EXPORTERS

    exporter = EXPORTERS[platform]
    return nbgrader(root, "export", f"--exporter={exporter}", f"--{exporter.rsplit('.', 1)[1]}.to={csv_path}")


def failure_messages(autograded_notebook):
    """grade_id -> the message of a failed autograder test cell in an autograded notebook."""
    messages = {}
    if not autograded_notebook.exists():
        return messages
    notebook = json.loads(autograded_notebook.read_text(encoding="utf-8"))
    for cell in notebook.get("cells", []):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        for output in cell.get("outputs", []):
            if grade_id and output.get("output_type") == "error":
                messages[grade_id] = output.get("evalue") or output.get("ename", "error")
    return messages


def check_table(root, assignment, notebook):
    """Per student: autograded points per grade id, and the reasons for lost points.

    Returns a list of dicts ``{"student", "scores": {grade_id: (score, max)}, "reasons": {...}}``,
    read from nbgrader's gradebook and the autograded notebooks.
    """
    rows = []
    layout = CourseLayout(root)
    with Gradebook(layout.db_url) as gradebook:
        for student in sorted(s.id for s in gradebook.students):
            try:
                submission = gradebook.find_submission_notebook(notebook, assignment, student)
            except MissingEntry:
                continue
            scores = {
                grade.name: (grade.score, grade.max_score)
                for grade in submission.grades
                if grade.cell.cell_type == "code"
            }
            autograded = layout.autograded_notebook(student, assignment, notebook)
            rows.append({"student": student, "scores": scores, "reasons": failure_messages(autograded)})
    return rows
