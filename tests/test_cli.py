"""The command line: `coursekit grade` finds the lab from the notebook's file name."""

import course_config
from coursekit import cli


def test_grade_takes_the_lab_from_the_notebook_name(monkeypatch, tmp_path, capsys):
    graded = []
    monkeypatch.setattr(
        "coursekit.grading.grade_notebook", lambda notebook, assignment: graded.append(assignment) or _empty_report()
    )
    for lab in course_config.LABS:
        cli.main(["grade", str(tmp_path / lab.assignment / lab.notebook)])
    assert graded == [lab.assignment for lab in course_config.LABS]

    assert cli.main(["grade", str(tmp_path / "homework.ipynb")]) == 2
    assert "pass --assignment" in capsys.readouterr().out and len(graded) == len(course_config.LABS)
    cli.main(["grade", str(tmp_path / "homework.ipynb"), "--assignment", course_config.LAB2.assignment])
    assert graded[-1] == course_config.LAB2.assignment


def _empty_report():
    from coursekit.grading import GradingReport

    return GradingReport({}, "")
