"""Run a student's functions in a separate, limited process; only data comes back.

The grader never imports or calls student code in its own process. It describes
the calls it wants (:class:`Call`), and :func:`run_student_functions` starts a
child Python process that loads the notebook's definitions, makes the calls, and
writes back JSON and ``.npz`` arrays, which are read without unpickling.

The child runs in a scratch folder, in its own process group, with a wall-clock
limit for the whole run and for each call, and an address-space limit
(``course_config.SANDBOX_*``). Calls that did not finish come back as failed
results with a message that says why, so each check can report it.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import course_config

CHILD_SCRIPT = Path(__file__).with_name("_sandbox_child.py")
RETURN_KINDS = ("array", "arrays", "model", "figure", "none")


@dataclass
class Call:
    """One call of a student function.

    Parameters
    ----------
    function : str
        Name of the function in the notebook.
    args, kwargs
        Arguments: NumPy arrays, or values that JSON can carry.
    returns : {"array", "arrays", "model", "figure", "none"}
        What the function should return, and so what comes back: an array, a tuple
        of arrays, a Keras model's JSON configuration, a description of a matplotlib
        figure, or nothing.
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
    stopped: str = ""    # why the child stopped early, if it did

    def __getitem__(self, name):
        return self.results[name]


def _limit_resources(memory_mb):
    def apply():
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _child_environment(workdir):
    keep = ("PATH", "LANG", "LC_ALL", "KERAS_BACKEND", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(HOME=str(workdir), MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_HOME=str(Path(workdir) / ".keras"), PYTHONHASHSEED="0",
               MPLCONFIGDIR=str(Path(workdir) / ".matplotlib"))
    return env


def _encode_calls(calls):
    arrays, encoded = {}, []
    for call in calls:
        def encode(value, slot):
            if isinstance(value, np.ndarray):
                key = f"{call.name}__{slot}"
                arrays[key] = value
                return {"array": key}
            return value
        encoded.append({
            "name": call.name, "function": call.function, "returns": call.returns,
            "return_args": call.return_args,
            "args": [encode(value, f"a{i}") for i, value in enumerate(call.args)],
            "kwargs": {key: encode(value, f"k_{key}") for key, value in call.kwargs.items()},
        })
    return encoded, arrays


def _read_results(workdir, calls):
    results, problems = {}, []
    path = Path(workdir) / "results.jsonl"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
    by_name = {call.name: call for call in calls}
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by a kill
        if "cell_problems" in record:
            problems = record["cell_problems"] if isinstance(record["cell_problems"], list) else []
            continue
        name = record.get("name")
        if name not in by_name:
            continue
        results[name] = _result_from_record(record, by_name[name], workdir)
    return results, problems


def _result_from_record(record, call, workdir):
    if not record.get("ok"):
        return CallResult(call.name, False, str(record.get("error") or "the call failed"))
    value = record.get("value")
    args_after = ()
    npz_path = Path(workdir) / f"out_{call.name}.npz"
    if npz_path.exists():
        with np.load(npz_path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
        if call.returns in ("array", "arrays"):
            count = int(value.get("arrays", 0)) if isinstance(value, dict) else 0
            items = tuple(stored.get(f"{call.name}__{i}") for i in range(count))
            value = items[0] if call.returns == "array" and items else items
        args_after = tuple(stored[key] for key in sorted(stored) if "__arg" in key)
    return CallResult(call.name, True, "", value, args_after)


def run_student_functions(notebook, calls, timeout=None, call_timeout=None, memory_mb=None):
    """Call a notebook's functions in a sandboxed child process.

    Parameters
    ----------
    notebook : path-like
        The submitted ``.ipynb`` file. It is read, never modified.
    calls : list of Call
    timeout, call_timeout, memory_mb
        Limits; default to ``course_config.SANDBOX_TIMEOUT_S``,
        ``SANDBOX_CALL_TIMEOUT_S`` and ``SANDBOX_MEMORY_MB``.

    Returns
    -------
    SandboxRun
        One :class:`CallResult` per call, failed ones included.
    """
    timeout = timeout or course_config.SANDBOX_TIMEOUT_S
    call_timeout = call_timeout or course_config.SANDBOX_CALL_TIMEOUT_S
    memory_mb = memory_mb or course_config.SANDBOX_MEMORY_MB
    workdir = Path(tempfile.mkdtemp(prefix="coursekit-sandbox-"))
    try:
        shutil.copyfile(notebook, workdir / "submission.ipynb")
        encoded, arrays = _encode_calls(calls)
        request = {"notebook": str(workdir / "submission.ipynb"), "calls": encoded,
                   "call_timeout": call_timeout}
        (workdir / "request.json").write_text(json.dumps(request), encoding="utf-8")
        if arrays:
            np.savez(workdir / "inputs.npz", **arrays)
        stopped = _run_child(workdir, timeout, memory_mb)
        results, problems = _read_results(workdir, calls)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for call in calls:
        if call.name not in results:
            reason = stopped or "the sandbox stopped before this call"
            results[call.name] = CallResult(call.name, False, f"`{call.function}` was not run: {reason}.")
    return SandboxRun(results, problems, stopped)


def _run_child(workdir, timeout, memory_mb):
    """Run the child; return '' if it ended normally, else why it was stopped."""
    process = subprocess.Popen(
        [sys.executable, "-I", str(CHILD_SCRIPT), str(workdir)],
        cwd=workdir, env=_child_environment(workdir), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=_limit_resources(memory_mb),
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return f"the sandbox reached its time limit of {timeout} s"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    if process.returncode != 0:
        last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        if process.returncode < 0:
            return f"the sandbox was stopped by signal {-process.returncode} (memory limit of {memory_mb} MB?)"
        return f"the sandbox failed ({last[0][:300]})"
    return ""
