"""How the class did: one self-contained HTML page per assignment, ``reports/<assignment>.html``.

The scores come from nbgrader's gradebook (so the page agrees with ``grades.csv``); the
reasons, the problems, the graders' measurements and the notes for review come from class
grading's stored results (``.class_grading/``), or, for a submission graded by ``nbgrader
autograde`` alone, from the error outputs of its autograded notebook. Figures are matplotlib
PNGs embedded in the page; everything a submission wrote (ids, messages) is HTML-escaped.

    python -m coursekit report lab1_dense          # after grade-class or make demo
"""

import base64
import html
import io
import json
from collections import Counter
from dataclasses import dataclass, field

import course_config
from coursekit.class_results import ResultStore, identical_model_file_note, model_file_groups
from coursekit.course_layout import CourseLayout


@dataclass
class StudentRow:
    """One student's autograded result."""

    student: str
    scores: dict  # grade id -> (score, max score)
    reasons: dict = field(default_factory=dict)  # grade id -> message of a failed check
    problem: str = ""  # why nothing could be graded, if so
    flags: list = field(default_factory=list)
    measurements: dict = field(default_factory=dict)
    same_model_file_as: list = field(default_factory=list)  # students whose model file is byte for byte this one

    @property
    def total(self):
        return sum(score for score, _ in self.scores.values())

    @property
    def maximum(self):
        return sum(top for _, top in self.scores.values())


def class_rows(root, assignment):
    """A :class:`StudentRow` for every student with a submission of ``assignment`` in the gradebook."""
    from coursekit.course import check_table

    notebook = course_config.lab_settings(assignment).notebook_id
    results = ResultStore.for_course(root).results(assignment)
    groups = model_file_groups(results)
    duplicates = {student: [other for other in group if other != student] for group in groups for student in group}
    rows = []
    for table_row in check_table(root, assignment, notebook):
        student = table_row["student"]
        scores = {gid: (float(score or 0), float(top or 0)) for gid, (score, top) in table_row["scores"].items()}
        row = StudentRow(student, scores, reasons=table_row["reasons"])  # reasons from the autograded notebook
        stored = results.get(student)
        if stored:  # class grading's stored result says more: the problem, flags, measurements
            report = stored.report
            row.problem = str(stored.problem or report.problem or "")
            row.reasons = {gid: str(check.message) for gid, check in report.checks.items() if not check.passed}
            row.flags = [str(note) for note in report.flags]
            row.measurements = dict(report.measurements)
        if student in duplicates:
            row.flags.append(
                identical_model_file_note(duplicates[student], whole_group="see Identical model files below")
            )
            row.same_model_file_as = duplicates[student]
        rows.append(row)
    return rows


def summary(rows):
    """The numbers the page shows, as data (the tests read these)."""
    grade_ids = sorted({gid for row in rows for gid in row.scores})
    pass_rates = {
        gid: sum(1 for row in rows if gid in row.scores and row.scores[gid][0] >= row.scores[gid][1] > 0)
        / max(1, sum(1 for row in rows if gid in row.scores))
        for gid in grade_ids
    }
    messages = Counter((gid, message) for row in rows for gid, message in row.reasons.items() if not row.problem)
    return {
        "students": len(rows),
        "totals": {row.student: row.total for row in rows},
        "maximum": max((row.maximum for row in rows), default=0.0),
        "pass_rates": pass_rates,
        "frequent_failures": messages.most_common(10),
        "not_graded": {row.student: row.problem for row in rows if row.problem},
        "flagged": {row.student: row.flags for row in rows if row.flags},
        "identical_model_files": _groups_of_identical_files(rows),
        "saved_model_accuracies": {
            row.student: row.measurements["saved_model_test_accuracy"]
            for row in rows
            if "saved_model_test_accuracy" in row.measurements
        },
    }


def _groups_of_identical_files(rows):
    """Groups of students that handed in one model file, largest first (each group listed once)."""
    groups = {tuple(sorted([row.student, *row.same_model_file_as])) for row in rows if row.same_model_file_as}
    return [list(group) for group in sorted(groups, key=lambda group: (-len(group), group))]


def score_bins(maximum):
    """Histogram edges for autograded totals: one bar per point (centred on it) up to 40 points, else 20 bars."""
    maximum = max(float(maximum), 1.0)
    if maximum <= 40:
        return [edge - 0.5 for edge in range(int(maximum) + 2)]
    return [maximum * k / 20 for k in range(21)]


ACCURACY_BIN_WIDTHS = (0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)


def accuracy_bins(values, bar, most=40):
    """Histogram edges for saved models' test accuracies with ``bar`` as one of the edges, so that every bar of
    the histogram lies wholly below or wholly above the course bar; the narrowest width that needs at most
    ``most`` bins."""
    import math

    low, high = min([*values, bar]), max([*values, bar])
    for width in ACCURACY_BIN_WIDTHS:
        below = math.ceil((bar - low) / width + 1e-9)
        above = max(1, math.ceil((high - bar) / width + 1e-9))
        if below + above <= most:
            break
    return [round(bar + k * width, 6) for k in range(-below, above + 1)]


def _figure_png(draw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6.4, 3.2))
    draw(axes)
    if axes.get_ylabel() == "students":
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(numbers, settings):
    totals = list(numbers["totals"].values())

    def scores(axes):
        axes.hist(totals, bins=score_bins(numbers["maximum"]), color="#4c72b0", edgecolor="white")
        axes.set_xlabel(f"autograded points (of {numbers['maximum']:g})")
        axes.set_ylabel("students")
        axes.set_title("Score distribution")

    def checks(axes):
        names = list(numbers["pass_rates"])
        axes.barh(names, [100 * numbers["pass_rates"][name] for name in names], color="#55a868")
        axes.set_xlim(0, 100)
        axes.set_xlabel("students passing (%)")
        axes.invert_yaxis()
        axes.set_title("Pass rate of every check")

    def accuracies(axes):
        values = list(numbers["saved_model_accuracies"].values())
        bar = settings.saved_model_min_accuracy
        edges = accuracy_bins(values, bar)
        below = [value for value in values if value < bar]
        above = [value for value in values if value >= bar]
        axes.hist(
            [below, above],
            bins=edges,
            stacked=True,
            color=["#c44e52", "#8172b2"],
            edgecolor="white",
            label=["below the bar", "at or above the bar"],
        )
        axes.axvline(
            bar,
            color="#c44e52",
            linestyle="--",
            label=f"bar {settings.saved_model_min_accuracy:.3f}",
        )
        axes.set_xlabel("saved model's test accuracy (10,000 images)")
        axes.set_ylabel("students")
        axes.legend()
        axes.set_title("Saved models against the bar")

    figures = {"scores": _figure_png(scores), "checks": _figure_png(checks)}
    if numbers["saved_model_accuracies"]:
        figures["accuracies"] = _figure_png(accuracies)
    return figures


def render(assignment, numbers):
    """The report page, as an HTML string, from :func:`summary`'s numbers."""
    settings = course_config.lab_settings(assignment)
    figures = _figures(numbers, settings)
    escape = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{escape(assignment)}: class report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;"
        "vertical-align:top}th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        f"<h1>{escape(assignment)}: how the class did</h1>",
        f"<p>{numbers['students']} submissions in the gradebook. Autograded points only; hand-graded "
        "questions are in nbgrader's formgrader.</p>",
    ]
    if numbers["students"]:
        totals = sorted(numbers["totals"].values())
        median = totals[len(totals) // 2]
        parts.append(
            f"<p>Median {median:g} of {numbers['maximum']:g} points; lowest {totals[0]:g}, highest {totals[-1]:g}.</p>"
        )
    parts += [
        f"<h2>Score distribution</h2><img alt='score distribution' src='{figures['scores']}'>",
        f"<h2>Pass rate of every check</h2><img alt='pass rate per check' src='{figures['checks']}'>",
        "<table><tr><th>check</th><th>passing</th></tr>",
    ]
    parts += [
        f"<tr><td>{escape(gid)}</td><td>{100 * rate:.0f} %</td></tr>" for gid, rate in numbers["pass_rates"].items()
    ]
    parts.append("</table>")
    if "accuracies" in figures:
        below = sum(
            1 for value in numbers["saved_model_accuracies"].values() if value < settings.saved_model_min_accuracy
        )
        parts.append(
            f"<h2>Saved models' test accuracy</h2><p>{below} of {len(numbers['saved_model_accuracies'])} "
            f"below the bar of {settings.saved_model_min_accuracy:.3f}.</p>"
            f"<img alt='saved-model accuracies' src='{figures['accuracies']}'>"
        )
    parts.append(
        "<h2>Most frequent failure messages</h2><table><tr><th>students</th><th>check</th><th>message</th></tr>"
    )
    parts += [
        f"<tr><td>{count}</td><td>{escape(gid)}</td><td>{escape(message)}</td></tr>"
        for (gid, message), count in numbers["frequent_failures"]
    ]
    parts.append("</table><h2>Could not be graded</h2>")
    parts.append(_list({s: [why] for s, why in numbers["not_graded"].items()}) or "<p>None.</p>")
    parts.append("<h2>For your review</h2><p>Suggestive, not certain: these submissions kept their points.</p>")
    parts.append(_list(numbers["flagged"]) or "<p>None.</p>")
    parts.append(
        "<h3>Identical model files</h3><p>Each line is one model file that several submissions hand in byte for "
        "byte (two students who trained their own networks never do).</p>"
    )
    parts.append(
        "<ul>"
        + "".join(
            f"<li>{len(group)} submissions: {', '.join(html.escape(student) for student in group)}</li>"
            for group in numbers["identical_model_files"]
        )
        + "</ul>"
        if numbers["identical_model_files"]
        else "<p>None.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _list(notes_by_student):
    if not notes_by_student:
        return ""
    items = "".join(
        f"<li><b>{html.escape(student)}</b>: {'; '.join(html.escape(note) for note in notes)}</li>"
        for student, notes in sorted(notes_by_student.items())
    )
    return f"<ul>{items}</ul>"


def write_class_report(root, assignment):
    """Write ``reports/<assignment>.html`` in the course ``root``; return its path."""
    from coursekit.isolation import close_to_others

    folder = CourseLayout(root).reports
    folder.mkdir(mode=0o750, exist_ok=True)
    close_to_others([folder])  # it names students and their scores
    numbers = summary(class_rows(root, assignment))
    path = folder / f"{assignment}.html"
    path.write_text(render(assignment, numbers), encoding="utf-8")
    (folder / f"{assignment}.json").write_text(json.dumps(numbers, indent=1), encoding="utf-8")
    return path
