"""Command line: ``python -m coursekit COMMAND`` (the Makefile's targets call these).

Commands
--------
data        fill Keras's caches: Fashion-MNIST and VGG16's ImageNet weights, from local files
release     nbgrader generate_assignment for every lab
reference   run the reference notebooks in full and record the results
grade       run the hidden graders on one notebook and print the verdicts
grade-class grade every new or changed submission (parallel or on Dask), record them with nbgrader,
            export the grades (also for Canvas or Moodle) and write the class report
report      write reports/<assignment>.html from the gradebook and the stored results
demo        the instructor's whole flow on demo submissions, with a summary table
"""

import argparse
import sys

import course_config


def _data(args):
    from coursekit.data import DatasetNotFoundError, WeightsNotFoundError, ensure_keras_cache, ensure_vgg16_weights

    try:
        folder = ensure_keras_cache(allow_download=True)
    except DatasetNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"Fashion-MNIST is ready in {folder}")
    try:
        weights = ensure_vgg16_weights()
    except WeightsNotFoundError as error:  # only Lab 3 needs them, and with internet Keras downloads them
        print(f"Warning, Lab 3 cannot run offline: {error}", file=sys.stderr)
        return 0
    print(f"VGG16's ImageNet weights are ready in {weights} (the kit sets {course_config.VGG16_WEIGHTS_ENV} to it)")
    return 0


def _release(args):
    from coursekit.course import generate_release

    generate_release(course_config.ROOT, [lab.assignment for lab in course_config.LABS])
    print(f"Released to {course_config.RELEASE_DIR}")
    return 0


def _reference(args):
    from coursekit.reference import refresh_markdown, run_reference

    labs = [course_config.lab_settings(name) for name in args.labs] if args.labs else course_config.LABS
    for lab in labs:
        if args.text_only:
            refresh_markdown(lab)
            print(f"{lab.assignment}: the reference notebook has the source's current text")
        else:
            run_reference(lab, seeds=args.seeds or course_config.REFERENCE_SEEDS, planned=course_config.REFERENCE_SEEDS)
    return 0


def _assignment_of(notebook):
    """The lab whose notebook has this file name (None when none has)."""
    from pathlib import Path

    name = Path(notebook).name
    return next((lab.assignment for lab in course_config.LABS if lab.notebook == name), None)


def _grade(args):
    from coursekit.grading import grade_notebook

    assignment = args.assignment or _assignment_of(args.notebook)
    if assignment is None:
        print(
            f"Which lab is {args.notebook}? Its name is none of the labs' notebooks "
            f"({', '.join(lab.notebook for lab in course_config.LABS)}): pass --assignment, e.g. "
            f"--assignment {course_config.LAB1.assignment}"
        )
        return 2
    report = grade_notebook(args.notebook, assignment)
    if report.problem:
        print(f"Grading failed: {report.problem}", file=sys.stderr)
        return 2
    for result in report.checks.values():
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.grade_id}  {result.message}")
    if report.unfinished:  # the graders' time limit: the checks above keep their result, the others fail
        print(f"FAIL  (every other check)  {report.unfinished}")
    for note in report.flags:
        print(f"REVIEW  {note}")
    return 0 if all(result.passed for result in report.checks.values()) and not report.unfinished else 1


def _grade_class(args):
    from coursekit.classgrading import ClassGradingError, grade_class
    from coursekit.gradebook_writer import GradebookError

    try:
        summary = grade_class(
            args.course,
            assignments=args.assignments,
            workers=args.workers,
            scheduler=args.scheduler,
            force=args.force,
            exports=args.export,
            students=args.students,
        )
    except (ClassGradingError, GradebookError, KeyError) as error:
        print(error.args[0] if error.args else error, file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    if summary.interrupted:
        return 130
    return 1 if summary.failures else 0


def _report(args):
    from coursekit.class_report import write_class_report

    for assignment in args.assignments:
        print(f"Class report: {write_class_report(args.course, assignment)}")
    return 0


def _demo(args):
    from coursekit.demo import run_demo

    labs = [course_config.lab_settings(name) for name in args.labs] if args.labs else course_config.LABS
    return run_demo(students=args.students, labs=labs)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="coursekit", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("data", help="fill Keras's Fashion-MNIST cache").set_defaults(run=_data)
    commands.add_parser("release", help="generate release/ from source/").set_defaults(run=_release)
    reference = commands.add_parser("reference", help="full reference runs (long)")
    reference.add_argument("labs", nargs="*", help="labs to run, e.g. lab2_cnn (default: all)")
    reference.add_argument("--seeds", type=int, nargs="*", help="default: course_config.REFERENCE_SEEDS")
    reference.add_argument(
        "--text-only",
        action="store_true",
        help="no run: copy the source notebook's markdown into the kept reference notebook",
    )
    reference.set_defaults(run=_reference)
    grade = commands.add_parser("grade", help="hidden graders on one notebook")
    grade.add_argument("notebook")
    grade.add_argument("--assignment", help="e.g. lab2_cnn (default: the lab whose notebook has this file name)")
    grade.set_defaults(run=_grade)
    grade_class = commands.add_parser("grade-class", help="grade every new or changed submission")
    grade_class.add_argument("assignments", nargs="*", help="e.g. lab1_dense (default: every released lab)")
    grade_class.add_argument(
        "--workers",
        type=int,
        default=course_config.CLASS_GRADING_WORKERS,
        help="parallel local gradings (default: %(default)s)",
    )
    grade_class.add_argument("--scheduler", help="grade on a Dask cluster instead, e.g. tcp://host:8786")
    grade_class.add_argument("--force", action="store_true", help="regrade unchanged submissions too")
    grade_class.add_argument("--students", nargs="*", help="grade only these students (default: everyone)")
    grade_class.add_argument(
        "--course",
        default=course_config.ROOT,
        help="course folder with nbgrader_config.py and submitted/ (default: this kit's)",
    )
    grade_class.add_argument(
        "--export",
        nargs="*",
        default=[],
        choices=["canvas", "moodle"],
        help="also write the grades for these platforms' gradebook import",
    )
    grade_class.set_defaults(run=_grade_class)
    report = commands.add_parser("report", help="write reports/<assignment>.html: how the class did")
    report.add_argument("assignments", nargs="+", help="e.g. lab1_dense")
    report.add_argument("--course", default=course_config.ROOT, help="course folder (default: this kit's)")
    report.set_defaults(run=_report)
    demo = commands.add_parser("demo", help="release, submit, autograde, feedback, export")
    demo.add_argument("--labs", nargs="*", help="only these labs, e.g. lab2_cnn (default: all)")
    demo.add_argument("--students", nargs="*", help="only these demo students")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    from coursekit.data import configure_vgg16_weights

    configure_vgg16_weights()  # the notebooks and graders started from here load VGG16 from the local copy
    return args.run(args)
