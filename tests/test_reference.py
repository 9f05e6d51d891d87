"""`make reference`: every seed is recorded when it finishes, and an interrupted run resumes.

A toy lab stands in for the real ones (whose runs take hours): its notebook "trains" by writing a
file and prints the results line; a run of seed 2 is made to fail once, as a stopped session would.
"""

import dataclasses
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import course_config
from coursekit import reference

TOY = dataclasses.replace(
    course_config.LAB1, assignment="toy_lab", notebook="toy_lab.ipynb", model_file="toy_lab_model.keras"
)

TRAINING = """import json, os, pathlib
seed = int(os.environ["LAB_SEED"])
resumed = pathlib.Path("training_backup").is_dir()
with open(os.environ["TOY_LOG"], "a") as log:
    log.write(f"{seed} resumed\\n" if resumed else f"{seed}\\n")
pathlib.Path("training_backup").mkdir(exist_ok=True)  # what BackupAndRestore leaves after an epoch
if seed == int(os.environ["TOY_STOP_SEED"]) and not resumed:
    raise RuntimeError("the session stopped during training")
pathlib.Path("toy_lab_model.keras").write_text(f"model of seed {seed}")"""
RESULTS = 'print(json.dumps({"test_accuracy": 0.9 + seed / 100, "train_seconds": 1.0}))'


@pytest.fixture
def toy_course(tmp_path, monkeypatch):
    source = tmp_path / "source" / TOY.assignment
    source.mkdir(parents=True)
    results_cell = new_code_cell(RESULTS, metadata={"tags": ["results"]})
    nbformat.write(new_notebook(cells=[new_code_cell(TRAINING), results_cell]), source / TOY.notebook)
    monkeypatch.setattr(course_config, "SOURCE_DIR", tmp_path / "source")
    monkeypatch.setattr(course_config, "REFERENCE_DIR", tmp_path / "reference_solution")
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "runs.log"))
    monkeypatch.setenv("TOY_STOP_SEED", "2")  # seed 2 stops once, as a stopped session would
    calibrations = []
    monkeypatch.setattr(
        reference, "calibrate_retraining", lambda path, settings: calibrations.append(path.read_text()) or {"min": 0.8}
    )
    return tmp_path, calibrations


def test_each_seed_is_recorded_when_it_finishes_and_a_stopped_run_resumes(toy_course):
    root, calibrations = toy_course
    lab_dir = root / "reference_solution" / TOY.assignment
    with pytest.raises(Exception, match="the session stopped"):
        reference.run_reference(TOY, seeds=(1, 2, 3))

    # Seed 1 finished before the stop: recorded, with its notebook, model and the retraining of its model.
    partial = json.loads((lab_dir / "results.json").read_text())
    assert partial["complete"] is False and partial["seeds_planned"] == [1, 2, 3]
    assert [run["seed"] for run in partial["runs"]] == [1] and partial["test_accuracy_min"] == 0.91
    assert partial["grader_retraining"] == {"min": 0.8} and calibrations == ["model of seed 1"]
    assert (lab_dir / TOY.model_file).read_text() == "model of seed 1"
    assert (lab_dir / TOY.notebook).exists() and (lab_dir / "runs" / "seed-2" / "training_backup").is_dir()

    results = reference.run_reference(TOY, seeds=(1, 2, 3))
    # Seed 1 was not run again, seed 2 resumed from its backup, seed 3 ran; nothing was calibrated twice.
    assert (root / "runs.log").read_text().split("\n")[:-1] == ["1", "2", "2 resumed", "3"]
    assert calibrations == ["model of seed 1"]
    assert results["complete"] is True and [run["seed"] for run in results["runs"]] == [1, 2, 3]
    assert results["test_accuracy_mean"] == 0.92 and results["test_accuracy_min"] == 0.91
    assert all(run["source_digest"] == results["runs"][0]["source_digest"] for run in results["runs"])
    assert not (lab_dir / "runs").exists()


def test_a_run_of_fewer_seeds_than_planned_is_recorded_as_incomplete(toy_course):
    results = reference.run_reference(TOY, seeds=(1,), planned=(1, 2, 3))
    assert results["complete"] is False and results["seeds_planned"] == [1, 2, 3]
    assert [run["seed"] for run in results["runs"]] == [1]


def test_a_run_of_one_planned_seed_keeps_the_seeds_recorded_before(toy_course, monkeypatch):
    """`--seeds 3` after seeds 1 and 2 were recorded: seed 3 is added; seed 1 stays the kept seed."""
    root, calibrations = toy_course
    monkeypatch.setenv("TOY_STOP_SEED", "0")  # no seed stops
    lab_dir = root / "reference_solution" / TOY.assignment
    reference.run_reference(TOY, seeds=(1, 2), planned=(1, 2, 3))
    (root / "runs.log").unlink()
    results = reference.run_reference(TOY, seeds=(3,), planned=(1, 2, 3))
    assert (root / "runs.log").read_text() == "3\n"  # only seed 3 ran
    assert results["complete"] is True and [run["seed"] for run in results["runs"]] == [1, 2, 3]
    assert results["kept"]["seed"] == 1 and (lab_dir / TOY.model_file).read_text() == "model of seed 1"
    assert calibrations == ["model of seed 1"]  # the kept seed's retraining, measured once


def test_a_changed_source_notebook_runs_every_seed_again(toy_course):
    root, _ = toy_course
    reference.run_reference(TOY, seeds=(1,))
    (root / "runs.log").unlink()
    path = root / "source" / TOY.assignment / TOY.notebook
    notebook = nbformat.read(path, as_version=4)
    before = reference.source_digest(reference.solution_notebook(path))
    notebook.cells[0].source += "\n# a changed recipe"
    nbformat.write(notebook, path)
    assert reference.source_digest(reference.solution_notebook(path)) != before
    # A seed's record left by other code (here: the notebook before the change) is not kept.
    folder = root / "reference_solution" / TOY.assignment / "runs" / "seed-1"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"seed": 1, "source_digest": before, "test_accuracy": 0.5}))
    lab_dir = root / "reference_solution" / TOY.assignment
    replaced = json.loads((lab_dir / "results.json").read_text())
    results = reference.run_reference(TOY, seeds=(1,))
    assert (root / "runs.log").read_text() == "1\n" and results["runs"][0]["test_accuracy"] == 0.91
    # The results it replaced are kept (other labs may quote them), once: a rerun of the new code adds nothing.
    assert reference.earlier_results(lab_dir) == [replaced]
    assert [path.name for path in (lab_dir / "earlier").iterdir()] == [f"results-{replaced['finished'][:10]}.json"]
    reference.run_reference(TOY, seeds=(1,))
    assert reference.earlier_results(lab_dir) == [replaced]


def test_the_reference_notebook_takes_new_text_but_never_new_code(toy_course):
    root, _ = toy_course
    reference.run_reference(TOY, seeds=(1,))
    path = root / "source" / TOY.assignment / TOY.notebook
    notebook = nbformat.read(path, as_version=4)
    kept = root / "reference_solution" / TOY.assignment / TOY.notebook
    executed = nbformat.read(kept, as_version=4)
    executed.cells.append(nbformat.v4.new_markdown_cell("(to be filled in)"))
    nbformat.write(executed, kept)
    # Markdown changed, added (a new title, a new question) and removed: taken; the code and its outputs stay.
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell("# A corrected title"))
    notebook.cells.append(nbformat.v4.new_markdown_cell("Measured: 0.91"))
    nbformat.write(notebook, path)
    reference.refresh_markdown(TOY)
    refreshed = nbformat.read(kept, as_version=4)
    assert [cell.source for cell in refreshed.cells if cell.cell_type == "markdown"] == [
        cell.source for cell in notebook.cells if cell.cell_type == "markdown"
    ]
    assert refreshed.cells[0].source == "# A corrected title" and refreshed.cells[-1].source == "Measured: 0.91"
    assert reference.results_line(refreshed)["test_accuracy"] == 0.91  # the outputs are kept

    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    first_code.source += "\n# changed code"
    nbformat.write(notebook, path)
    with pytest.raises(ValueError, match="run the reference again"):
        reference.refresh_markdown(TOY)


def test_a_clone_continues_an_incomplete_reference_from_its_committed_results(toy_course, monkeypatch):
    """A fresh clone has results.json, the kept notebook and model, but no runs/: finished seeds are not run again."""
    import shutil

    root, calibrations = toy_course
    lab_dir = root / "reference_solution" / TOY.assignment
    with pytest.raises(Exception, match="the session stopped"):
        reference.run_reference(TOY, seeds=(1, 2, 3))
    shutil.rmtree(lab_dir / "runs")  # what git does not keep
    (root / "runs.log").unlink()
    monkeypatch.setenv("TOY_STOP_SEED", "0")  # this time the session is not stopped
    results = reference.run_reference(TOY, seeds=(1, 2, 3))
    assert (root / "runs.log").read_text() == "2\n3\n"  # seed 1 kept from results.json; 2 starts afresh
    assert [run["seed"] for run in results["runs"]] == [1, 2, 3] and results["complete"] is True
    assert calibrations == ["model of seed 1"] and results["grader_retraining"] == {"min": 0.8}
    assert (lab_dir / TOY.model_file).read_text() == "model of seed 1"
