"""Run a student's functions in a separate, limited process; only data comes back.

The grader never imports or calls student code in its own process. It describes
the calls it wants (:class:`Call`), and :func:`run_student_functions` starts a
child Python process that loads the notebook's definitions, makes the calls, and
writes back JSON and ``.npz`` arrays, which are read without unpickling.

The child runs in a scratch folder, in its own session, with a wall-clock limit
for the whole run and for each call, limits on memory, file size and (as another
user) processes, and without network (``course_config.SANDBOX_*``); see
:func:`isolation` for what this machine allows and docs/threat_model.md for why.
What student code must not read (hidden graders, solutions, grades, every student's
files) is closed to it by an explicit step, :func:`close_course`, with the course folder
actually being graded; the runner closes the kit's own folders and any course the
notebook lies in before every child.
Calls that did not finish come back as failed results with a message that says
why, so each check can report it; a call that kills the child costs only its own
result, because the remaining calls run again in a fresh child.
"""

import atexit
import contextlib
import functools
import json
import logging
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import course_config
from coursekit.data import keras_home
from coursekit.notebooks import NotebookProblem, read_submission

log = logging.getLogger(__name__)

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
    stopped: str = ""    # why the child stopped early, if it did
    isolation: tuple = ()  # what isolated the child (see :func:`isolation`)

    def __getitem__(self, name):
        return self.results[name]


# Isolation --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Isolation:
    """How student code is isolated on this machine.

    ``prefix`` is the command that starts the child in new network and PID
    namespaces (and, when the grader is root, as ``user``); ``in_force`` lists
    the protections that hold, ``missing`` those that do not, with the reason.
    """

    prefix: tuple
    uid: int
    gid: int
    in_force: tuple
    missing: tuple

    @property
    def drops_privileges(self):
        return self.uid != os.getuid()


def _prefix(user_ids, namespaces):
    """The ``unshare`` command that starts the child: new network and PID namespaces (all of the
    child's processes die with it) and/or another user (``user_ids``: uid, gid).

    The child dies with ``unshare``: ``--kill-child`` asks for that, but switching users clears
    a process's parent-death signal, so ``setpriv --pdeathsig KILL`` sets it again after the
    switch, just before the child's program starts. ``unshare`` itself dies with the grader's
    process (:func:`_die_with_parent`, in :func:`limit_resources`), so killing ``nbgrader
    autograde`` or a class-grading worker leaves no sandboxed process behind.
    """
    command = [shutil.which("unshare") or "/usr/bin/unshare"]
    if namespaces:
        command += ["--net", "--pid", "--mount-proc", "--fork", "--kill-child"]
    if user_ids:
        command += ["--setgid", str(user_ids[1]), "--setuid", str(user_ids[0])]
    elif namespaces and os.getuid() != 0:
        command.append("--user")  # an unprivileged user namespace is what allows the others
    return tuple(command + ["--", *_pdeathsig_command()])


@functools.lru_cache(maxsize=None)
def _pdeathsig_command():
    """``setpriv --pdeathsig KILL --`` where util-linux's setpriv has that option (2.33 and later), else ()."""
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return ()
    try:
        usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else ()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent():
    """In a new process, before it runs its program: be killed when the thread that started it ends.

    Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) survives ``exec`` of a program that is
    not set-user-ID. A process whose parent died before this call ends at once."""
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not Linux: the namespaces' --kill-child and the runners' own clean-up remain
    if os.getppid() != parent:
        os._exit(1)


def _probe(prefix, user_ids=None):
    """'' if the interpreter starts and imports NumPy under ``prefix``, else why not."""
    command = [*prefix, sys.executable, "-I", "-c", "import numpy"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=60, cwd="/",
                              preexec_fn=_drop_groups if user_ids else None)
    except (OSError, subprocess.SubprocessError) as error:
        return f"{type(error).__name__}: {error}"
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:300] if lines else f"exit status {done.returncode}"
    return ""


def _drop_groups():
    os.setgroups([])


@functools.lru_cache(maxsize=None)
def isolation(user=None, network=None):
    """Decide, once per process, how the child is isolated here (see :class:`Isolation`).

    As root, the child runs as ``course_config.SANDBOX_USER`` in new network and
    PID namespaces. As another user it runs as that user, in new namespaces when
    unprivileged user namespaces are allowed. What cannot be had is logged once as
    a warning and listed in ``missing``; with ``SANDBOX_REQUIRE_ISOLATION`` it is
    an error instead. It changes nothing on disk: closing the course's folders is
    :func:`close_course`.
    """
    user = course_config.SANDBOX_USER if user is None else user
    network = course_config.SANDBOX_ISOLATE_NETWORK if network is None else network
    in_force, missing = ["scratch folder", "time limits", "memory limit", "file-size limit"], []
    uid, gid, prefix = os.getuid(), os.getgid(), ()
    user_ids = None
    if os.getuid() == 0 and user:
        try:
            entry = pwd.getpwnam(user)
            user_ids = (entry.pw_uid, entry.pw_gid)
        except KeyError:
            missing.append(f"user: there is no user {user!r} on this machine, so student code runs as root")
    elif os.getuid() == 0:
        missing.append("user: SANDBOX_USER is empty, so student code runs as root")
    else:
        missing.append(f"user: the grader is not root, so student code runs as uid {os.getuid()} "
                       "and can read and write what the grader can")
    attempts = ([(user_ids, network)] if user_ids else []) + ([(None, True)] if network else [])
    for ids, namespaces in attempts:
        why = _probe(_prefix(ids, namespaces), ids)
        if not why:
            prefix, (uid, gid) = _prefix(ids, namespaces), ids or (uid, gid)
            break
        if ids:
            missing.append(f"user: {user!r} cannot run {sys.executable} ({why}); make the interpreter and "
                           "its packages readable and executable for that user. Student code runs as root")
        else:
            missing.append(f"network and process namespaces: unavailable here ({why}); student code "
                           "can use the network, and processes it detaches may outlive it")
    if not network:
        missing.append("network: SANDBOX_ISOLATE_NETWORK is off")
    if "--net" in prefix:
        in_force += ["no network", "own PID namespace"]
    if uid != os.getuid():
        # The runners close the private folders (close_course) before any student code starts.
        in_force += [f"runs as {user}", "process limit", "course files closed to that user"]
    if missing:
        message = "Sandbox isolation is incomplete on this machine: " + "; ".join(missing) + "."
        if course_config.SANDBOX_REQUIRE_ISOLATION:
            raise RuntimeError(message + " (course_config.SANDBOX_REQUIRE_ISOLATION is set)")
        log.warning(message)
    return Isolation(tuple(prefix), uid, gid, tuple(in_force), tuple(missing))


def close_to_others(paths):
    """Remove the permissions of "others" from ``paths`` (those that exist), so the sandbox's user
    can neither read nor write them, nor enter them if they are folders. The grader runs as their
    owner and is not affected. A link is never followed (nor closed): the mode is changed through
    the file itself, opened without following a link. Returns the paths it changed."""
    changed = []
    for path in map(Path, paths):
        try:
            handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # missing, a link (ELOOP), a socket, or not readable by the grader
            continue
        try:
            mode = os.fstat(handle).st_mode
            if (stat.S_ISDIR(mode) or stat.S_ISREG(mode)) and mode & 0o007:
                os.fchmod(handle, stat.S_IMODE(mode) & ~0o007)
                changed.append(path)
                log.info("Closed %s to other users (the sandbox's user among them)", path)
        finally:
            os.close(handle)
    return changed


# What a course folder holds that student code must not see, relative to the folder: nbgrader's
# folders (CourseDirectory's defaults), the gradebook (and SQLite's files beside it), grades, class
# grading's stored results, nbgrader's log (student ids and verdicts), reports, and the kit's own
# folders when the course is the kit's folder. Not closed: release/ and nbgrader_config.py.
PRIVATE_COURSE_NAMES = (
    "grader_tests", course_config.SOURCE_FOLDER, "source_with_tests", "reference_solution",
    course_config.SUBMITTED_FOLDER, course_config.AUTOGRADED_FOLDER, course_config.FEEDBACK_FOLDER, "solution",
    *(course_config.GRADEBOOK_FILE + suffix for suffix in ("", "-journal", "-wal", "-shm")),
    course_config.GRADES_CSV_FILE, course_config.CLASS_GRADING_RESULTS, ".grader_cache", ".nbgrader.log",
    course_config.REPORTS_FOLDER,
)
# Folders that grading writes into later (nbgrader autograde and generate_feedback): made closed in a
# course with submissions before anything is written, so they never exist open to others.
WRITTEN_LATER = (course_config.AUTOGRADED_FOLDER, course_config.FEEDBACK_FOLDER)


def private_course_paths(root=None):
    """What student code must not see in the course folder ``root`` (default: the kit's folder,
    ``course_config.ROOT``, with the folders course_config names): hidden graders, solutions, grades,
    every student's submissions, autograded notebooks, feedback and stored results, and the graders'
    score cache."""
    c = course_config
    kit = (c.GRADER_TESTS_DIR, c.SOURCE_DIR, c.REFERENCE_DIR, c.SUBMITTED_DIR, c.AUTOGRADED_DIR, c.FEEDBACK_DIR,
           c.GRADEBOOK, c.GRADES_CSV, c.GRADER_CACHE_DIR)
    root = Path(root or c.ROOT)
    paths = [*kit] if root == Path(c.ROOT) else [c.GRADER_CACHE_DIR]
    return tuple(dict.fromkeys([*map(Path, paths), *(root / name for name in PRIVATE_COURSE_NAMES)]))


def close_course(*roots):
    """Close to others (``chmod o-rwx``) every private path of the kit's own folder and of each course
    folder in ``roots`` (see :func:`private_course_paths`): the explicit step that keeps student code,
    run as the sandbox's user, out of what it must not read.

    Each path is closed itself, so it is closed even where the course folder is open to all.
    Folders made later are made closed: the graders' score cache, and a course's ``autograded/`` and
    ``feedback/`` where it has ``submitted/``; class grading's results are made closed by
    :class:`coursekit.class_results.ResultStore`. Every entry point that grades calls this with the
    course it grades (grading.grade_notebook, classgrading.grade_class, the re-execution's kernel);
    calling it again closes what appeared since. Returns the paths it changed.
    """
    cache = Path(course_config.GRADER_CACHE_DIR)
    _make_closed_folder(cache)
    paths = list(private_course_paths())
    for root in map(Path, roots):
        if (root / course_config.SUBMITTED_FOLDER).is_dir():
            for name in WRITTEN_LATER:
                _make_closed_folder(root / name)
        paths += private_course_paths(root)
    return close_to_others(dict.fromkeys(paths))


def _make_closed_folder(path):
    try:
        path.mkdir(mode=0o750, parents=True)
    except OSError:  # there already (closed below), or it cannot be made here
        pass


def find_course_roots(*paths):
    """Course folders that ``paths`` (files or folders) or the working folder lie in: each such folder
    or one above it that holds an ``nbgrader_config.py``. A folder that others can write (``/tmp``),
    or whose ``nbgrader_config.py`` others can write, is not taken for a course."""
    roots = []
    with contextlib.suppress(OSError):  # a working folder that was deleted
        paths = (*paths, Path.cwd())
    for start in paths:
        if not start:
            continue
        start = Path(start).resolve()
        for folder in (start, *start.parents):
            if folder not in roots and _is_course_folder(folder):
                roots.append(folder)
    return roots


def _is_course_folder(folder):
    try:
        config, here = (folder / "nbgrader_config.py").lstat(), folder.stat()
    except OSError:
        return False
    return stat.S_ISREG(config.st_mode) and not (config.st_mode | here.st_mode) & 0o002


@functools.lru_cache(maxsize=None)
def scratch_parent():
    """A folder for the scratch folders that others may cross but not list: one sandbox cannot find another's."""
    parent = tempfile.mkdtemp(prefix="coursekit-sandboxes-")
    os.chmod(parent, 0o711)
    atexit.register(shutil.rmtree, parent, True)
    return parent


# Files of the grader's that sandboxed code may read ------------------------------------------------

def _readable_copy(source, target):
    """``target`` becomes a read-only (for others) copy of ``source``: a hard link where the file
    is already readable by all, else a copy with mode 0644."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    try:
        if source.stat().st_mode & 0o004:
            os.link(source, target)
            return
    except OSError:
        pass
    shutil.copyfile(source, target)
    os.chmod(target, 0o644)


@functools.lru_cache(maxsize=None)
def keras_mirror():
    """Once per process: the grader's Keras datasets and model files, readable (not writable) by the
    sandbox's user (the re-run's kernel links its ``~/.keras`` here), in a folder of the scratch parent
    (which others cannot list)."""
    mirror = Path(tempfile.mkdtemp(prefix="keras-", dir=scratch_parent()))
    os.chmod(mirror, 0o755)
    home = keras_home()
    for part in ("datasets", "models"):
        (mirror / part).mkdir()
        os.chmod(mirror / part, 0o755)
        source = home / part
        if not source.is_dir():
            continue
        for path in source.rglob("*"):
            if path.is_file() and not path.is_symlink():
                _readable_copy(path, mirror / part / path.relative_to(source))
    return mirror


def sandbox_readable_file(path):
    """Where sandboxed code (a kernel, or the graders' sandbox) can read ``path``, a file of the grader's
    such as VGG16's weights under root's home; None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    mirror = keras_mirror()
    try:
        inside = path.resolve().relative_to(keras_home().resolve())
        if inside.parts and inside.parts[0] in ("datasets", "models"):
            return mirror / inside
    except ValueError:
        pass
    target = mirror / "files" / path.name
    if not target.exists():
        _readable_copy(path, target)
    return target



def limit_resources(memory_mb, max_processes, drops_privileges):
    """Runs in the new process before it starts the child: resource limits, no supplementary groups, and
    death with the process that started it (:func:`_die_with_parent`)."""
    def apply():
        _die_with_parent()
        limit = memory_mb * 1024 * 1024
        output = course_config.SANDBOX_MAX_OUTPUT_MB * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        if drops_privileges:
            os.setgroups([])
            resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
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
        def encode(value, slot, call=call):
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
            return CallResult(call.name, False, f"`{call.function}`'s results could not be read back "
                                                f"({type(error).__name__}).")
        if not fits:
            return CallResult(call.name, False, f"`{call.function}` returned more data than the grader accepts "
                                                f"({course_config.SANDBOX_MAX_OUTPUT_MB} MB in all).")
        with np.load(npz_path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
        if call.returns in ("array", "arrays"):
            count = int(value.get("arrays", 0)) if isinstance(value, dict) else 0
            items = tuple(stored.get(f"{call.name}__{i}") for i in range(count))
            value = items[0] if call.returns == "array" and items else items
        elif call.returns == "model_weights":
            count = int(value.get("arrays", 0)) if isinstance(value, dict) else 0
            value = {"json": value.get("json") if isinstance(value, dict) else None,
                     "weights": tuple(stored.get(f"{call.name}__{i}") for i in range(count))}
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
        request = {"notebook": str(workdir / "submission.ipynb"), "calls": encoded,
                   "call_timeout": call_timeout}
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
            cwd=workdir, env=_child_environment(workdir), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True, preexec_fn=limit_resources(memory_mb, max_processes, where.drops_privileges),
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
            return {"error": f"loading it and predicting {count:,} images took longer than {timeout:.0f} s, the "
                             "grader's limit for a saved model. Submit the model the notebook trained and saved "
                             "(model.save): it predicts these images in seconds."}
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
            return {"error": "its outputs are larger than the grader accepts "
                             f"({course_config.SANDBOX_MAX_OUTPUT_MB} MB)."}
        with np.load(out_path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        return {"error": f"its outputs could not be read back ({type(error).__name__})."}
    predictions = {key.removeprefix("predict__"): value for key, value in stored.items()
                   if key.startswith("predict__")}
    weights = {}
    for index, name in enumerate(result.get("weight_layers") or []):
        arrays, slot = [], 0
        while f"weights__{index}__{slot}" in stored:
            arrays.append(stored[f"weights__{index}__{slot}"])
            slot += 1
        weights[str(name)] = tuple(arrays)
    return {"predictions": predictions, "weights": weights}
