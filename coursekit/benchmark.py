"""Measure class grading: seconds per submission and throughput with 1 and 2 workers, per lab.

``python -m coursekit.benchmark`` (or ``make benchmark``) does, for each lab and each worker
count, what README.md's *Grading a whole class* reports:

1. a temporary course: this kit's ``source/`` and ``nbgrader_config.py``, released with
   ``nbgrader generate_assignment``, and demo submissions written into ``submitted/`` (by
   default the first two of each lab: the reference solution and a variant with another
   architecture, so that neither grading reuses the other's retraining score);
2. an empty grader cache (``COURSEKIT_GRADER_CACHE``), so every score is computed;
3. ``grade_class(..., workers=W, force=True)``, the code behind ``python -m coursekit grade-class``.

It records the wall time, each submission's grading time as the worker measured it (hidden
graders plus quick-mode re-run, the ``seconds`` of its result), the machine's CPU time in all
(``/proc/stat``: every process, other jobs included, which is why the machine should be idle;
the CPU time of this process's children came out far too small in a trial run, so it is not
used), the load average before and after, and the sandbox's isolation. The numbers
are printed as a table and written as JSON. Run it on an idle machine: it warns when the
load average is above 0.5 at the start.

With ``--profile`` it grades one submission per lab (the reference) instead, once through class
grading and once through ``nbgrader autograde``, each from an empty grader cache, and reports where
the seconds of each went (:func:`profile_rows`): the graders' process start and imports, each session
fixture and check, the sandboxed kernel's start, the re-run cells, and nbgrader's own steps (its wall
time less the graders' and the re-run's, measured in the class run).

With ``--class-size N`` it grades a class of ``N`` Lab 1 submissions instead (:func:`class_submissions`):
copies of the reference, each with its own architecture (another width of the last hidden layer) and its
own model file, so that no score is reused from another student's, as in a real class where everyone
trained their own network.

With ``--baseline REV`` it measures the kit at git revision ``REV`` too, in one run: a worktree of
that revision is checked out in a temporary folder the sandbox's user can cross, and for each lab
and worker count its own benchmark runs first (a child process whose imports, graders and notebooks
all come from that revision), then this tree's. Each run is marked with its tree and with whether
every submission was scored as expected, and the table ends with the ratios of seconds per
submission and of wall times: README.md's before/after comes from one such run, on one machine. With
``--class-size`` too, both trees grade a class of that size.

Examples::

    .venv/bin/python -m coursekit.benchmark                       # every lab with a reference, 1 and 2 workers
    .venv/bin/python -m coursekit.benchmark --labs lab1_dense --workers 1 --out lab1.json
    .venv/bin/python -m coursekit.benchmark --profile --out profile.json
    .venv/bin/python -m coursekit.benchmark --profile --baseline e8552f3    # before and after a change
    .venv/bin/python -m coursekit.benchmark --labs lab1_dense --class-size 100 --workers 2
    .venv/bin/python -m coursekit.benchmark --labs lab1_dense --class-size 20 --workers 2 --baseline 0dd753c
"""

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import course_config
from coursekit.machine import cpu_model
from coursekit.course_layout import CourseLayout


def _load():
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def _machine_cpu_seconds():
    """CPU time the whole machine spent busy (every process, every core), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def released_template(root, lab, students, class_size=None):
    """A released course in ``root`` with ``students`` (demo submission ids) submitted for ``lab``, or with
    a class of ``class_size`` submissions (:func:`class_submissions`)."""
    from coursekit import course
    from coursekit.demo import submit_demo_students
    from coursekit.submissions import SUBMISSIONS_BY_LAB

    shutil.copytree(course_config.SOURCE_DIR / lab.assignment, CourseLayout(root).source / lab.assignment)
    shutil.copy(course_config.ROOT / "nbgrader_config.py", root)
    course.generate_release(root, [lab.assignment])
    by_id = {submission.student: submission for submission in SUBMISSIONS_BY_LAB[lab.assignment]}
    submissions = class_submissions(lab, class_size) if class_size else [by_id[student] for student in students]
    submit_demo_students(root, submissions, lab)
    return root


CLASS_STUDENT = "class_{:03d}"
CLASS_LAST_HIDDEN_UNITS = 128  # the first copy's last hidden layer; copy k has 128 + k units


def class_submissions(lab, size):
    """``size`` honest Lab 1 submissions that share nothing a grader could reuse.

    Copy ``k`` is the reference submission with ``build_dense_model``'s last hidden layer of
    ``CLASS_LAST_HIDDEN_UNITS + k`` units (so its retraining is its own) and the reference model file
    saved at another moment (its ``metadata.json`` differs, so the saved-model score is its own too).
    Every copy should pass every check."""
    from coursekit.submissions import DemoSubmission, reference_files

    if lab.assignment != course_config.LAB1.assignment:
        raise SystemExit(f"--class-size is for {course_config.LAB1.assignment}: its copies vary build_dense_model")
    model_path = reference_files(lab)[1]

    def edit(units):
        def with_units(notebook):
            default = "hidden_units=(1024, 512, 256)"
            cells = [cell for cell in notebook["cells"] if "def build_dense_model(" in "".join(cell["source"])]
            if len(cells) != 1 or default not in "".join(cells[0]["source"]):
                raise SystemExit(f"--class-size: the reference's build_dense_model no longer has {default}")
            cells[0]["source"] = "".join(cells[0]["source"]).replace(default, f"hidden_units=(1024, 512, {units})")

        return with_units

    def model(index):
        return lambda path: copy_with_metadata(model_path, path, {"date_saved": f"class copy {index}"})

    return [
        DemoSubmission(
            CLASS_STUDENT.format(index),
            f"the reference, last hidden layer {CLASS_LAST_HIDDEN_UNITS + index} units, its own model file",
            edit=edit(CLASS_LAST_HIDDEN_UNITS + index),
            make_model=model(index),
        )
        for index in range(size)
    ]


def copy_with_metadata(source, target, changes):
    """Copy the .keras file ``source`` to ``target`` with ``changes`` made to its ``metadata.json``."""
    import zipfile

    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        for member in original.infolist():
            data = original.read(member)
            if member.filename == "metadata.json":
                data = json.dumps({**json.loads(data), **changes}).encode("utf-8")
            copy.writestr(member, data)


def default_students(lab):
    """The first two demo submissions of the lab: the reference and a variant with another architecture."""
    from coursekit.submissions import SUBMISSIONS_BY_LAB

    return [submission.student for submission in SUBMISSIONS_BY_LAB[lab.assignment][:2]]


def checks_failed(course_root, assignment, students):
    """Per student, the grade ids whose hidden check failed, or why the submission was not graded."""
    from coursekit.class_results import ResultStore

    store, failed = ResultStore.for_course(course_root), {}
    for student in students:
        result = store.load(assignment, student)
        why = (result.problem or result.report.problem or result.report.unfinished) if result else "no result"
        if why:
            failed[student] = f"not graded: {why}"
        else:
            failed[student] = sorted(grade_id for grade_id, check in result.report.checks.items() if not check.passed)
    return failed


def with_checks(measure_run):
    """``measure_run`` whose run also records :func:`checks_failed`: a fast grading is worth something only
    if it gave the right grades. Applied to a baseline's own ``measure`` too (:data:`BASELINE_RUNNER`)."""

    def measured(template, lab, workers, scratch, *rest):
        run = measure_run(template, lab, workers, scratch, *rest)
        try:
            run["checks_failed"] = checks_failed(run["_course"], lab.assignment, run["seconds_per_submission"])
        except Exception as error:  # a baseline whose results this tree cannot read: unverified, not wrong
            run["checks_failed"] = None
            run["checks_failed_unread"] = f"{type(error).__name__}: {error}"
        return run

    return measured


def scored_as_expected(run):
    """True when every submission of the run lost points on exactly the checks its demo submission
    should fail (``coursekit.submissions``), False when not, None when the run did not record them."""
    from coursekit.submissions import SUBMISSIONS_BY_LAB

    if run.get("checks_failed") is None:
        return None
    expected = {submission.student: sorted(submission.fails) for submission in SUBMISSIONS_BY_LAB[run["lab"]]}
    expected.update({student: [] for student in run["checks_failed"] if _is_class_student(student)})
    return all(expected.get(student) == failed for student, failed in run["checks_failed"].items())


def _is_class_student(student):
    prefix = CLASS_STUDENT.split("{")[0]
    return student.startswith(prefix) and student[len(prefix) :].isdigit()


def _measure(template, lab, workers, scratch):
    """One run: grade the template's submissions with ``workers`` local workers from an empty grader cache."""
    from coursekit.class_results import ResultStore
    from coursekit.classgrading import grade_class

    root = Path(tempfile.mkdtemp(prefix=f"{lab.assignment}-w{workers}-", dir=scratch))
    shutil.rmtree(root)
    shutil.copytree(template, root)
    os.environ["COURSEKIT_GRADER_CACHE"] = tempfile.mkdtemp(prefix="grader-cache-", dir=scratch)
    load_before, machine_before = _load(), _machine_cpu_seconds()
    started = time.monotonic()
    summary = grade_class(root, [lab.assignment], workers=workers, force=True, progress=False)
    wall = time.monotonic() - started
    for child in multiprocessing.active_children():  # let the workers end before the CPU time is read
        child.join(timeout=30)
    store = ResultStore.for_course(root)
    per_submission = {}
    for assignment, student in summary.graded:
        result = store.load(assignment, student)
        per_submission[student] = result.seconds if result else None
    count = len(summary.graded)
    return {
        "lab": lab.assignment,
        "workers": workers,
        "submissions": count,
        "seconds_per_submission": per_submission,
        "wall_s": round(wall, 1),
        "throughput_per_min": round(60 * count / wall, 2) if wall else None,
        "machine_cpu_s": round(_machine_cpu_seconds() - machine_before, 1),
        "load_before": load_before,
        "load_after": _load(),
        "problems": {f"{a}/{s}": why for (a, s), why in summary.problems.items()},
        "failures": {f"{a}/{s}": why for (a, s), why in summary.failures.items()},
        "_course": str(root),  # the temporary course, where profile() reads the stored result; not written out
    }


measure = with_checks(_measure)


def profile(template, lab, student, scratch):
    """One submission graded through class grading, then through ``nbgrader autograde``, each from an empty cache."""
    from coursekit import course
    from coursekit.class_results import ResultStore

    run = measure(template, lab, 1, scratch)
    root = Path(tempfile.mkdtemp(prefix=f"{lab.assignment}-nbgrader-", dir=scratch))
    shutil.rmtree(root)
    shutil.copytree(template, root)
    os.environ["COURSEKIT_GRADER_CACHE"] = tempfile.mkdtemp(prefix="grader-cache-", dir=scratch)
    started = time.monotonic()
    course.autograde(root, lab.assignment, student)
    run["nbgrader_autograde_s"] = round(time.monotonic() - started, 1)
    result = ResultStore.for_course(run["_course"]).load(lab.assignment, student)
    run["timings"] = {"graders": dict(result.report.timings), **result.timings} if result else {}
    run["seconds"] = result.seconds if result else None
    return run


def profile_rows(run):
    """README.md's profile: (stage, seconds) of one submission, biggest parts first within each process."""
    timings, rows = run.get("timings", {}), []
    graders, quick = timings.get("graders", {}), timings.get("quick_mode", {})
    rows.append(("class grading, whole submission (graders and re-run side by side)", run.get("seconds")))
    rows.append(("graders' process, wall", graders.get("wall_s")))
    rows.append(("  Python, pytest, grader module and imports", graders.get("startup_s")))
    for name, seconds in sorted(graders.get("session_fixtures_s", {}).items(), key=lambda item: -item[1]):
        rows.append((f"  session fixture `{name}` (inside the first check that needs it)", seconds))
    for name, seconds in sorted(graders.get("checks_s", {}).items(), key=lambda item: -item[1]):
        rows.append((f"  check `{name}`", seconds))
    rows.append(("  after the last check, until the process ended", graders.get("finish_s")))
    rows.append(("quick-mode re-run, wall", quick.get("wall_s")))
    rows.append(("  sandboxed kernel start", quick.get("kernel_start_s")))
    rows.append(("  cells, added up", quick.get("cells_s")))
    for index, seconds in quick.get("slowest_cells", []):
        rows.append((f"  cell {index}", seconds))
    autograde = run.get("nbgrader_autograde_s")
    rows.append(("`nbgrader autograde`, same submission, wall", autograde))
    if autograde and run.get("seconds"):
        rows.append(("  nbgrader's own steps (its wall less the class run's)", round(autograde - run["seconds"], 1)))
    return rows


def _run_name(run):
    """The lab, and the tree when a run with ``--baseline`` measured two."""
    return f"{run['lab']} ({run['tree']})" if "tree" in run else run["lab"]


def profile_table(runs):
    lines = ["| Lab | Stage | Seconds |", "|---|---|---:|"]
    for run in runs:
        for stage, seconds in profile_rows(run):
            lines.append(f"| {_run_name(run)} | {stage} | {'—' if seconds is None else f'{seconds:.1f}'} |")
    return "\n".join(lines)


EXPECTED_WORDS = {True: "yes", False: "**NO**", None: "not recorded"}


def table(runs):
    """README.md's table: one line per run."""
    lines = [
        "| Run | Load (1 min, before → after) | Per submission | Wall | CPU, whole machine | Throughput "
        "| Scored as expected |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        values = [value for value in run["seconds_per_submission"].values() if value is not None]
        seconds = (
            ", ".join(f"{value:.0f} s" for value in values)
            if len(values) <= 4
            else f"{min(values):.0f}–{max(values):.0f} s, median {statistics.median(values):.0f} s"
        )
        lines.append(
            f"| {_run_name(run)}, "
            f"{run['workers']} worker{'s' if run['workers'] > 1 else ''} "
            f"| {run['load_before'][0]:.1f} → {run['load_after'][0]:.1f} | {seconds} "
            f"| {run['wall_s']:.0f} s ({run['submissions']} submissions) "
            f"| {run['machine_cpu_s']:.0f} CPU-s "
            f"| {run['throughput_per_min']:.2f} / min "
            f"| {EXPECTED_WORDS[scored_as_expected(run)]} |"
        )
    return "\n".join(lines)


def checked_out(revision, parent):
    """A git worktree of this kit at ``revision`` inside ``parent``, and the commit it resolved to.

    ``parent`` must be a folder the sandbox's user can cross (not one inside a private temporary
    folder): that user reads the baseline's child scripts there, as it reads this tree's. Beside the
    worktree, ``shared`` links to this kit's own neighbour (``course_config.ROOT.parent / "shared"``,
    where the VGG16 weights are), so the baseline finds what this tree finds outside the repository."""
    commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}").strip()
    folder = Path(parent) / f"baseline-{commit[:12]}" / course_config.ROOT.name
    folder.parent.mkdir(parents=True)
    os.chmod(folder.parent, 0o755)
    shared = course_config.ROOT.parent / "shared"
    if shared.exists():
        (folder.parent / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    _git("worktree", "add", "--detach", str(folder), commit)
    return folder, commit


def remove_checkout(folder):
    _git("worktree", "remove", "--force", str(folder))


def _git(*args):
    try:
        done = subprocess.run(["git", "-C", str(course_config.ROOT), *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        raise SystemExit(f"--baseline needs this kit's git history: `git {' '.join(args)}` failed ({detail})") from None
    return done.stdout


# The baseline's own benchmark, its ``measure`` wrapped by this file's :func:`with_checks` (loaded by path, so
# that everything it imports is the baseline's): argv is this file, then the benchmark's arguments.
BASELINE_RUNNER = """
import runpy, sys
import coursekit.benchmark as baseline
try:
    baseline.measure = runpy.run_path(sys.argv[1])["with_checks"](baseline.measure)
except Exception as error:
    print(f"The baseline's grades are not recorded ({type(error).__name__}: {error}).", file=sys.stderr)
sys.exit(baseline.main(sys.argv[2:]))
"""


def measure_checkout(folder, assignment, workers, students, profiling, scratch, class_size=None):
    """The runs of the benchmark of the kit checked out in ``folder``, run there as a child process."""
    out = Path(tempfile.mkdtemp(prefix="baseline-", dir=scratch)) / "runs.json"
    command = [sys.executable, "-c", BASELINE_RUNNER, __file__, "--labs", assignment, "--workers", str(workers)]
    if class_size:
        command += ["--class-size", str(class_size)]
    else:
        command += [*(["--students", *students] if students else []), *(["--profile"] if profiling else [])]
    env = {key: value for key, value in os.environ.items() if key != "COURSEKIT_GRADER_CACHE"}
    env["PYTHONPATH"] = str(folder)  # its course_config and coursekit, before this tree's installed ones
    subprocess.run([*command, "--out", str(out)], cwd=folder, env=env, check=False)
    if not out.is_file():
        raise SystemExit(f"The baseline's benchmark wrote no results ({' '.join(command)} in {folder}).")
    return json.loads(out.read_text(encoding="utf-8"))["runs"]


def ratio_table(runs):
    """Seconds per submission of the baseline over this tree's, per lab and worker count; no speed-up is
    claimed where either tree did not score its submissions as expected (a broken grading is fast)."""
    lines = [
        "| Lab | Workers | Submissions | Baseline s/submission | This tree s/submission | Speed-up "
        "| Wall, baseline → this tree |"
    ]
    lines.append("|---|---|---:|---:|---:|---:|---|")
    per = {}
    for run in runs:
        values = [value for value in run["seconds_per_submission"].values() if value is not None]
        if values:
            per[(run["lab"], run["workers"], run["tree"] == "this tree")] = (sum(values) / len(values), run)
    for (lab, workers, current), (seconds, run) in per.items():
        before = per.get((lab, workers, False))
        if current and before:
            trusted = scored_as_expected(run) is True and scored_as_expected(before[1]) is True
            ratio = f"{before[0] / seconds:.2f}×" if trusted else "none claimed: not scored as expected"
            wall = f"{before[1]['wall_s']:.0f} s → {run['wall_s']:.0f} s"
            cells = [lab, workers, run["submissions"], f"{before[0]:.1f}", f"{seconds:.1f}", ratio, wall]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main(argv=None):
    from coursekit.isolation import isolation
    from coursekit.submissions import reference_files

    labs_with_reference = [lab.assignment for lab in course_config.LABS if reference_files(lab)[0].exists()]
    parser = argparse.ArgumentParser(prog="python -m coursekit.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--labs",
        nargs="*",
        default=labs_with_reference,
        help=f"assignments to measure (default: {' '.join(labs_with_reference)})",
    )
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--students", nargs="*", help="demo submission ids (default: the first two of each lab)")
    parser.add_argument(
        "--class-size",
        type=int,
        metavar="N",
        help=f"grade a class of N {course_config.LAB1.assignment} submissions that share no score (class_submissions)",
    )
    parser.add_argument("--out", default="benchmark.json", help="JSON file to write (default: benchmark.json)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="grade one submission per lab (the reference) through class grading and nbgrader autograde, "
        "and report where its seconds went",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the kit at this git revision (a commit before a change), alternating with this tree",
    )
    args = parser.parse_args(argv)
    if args.class_size and (args.profile or args.students):
        parser.error("--class-size grades its own class: leave out --profile and --students")

    load = _load()
    if load[0] > 0.5:
        print(
            f"Warning: load average {load[0]:.2f} at the start; other jobs will slow the gradings down "
            "and the numbers will not describe an idle machine.",
            file=sys.stderr,
        )
    where = isolation()
    report = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "isolation": list(where.in_force),
        "isolation_missing": list(where.missing),
        "command": "python -m coursekit.benchmark " + " ".join(sys.argv[1:] if argv is None else argv),
        "runs": [],
    }
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="coursekit-benchmark-") as scratch:
        scratch = Path(scratch)
        baseline = None
        if args.baseline:
            crossable = Path(tempfile.mkdtemp(prefix="coursekit-baseline-"))
            os.chmod(crossable, 0o755)
            baseline, commit = checked_out(args.baseline, crossable)
            report["baseline"] = {"revision": args.baseline, "commit": commit}
            report["tree"] = _git("rev-parse", "HEAD").strip() + (" with changes" if _git("status", "--short") else "")
        try:
            for assignment in args.labs:
                lab = course_config.lab_settings(assignment)
                students = args.students or default_students(lab)
                if args.class_size:
                    print(f"{assignment}: a released course with a class of {args.class_size}", flush=True)
                else:
                    print(f"{assignment}: a released course with {', '.join(students)}", flush=True)
                if args.profile:
                    students = students[:1]
                template = released_template(scratch / f"{assignment}-template", lab, students, args.class_size)
                for workers in [1] if args.profile else args.workers:
                    if baseline is not None:
                        print(f"{assignment}: the baseline {args.baseline}, {workers} worker(s) ...", flush=True)
                        baseline_runs = measure_checkout(
                            baseline, assignment, workers, students, args.profile, scratch, args.class_size
                        )
                        for run in baseline_runs:
                            report["runs"].append({**run, "tree": f"baseline {args.baseline}"})
                    print(f"{assignment}: grading with {workers} worker(s), empty grader cache ...", flush=True)
                    run = (
                        profile(template, lab, students[0], scratch)
                        if args.profile
                        else measure(template, lab, workers, scratch)
                    )
                    run.pop("_course")
                    report["runs"].append({**run, "tree": "this tree"} if baseline is not None else run)
                    print(f"  {json.dumps(run)}", flush=True)
                    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")  # partial results survive
        finally:
            if baseline is not None:
                remove_checkout(baseline)
                shutil.rmtree(crossable, ignore_errors=True)
    print("\n" + (profile_table if args.profile else table)(report["runs"]))
    if baseline is not None:
        print("\n" + ratio_table(report["runs"]))
    print(f"\nWritten to {out}")
    failed = any(run["failures"] or scored_as_expected(run) is False for run in report["runs"])
    if failed:
        print("Some submission was not graded, or not scored as expected: see failures and checks_failed.")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
