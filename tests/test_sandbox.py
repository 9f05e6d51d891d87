"""The sandbox runs student functions in a separate, limited process and returns data only."""

import nbformat
import numpy as np
import pytest

from coursekit.isolation import student_environment
from coursekit.sandbox import Call, run_student_functions


def notebook_with(tmp_path, *cells):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path = tmp_path / "submission.ipynb"
    nbformat.write(notebook, path)
    return path


def test_only_definitions_run_never_the_training_statements(tmp_path):
    path = notebook_with(
        tmp_path,
        "import numpy as np\nSCALE = 2.0\nraise SystemExit('training!')",
        "def double(x):\n    return x * SCALE",
    )
    run = run_student_functions(path, [Call("double", (np.arange(3.0),))])
    assert run["double"].ok
    assert run["double"].value.tolist() == [0.0, 2.0, 4.0]


def test_results_are_plain_data(tmp_path):
    path = notebook_with(tmp_path, "import numpy as np\ndef pair(x):\n    return x, x + 1")
    run = run_student_functions(path, [Call("pair", (np.ones(2),), returns="arrays")])
    first, second = run["pair"].value
    assert isinstance(first, np.ndarray) and second.tolist() == [2.0, 2.0]


def test_objects_that_are_not_arrays_are_refused(tmp_path):
    path = notebook_with(
        tmp_path, "class Sneaky:\n    def __eq__(self, other):\n        return True\ndef scale(x):\n    return Sneaky()"
    )
    run = run_student_functions(path, [Call("scale", (np.ones(2),))])
    assert not run["scale"].ok and "numeric array" in run["scale"].error


def test_missing_function_and_syntax_error_are_told_apart(tmp_path):
    path = notebook_with(tmp_path, "def broken(x)\n    return x", "def fine(x):\n    return x")
    run = run_student_functions(path, [Call("broken"), Call("absent"), Call("fine", (np.ones(1),))])
    assert "SyntaxError" in run["broken"].error and "the cell with `def broken(`" in run["broken"].error
    assert "defines no function `absent`" in run["absent"].error
    assert run["fine"].ok


def test_endless_loop_is_stopped_and_later_calls_still_run(tmp_path):
    path = notebook_with(
        tmp_path, "import numpy as np\ndef spin(x):\n    while True:\n        pass", "def fine(x):\n    return x"
    )
    run = run_student_functions(path, [Call("spin", (np.ones(1),)), Call("fine", (np.ones(1),))], call_timeout=2)
    assert "did not finish within 2 s" in run["spin"].error
    assert run["fine"].ok


def test_whole_sandbox_time_limit(tmp_path):
    path = notebook_with(
        tmp_path,
        "import time\ndef stubborn(x):\n    while True:\n        try:\n"
        "            time.sleep(10)\n        except BaseException:\n            pass",
    )
    run = run_student_functions(path, [Call("stubborn", (1,), returns="none")], timeout=5, call_timeout=1)
    assert not run["stubborn"].ok and "time limit of 5 s" in run["stubborn"].error


def test_memory_limit(tmp_path):
    path = notebook_with(tmp_path, "import numpy as np\ndef hog(x):\n    return np.ones((1024, 1024, 1024))")
    run = run_student_functions(path, [Call("hog", (1,))], memory_mb=2048)
    assert not run["hog"].ok and "MemoryError" in run["hog"].error


def test_input_modification_is_visible(tmp_path):
    path = notebook_with(tmp_path, "def scale(x):\n    x /= 2\n    return x")
    run = run_student_functions(path, [Call("scale", (np.ones(2),), return_args=True)])
    assert run["scale"].args_after[0].tolist() == [0.5, 0.5]


def test_student_code_runs_in_a_scratch_folder(tmp_path):
    path = notebook_with(
        tmp_path,
        "import os\nimport numpy as np\ndef where(x):\n"
        "    open('written.txt', 'w').write('x')\n    return np.array([len(os.getcwd())])",
    )
    run_student_functions(path, [Call("where", (1,))])
    assert not (tmp_path / "written.txt").exists()


@pytest.mark.parametrize("source", ["{not json", ""])
def test_broken_notebook_file_gives_failed_calls(tmp_path, source):
    path = tmp_path / "broken.ipynb"
    path.write_text(source)
    run = run_student_functions(path, [Call("anything")])
    assert not run["anything"].ok and "broken.ipynb is not valid JSON" in run["anything"].error


def test_student_code_keeps_the_machines_thread_settings_and_nothing_private(tmp_path):
    grader = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1", "TOKEN": "x"}
    env = student_environment(tmp_path, env=grader)
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    assert "TOKEN" not in env
