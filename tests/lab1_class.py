"""One Lab 1 class, autograded by the real ``nbgrader autograde``, shared by the tests that need one.

A real grading costs about 100 CPU-seconds, so the instructor's flow
(``tests/test_nbgrader_flow.py``) and nbgrader-metadata tampering (``tests/test_untrusted.py``)
look at the same class instead of each grading its own. Each file asks for the students it
needs (:func:`autograded_class`); those not graded yet in this session are added to the class:

- demo students (``demo_reference``, ``demo_syntax_error``) are autograded one at a time, each timed;
- the others, ``t_metadata`` and ``t_roles`` (tampering, see :data:`CLASS`) and ``t_unreadable``
  (not a notebook), in one ``nbgrader autograde`` of the class, which nbgrader ends with an
  error for the unreadable one after grading the others;
- then feedback for everyone, and ``nbgrader export`` into a CSV file of another name than
  nbgrader's default.

Run alone, each file grades only its own students; run together, ``demo_reference`` is graded once.
"""

import copy
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

import course_config
from coursekit import course
from coursekit.demo import submit_demo_students
from coursekit.submissions import LAB1_SUBMISSIONS, DemoSubmission, replace_function, write_submission

from conftest import released_course

LAB = course_config.LAB1
DEMO_STUDENTS = ("demo_reference", "demo_syntax_error")
UNREADABLE = "t_unreadable"

TAMPERING_CELL = '''
import builtins, os, sys
import IPython, keras
import numpy as np
# Tampering with the kernel: none of this may change a grade.
keras.Model.evaluate = lambda self, *args, **kwargs: [0.01, 0.999]
keras.Model.fit = lambda self, *args, **kwargs: None
np.testing.assert_allclose = lambda *args, **kwargs: None
builtins.AssertionError = Warning
sys.exit = os._exit = lambda *args: None
IPython.core.interactiveshell.InteractiveShell.showtraceback = lambda self, *args, **kwargs: None
print("Test accuracy: 0.9990")

class Tamper:
    """A class body runs when the grader's sandbox loads the definitions: the patches reach its child only."""
    keras.Model.evaluate = lambda self, *args, **kwargs: [0.01, 0.999]
    np.allclose = lambda *args, **kwargs: True
'''

# Run by nbgrader's re-execution: where does the kernel run? (docs/threat_model.md)
PROBE_CELL = """
import os, socket
reached = []
for address in (("127.0.0.1", PORT), ("1.1.1.1", 53)):
    try:
        socket.create_connection(address, timeout=2).close()
        reached.append(address[0])
    except OSError:
        pass
print(f"re-execution probe: pid {os.getpid()}, reached {reached}")
"""

NAIVE_SOFTMAX = '''
def softmax(logits):
    """Overflows for large logits."""
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)
'''


def add_tampering_cell(notebook):
    """Insert the tampering cell after the first code cell; return its index."""
    first = next(index for index, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code")
    notebook["cells"].insert(first + 1, nbformat.v4.new_code_cell(TAMPERING_CELL))
    return first + 1


def cell_of(notebook, grade_id):
    return next(cell for cell in notebook["cells"] if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def metadata_edit(notebook, probe_port=0):
    """Metadata tricks that nbgrader's own sanitizing and HiddenGraders undo, plus kernel tampering."""
    tampering = add_tampering_cell(notebook)
    notebook["cells"].insert(tampering + 1, nbformat.v4.new_code_cell(PROBE_CELL.replace("PORT", str(probe_port))))
    replace_function(notebook, "relu", "def relu(x):\n    return np.where(x > 0, x, 0.01 * x)")
    # More points for a check (relu is wrong: those points are lost).
    cell_of(notebook, "test_activations")["metadata"]["nbgrader"]["points"] = 100
    # A hidden test cell deleted.
    notebook["cells"].remove(cell_of(notebook, "test_figures"))


def roles_edit(notebook):
    """Metadata tricks that need RestoreGradedCells: without it nbgrader leaves the submission ungraded."""
    replace_function(notebook, "softmax", NAIVE_SOFTMAX)
    replace_function(notebook, "scale_images", "def scale_images(images):\n    return images / 256")
    # A test cell turned into an answer cell that prints a pass.
    test = cell_of(notebook, "test_softmax")
    test["metadata"]["nbgrader"].update(solution=True, locked=False)
    test["source"] = "print('All tests passed')"
    # A duplicated grade id: the test cell's metadata copied onto a later cell that does nothing.
    copy_of_test = copy.deepcopy(cell_of(notebook, "test_scale_images"))
    copy_of_test.update(source="pass", outputs=[], id="copied-test")
    notebook["cells"].append(copy_of_test)
    # An invented graded cell worth 50 points.
    bonus = copy.deepcopy(cell_of(notebook, "test_saved_model"))
    bonus["metadata"]["nbgrader"].update(grade_id="bonus", points=50)
    bonus.update(source="print('bonus')", id="bonus")
    notebook["cells"].append(bonus)


# Student -> (edit, the checks it must lose, and their messages).
CLASS = {
    "demo_reference": (None, {}),
    "t_metadata": (metadata_edit, {"test_activations": "relu returned wrong values"}),
    "t_roles": (roles_edit, {"test_softmax": "gave inf or nan", "test_scale_images": "float32"}),
}


@dataclass
class AutogradedClass:
    root: Path
    seconds: dict = field(default_factory=dict)  # demo student -> seconds of their own `nbgrader autograde --student`
    failure: str = ""  # the error `nbgrader autograde` of the other students ended with ("" if none)
    grades_csv: Path = None  # where `nbgrader export` was asked to write
    probe: str = ""  # what the probe cell printed in nbgrader's re-execution (t_metadata)
    graded: set = field(default_factory=set)

    def rows(self):
        """``course.check_table`` by student: scores per grade id and reasons for lost points."""
        return {row["student"]: row for row in course.check_table(self.root, LAB.assignment, LAB.notebook_id)}

    def feedback(self, student):
        return (self.root / "feedback" / student / LAB.assignment / f"{LAB.notebook_id}.html").read_text()


_classes = {}


def autograded_class(tmp_path_factory, students):
    """The session's class, with at least ``students`` autograded (see the module's docstring)."""
    if "lab1" not in _classes:
        _classes["lab1"] = AutogradedClass(released_course(tmp_path_factory.mktemp("lab1-class")))
    autograded = _classes["lab1"]
    missing = [student for student in students if student not in autograded.graded]
    if missing:
        _autograde(autograded, missing)
    return autograded


def _submit(root, student, edit):
    folder = root / "submitted" / student / LAB.assignment
    write_submission(DemoSubmission(student, "", edit=edit), folder, LAB)
    (folder / "timestamp.txt").write_text("2026-11-23 12:00:00.000000 UTC\n")
    return folder


def _autograde(autograded, students):
    root = autograded.root
    demo = [s for s in LAB1_SUBMISSIONS if s.student in students]
    submit_demo_students(root, demo, LAB)
    for submission in demo:
        start = time.perf_counter()
        course.autograde(root, LAB.assignment, submission.student)
        autograded.seconds[submission.student] = time.perf_counter() - start
    others = [student for student in students if student not in autograded.seconds]
    if others:
        with socket.socket() as server:  # a service on this machine that the re-executed notebook must not reach
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            port = server.getsockname()[1]
            edits = {"t_metadata": lambda notebook: metadata_edit(notebook, port), "t_roles": roles_edit}
            for student in others:
                folder = _submit(root, student, edits.get(student))
                if student == UNREADABLE:
                    (folder / LAB.notebook).write_bytes(b"\x89PNG not a notebook")
            try:  # without --force: students graded before are skipped
                course.nbgrader(root, "autograde", LAB.assignment)
            except course.NbgraderError as error:  # nbgrader reports the submissions it could not grade, last
                autograded.failure += str(error)
    autograded.graded.update(students)
    course.generate_feedback(root, LAB.assignment)
    autograded.grades_csv = root / "exported" / "lab1_grades.csv"
    autograded.grades_csv.parent.mkdir(exist_ok=True)
    course.export_grades(root, autograded.grades_csv)
    notebook = root / "autograded" / "t_metadata" / LAB.assignment / LAB.notebook
    if notebook.exists():
        for cell in nbformat.read(notebook, as_version=4).cells:
            for output in cell.get("outputs", []):
                if "re-execution probe" in output.get("text", ""):
                    autograded.probe = output["text"].strip()
