"""Grades in the CSV layouts that learning platforms import, as nbgrader export plugins.

Both write one row per student and one column per assignment (nbgrader's score after late
penalties; 0 for a missing submission, as nbgrader's own CSV export does)::

    nbgrader export --exporter=coursekit.exports.CanvasExportPlugin --CanvasExportPlugin.to=canvas.csv
    nbgrader export --exporter=coursekit.exports.MoodleExportPlugin --MoodleExportPlugin.to=moodle.csv

or ``python -m coursekit grade-class --export canvas`` (and ``moodle``).

- **Canvas** (Grades → Import): the columns ``Student, ID, SIS User ID, SIS Login ID,
  Section``, then one per assignment titled ``NAME (points)``, and a first row
  ``Points Possible``. nbgrader's student id goes into ``SIS User ID``: Canvas matches
  students on it, so use the SIS ids as nbgrader ids.
- **Moodle** (Grades → Import → CSV file): ``ID number, Email address, First name, Last
  name``, then one column per assignment; map ``ID number`` (nbgrader's student id) or the
  email address to the user field when importing.
"""

import csv

from nbgrader.api import MissingEntry
from nbgrader.plugins import ExportPlugin


def _scores(plugin, gradebook):
    """(assignments [(name, max score)], rows [(student, {assignment: score})]) as the plugin selects."""
    assignments = [
        (a.name, float(a.max_score or 0))
        for a in gradebook.assignments
        if not plugin.assignment or a.name in map(str, plugin.assignment)
    ]
    rows = []
    for student in gradebook.students:
        if plugin.student and student.id not in map(str, plugin.student):
            continue
        scores = {}
        for name, _ in assignments:
            try:
                scores[name] = float(gradebook.find_submission(name, student.id).score or 0)
            except MissingEntry:
                scores[name] = 0.0
        rows.append((student, scores))
    return assignments, rows


class CanvasExportPlugin(ExportPlugin):
    """Canvas gradebook CSV."""

    def export(self, gradebook):
        assignments, rows = _scores(self, gradebook)
        with open(self.to or "canvas_grades.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
                + [f"{name} ({top:g})" for name, top in assignments]
            )
            writer.writerow(["Points Possible", "", "", "", ""] + [f"{top:g}" for _, top in assignments])
            for student, scores in rows:
                display = ", ".join(part for part in (student.last_name, student.first_name) if part) or student.id
                writer.writerow(
                    [display, "", student.id, student.id, ""] + [f"{scores[name]:g}" for name, _ in assignments]
                )


class MoodleExportPlugin(ExportPlugin):
    """Moodle grade import CSV."""

    def export(self, gradebook):
        assignments, rows = _scores(self, gradebook)
        with open(self.to or "moodle_grades.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ID number", "Email address", "First name", "Last name"] + [n for n, _ in assignments])
            for student, scores in rows:
                writer.writerow(
                    [student.id, student.email or "", student.first_name or "", student.last_name or ""]
                    + [f"{scores[name]:g}" for name, _ in assignments]
                )


EXPORTERS = {
    "csv": "nbgrader.plugins.CsvExportPlugin",
    "canvas": "coursekit.exports.CanvasExportPlugin",
    "moodle": "coursekit.exports.MoodleExportPlugin",
}
