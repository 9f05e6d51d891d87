"""Run a student's functions in a separate, limited process; only data comes back.

The grader never imports or calls student code in its own process. It describes
the calls it wants (:class:`Call`), and :func:`run_student_functions` starts a
child Python process that loads the notebook's definitions, makes the calls, and
writes back JSON and ``.npz`` arrays, which are read without unpickling.

The child runs in a scratch folder, in its own session, with a wall-clock limit
for the whole run and for each call, limits on memory, file size and (as another
user) processes, and without network (``course_config.SANDBOX_*``); the
rules of the isolation (what this machine allows, the limits, the scratch folders, the
environment) are :mod:`coursekit.isolation`'s, shared with the re-run's kernel, and
docs/threat_model.md says why. What student code must not read (hidden graders, solutions,
grades, every student's files) is closed to it by an explicit step,
:func:`coursekit.isolation.close_course`, with the course folder actually being graded; the
runner closes the kit's own folders and any course the notebook lies in before every child.
Calls that did not finish come back as failed results with a message that says
why, so each check can report it; a call that kills the child costs only its own
result, because the remaining calls run again in a fresh child.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import course_config
from coursekit.isolation import (
    close_course,
    find_course_roots,
    isolation,
    limit_resources,
    scratch_parent,
    student_environment,
)
from coursekit.notebooks import NotebookProblem, read_submission

CHILD_SCRIPT = Path(__file__).with_name("_sandbox_child.py")
MODEL_CHILD_SCRIPT = Path(__file__).with_name("_model_child.py")
RETURN_KINDS = ("array", "arrays", "model", "model_weights", "figure", "none")


@dataclass
class Call:
    """One call of a student function.

    Parameters
    ----------
    function : str
        Name of the function in the notebook.
    args, kwargs
        Arguments: NumPy arrays, or values that JSON can carry.
    returns : {"array", "arrays", "model", "model_weights", "figure", "none"}
        What the function should return, and so what comes back: an array, a tuple
        of arrays, a Keras model's JSON configuration (``{"json": ...}``; with
        "model_weights" also ``"weights"``, the tuple of its weight arrays), a
        description of a matplotlib figure, or nothing.
    name : str, optional
        Key of the result; defaults to ``function``.
    return_args : bool
        Also send back the array arguments as they are after the call (to detect
        functions that modify their input).
    """

    function: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    returns: str = "array"
    name: str = ""
    return_args: bool = False

    def __post_init__(self):
        if self.returns not in RETURN_KINDS:
            raise ValueError(f"returns must be one of {RETURN_KINDS}, not {self.returns!r}")
        self.name = self.name or self.function


@dataclass
class CallResult:
    """What came back from one call. ``value`` is an array, a tuple of arrays, or a dict."""

    name: str
    ok: bool
    error: str = ""
    value: object = None
    args_after: tuple = ()


@dataclass
class SandboxRun:
    """All results of one sandbox run, by call name."""

    results: dict
    cell_problems: list
    stopped: str = ""  # why the child stopped early, if it did
    isolation: tuple = ()  # what isolated the child (see :func:`coursekit.isolation.isolation`)

    def __getitem__(self, name):
        return self.results[name]


def _child_environment(workdir):
    """The child's environment (:func:`coursekit.isolation.student_environment`), with matplotlib drawing
    off screen and TensorFlow quiet."""
    return {**student_environment(workdir), "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _encode_calls(calls):
    arrays, encoded = {}, []
    for call in calls:

        def encode(value, slot, call=call):
            if isinstance(value, np.ndarray):
                key = f"{call.name}__{slot}"
                arrays[key] = value
                return {"array": key}
            return value

        encoded.append(
            {
                "name": call.name,
                "function": call.function,
                "returns": call.returns,
                "return_args": call.return_args,
                "args": [encode(value, f"a{i}") for i, value in enumerate(call.args)],
                "kwargs": {key: encode(value, f"k_{key}") for key, value in call.kwargs.items()},
            }
        )
    return encoded, arrays


class _Budget:
    """How many bytes of results may still be read back from one sandbox run."""

    def __init__(self):
        self.left = course_config.SANDBOX_MAX_OUTPUT_MB * 1024 * 1024

    def take(self, size):
        self.left -= size
        return self.left >= 0


def _regular_file(path):
    """Only plain files the child wrote are read back, never links it planted."""
    return path.is_file() and not path.is_symlink()


def _read_results(workdir, calls):
    """(results by name, cell problems, name of the call that started but never finished)."""
    results, problems, running = {}, [], None
    path = Path(workdir) / "results.jsonl"
    budget = _Budget()
    lines = []
    if _regular_file(path) and budget.take(path.stat().st_size):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    by_name = {call.name: call for call in calls}
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by a kill
        if not isinstance(record, dict):
            continue
        if "cell_problems" in record:
            problems = record["cell_problems"] if isinstance(record["cell_problems"], list) else []
            continue
        if record.get("started") in by_name:
            running = record["started"]
            continue
        name = record.get("name")
        if name not in by_name:
            continue
        results[name] = _result_from_record(record, by_name[name], workdir, budget)
        running = None if running == name else running
    return results, problems, running


def _npz_size(path):
    """Bytes the arrays of an .npz file take once loaded, from their headers (before loading them)."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                else:  # np.savez writes 1.0 (2.0 for very large headers); the child uses np.savez
                    raise ValueError(f"unsupported .npy format version {version}")
                if dtype.hasobject:
                    raise ValueError("object arrays are not accepted")
                total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return total


def _result_from_record(record, call, workdir, budget):
    if not record.get("ok"):
        return CallResult(call.name, False, str(record.get("error") or "the call failed"))
    value = record.get("value")
    args_after = ()
    npz_path = Path(workdir) / f"out_{call.name}.npz"
    if _regular_file(npz_path):
        try:
            fits = budget.take(_npz_size(npz_path))
        except Exception as error:  # a file the student's code forged or damaged
            return CallResult(
                call.name, False, f"`{call.function}`'s results could not be read back ({type(error).__name__})."
            )
        if not fits:
            return CallResult(
                call.name,
                False,
                f"`{call.function}` returned more data than the grader accepts "
                f"({course_config.SANDBOX_MAX_OUTPUT_MB} MB in all).",
            )
        with np.load(npz_path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
        if call.returns in ("array", "arrays"):
            count = int(value.get("arrays", 0)) if isinstance(value, dict) else 0
            items = tuple(stored.get(f"{call.name}__{i}") for i in range(count))
            value = items[0] if call.returns == "array" and items else items
        elif call.returns == "model_weights":
            count = int(value.get("arrays", 0)) if isinstance(value, dict) else 0
            value = {
                "json": value.get("json") if isinstance(value, dict) else None,
                "weights": tuple(stored.get(f"{call.name}__{i}") for i in range(count)),
            }
        args_after = tuple(stored[key] for key in sorted(stored) if "__arg" in key)
    return CallResult(call.name, True, "", value, args_after)


def run_student_functions(notebook, calls, timeout=None, call_timeout=None, memory_mb=None, max_processes=None):
    """Call a notebook's functions in a sandboxed child process.

    Parameters
    ----------
    notebook : path-like
        The submitted ``.ipynb`` file. It is read (see :mod:`coursekit.notebooks`),
        never modified; the child gets a clean copy in its scratch folder.
    calls : list of Call
    timeout, call_timeout, memory_mb, max_processes
        Limits; default to ``course_config.SANDBOX_TIMEOUT_S``,
        ``SANDBOX_CALL_TIMEOUT_S``, ``SANDBOX_MEMORY_MB`` and ``SANDBOX_MAX_PROCESSES``.

    Returns
    -------
    SandboxRun
        One :class:`CallResult` per call, failed ones included. A notebook that
        cannot be read fails every call with the reason, for the student.
    """
    timeout = timeout or course_config.SANDBOX_TIMEOUT_S
    call_timeout = call_timeout or course_config.SANDBOX_CALL_TIMEOUT_S
    limits = (memory_mb or course_config.SANDBOX_MEMORY_MB, max_processes or course_config.SANDBOX_MAX_PROCESSES)
    try:
        text = json.dumps(read_submission(notebook), ensure_ascii=False)
    except NotebookProblem as problem:
        return SandboxRun({call.name: CallResult(call.name, False, str(problem)) for call in calls}, [], str(problem))
    where = isolation()
    close_course(*find_course_roots(notebook))  # the kit's graders and any course the notebook lies in
    results, problems, stopped = {}, [], ""
    deadline = time.monotonic() + timeout
    pending = list(calls)
    while pending:
        left = deadline - time.monotonic()
        if left < 1:
            stopped = f"the sandbox reached its time limit of {timeout} s"
            break
        found, problems, running, stopped = _run_once(text, pending, left, timeout, call_timeout, limits, where)
        results.update(found)
        if running is None:
            break
        # The call that was running when the child stopped fails; the others get a fresh child.
        function = next(call.function for call in pending if call.name == running)
        results[running] = CallResult(running, False, f"`{function}` was stopped: {stopped}.")
        pending = [call for call in pending if call.name not in results]
    for call in calls:
        if call.name not in results:
            reason = stopped or "the sandbox stopped before this call"
            results[call.name] = CallResult(call.name, False, f"`{call.function}` was not run: {reason}.")
    return SandboxRun(results, problems, stopped, where.in_force)


def _run_once(notebook_text, calls, timeout, total_timeout, call_timeout, limits, where):
    """One child for ``calls``: (results, cell problems, the call it stopped in, why it stopped)."""
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=scratch_parent()))
    try:
        (workdir / "submission.ipynb").write_text(notebook_text, encoding="utf-8")
        encoded, arrays = _encode_calls(calls)
        request = {"notebook": str(workdir / "submission.ipynb"), "calls": encoded, "call_timeout": call_timeout}
        (workdir / "request.json").write_text(json.dumps(request), encoding="utf-8")
        if arrays:
            np.savez(workdir / "inputs.npz", **arrays)
        if where.drops_privileges:
            os.chown(workdir, where.uid, where.gid)  # the only folder the student's user may write
        stopped = _run_child(workdir, timeout, total_timeout, limits, where)
        results, problems, running = _read_results(workdir, calls)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not stopped and (running is not None or len(results) < len(calls)):
        stopped = "the notebook's code ended the sandbox process (for example with os._exit) instead of returning"
    return results, problems, running, stopped


def _run_child(workdir, timeout, total_timeout, limits, where, script=CHILD_SCRIPT):
    """Run the child ``script``; return '' if it ended normally, else why it was stopped."""
    memory_mb, max_processes = limits
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: its size is bounded by RLIMIT_FSIZE
        process = subprocess.Popen(
            [*where.prefix, sys.executable, "-I", str(script), str(workdir)],
            cwd=workdir,
            env=_child_environment(workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=limit_resources(memory_mb, max_processes, where.drops_privileges),
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"the sandbox reached its time limit of {total_timeout} s"
        finally:
            with contextlib.suppress(ProcessLookupError):  # whatever the child left behind in its group
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        stderr.seek(max(0, os.fstat(stderr.fileno()).st_size - 4000))
        last = stderr.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
    if process.returncode < 0:
        return f"the sandbox was stopped by signal {-process.returncode} (memory limit of {memory_mb} MB?)"
    if process.returncode != 0:
        return f"the sandbox process failed ({last[0][:300]})"
    return ""


# Submitted model files ----------------------------------------------------------------------------


def run_model_child(content, images, weights_of, timeout, memory_mb=None):
    """Open a submitted model file (``content``, bytes) in a sandbox child and predict ``images``.

    The child (``coursekit/_model_child.py``) runs isolated like the one for student
    functions and sends back data only. Returns ``{"predictions": {name: array},
    "weights": {layer name: tuple of arrays}}``, or ``{"error": why}`` for the student.
    See :mod:`coursekit.model_files`, which checks the file before it comes here.
    """
    where = isolation()
    close_course(*find_course_roots())  # as for student functions: the kit's graders and the course graded here
    limits = (memory_mb or course_config.SANDBOX_MEMORY_MB, course_config.SANDBOX_MAX_PROCESSES)
    count = sum(len(array) for array in images.values())
    workdir = Path(tempfile.mkdtemp(prefix="model-", dir=scratch_parent()))
    try:
        (workdir / "model.keras").write_bytes(content)
        np.savez(workdir / "inputs.npz", **images)
        request = {"weights_of": list(weights_of), "max_weight_bytes": course_config.SUBMITTED_MODEL_MAX_MB * 2**20}
        (workdir / "request.json").write_text(json.dumps(request), encoding="utf-8")
        if where.drops_privileges:
            os.chown(workdir, where.uid, where.gid)
        stopped = _run_child(workdir, timeout, timeout, limits, where, script=MODEL_CHILD_SCRIPT)
        if stopped.startswith("the sandbox reached its time limit"):
            return {
                "error": f"loading it and predicting {count:,} images took longer than {timeout:.0f} s, the "
                "grader's limit for a saved model. Submit the model the notebook trained and saved "
                "(model.save): it predicts these images in seconds."
            }
        if stopped:
            return {"error": f"{stopped}."}
        return _read_model_outputs(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _read_model_outputs(workdir):
    result_path, out_path = workdir / "result.json", workdir / "out.npz"
    if not _regular_file(result_path) or result_path.stat().st_size > 100_000:
        return {"error": "the sandbox that opens model files wrote no result (was it killed?)."}
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
        if not result.get("ok"):
            return {"error": str(result.get("error") or "the model could not be opened")[:600] + "."}
        if not _regular_file(out_path) or not _Budget().take(_npz_size(out_path)):
            return {
                "error": f"its outputs are larger than the grader accepts ({course_config.SANDBOX_MAX_OUTPUT_MB} MB)."
            }
        with np.load(out_path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        return {"error": f"its outputs could not be read back ({type(error).__name__})."}
    predictions = {key.removeprefix("predict__"): value for key, value in stored.items() if key.startswith("predict__")}
    weights = {}
    for index, name in enumerate(result.get("weight_layers") or []):
        arrays, slot = [], 0
        while f"weights__{index}__{slot}" in stored:
            arrays.append(stored[f"weights__{index}__{slot}"])
            slot += 1
        weights[str(name)] = tuple(arrays)
    return {"predictions": predictions, "weights": weights}
