"""How student code is isolated from the grader, in one place.

Student code runs in two kinds of process: the sandbox's child that calls a notebook's functions
for the hidden graders (:mod:`coursekit.sandbox`) and the kernel that re-runs the notebook for
nbgrader (:mod:`coursekit.kernel_sandbox`). Both get their protections from here:

- the decision, :func:`isolation`: which protections this machine allows (another user, new network
  and PID namespaces), from a probe (a child that must start and import NumPy under them); what is
  missing is logged, or refused where ``course_config.SANDBOX_REQUIRE_ISOLATION`` is set. It changes
  nothing on disk;
- the resource limits, :func:`limit_resources` (memory, file size, processes, no supplementary
  groups, death with the process that started it);
- the scratch folders, :func:`scratch_parent` (others may cross it, not list it);
- the environment, :data:`KEPT_VARIABLES` and :func:`student_environment`: one allow-list;
- the mirror of the grader's files that student code may read (:func:`keras_mirror`,
  :func:`sandbox_readable_file`);
- the explicit step that closes a course's private folders to the sandbox's user,
  :func:`close_course`, called with the course actually being graded (:func:`find_course_roots`
  finds the courses a notebook lies in).

Why each protection exists, and its test: docs/threat_model.md.
"""

import atexit
import contextlib
import functools
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
from dataclasses import dataclass
from pathlib import Path

import course_config
from coursekit.data import keras_home

log = logging.getLogger(__name__)


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
        done = subprocess.run(
            command, capture_output=True, timeout=60, cwd="/", preexec_fn=_drop_groups if user_ids else None
        )
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
        missing.append(
            f"user: the grader is not root, so student code runs as uid {os.getuid()} "
            "and can read and write what the grader can"
        )
    attempts = ([(user_ids, network)] if user_ids else []) + ([(None, True)] if network else [])
    for ids, namespaces in attempts:
        why = _probe(_prefix(ids, namespaces), ids)
        if not why:
            prefix, (uid, gid) = _prefix(ids, namespaces), ids or (uid, gid)
            break
        if ids:
            missing.append(
                f"user: {user!r} cannot run {sys.executable} ({why}); make the interpreter and "
                "its packages readable and executable for that user. Student code runs as root"
            )
        else:
            missing.append(
                f"network and process namespaces: unavailable here ({why}); student code "
                "can use the network, and processes it detaches may outlive it"
            )
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
    "grader_tests",
    course_config.SOURCE_FOLDER,
    "source_with_tests",
    "reference_solution",
    course_config.SUBMITTED_FOLDER,
    course_config.AUTOGRADED_FOLDER,
    course_config.FEEDBACK_FOLDER,
    "solution",
    *(course_config.GRADEBOOK_FILE + suffix for suffix in ("", "-journal", "-wal", "-shm")),
    course_config.GRADES_CSV_FILE,
    course_config.CLASS_GRADING_RESULTS,
    ".grader_cache",
    ".nbgrader.log",
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
    kit = (
        c.GRADER_TESTS_DIR,
        c.SOURCE_DIR,
        c.REFERENCE_DIR,
        c.SUBMITTED_DIR,
        c.AUTOGRADED_DIR,
        c.FEEDBACK_DIR,
        c.GRADEBOOK,
        c.GRADES_CSV,
        c.GRADER_CACHE_DIR,
    )
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


# The grader's environment variables that student code keeps, in the sandbox's child and in the re-run's
# kernel alike; everything else (tokens, paths into the grader's home, the grader's PYTHONPATH) is dropped.
# Each is a setting, never a secret, and each was kept by the kernel before the two lists became this one:
KEPT_VARIABLES = (
    "PATH",  # programs a notebook starts, e.g. pip in the kit's .venv
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",  # locale, encoding and time zone of printed text
    "TERM",  # the kernel's terminal capabilities (coloured tracebacks)
    "MPLBACKEND",  # matplotlib's backend (the sandbox's child sets Agg)
    "KERAS_BACKEND",  # the same Keras backend as the graders'
    "TF_CPP_MIN_LOG_LEVEL",  # TensorFlow's log noise (the sandbox's child sets 3)
    "TF_ENABLE_ONEDNN_OPTS",  # TensorFlow's oneDNN switch, as the graders have it
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",  # thread counts: a shared machine's setting
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",  # TensorFlow's thread pools, like the ones above
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",  # OpenBLAS on CPUs it does not detect (some VMs)
    "CUDA_VISIBLE_DEVICES",  # which GPUs, if any, the grader's processes may use
    "PYDEVD_DISABLE_FILE_VALIDATION",  # ipykernel's debugger warning about frozen modules
)
# Kept by the kernel only: what Jupyter and nbgrader set for a kernel (JPY_*, NBGRADER_EXECUTION). The
# sandbox's child is no kernel, and its runs must not depend on whether nbgrader was re-running a notebook.
KERNEL_PREFIXES = ("JPY_", "NBGRADER_")


def student_environment(home, env=None, prefixes=()):
    """The environment of a process that runs student code: what :data:`KEPT_VARIABLES` (and names starting
    with ``prefixes``) keep of ``env`` (default ``os.environ``), with ``HOME``, ``KERAS_HOME``, matplotlib's
    and IPython's folders and the caches in ``home``, and a fixed hash seed."""
    env = os.environ if env is None else env
    kept = {
        key: value
        for key, value in env.items()
        if key in KEPT_VARIABLES or (prefixes and key.startswith(tuple(prefixes)))
    }
    home = Path(home)
    kept.update(
        HOME=str(home),
        KERAS_HOME=str(home / ".keras"),
        MPLCONFIGDIR=str(home / ".matplotlib"),
        IPYTHONDIR=str(home / ".ipython"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PYTHONHASHSEED="0",
    )
    return kept
