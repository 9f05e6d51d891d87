"""What the released notebooks tell students agrees with the course's numbers and with nbgrader's metadata.

Every bar, recipe and limit a notebook states in bold (``**0.905**``, ``**10,000**``, ``**200 MB**``)
sits in a phrase of CLAIMS, whose value comes from course_config.py, requirements.txt or a recorded
reference run (reference_solution/*/results.json). A bold number that no claim covers fails, so a
number cannot be added to a notebook without a source. The grading table at the top of each
notebook must be the one coursekit.grading_table makes from the cells' metadata, and its rows and
totals must equal the metadata's points.
"""

import json
import math
import re

import nbformat
import pytest

import course_config
from coursekit import grading_table, reference, section_times

LAB1, LAB2, LAB3 = course_config.LAB1, course_config.LAB2, course_config.LAB3
LABS = pytest.mark.parametrize("lab", course_config.LABS, ids=lambda lab: lab.assignment)
ALL = tuple(lab.assignment for lab in course_config.LABS)
NUMBER = r"([\d][\d,]*(?:\.\d+)?(?:e-?\d+)?)"
BOLD_NUMBER = re.compile(r"\*\*\d(?:[\d.,]*\d)?(?:e-?\d+)?(?: s| MB| min)?\*\*")


def rounded(value):
    return int(math.floor(value + 0.5))


def results(lab):
    return json.loads((course_config.REFERENCE_DIR / lab.assignment / "results.json").read_text())


def seconds(lab, key):
    return [run[key] for run in results(lab)["runs"]]


SEED_COUNT = {1: "one seed", 2: "two seeds", 3: "three seeds"}


def keras_pin():
    text = (course_config.ROOT / "requirements.txt").read_text()
    return re.search(r"^keras==(\S+)$", text, re.MULTILINE).group(1)


# (labs whose released markdown must state it, phrase with one group per number, expected values).
# Whitespace in the markdown is collapsed to single spaces before matching.
CLAIMS = [
    # The bar for the saved model.
    (
        ALL,
        rf"bar for the (?:fine-tuned )?model you hand in is (?:a test accuracy of )?\*\*{NUMBER}\*\*",
        lambda lab: (lab.saved_model_min_accuracy,),
    ),
    (
        ALL,
        rf"reaches a test accuracy of at least \*\*{NUMBER}\*\* on the 10,000 test images",
        lambda lab: (lab.saved_model_min_accuracy,),
    ),
    # The saved model's rules.
    (
        ALL,
        rf"its accuracy on \*\*{NUMBER}\*\* training images the grader draws by more than \*\*{NUMBER}\*\*",
        lambda lab: (lab.saved_model_train_images, course_config.SAVED_MODEL_TEST_ABOVE_TRAIN_MAX),
    ),
    (ALL, rf"at most \*\*{NUMBER} MB\*\* unpacked", lambda lab: (course_config.SUBMITTED_MODEL_MAX_MB,)),
    ((LAB1.assignment,), rf"at least \*\*{NUMBER}\*\* hidden `Dense` layers", lambda lab: (LAB1.min_hidden_layers,)),
    ((LAB1.assignment, LAB2.assignment), rf"at most \*\*{NUMBER}\*\* parameters", lambda lab: (lab.max_params,)),
    ((LAB2.assignment,), rf"at least \*\*{NUMBER}\*\* convolutional layers", lambda lab: (LAB2.min_conv_layers,)),
    (
        (LAB3.assignment,),
        rf"VGG16's base with its \*\*{NUMBER}\*\* convolutional layers",
        lambda lab: (LAB3.base_conv_layers,),
    ),
    (
        (LAB3.assignment,),
        rf"at least through block 4 \(\*\*{NUMBER}\*\* convolutional layers",
        lambda lab: (LAB3.base_conv_layers,),
    ),
    # The grader's brief retraining.
    (
        ALL,
        rf"\*\*{NUMBER}\*\* training images, \*\*{NUMBER}\*\* epochs, batch \*\*{NUMBER}\*\*, Adam with "
        rf"learning rate \*\*{NUMBER}\*\*",
        lambda lab: (lab.retrain_train_size, lab.retrain_epochs, lab.retrain_batch_size, lab.retrain_learning_rate),
    ),
    (
        (LAB1.assignment, LAB2.assignment),
        rf"must reach a test accuracy of at least \*\*{NUMBER}\*\* after that",
        lambda lab: (lab.retrain_min_accuracy,),
    ),
    (
        (LAB3.assignment,),
        rf"evaluated on \*\*{NUMBER}\*\* test images\. Your head must reach a test accuracy of "
        rf"at least \*\*{NUMBER}\*\*",
        lambda lab: (LAB3.retrain_test_size, LAB3.retrain_min_accuracy),
    ),
    # Limits and versions.
    (ALL, r"the graders use Keras \*\*([\d.]+)\*\*", lambda lab: (keras_pin(),)),
    (ALL, rf"a limit of \*\*{NUMBER} s\*\* per call", lambda lab: (course_config.SANDBOX_CALL_TIMEOUT_S,)),
    (ALL, rf"a limit of \*\*{NUMBER} s\*\* per cell", lambda lab: (course_config.NOTEBOOK_CELL_TIMEOUT_S,)),
    # Recorded reference runs.
    (
        (LAB1.assignment,),
        rf"mean test accuracy of \*\*{NUMBER}\*\* over three seeds \({NUMBER} to {NUMBER}\)",
        lambda lab: (
            results(LAB1)["test_accuracy_mean"],
            results(LAB1)["test_accuracy_min"],
            max(run["test_accuracy"] for run in results(LAB1)["runs"]),
        ),
    ),
    (
        (LAB2.assignment,),
        rf"the course's reference: \*\*{NUMBER}\*\*, mean of three seeds",
        lambda lab: (results(LAB1)["test_accuracy_mean"],),
    ),
    (
        (LAB1.assignment,),
        rf"about \*\*{NUMBER} min\*\* per seed \({NUMBER}–{NUMBER} s\) \| {NUMBER}–{NUMBER} s",
        lambda lab: (
            rounded(sum(seconds(LAB1, "notebook_seconds")) / len(results(LAB1)["runs"]) / 60),
            rounded(min(seconds(LAB1, "notebook_seconds"))),
            rounded(max(seconds(LAB1, "notebook_seconds"))),
            rounded(min(seconds(LAB1, "train_seconds"))),
            rounded(max(seconds(LAB1, "train_seconds"))),
        ),
    ),
    (
        (LAB2.assignment, LAB3.assignment),
        rf"reached a mean test accuracy of \*\*{NUMBER}\*\* over (one seed|two seeds|three seeds) "
        rf"\({NUMBER} to {NUMBER}\)",
        lambda lab: (
            results(lab)["test_accuracy_mean"],
            SEED_COUNT[len(results(lab)["runs"])],
            results(lab)["test_accuracy_min"],
            max(run["test_accuracy"] for run in results(lab)["runs"]),
        ),
    ),
    (
        (LAB2.assignment, LAB3.assignment),
        rf"\| \*\*{NUMBER} s\*\* \(about {NUMBER} min\) \| \*\*{NUMBER} s\*\*",
        lambda lab: (
            rounded(seconds(lab, "notebook_seconds")[0]),
            rounded(seconds(lab, "notebook_seconds")[0] / 60),
            rounded(seconds(lab, "train_seconds")[0]),
        ),
    ),
    (
        (LAB3.assignment,),
        rf"{NUMBER} after feature extraction alone",
        lambda lab: (results(lab)["runs"][0]["feature_extraction_test_accuracy"],),
    ),
    (
        (LAB2.assignment,),
        rf"Training the CNN \({NUMBER} epochs\)",
        lambda lab: (results(LAB2)["runs"][0]["epochs_run"],),
    ),
]


def released(lab):
    return nbformat.read(course_config.RELEASE_DIR / lab.assignment / lab.notebook, as_version=4)


def markdown_text(notebook):
    return " ".join(" ".join(cell.source.split()) for cell in notebook.cells if cell.cell_type == "markdown")


def as_number(text):
    return float(text.replace(",", ""))


def claims_of(lab):
    return [(pattern, expected) for labs, pattern, expected in CLAIMS if lab.assignment in labs]


@LABS
def test_numbers_the_notebook_states_are_the_course_numbers(lab):
    text = markdown_text(released(lab))
    wrong, missing = [], []
    for pattern, expected in claims_of(lab):
        matches = list(re.finditer(pattern, text))
        if not matches:
            missing.append(pattern)
        for match in matches:
            for found, value in zip(match.groups(), expected(lab)):
                same = found == value if isinstance(value, str) else math.isclose(as_number(found), float(value))
                if not same:
                    wrong.append(f"{match.group(0)!r}: {found} where the course says {value}")
    assert not missing, f"{lab.notebook} no longer states: {missing}"
    assert not wrong, f"{lab.notebook} states numbers that are not the course's: {wrong}"


@LABS
def test_every_bold_number_has_a_source(lab):
    """A bar, recipe or limit written in bold is in a phrase that CLAIMS checks, or it would go unchecked."""
    text = markdown_text(released(lab))
    covered = [match.span() for pattern, _ in claims_of(lab) for match in re.finditer(pattern, text)]
    table = next(" ".join(cell.source.split()) for cell in released(lab).cells if grading_table.is_table_cell(cell))
    unchecked = [
        match.group(0)
        for match in BOLD_NUMBER.finditer(text)
        if not any(start <= match.start() and match.end() <= end for start, end in covered)
        and match.group(0) not in table
    ]
    assert not unchecked, (
        f"{lab.notebook} states {unchecked} in bold without a phrase in CLAIMS "
        "(tests/test_notebook_text.py): add one with the number's source"
    )


@LABS
def test_gpu_times_are_not_claimed_before_they_are_measured(lab):
    text = markdown_text(released(lab))
    measured_on_gpu = lab.assignment in (LAB1.assignment, LAB2.assignment) and results(lab)["hardware"].get("gpu")
    if not measured_on_gpu:
        assert re.search(r"\| Colab GPU \| not measured yet \| not measured yet \|", text)
    assert "a minute or two" not in text and "94–95" not in text


def metadata_rows(notebook):
    """(grade id, kind, points) of every graded cell, read straight from nbgrader's metadata."""
    rows = []
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            kind = "Exercise (autograded)" if cell.cell_type == "code" else "Question (graded by hand)"
            rows.append((meta["grade_id"], kind, float(meta["points"])))
    return rows


def table_cell(notebook):
    cells = [cell for cell in notebook.cells if grading_table.is_table_cell(cell)]
    assert len(cells) == 1, "the notebook should hold one grading table (python -m coursekit.grading_table)"
    return cells[0]


@LABS
def test_grading_table_matches_the_metadata(lab):
    notebook = released(lab)
    cell = table_cell(notebook)
    assert notebook.cells.index(cell) == 1, "the grading table should follow the notebook's title cell"
    rows = [
        (match.group(1), match.group(2), float(match.group(3)))
        for match in re.finditer(r"^\| [^|]* \| `([^`]+)` \| ([^|]+?) \| ([\d.]+) \| .* \|$", cell.source, re.MULTILINE)
    ]
    assert rows == metadata_rows(notebook)
    auto = sum(points for _, kind, points in rows if kind.startswith("Exercise"))
    hand = sum(points for _, kind, points in rows if kind.startswith("Question"))
    totals = re.search(
        r"exercises \(autograded\) ([\d.]+) points?, questions \(graded by hand\) ([\d.]+) points?, "
        r"\*\*([\d.]+) points?\*\* in all",
        cell.source,
    )
    assert totals and tuple(map(float, totals.groups())) == (auto, hand, auto + hand)
    assert cell.source == grading_table.table_markdown(notebook), (
        "the grading table is stale: run `python -m coursekit.grading_table` and `python -m coursekit release`"
    )


@LABS
def test_points_in_test_cell_comments_are_the_metadata_points(lab):
    for cell in released(lab).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade"):
            match = grading_table.AUTOGRADED_COMMENT.match(cell.source.splitlines()[0])
            assert match, f"{meta['grade_id']}: the first line should be '# Autograded (N points): ...'"
            assert float(match.group(1)) == float(meta["points"]), meta["grade_id"]


@LABS
def test_exercises_and_questions_are_named_consistently(lab):
    notebook = released(lab)
    assert "**Task.**" not in markdown_text(notebook)
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("task"):
            assert re.match(r"\*\*Question(?: \d+)? \(", cell.source), meta["grade_id"]


@LABS
def test_every_exercise_and_question_states_its_points_where_it_is_asked(lab):
    """The label a student reads next to a task ("**Exercise 3 (2 points, autograded).**") is nbgrader's points."""
    notebook = released(lab)
    text = markdown_text(notebook)
    assert not re.search(r"\*\*(?:Exercise|Question)(?: \d+)?\.\*\*", text), (
        "a task without its points: run `python -m coursekit.grading_table` and `python -m coursekit release`"
    )
    numbers, pending = [], None
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        exercise = re.search(r"(?m)^\*\*Exercise (\d+) \(([^)]*)\)\.\*\*", cell.source)
        if cell.cell_type == "markdown" and exercise:
            numbers.append(int(exercise.group(1)))
            stated = re.match(r"([\d.]+) points?, autograded", exercise.group(2))
            assert stated or exercise.group(2).startswith("no points of its own"), exercise.group(0)
            pending = float(stated.group(1)) if stated else None
        elif cell.cell_type == "code" and meta.get("grade") and pending is not None:
            assert pending == float(meta["points"]), f"{meta['grade_id']}: the exercise says {pending} points"
            pending = None
        if meta.get("task"):
            stated = re.match(r"\*\*Question(?: \d+)? \(([\d.]+) points?, graded by hand\)\.\*\*", cell.source)
            assert stated and float(stated.group(1)) == float(meta["points"]), meta["grade_id"]
    assert numbers == list(range(1, len(numbers) + 1)), f"exercises numbered {numbers}"
    assert numbers, "no numbered exercise"


@LABS
def test_before_you_submit_names_the_files_to_hand_in(lab):
    notebook = released(lab)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert f'MODEL_PATH = "{lab.model_file}"' in code
    last = notebook.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Before you submit")
    for needed in (lab.notebook, lab.model_file):
        assert needed in last.source, needed
    # How to download the model from Colab: shown in this cell, or done by a code cell of the notebook.
    for needed in ("files.download(MODEL_PATH)", "from google.colab import files"):
        assert needed in last.source or needed in code, needed


# Numbers in the notebooks' code: the self-check before saving states the grader's rules for the model file.
CODE_RULES = {
    LAB1.assignment: (
        "SAVED_MODEL_RULES",
        lambda: {
            "min_hidden_layers": LAB1.min_hidden_layers,
            "max_params": LAB1.max_params,
            "train_images": LAB1.saved_model_train_images,
            "max_test_above_train": course_config.SAVED_MODEL_TEST_ABOVE_TRAIN_MAX,
            "min_test_accuracy": LAB1.saved_model_min_accuracy,
        },
    ),
    LAB2.assignment: (
        "SAVED_MODEL_RULES",
        lambda: {
            "min_conv_layers": LAB2.min_conv_layers,
            "max_params": LAB2.max_params,
            "train_images": LAB2.saved_model_train_images,
            "max_test_above_train": course_config.SAVED_MODEL_TEST_ABOVE_TRAIN_MAX,
        },
    ),
    LAB3.assignment: (
        "SAVED_MODEL_RULES",
        lambda: {
            "base_conv_layers": LAB3.base_conv_layers,
            "train_images": LAB3.saved_model_train_images,
            "max_test_above_train": course_config.SAVED_MODEL_TEST_ABOVE_TRAIN_MAX,
            "min_test_accuracy": LAB3.saved_model_min_accuracy,
        },
    ),
}


def assigned_literal(notebook, name):
    """The literal value assigned to ``name`` at the top level of a code cell (None if there is none)."""
    import ast

    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
    return None


@pytest.mark.parametrize("assignment", sorted(CODE_RULES))
def test_rules_in_the_notebooks_code_are_the_course_numbers(assignment):
    lab = next(lab for lab in course_config.LABS if lab.assignment == assignment)
    name, expected = CODE_RULES[assignment]
    assert assigned_literal(released(lab), name) == expected(), (
        f"{lab.notebook}: {name} in its code is not course_config's numbers {expected()}"
    )


def recorded_references(lab):
    """Every recorded reference of ``lab``: its current results.json first, then the ones it replaced (kept in
    ``earlier/`` by coursekit.reference.keep_earlier_results, because later labs quote them until they run again)."""
    return [results(lab), *reversed(reference.earlier_results(course_config.REFERENCE_DIR / lab.assignment))]


def kept_row(recorded):
    return next(run for run in recorded["runs"] if run["seed"] == recorded["kept"]["seed"])


def test_lab3_compares_with_recorded_reference_runs_of_labs_1_and_2():
    earlier = assigned_literal(released(LAB3), "EARLIER_RESULTS")
    for name, lab in (("dense (Lab 1)", LAB1), ("CNN (Lab 2)", LAB2)):
        row = earlier[name]
        quoted = [kept_row(recorded) for recorded in recorded_references(lab)]
        assert (row["test_accuracy"], row["train_seconds"]) in [
            (run["test_accuracy"], run["train_seconds"]) for run in quoted
        ], f"{LAB3.notebook}: EARLIER_RESULTS[{name!r}] is no recorded reference run of {lab.assignment} (kept seed)"
        assert row["model_file"] == lab.model_file


def test_lab2_compares_with_a_recorded_reference_run_of_lab1():
    """LAB1_RESULTS: a recorded Lab 1 reference's mean test accuracy and its kept seed's training time."""
    quoted = assigned_literal(released(LAB2), "LAB1_RESULTS")
    recorded = [
        (reference_results["test_accuracy_mean"], kept_row(reference_results)["train_seconds"])
        for reference_results in recorded_references(LAB1)
    ]
    assert (quoted["test_accuracy"], quoted["train_seconds"]) in recorded, (
        f"{LAB2.notebook}: LAB1_RESULTS is no recorded reference of {LAB1.assignment}: {recorded}"
    )


@LABS
def test_time_per_section_is_the_kept_reference_run(lab):
    cells = [cell for cell in released(lab).cells if section_times.MARKER in cell.source]
    assert len(cells) == 1, f"{lab.notebook} should hold one section-times table (python -m coursekit.section_times)"
    executed = nbformat.read(course_config.REFERENCE_DIR / lab.assignment / lab.notebook, as_version=4)
    assert cells[0].source == section_times.table_markdown(lab, executed), (
        f"{lab.notebook}: the time per section is not the kept reference run's: "
        "run `python -m coursekit.section_times`, "
        f"`python -m coursekit reference {lab.assignment} --text-only` and `python -m coursekit release`"
    )


def test_section_seconds_add_up_each_sections_cells():
    def timed(seconds):
        cell = nbformat.v4.new_code_cell("pass")
        cell.metadata["execution"] = {
            "iopub.status.busy": "2026-12-01T10:00:00.000000Z",
            "shell.execute_reply": f"2026-12-01T10:00:{seconds:02d}.000000Z",
        }
        return cell

    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title"),
            timed(7),  # before the first section: not in a section
            nbformat.v4.new_markdown_cell("## 1. Setup"),
            timed(2),
            nbformat.v4.new_markdown_cell("## 2. Train\n\ntext"),
            timed(30),
            nbformat.v4.new_code_cell("never run"),
            timed(15),
        ]
    )
    assert section_times.section_seconds(notebook) == {"1. Setup": 2.0, "2. Train": 45.0}


def self_check_problems(notebook):
    """What is wrong with the visible self-checks of a notebook's autograded cells (the code the student sees
    above the hidden tests): asserts without a message, and asserts that only check that a name is callable."""
    import ast

    problems = []
    for cell in notebook.cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not nbgrader.get("grade"):
            continue
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        for node in ast.walk(ast.parse(visible)):
            if not isinstance(node, ast.Assert):
                continue
            if isinstance(node.test, ast.Call) and getattr(node.test.func, "id", None) == "callable":
                problems.append(f"{nbgrader['grade_id']}: `assert {ast.unparse(node.test)}` only checks a name")
            elif node.msg is None:
                problems.append(f"{nbgrader['grade_id']}: `assert {ast.unparse(node.test)}` has no message")
    return problems


@LABS
def test_every_self_check_says_what_was_expected(lab):
    """A failing visible assert tells the student what was expected; no self-check is a bare ``callable(...)``."""
    problems = self_check_problems(released(lab))
    assert not problems, f"{lab.notebook}:\n" + "\n".join(problems)


def test_self_checks_without_a_message_or_that_only_check_a_name_are_found():
    def graded(code, grade_id):
        cell = nbformat.v4.new_code_cell(code + "\n### BEGIN HIDDEN TESTS\nassert hidden\n### END HIDDEN TESTS")
        cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "points": 1}
        return cell

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        graded("assert callable(f), 'f is missing'", "test_callable"),
        graded("assert f(1) == 2", "test_bare"),
        graded("assert f(1) == 2, f'f(1) should be 2; got {f(1)}'", "test_good"),
        nbformat.v4.new_code_cell("assert untested"),  # not a graded cell
    ]
    assert self_check_problems(notebook) == [
        "test_callable: `assert callable(f)` only checks a name",
        "test_bare: `assert f(1) == 2` has no message",
    ]
