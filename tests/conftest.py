"""Shared fixtures: demo/test submissions written once per session, and graded once."""

import os
import shutil
import tempfile

import pytest

import course_config
from coursekit import course
from coursekit.data import configure_vgg16_weights
from coursekit.grading import grade_notebook
from coursekit.submissions import SUBMISSIONS_BY_LAB, make_weak_model, write_submission

# The graders remember the scores they compute (course_config.GRADER_CACHE_DIR). The tests start from an
# empty memory, shared by all gradings of this session: identical architectures are retrained once.
os.environ["COURSEKIT_GRADER_CACHE"] = tempfile.mkdtemp(prefix="coursekit-grader-cache-")
configure_vgg16_weights()  # notebooks run by the tests load VGG16 from the kit's local copy (`make data`)


def reference_exists(lab):
    """Whether ``lab``'s reference run (executed notebook and model) is in reference_solution/."""
    folder = course_config.REFERENCE_DIR / lab.assignment
    return all((folder / name).is_file() for name in (lab.notebook, lab.model_file))


def require_reference(lab):
    """Skip, saying why, when ``lab`` has no reference run yet (its submissions are made from it)."""
    if not reference_exists(lab):
        pytest.skip(
            f"{lab.assignment} has no reference run in reference_solution/ yet: run "
            f"`python -m coursekit reference {lab.assignment}` (on a GPU for the CNN and VGG16 labs)"
        )


def released_course(root, labs=(course_config.LAB1,)):
    """An empty course folder with this kit's source/ and nbgrader_config.py, released with nbgrader."""
    shutil.copytree(course_config.SOURCE_DIR, root / "source")
    shutil.copy(course_config.ROOT / "nbgrader_config.py", root)
    course.generate_release(root, [lab.assignment for lab in labs])
    return root


@pytest.fixture(scope="session")
def lab_reports(tmp_path_factory):
    """``report_for(lab, student)``: the grading report of one submission, computed once per session."""
    cache, weak_models = {}, {}

    def report_for(lab, student):
        require_reference(lab)
        if (lab.assignment, student) not in cache:
            submission = {s.student: s for s in SUBMISSIONS_BY_LAB[lab.assignment]}[student]
            if submission.weak_model and lab.assignment not in weak_models:
                weak_models[lab.assignment] = tmp_path_factory.mktemp("weak") / lab.model_file
                make_weak_model(weak_models[lab.assignment], lab)
            folder = tmp_path_factory.mktemp(f"{lab.assignment}-{student}")
            notebook = write_submission(submission, folder, lab, weak_model_path=weak_models.get(lab.assignment))
            cache[lab.assignment, student] = grade_notebook(notebook, lab.assignment)
        return cache[lab.assignment, student]

    return report_for
