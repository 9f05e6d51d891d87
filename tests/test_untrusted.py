"""Untrusted submissions: every threat of docs/threat_model.md has a case here.

Each case ends with the right points and a message the student can act on, and an
honest submission graded in the same run is not affected. The cheap cases use small
notebooks run through the sandbox, or the loaders alone, and one probe notebook run in
nbgrader's re-execution kernel; two Lab 1 submissions are graded by the hidden graders,
and one class (honest, tampered, unreadable) goes through the real ``nbgrader autograde``
(tests/lab1_class.py: the same class serves tests/test_nbgrader_flow.py).
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
from traitlets.config.loader import PyFileConfigLoader

import course_config
from coursekit import isolation
from coursekit.checks import CheckFailed, check_figures_in_outputs
from coursekit.model_files import read_model_file, rebuild_architecture
from coursekit.grading import grade_notebook
from coursekit.nbgrader_preprocessors import RestoreGradedCells
from coursekit.notebooks import read_submission
from coursekit.sandbox import Call, run_student_functions
from coursekit.submissions import DemoSubmission, reference_files, replace_function, write_submission

import lab1_class
from lab1_class import CLASS, add_tampering_cell
from test_sandbox import notebook_with

LAB = course_config.LAB1
ISOLATION = isolation.isolation()
needs_namespaces = pytest.mark.skipif(
    "no network" not in ISOLATION.in_force, reason="no network/PID namespaces here: " + "; ".join(ISOLATION.missing)
)
needs_other_user = pytest.mark.skipif(
    not ISOLATION.drops_privileges,
    reason="student code cannot run as another user here: " + "; ".join(ISOLATION.missing),
)


# Malformed notebooks ---------------------------------------------------------------------------------


def reference_text():
    return reference_files(LAB)[0].read_text(encoding="utf-8")


def v3_notebook():
    """A notebook in the old nbformat 3 layout (worksheets), as very old Jupyter versions saved it."""
    return json.dumps(
        {
            "nbformat": 3,
            "nbformat_minor": 0,
            "metadata": {"name": ""},
            "worksheets": [
                {
                    "cells": [
                        {
                            "cell_type": "code",
                            "language": "python",
                            "input": "def relu(x):\n    return x * (x > 0)",
                            "outputs": [],
                            "metadata": {},
                        }
                    ],
                    "metadata": {},
                }
            ],
        }
    )


MALFORMED = {
    # case: (file content as bytes, phrase the student reads)
    "cut short": (reference_text().encode()[:20_000], "is not valid JSON"),
    "empty file": (b"", "is not valid JSON"),
    "not UTF-8": (reference_text().replace("Fashion", "Fashión").encode("latin-1", "replace"), "is not UTF-8"),
    "lone surrogate": (reference_text().replace("Fashion", "Fashion\\udc80", 1).encode(), "not valid Unicode"),
    "JSON but no notebook": (b"[1, 2, 3]", "not a Jupyter notebook"),
    "nbformat 2": (b'{"nbformat": 2, "worksheets": []}', "very old format"),
    "cells not a list": (
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {"a": 1}}',
        "does not follow the Jupyter notebook format",
    ),
    "cell without type": (
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"source": "x"}]}',
        "does not follow the Jupyter notebook format",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_notebook_fails_every_check_with_its_reason(tmp_path, case):
    content, phrase = MALFORMED[case]
    path = tmp_path / LAB.notebook
    path.write_bytes(content)
    run = run_student_functions(path, [Call("relu", (np.ones(2),)), Call("softmax", (np.ones(2),))])
    for result in run.results.values():
        assert not result.ok and phrase in result.error and LAB.notebook in result.error
    with pytest.raises(CheckFailed, match=phrase):  # the figure check reads the notebook too
        check_figures_in_outputs(path, {"anything": "x"})


def test_huge_notebook_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / LAB.notebook
    with open(path, "wb") as handle:  # 300 MB of outputs, as a sparse file: cheap to write
        handle.truncate(300 * 1024 * 1024)
    run = run_student_functions(path, [Call("relu", (np.ones(2),))])
    assert f"the grader accepts at most {course_config.SUBMISSION_MAX_MB} MB" in run["relu"].error


def test_missing_notebook_is_named(tmp_path):
    run = run_student_functions(tmp_path / LAB.notebook, [Call("relu", (np.ones(2),))])
    assert f"The notebook {LAB.notebook} is missing" in run["relu"].error


def test_old_nbformat_is_converted_and_graded(tmp_path):
    path = tmp_path / "old.ipynb"
    path.write_text(v3_notebook())
    run = run_student_functions(path, [Call("relu", (np.array([-1.0, 2.0]),))])
    assert run["relu"].ok and run["relu"].value.tolist() == [0.0, 2.0]


def test_renamed_function_is_reported_missing(tmp_path):
    path = notebook_with(tmp_path, "def Relu(x):\n    return x")
    run = run_student_functions(path, [Call("relu", (np.ones(2),))])
    assert "defines no function `relu`" in run["relu"].error


def test_the_reference_notebooks_are_accepted():
    for lab in course_config.LABS:
        path = reference_files(lab)[0]
        if path.exists():
            assert read_submission(path).cells


# Graded functions that misbehave --------------------------------------------------------------------

HOSTILE = """
import os, socket, subprocess, sys, time
import numpy as np

def sleeper(x):
    time.sleep(10_000)

def exits(x):
    sys.exit(0)

def hard_exit(x):
    os._exit(0)

def hog(x):
    return np.ones((1024, 1024, 1024))

def flood(x):
    return np.ones((20, 1024, 1024))   # 160 MB of results

def fine(x):
    return x + 1
"""


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    path = notebook_with(tmp_path_factory.mktemp("hostile"), HOSTILE)
    calls = [
        Call(name, (np.ones(2),), returns="none" if name == "sleeper" else "array")
        for name in ("sleeper", "exits", "hard_exit", "hog", "flood", "fine")
    ]
    return run_student_functions(path, calls, call_timeout=5, memory_mb=2048)


@pytest.mark.parametrize(
    "name, phrase",
    [
        ("sleeper", "did not finish within 5 s"),
        ("exits", "tried to end the program"),
        ("hard_exit", "ended the sandbox process (for example with os._exit)"),
        ("hog", "MemoryError"),
    ],
    ids=["sleeper", "exits", "hard_exit", "hog"],
)
def test_misbehaving_function_fails_only_its_own_call(hostile_run, name, phrase):
    assert not hostile_run[name].ok and phrase in hostile_run[name].error
    assert hostile_run["fine"].ok and hostile_run["fine"].value.tolist() == [2.0, 2.0]


def test_results_over_the_output_limit_are_refused(hostile_run):
    limit = course_config.SANDBOX_MAX_OUTPUT_MB
    assert limit < 160, "the flood case must exceed the limit"
    assert not hostile_run["flood"].ok and "more data than the grader accepts" in hostile_run["flood"].error


def listening_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server


@needs_namespaces
def test_no_network(tmp_path):
    """A graded function cannot reach a server on this machine, let alone the internet."""
    with listening_socket() as server:
        port = server.getsockname()[1]
        path = notebook_with(
            tmp_path,
            f"""
import socket
import numpy as np
def reach(x):
    reached = 0
    for host, port in (("127.0.0.1", {port}), ("1.1.1.1", 53)):
        try:
            socket.create_connection((host, port), timeout=2).close()
            reached += 1
        except OSError:
            pass
    return np.array([reached])
""",
        )
        run = run_student_functions(path, [Call("reach", (1,))])
    assert run["reach"].ok and run["reach"].value.tolist() == [0]


@needs_namespaces
def test_detached_processes_die_with_the_sandbox(tmp_path):
    marker = f"{os.getpid() % 1000 + 424200}"
    path = notebook_with(
        tmp_path,
        f'''
import subprocess
import numpy as np
def detach(x):
    subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
    return np.array([1])
''',
    )
    run = run_student_functions(path, [Call("detach", (1,))])
    assert run["detach"].ok
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left behind: {left}"


@needs_other_user
def test_process_limit(tmp_path):
    path = notebook_with(
        tmp_path,
        """
import os, time
import numpy as np
def fork_many(x):
    started = 0
    for _ in range(100):
        try:
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            started += 1
        except OSError:
            break
    return np.array([started])
""",
    )
    # RLIMIT_NPROC counts every process of the sandbox's user: let kernels of earlier tests finish exiting.
    user = course_config.SANDBOX_USER
    for _ in range(30):
        if user and subprocess.run(["pgrep", "-u", user], capture_output=True).returncode != 0:
            break
        time.sleep(0.5)
    run = run_student_functions(path, [Call("fork_many", (1,))], max_processes=20)
    assert run["fork_many"].ok and run["fork_many"].value[0] < 20


@needs_other_user
def test_no_access_to_grader_files(tmp_path):
    """As the sandbox's user, a graded function can neither read the hidden graders nor write grades."""
    shared = Path(tempfile.mkdtemp(prefix="coursekit-shared-"))  # like a course folder: open to read for all
    try:
        shared.chmod(0o755)
        (shared / "gradebook.db").write_text("grades")
        (shared / "gradebook.db").chmod(0o644)
        hidden = course_config.GRADER_TESTS_DIR / f"test_{LAB.assignment}.py"
        path = notebook_with(
            tmp_path,
            f"""
import numpy as np
def snoop(x):
    done = []
    for action in (lambda: open({str(hidden)!r}).read(),
                   lambda: open({str(shared / "gradebook.db")!r}, "a").write("A+"),
                   lambda: open({str(shared / "other_student.ipynb")!r}, "w").write("{{}}")):
        try:
            action()
            done.append(1)
        except OSError:
            done.append(0)
    return np.array(done)
""",
        )
        run = run_student_functions(path, [Call("snoop", (1,))])
        assert run["snoop"].ok and run["snoop"].value.tolist() == [0, 0, 0]
        assert (shared / "gradebook.db").read_text() == "grades"
    finally:
        shutil.rmtree(shared)


@pytest.fixture
def strict_isolation(monkeypatch):
    """SANDBOX_REQUIRE_ISOLATION with a sandbox user that does not exist: a protection is missing."""
    monkeypatch.setattr(course_config, "SANDBOX_REQUIRE_ISOLATION", True)
    monkeypatch.setattr(course_config, "SANDBOX_USER", "no-such-user-here")
    isolation.isolation.cache_clear()
    yield
    isolation.isolation.cache_clear()


def test_missing_protection_stops_grading_when_isolation_is_required(strict_isolation, tmp_path):
    report = grade_notebook(tmp_path / LAB.notebook, LAB.assignment)
    assert "no user 'no-such-user-here'" in report.problem
    assert "Tell your instructor" in report.result_for("test_softmax").message


# nbgrader's re-execution of the notebook: its kernel is isolated like the sandbox -------------------

KERNEL_PROBE = """
import json, os, socket, subprocess
import numpy as np

report = {"pid": os.getpid(), "uid": os.getuid(), "cwd": os.getcwd(), "copied": open("data.txt").read()}
reached = []
for host, port in (("127.0.0.1", PORT), ("1.1.1.1", 53)):
    try:
        socket.create_connection((host, port), timeout=2).close()
        reached.append(f"{host}:{port}")
    except OSError:
        pass
report["reached"] = reached
report["written"] = []
for path in WRITE:
    try:
        with open(path, "a") as handle:
            handle.write("tampered")
        report["written"].append(path)
    except OSError:
        pass
try:
    report["read_graders"] = len(open(READ).read()) > 0
except OSError:
    report["read_graders"] = False
open("relative.txt", "w").write("stays in the kernel's copy of the folder")
subprocess.Popen(["sleep", "MARKER"], start_new_session=True)
try:
    np.ones((2048, 1024, 1024))  # 16 GB
    report["memory"] = "allocated"
except MemoryError:
    report["memory"] = "MemoryError"
print("PROBE" + json.dumps(report))
"""


def probe_report(notebook):
    """The probe's report from the outputs of an executed notebook (None if it printed none)."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            if output.get("output_type") == "stream" and "PROBE{" in text:
                return json.loads(text[text.index("PROBE{") + 5 :].splitlines()[0])
    return None


@pytest.fixture(scope="module")
def re_executed_probe(tmp_path_factory):
    """The probe, run by nbgrader's Execute as the course configures it (SandboxedExecute), in a
    submission's folder, next to a course-like folder that is open to read for all."""
    from coursekit.kernel_sandbox import SandboxedExecute

    folder = tmp_path_factory.mktemp("submission")
    (folder / "data.txt").write_text("submitted file")
    shared = Path(tempfile.mkdtemp(prefix="coursekit-shared-"))
    try:
        shared.chmod(0o755)
        (shared / "gradebook.db").write_text("grades")
        (shared / "gradebook.db").chmod(0o644)
        write = [
            str(folder / "data.txt"),
            str(folder / "new.txt"),
            str(shared / "gradebook.db"),
            str(shared / "other_student.ipynb"),
        ]
        marker = f"{os.getpid() % 1000 + 425300}"
        with listening_socket() as server:
            source = (
                KERNEL_PROBE.replace("PORT", str(server.getsockname()[1]))
                .replace("WRITE", repr(write))
                .replace("READ", repr(str(course_config.GRADER_TESTS_DIR / f"test_{LAB.assignment}.py")))
                .replace("MARKER", marker)
            )
            notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
            notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
            SandboxedExecute(timeout=120).preprocess(notebook, {"metadata": {"path": str(folder)}})
        left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout.split()
        return {
            "report": probe_report(notebook),
            "folder": folder,
            "left": left,
            "outputs": [cell.get("outputs") for cell in notebook.cells],
            "files": {
                path.name: (path.read_text() if path.exists() else None)
                for path in [
                    folder / "data.txt",
                    folder / "new.txt",
                    shared / "gradebook.db",
                    shared / "other_student.ipynb",
                ]
            },
        }
    finally:
        shutil.rmtree(shared)


def test_re_execution_runs_in_a_scratch_copy_with_a_memory_limit(re_executed_probe):
    report = re_executed_probe["report"]
    assert report, re_executed_probe["outputs"]
    assert report["copied"] == "submitted file" and Path(report["cwd"]) != re_executed_probe["folder"]
    assert not (re_executed_probe["folder"] / "relative.txt").exists()
    assert report["memory"] == "MemoryError"


@needs_namespaces
def test_re_execution_has_no_network_and_its_processes_die_with_it(re_executed_probe):
    report = re_executed_probe["report"]
    assert report["reached"] == [], "the kernel reached the network"
    assert report["pid"] == 1  # its own PID namespace
    assert not re_executed_probe["left"], f"processes left behind: {re_executed_probe['left']}"


@needs_other_user
def test_re_execution_cannot_write_outside_its_folder(re_executed_probe):
    """As the sandbox's user, the kernel can change neither the submitted files nor grades nor the graders."""
    report = re_executed_probe["report"]
    assert report["uid"] == ISOLATION.uid
    assert report["written"] == [] and not report["read_graders"]
    assert re_executed_probe["files"] == {
        "data.txt": "submitted file",
        "new.txt": None,
        "gradebook.db": "grades",
        "other_student.ipynb": None,
    }


def test_re_execution_is_refused_when_isolation_is_required(strict_isolation, tmp_path):
    from coursekit.class_worker import GradingWorkerError, _run_quick_mode
    from coursekit.kernel_sandbox import SandboxedExecute

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('never run')")])
    with pytest.raises(RuntimeError, match="no user 'no-such-user-here'"):
        SandboxedExecute(kernel_name="python3").preprocess(notebook, {"metadata": {"path": str(tmp_path)}})
    with pytest.raises(GradingWorkerError, match="will not re-run the notebook.*no-such-user-here"):
        _run_quick_mode(notebook, tmp_path, float("inf"), "python3", "this-host", 600)
    assert not notebook.cells[0].outputs


def test_nbgrader_re_executes_with_the_sandboxed_kernel():
    """nbgrader_config.py lists SandboxedExecute, not plain Execute, and class grading swaps it as it did Execute."""
    from nbgrader.preprocessors import Execute

    from coursekit.gradebook_writer import class_grading_config
    from coursekit.kernel_sandbox import SandboxedExecute

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_config.ROOT)).load_config()
    steps = config.Autograde.autograde_preprocessors
    assert SandboxedExecute in steps and Execute not in steps
    swapped = class_grading_config(course_config.ROOT, "results").Autograde.autograde_preprocessors
    assert not any(isinstance(step, type) and issubclass(step, Execute) for step in swapped)


def test_the_private_kernel_manager_hook_the_sandbox_needs_is_still_called():
    """SandboxedKernelManager overrides jupyter_client's private ``_async_pre_start_kernel`` (the public
    ``pre_start_kernel`` is not what ``start_kernel`` calls); jupyter_client is pinned, and this pins the call."""
    import inspect

    from jupyter_client.manager import AsyncKernelManager

    from coursekit.kernel_sandbox import SandboxedKernelManager

    assert "await self._async_pre_start_kernel(**kw)" in inspect.getsource(AsyncKernelManager.start_kernel)
    assert "_async_pre_start_kernel" in vars(SandboxedKernelManager)


# Saved model files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    import keras

    path = tmp_path_factory.mktemp("model") / LAB.model_file
    keras.Sequential(
        [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    ).save(path)
    return path


def with_config(source, target, change):
    """Copy the .keras zip ``source`` to ``target`` with its config.json changed by ``change(config)``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                change(config)
                data = json.dumps(config).encode()
            new.writestr(item, data)


def lambda_model(path, marker):
    import keras

    def touch(x):
        open(marker, "w").close()  # what a loader that runs code from the file would do
        return x

    inputs = keras.Input((28, 28))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(keras.layers.Lambda(touch)(inputs)))
    keras.Model(inputs, outputs).save(path)
    os.remove(marker)


def set_layer(class_name, module):
    def change(config):
        layer = config["config"]["layers"][-1]
        layer["class_name"], layer["module"], layer["registered_name"] = class_name, module, None

    return change


BAD_MODELS = {
    "missing": (lambda src, dst, tmp: None, "is missing from the submission"),
    "truncated": (
        lambda src, dst, tmp: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]),
        "damaged, cut short",
    ),
    "not a model": (lambda src, dst, tmp: dst.write_text("my model is great"), "damaged, cut short"),
    "zip without a model": (
        lambda src, dst, tmp: zipfile.ZipFile(dst, "w").writestr("notes.txt", "hi"),
        "holds no model configuration",
    ),
    "zip bomb": (
        lambda src, dst, tmp: zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED).writestr(
            "config.json", b" " * (course_config.SUBMITTED_MODEL_MAX_MB + 1) * 2**20
        ),
        "the grader accepts at most",
    ),
    "custom layer class": (
        lambda src, dst, tmp: with_config(src, dst, set_layer("Backdoor", "evil.layers")),
        "no Lambda, TFSMLayer or custom layers",
    ),
    "class from another module": (
        lambda src, dst, tmp: with_config(src, dst, set_layer("system", "os")),
        "no Lambda, TFSMLayer or custom layers",
    ),
    "Lambda layer": (lambda src, dst, tmp: lambda_model(dst, tmp / "ran"), "no Lambda, TFSMLayer or custom layers"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_file_fails_with_its_reason_and_runs_nothing(tiny_model_file, tmp_path, case):
    make, phrase = BAD_MODELS[case]
    target = tmp_path / LAB.model_file
    make(tiny_model_file, target, tmp_path)
    with pytest.raises(CheckFailed, match=phrase):
        read_model_file(target)
    assert not (tmp_path / "ran").exists()


def test_a_plain_model_file_is_accepted(tiny_model_file):
    assert rebuild_architecture(read_model_file(tiny_model_file)).output_shape == (None, 10)


# Whole Lab 1 submissions through the hidden graders ----------------------------------------------------

RELU_THAT_EXITS = """
def relu(x):
    import sys
    sys.exit("relu is done")
"""

SOFTMAX_THAT_KILLS_THE_PROCESS = """
def softmax(logits):
    import os
    os._exit(0)
"""


def hostile_edit(notebook):
    add_tampering_cell(notebook)
    replace_function(notebook, "relu", RELU_THAT_EXITS)
    replace_function(notebook, "softmax", SOFTMAX_THAT_KILLS_THE_PROCESS)


@pytest.fixture(scope="module")
def hostile_lab1_report(tmp_path_factory):
    """A Lab 1 submission that tampers and misbehaves, with a saved model cut short."""
    folder = tmp_path_factory.mktemp("hostile-lab1")
    notebook = write_submission(DemoSubmission("t_hostile", "", edit=hostile_edit), folder, LAB)
    model = folder / LAB.model_file
    model.write_bytes(model.read_bytes()[:100_000])
    return grade_notebook(notebook, LAB.assignment)


def test_hostile_submission_loses_exactly_the_checks_it_broke(hostile_lab1_report):
    report = hostile_lab1_report
    assert not report.problem
    failed = {grade_id: result.message for grade_id, result in report.checks.items() if not result.passed}
    assert set(failed) == {"test_activations", "test_softmax", "test_saved_model"}, failed
    assert "tried to end the program" in failed["test_activations"]
    assert "ended the sandbox process" in failed["test_softmax"]
    assert "not a complete Keras model file" in failed["test_saved_model"]
    for message in failed.values():
        assert "def test_" not in message and "grader_tests" not in message


def test_honest_submission_graded_after_it_gets_every_point(hostile_lab1_report, tmp_path):
    notebook = write_submission(DemoSubmission("demo_reference", ""), tmp_path, LAB)
    report = grade_notebook(notebook, LAB.assignment)
    assert not report.problem and all(result.passed for result in report.checks.values()), report.checks


# Tampering with nbgrader's metadata, through the real `nbgrader autograde` of a class -----------------


def sanitizing_restores_roles():
    """Whether nbgrader_config.py runs RestoreGradedCells when nbgrader sanitizes a submission."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_config.ROOT)).load_config()
    steps = config.Autograde.get("sanitize_preprocessors", [])
    return isinstance(steps, list) and RestoreGradedCells in steps


needs_restored_roles = pytest.mark.skipif(
    not sanitizing_restores_roles(),
    reason="nbgrader_config.py does not list coursekit.nbgrader_preprocessors.RestoreGradedCells in "
    "Autograde.sanitize_preprocessors: nbgrader then leaves such a submission ungraded",
)


@pytest.fixture(scope="module")
def autograded_class(tmp_path_factory):
    """The Lab 1 class of tests/lab1_class.py (shared with tests/test_nbgrader_flow.py): the reference,
    the two tampering students of CLASS and an unreadable notebook, through `nbgrader autograde`."""
    return lab1_class.autograded_class(tmp_path_factory, [*CLASS, lab1_class.UNREADABLE])


@pytest.mark.parametrize(
    "student", ["demo_reference", "t_metadata", pytest.param("t_roles", marks=needs_restored_roles)]
)
def test_class_gets_the_hidden_graders_points_whatever_the_metadata(autograded_class, student):
    rows = autograded_class.rows()
    scores = rows[student]["scores"]
    maxima = {grade_id: maximum for grade_id, (_, maximum) in rows["demo_reference"]["scores"].items()}
    assert {grade_id: maximum for grade_id, (_, maximum) in scores.items()} == maxima  # no points added
    lost = {grade_id for grade_id, (score, maximum) in scores.items() if (score or 0) < maximum}
    expected = CLASS[student][1]
    assert lost == set(expected), rows[student]["reasons"]
    for grade_id, phrase in expected.items():
        assert phrase in rows[student]["reasons"][grade_id]
    html = autograded_class.feedback(student)
    for marker in ("BEGIN HIDDEN TESTS", "Hidden check", "grader_tests/test_"):
        assert marker not in html


def test_unreadable_notebook_is_graded_without_it_and_does_not_stop_the_class(autograded_class):
    """A notebook nbgrader cannot read (not UTF-8) beside the reference's model file, through the real hidden
    graders in `nbgrader autograde` of the whole class: recorded, every check 0 (the saved model must be a network
    the notebook's build function builds, so it cannot pass either), the reason in the feedback; the same
    as `coursekit grade` on the same files."""
    student = lab1_class.UNREADABLE
    assert student not in autograded_class.failure  # recorded, not a failure of nbgrader
    rows = autograded_class.rows()
    assert {"t_metadata", "t_roles"} <= set(rows)  # graded in the same `nbgrader autograde`
    scores, reasons = rows[student]["scores"], rows[student]["reasons"]
    assert scores and all(score == 0 for score, _ in scores.values())
    assert "is not UTF-8" in reasons["test_softmax"]
    assert "gave no model to compare it with: The notebook" in reasons["test_saved_model"]
    assert "could not be read" in autograded_class.feedback(student)
    submitted = autograded_class.root / "submitted" / student / LAB.assignment / LAB.notebook
    report = grade_notebook(submitted, LAB.assignment, course=autograded_class.root)
    assert set(report.checks) == set(scores) and not any(check.passed for check in report.checks.values())


@needs_namespaces
def test_nbgrader_autograde_re_executes_the_notebook_in_the_sandboxed_kernel(autograded_class):
    """What the probe cell of t_metadata printed in `nbgrader autograde`'s re-execution: PID 1 of its own
    namespace, and neither a server on this machine's loopback nor the internet reached."""
    assert autograded_class.probe == "re-execution probe: pid 1, reached []"
