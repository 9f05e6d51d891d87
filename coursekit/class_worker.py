"""The expensive part of grading one submission, run by a worker on any machine with this kit.

:func:`grade_submission` does what ``nbgrader autograde`` spends its time on, and
nothing else:

1. the hidden graders score the submitted files (:func:`coursekit.grading.grade_notebook`,
   in their own process, with the student's functions in a sandbox);
2. at the same time, the notebook is re-run in quick mode with nbgrader's own ``Execute`` preprocessor
   (``NBGRADER_EXECUTION`` set, the same cell time limit as ``nbgrader_config.py``), in a
   kernel isolated like the sandbox (:class:`coursekit.kernel_sandbox.SandboxedExecute`),
   so that the autograded notebook and the feedback show its outputs.

Both close the kit's private folders, and those of a course folder the worker runs in, to the
sandbox's user before student code starts (:func:`coursekit.isolation.close_course`); the
course being graded is closed by :func:`coursekit.classgrading.grade_class` before any job is sent.

The submission's files come in as bytes and a :class:`~coursekit.class_results.SubmissionResult` goes back, so a
worker needs no shared folder, and it never touches nbgrader's gradebook: the one
process that runs :func:`coursekit.classgrading.grade_class` writes that. The grade
comes from the graders' report only; nothing computed in the student's kernel is
trusted (the executed notebook's test-cell outputs are replaced by the verdicts).

A notebook that cannot be read (not valid JSON, not UTF-8, too large) is returned as
``result.problem``: every check that needs the notebook then scores 0 with that message, and the
graders still grade the saved model (as ``coursekit grade`` does). The
re-run never decides a grade: a kernel that dies (memory, a crash, ``os._exit``) stops the re-run
with a message in the executed notebook, and the graders' report stands. Time is the student's
problem too, but it costs only what it left ungraded: the graders get the lab's
``grader_timeout_s`` (at most the ``submission_timeout_s`` of the whole job), and the checks
they finished keep their result while the others fail naming the limit (``result.report.unfinished``);
the re-run stops at the same deadline, and a cell over its limit, or one that ignores SIGINT,
shows why in the executed notebook (:class:`coursekit.kernel_sandbox.SandboxedExecute`). A failure
of the worker itself (no kernel, other grading code, a protection of the sandbox missing where
``course_config.SANDBOX_REQUIRE_ISOLATION`` is set) raises
:class:`GradingWorkerError`: nothing is recorded, and the next run tries again.
"""

import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import course_config
from coursekit.class_results import SubmissionResult, code_digest
from coursekit.grading import grade_notebook


class GradingWorkerError(RuntimeError):
    """A worker could not grade a submission, through no fault of the submission."""


@dataclass(frozen=True)
class GradingJob:
    """What a worker needs to grade one submission.

    Parameters
    ----------
    assignment, student : str
        nbgrader's ids.
    notebook : str
        File name of the notebook to grade, e.g. ``lab1_dense.ipynb``.
    files : dict
        Every submitted file, ``{relative path: bytes}``.
    kernel_name : str
        The kernel of the assignment's source notebook (nbgrader overwrites the student's).
    code_digest : str
        :func:`coursekit.class_results.code_digest` on the machine that sent the job: a worker
        with other grading code refuses it instead of grading differently.
    timeout : float
        Seconds for the whole submission (default: the lab's ``submission_timeout_s`` in course_config.py).
    """

    assignment: str
    student: str
    notebook: str
    files: dict = field(repr=False)
    kernel_name: str = "python3"
    code_digest: str = ""
    timeout: float = 0


def grade_submission(job):
    """Grade one submission.

    Returns
    -------
    SubmissionResult
        The notebook's problem (empty when none), the hidden graders' report, the quick-mode
        run (None when the notebook could not be read), the files received, the model file's
        sha256, ``seconds`` and ``host``; class grading adds the fingerprint and the notes on
        files left out when it stores it.
    """
    started = time.monotonic()
    grader_limit, submission_limit = course_config.time_limits(job.assignment)
    timeout = job.timeout or submission_limit
    host = socket.gethostname()
    if job.code_digest and job.code_digest != code_digest(job.assignment):
        raise GradingWorkerError(
            f"The grading code on worker {host} differs from the code of the machine that sent the work "
            "(grader_tests/, coursekit/, course_config.py): install the same version of the kit on every worker."
        )
    result = SubmissionResult(
        job.assignment, job.student, files=sorted(job.files), host=host, model_sha256=model_file_digest(job)
    )
    with tempfile.TemporaryDirectory(prefix="coursekit-class-") as scratch:
        folder = Path(scratch) / "submission"
        for name, content in job.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        notebook_path = folder / job.notebook
        notebook, result.problem = _read_notebook(notebook_path)
        model_file = course_config.lab_settings(job.assignment).model_file
        if notebook is not None or model_file in job.files:  # the saved-model check needs no notebook
            deadline = started + timeout
            # The graders and the quick-mode re-run are separate processes that share nothing (the
            # re-run works in a scratch copy of the folder), so they run side by side.
            with ThreadPoolExecutor(max_workers=1) as side:
                graders = side.submit(grade_notebook, notebook_path, job.assignment, timeout=min(grader_limit, timeout))
                if notebook is not None:
                    rerun_started = time.time()
                    _run_quick_mode(notebook, folder, deadline, job.kernel_name, host, timeout)
                    result.timings["quick_mode"] = quick_mode_timings(notebook, rerun_started, time.time())
                result.report = graders.result()
            result.executed_notebook = _bounded(notebook)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def quick_mode_timings(notebook, started, ended):
    """Where the quick-mode re-run's seconds went, from the times nbclient records in each cell's metadata:
    ``wall_s``; ``kernel_start_s`` (the sandboxed kernel's start, until the first cell ran); ``cells_s``
    (the cells' own time, added up); ``slowest_cells`` ([cell index, seconds], the five slowest)."""
    from coursekit.notebooks import cell_run_times

    spans = []
    for index, cell in enumerate(notebook.cells):
        times = cell_run_times(cell)  # None: not run (markdown, or after the run stopped)
        if times and started - 1 <= times[0] <= times[1] <= ended + 1:  # not the student's own earlier run
            spans.append((index, *times))
    timings = {"wall_s": round(ended - started, 2)}
    if spans:
        timings["kernel_start_s"] = round(spans[0][1] - started, 2)
        timings["cells_s"] = round(sum(end - begin for _, begin, end in spans), 2)
        slowest = sorted(spans, key=lambda span: span[1] - span[2])[:5]
        timings["slowest_cells"] = [[index, round(end - begin, 2)] for index, begin, end in slowest]
    return timings


def _bounded(notebook):
    """``notebook`` with every output over ``NOTEBOOK_OUTPUT_MAX_CHARS`` cut with a note, as in autograded/ and
    feedback/ (:func:`coursekit.nbgrader_preprocessors.bounded_output`): what is sent back and stored stays small."""
    from coursekit.nbgrader_preprocessors import bounded_output

    for cell in notebook.cells if notebook is not None else ():
        if cell.get("cell_type") == "code":
            cell["outputs"] = [bounded_output(output) for output in cell.get("outputs", [])]
    return notebook


def model_file_digest(job):
    """sha256 of the submitted model file ("" when there is none): identical files are flagged."""
    import hashlib

    name = course_config.lab_settings(job.assignment).model_file
    content = job.files.get(name)
    return hashlib.sha256(content).hexdigest() if content is not None else ""


def _read_notebook(path):
    """(notebook, "") or (None, why it cannot be graded, for the student)."""
    from coursekit.notebooks import NotebookProblem, read_submission

    try:
        return read_submission(path), ""
    except NotebookProblem as problem:
        return None, str(problem)


def _run_quick_mode(notebook, folder, deadline, kernel_name, host, limit_s):
    """Re-run ``notebook`` in place, as nbgrader autograde does.

    What goes wrong because of the notebook (a cell over its time, a kernel that dies) is shown in
    the notebook and decides no grade; :class:`GradingWorkerError` when the worker cannot re-run it.
    """
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import DeadKernelError
    from nbgrader.utils import setenv

    from coursekit.isolation import isolation
    from coursekit.kernel_sandbox import SandboxedExecute
    from coursekit.nbgrader_preprocessors import ClearOutputExceptNotRerun

    try:
        isolation()  # the kernel runs isolated like the sandbox; decided here so its refusal is reported as such
    except RuntimeError as error:  # course_config.SANDBOX_REQUIRE_ISOLATION and a protection is missing
        raise GradingWorkerError(f"Worker {host} will not re-run the notebook: {error}") from error
    cell_limit = course_config.NOTEBOOK_CELL_TIMEOUT_S

    def cell_timeout(cell):  # nbgrader's per-cell limit, cut short by the limit of the whole submission
        return max(1, min(cell_limit, int(deadline - time.monotonic())))

    executor = SandboxedExecute(
        timeout=cell_limit,
        timeout_func=cell_timeout,
        kernel_name=kernel_name,
        deadline=deadline,
        deadline_note=deadline_note(limit_s),
    )
    ClearOutputExceptNotRerun().preprocess(notebook, {})  # as nbgrader autograde does before its re-run
    try:
        with setenv(NBGRADER_EXECUTION="autograde"):
            executor.preprocess(notebook, {"metadata": {"path": str(folder)}})
    except DeadKernelError:  # outside a cell (SandboxedExecute handles a death during one): say so in the notebook
        _note_dead_kernel(notebook)
    except NoSuchKernel as error:
        raise GradingWorkerError(
            f"Worker {host} has no Jupyter kernel '{kernel_name}' to re-run the notebook "
            "in: install the kit's kernel there (make kernel)."
        ) from error
    except Exception as error:  # a cell over its time, or one that ignores SIGINT, is handled by SandboxedExecute
        raise GradingWorkerError(f"Worker {host} could not re-run the notebook: {error!r}.") from error


def _note_dead_kernel(notebook):
    """The dead kernel's message as an error output of the first code cell."""
    from nbformat.v4 import new_output

    from coursekit.kernel_sandbox import dead_kernel_message

    cell = next((cell for cell in notebook.cells if cell.cell_type == "code"), None)
    if cell is not None:
        cell.outputs.append(
            new_output(
                "error",
                ename="GradingKernelDied",
                evalue=dead_kernel_message(),
                traceback=[f"GradingKernelDied: {dead_kernel_message()}"],
            )
        )


def deadline_note(seconds):
    """The message of the first cell that the limit per submission left unrun."""
    return (
        f"Your notebook's cells took more than {seconds:.0f} s together, the time limit for re-running a "
        "whole submission, so this cell and the ones after it were not run. Make the notebook train only "
        "briefly when NBGRADER_EXECUTION is set, and submit again. Your checks are graded by the hidden "
        "graders all the same."
    )
