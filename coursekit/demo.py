"""``make demo``: the instructor's whole flow, on demo submissions.

1. release: ``nbgrader generate_assignment`` turns source/ into release/;
2. submit: demo students' notebooks and models go into submitted/ (the reference
   solution and flawed variants, see :mod:`coursekit.submissions`);
3. autograde: ``grade-class`` (:func:`coursekit.classgrading.grade_class`) grades every
   submission with ``course_config.CLASS_GRADING_WORKERS`` workers: the hidden graders score its
   test cells while the notebook is re-executed in quick mode, and nbgrader's own ``autograde``
   records the grades and the autograded notebook (``nbgrader autograde`` itself gives the same
   grades, one submission at a time: tests/test_nbgrader_flow.py);
4. feedback: ``nbgrader generate_feedback`` writes an HTML page per student;
5. export: ``nbgrader export`` writes grades.csv;
6. a table: points per check, total, and the reason for each lost point.
"""

import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import course_config
from coursekit import course
from coursekit.course_layout import CourseLayout
from coursekit.submissions import SUBMISSIONS_BY_LAB, make_weak_model, reference_files, write_submission

SHORT_NAMES = {
    "test_scale_images": "scale",
    "test_standardize": "std",
    "test_split_validation": "split",
    "test_activations": "act",
    "test_softmax": "smax",
    "test_architecture": "arch",
    "test_retraining": "retr",
    "test_history_plot": "hist",
    "test_saved_model": "model",
    "test_figures": "figs",
    "test_prepare_images": "prep",
    "test_augmentation": "aug",
    "test_conv_arithmetic": "conv",
    "test_misclassified_plot": "wrong",
    "test_imagenet_weights": "imnet",
    "test_head_retraining": "head",
    "test_fine_tuning": "tune",
    "test_fine_tuning_plot": "tplot",
}


def _step(number, text):
    print(f"\n[{number}/6] {text}", flush=True)


def _fresh_submission_folders(root, student, assignment):
    for folder in CourseLayout(root).student_folders(student, assignment):
        shutil.rmtree(folder, ignore_errors=True)


def submit_demo_students(root, submissions, settings):
    """Write each demo submission into submitted/STUDENT/ASSIGNMENT/, as `nbgrader collect` would."""
    with tempfile.TemporaryDirectory(prefix="coursekit-demo-") as scratch:
        weak_model = None
        if any(submission.weak_model for submission in submissions):
            weak_model = Path(scratch) / settings.model_file
            make_weak_model(weak_model, settings)
        for submission in submissions:
            _fresh_submission_folders(root, submission.student, settings.assignment)
            folder = CourseLayout(root).submission(submission.student, settings.assignment)
            write_submission(submission, folder, settings, weak_model_path=weak_model)
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
            (folder / "timestamp.txt").write_text(stamp + "\n")
            print(f"  {submission.student:24s} {submission.summary}")


def lost_points(row):
    """Grade ids on which a row of ``course.check_table`` lost points."""
    return {grade_id for grade_id, (score, maximum) in row["scores"].items() if (score or 0) < maximum}


def format_table(rows, expected):
    """The summary table: points per check, total, and the reasons for lost points."""
    grade_ids = [gid for gid in SHORT_NAMES if any(gid in row["scores"] for row in rows)]
    header = f"{'student':24s} " + " ".join(f"{SHORT_NAMES[g]:>5s}" for g in grade_ids) + "   total"
    lines = [header, "-" * len(header)]
    for row in rows:
        scores = row["scores"]
        got = sum(scores[g][0] or 0 for g in grade_ids if g in scores)
        out_of = sum(scores[g][1] for g in grade_ids if g in scores)
        cells = " ".join(f"{_points(scores.get(g)):>5s}" for g in grade_ids)
        lines.append(f"{row['student']:24s} {cells}   {got:g}/{out_of:g}")
        for grade_id in grade_ids:
            score, maximum = scores.get(grade_id, (None, 0))
            if score is not None and score < maximum:
                reason = row["reasons"].get(grade_id, "no message")
                lines.append(f"    -{maximum - score:g} {SHORT_NAMES[grade_id]}: {reason}")
        want = expected.get(row["student"])
        lost = lost_points(row)
        if want is not None and lost != set(want):
            lines.append(
                f"    !! expected to lose points on {sorted(want) or 'nothing'}, "
                f"lost them on {sorted(lost) or 'nothing'}"
            )
    return "\n".join(lines)


def _points(score):
    if score is None:
        return "-"
    value, _ = score
    return "?" if value is None else f"{value:g}"


def run_demo(students=None, root=None, labs=course_config.LABS):
    """Run the whole flow for every lab; return 0 when every demo submission scored as expected."""
    root = root or course_config.ROOT
    start = time.perf_counter()
    without_reference = [lab for lab in labs if not all(path.is_file() for path in reference_files(lab))]
    for lab in without_reference:  # its demo submissions are made from the reference run's notebook and model
        print(
            f"Skipping {lab.assignment}: there is no reference run in reference_solution/ yet "
            f"(`python -m coursekit reference {lab.assignment}`, best on a GPU)."
        )
    labs = [lab for lab in labs if lab not in without_reference]
    chosen = {
        lab.assignment: [
            s for s in SUBMISSIONS_BY_LAB[lab.assignment] if (s.student in students if students else s.in_demo)
        ]
        for lab in labs
    }
    names = ", ".join(lab.assignment for lab in labs)

    _step(1, f"Release: nbgrader generate_assignment {names} (source/ -> release/)")
    course.generate_release(root, [lab.assignment for lab in labs])

    _step(2, f"Submit: {sum(map(len, chosen.values()))} demo submissions into submitted/")
    for lab in labs:
        print(f" {lab.assignment}:")
        submit_demo_students(root, chosen[lab.assignment], lab)

    from coursekit.class_results import ResultStore
    from coursekit.classgrading import grade_class

    workers = course_config.CLASS_GRADING_WORKERS
    _step(
        3,
        f"Autograde: python -m coursekit grade-class with {workers} workers (each submission: the hidden graders "
        "(grader_tests/) and the quick-mode re-run side by side; nbgrader records the grades)",
    )
    demo_students = {submission.student for submissions in chosen.values() for submission in submissions}
    summary = grade_class(root, [lab.assignment for lab in labs], workers=workers, force=True, students=demo_students)
    store = ResultStore.for_course(root)
    for lab in labs:
        print(f" {lab.assignment}:")
        for submission in chosen[lab.assignment]:
            key = (lab.assignment, submission.student)
            result = store.load(*key)
            if key in summary.failures:  # one broken submission never stops the others
                status = f"FAILED: {summary.failures[key]}"
            else:
                status = "graded" if result is None else f"graded in {result.seconds:.0f} s"
            print(f"  {submission.student:24s} {status}", flush=True)

    _step(4, "Feedback: nbgrader generate_feedback -> feedback/STUDENT/ASSIGNMENT/...html")
    for lab in labs:
        course.generate_feedback(root, lab.assignment)

    _step(5, f"Export: nbgrader export -> {course_config.GRADES_CSV.name}; class reports -> reports/")
    course.export_grades(root, course_config.GRADES_CSV)
    from coursekit.class_report import write_class_report

    for lab in labs:
        print(f" {write_class_report(root, lab.assignment)}")

    _step(6, "Autograded points per check (manually graded tasks wait in the formgrader)")
    as_expected = True
    for lab in labs:
        submissions = chosen[lab.assignment]
        rows = [
            row
            for row in course.check_table(root, lab.assignment, lab.notebook_id)
            if row["student"] in {s.student for s in submissions}
        ]
        expected = {s.student: s.fails for s in submissions}
        print(f"\n{lab.assignment}\n{format_table(rows, expected)}")
        as_expected &= len(rows) == len(submissions) and all(
            lost_points(row) == set(expected[row["student"]]) for row in rows
        )
    print(
        f"\nDone in {time.perf_counter() - start:.0f} s. Feedback: {root / 'feedback'}; grades: "
        f"{course_config.GRADES_CSV}. Every submission scored as expected: {'yes' if as_expected else 'NO'}."
    )
    return 0 if as_expected else 1
