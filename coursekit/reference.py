"""Reference runs: the source notebook's own solution code, executed in full.

``make reference`` runs :func:`run_reference`: for each seed in
``course_config.REFERENCE_SEEDS`` it executes the solution notebook (the source
notebook with the solution markers removed, hidden tests and mark schemes
cleared) with nbclient, then writes into ``reference_solution/<lab>/``:

- the executed notebook of the first seed, with its outputs and plots;
- that run's trained model (``.keras``);
- ``results.json``: test accuracy per seed, mean and spread, seconds, hardware,
  Keras backend and versions, and the grader's brief retraining of the reference
  architecture (which the retraining bar in course_config.py is derived from).

When a run of changed source code replaces ``results.json``, the one it replaces is kept
in ``earlier/`` (:func:`keep_earlier_results`): later labs quote a lab's reference numbers
in their own code, and they keep quoting that recorded run until they are run again.

Every seed is recorded as soon as it finishes, and an interrupted run resumes
(:func:`run_reference`).
"""

import copy
import hashlib
import json
import os
import platform
import shutil
import statistics
import time
from datetime import datetime, timezone
from importlib import metadata

import nbformat
from nbclient import NotebookClient
from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme

import course_config

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def solution_notebook(source_path):
    """The source notebook as a perfect student would submit it: solutions in, hidden parts out."""
    notebook = nbformat.read(source_path, as_version=4)
    for cell in notebook.cells:
        lines = cell.source.splitlines()
        cell.source = "\n".join(line for line in lines if line.strip() not in SOLUTION_MARKERS)
    notebook, _ = ClearHiddenTests().preprocess(notebook, {})
    notebook, _ = ClearMarkScheme().preprocess(notebook, {})
    return notebook


def results_line(notebook):
    """The JSON printed by the cell tagged ``results``."""
    for cell in notebook.cells:
        if "results" in cell.metadata.get("tags", []):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    for line in output.get("text", "").splitlines():
                        if line.strip().startswith("{"):
                            return json.loads(line)
    raise ValueError("the notebook printed no results line (a cell tagged 'results')")


def execute(notebook, folder, seed, timeout=None):
    """Execute ``notebook`` in ``folder`` with ``LAB_SEED=seed``; return the executed copy."""
    notebook = copy.deepcopy(notebook)
    saved = {key: os.environ.get(key) for key in ("LAB_SEED", "NBGRADER_EXECUTION")}
    os.environ["LAB_SEED"] = str(seed)
    os.environ.pop("NBGRADER_EXECUTION", None)
    try:
        NotebookClient(
            notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        ).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def hardware():
    """The machine a reference run ran on: CPU model and cores, GPUs, architecture and system."""
    from coursekit.machine import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": _gpu_names(),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def _gpu_names():
    """The NVIDIA GPUs of this machine, as nvidia-smi names them (None when there are none)."""
    import subprocess

    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return ", ".join(names) if done.returncode == 0 and names else None


def versions():
    found = {"python": platform.python_version()}
    for package in ("keras", "tensorflow-cpu", "tensorflow", "numpy", "scikit-learn", "nbgrader"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def calibrate_retraining(model_path, settings, seeds=(0, 1, 2, 3, 4)):
    """The grader's brief retraining of the reference architecture, over several seeds.

    For Lab 3 that is the retraining of the reference's classifier head on the grader's
    VGG16 features (:func:`coursekit.vgg16.head_retraining`).
    """
    import keras

    from coursekit.checks import lab_retraining
    from coursekit.data import load_fashion_mnist

    data = load_fashion_mnist()
    model = keras.saving.load_model(model_path, compile=False)
    recipe = {
        "train_size": settings.retrain_train_size,
        "epochs": settings.retrain_epochs,
        "batch_size": settings.retrain_batch_size,
        "learning_rate": settings.retrain_learning_rate,
    }
    if isinstance(settings, course_config.TransferLabSettings):
        model = model.get_layer("classifier_head")  # the part the grader retrains on its VGG16 features
        recipe.update(
            test_size=settings.retrain_test_size,
            features=f"VGG16 {settings.feature_layer}, "
            f"{settings.feature_image_size}x{settings.feature_image_size} zero-padded",
        )
    scores = [round(lab_retraining(model, data, settings, seed=seed), 4) for seed in seeds]
    return {
        "recipe": recipe,
        "seeds": list(seeds),
        "test_accuracy": scores,
        "min": min(scores),
        "mean": round(statistics.mean(scores), 4),
    }


def refresh_markdown(settings):
    """Give the kept reference notebook the source notebook's current markdown and cell tags; its code and
    outputs stay.

    Text may be corrected while a long run goes on, or after it (for instance to state the measured
    numbers, or to add a hand-graded question): only code cells produce outputs, so the executed
    notebook stays what the code produced. Markdown cells may be changed, added or removed; the code
    cells must be those that ran, in the same order. Refuses when the code differs (the reference is
    then stale: run it again).
    """
    path = course_config.REFERENCE_DIR / settings.assignment / settings.notebook
    source = solution_notebook(course_config.SOURCE_DIR / settings.assignment / settings.notebook)
    executed = nbformat.read(path, as_version=4)
    if source_digest(source) != source_digest(executed):
        raise ValueError(f"{path} was not produced from the current source's code: run the reference again")
    ran = iter([cell for cell in executed.cells if cell.cell_type == "code"])
    executed.cells = [_with_tags_of(cell, next(ran)) if cell.cell_type == "code" else cell for cell in source.cells]
    nbformat.write(executed, path)


def _with_tags_of(source_cell, executed_cell):
    """``executed_cell`` with the tags of ``source_cell`` (e.g. course_config.NOT_RERUN_TAG): metadata, not code."""
    tags = source_cell.metadata.get("tags")
    if tags:
        executed_cell.metadata["tags"] = list(tags)
    else:
        executed_cell.metadata.pop("tags", None)
    return executed_cell


def source_digest(notebook):
    """sha256 of the code a reference run executes: its code cells, in order."""
    code = "\n# ---- cell ----\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def _finished_seed(folder, digest):
    """The record of a seed already run from this source code (``runs/seed-N/record.json``), or None."""
    try:
        record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("source_digest") == digest else None


def _committed_results(lab_dir):
    """The results.json there was before this run ({} if none), read once: the run rewrites it seed by seed."""
    try:
        return json.loads((lab_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _committed_seed(results, seed, digest):
    """The row of ``seed`` in the committed ``results`` when it ran this source code, or None.

    So that a clone (which has no ``runs/``) continues an incomplete reference instead of starting over.
    """
    row = next((run for run in results.get("runs", []) if run.get("seed") == seed), None)
    if row is None or row.get("source_digest") != digest:
        return None
    kept = results.get("kept", {}).get("seed") == seed  # its retraining was measured on this seed's model
    return {**row, "grader_retraining": results.get("grader_retraining")} if kept else dict(row)


def keep_earlier_results(lab_dir, results, digest):
    """Keep ``results`` (``lab_dir``'s results.json, as read) in ``lab_dir/earlier/results-<date it finished>.json``
    when no run in it ran the source code of ``digest``: a run of changed code is about to replace it. Returns the
    kept copy's path, or None.
    """
    if not results.get("runs") or any(run.get("source_digest") == digest for run in results["runs"]):
        return None
    kept = lab_dir / "earlier" / f"results-{str(results.get('finished', 'undated'))[:10]}.json"
    kept.parent.mkdir(exist_ok=True)
    if not kept.exists():
        shutil.copyfile(lab_dir / "results.json", kept)
    return kept


def earlier_results(lab_dir):
    """The results a lab's reference had before its current one (see :func:`keep_earlier_results`), oldest first."""
    return [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted((lab_dir / "earlier").glob("results-*.json"))
    ]


def _write_results(lab_dir, settings, planned, runs, retraining):
    import keras

    accuracies = [run["test_accuracy"] for run in runs]
    results = {
        "lab": settings.assignment,
        "command": f"python -m coursekit reference {settings.assignment}",
        "complete": {run["seed"] for run in runs} >= set(planned),
        "seeds_planned": planned,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(),
        "keras_backend": keras.backend.backend(),
        "versions": versions(),
        "runs": runs,
        "test_accuracy_mean": round(statistics.mean(accuracies), 4),
        "test_accuracy_std": round(statistics.stdev(accuracies), 4) if len(accuracies) > 1 else 0.0,
        "test_accuracy_min": round(min(accuracies), 4),
        "kept": {"seed": runs[0]["seed"], "notebook": settings.notebook, "model": settings.model_file},
        "grader_retraining": retraining,
    }
    previous = lab_dir / "results.json"
    if previous.exists():  # measurements added by other commands (e.g. the retraining calibration) stay
        for key, value in json.loads(previous.read_text(encoding="utf-8")).items():
            if key.startswith("grader_retraining_") and key not in results:
                results[key] = value
    _save_json(previous, results)
    return results


def _save_json(path, data):
    """Whole or not at all: a resumed run reads these files back."""
    from coursekit.atomic_files import write_text_atomically

    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


def run_reference(settings, seeds, planned=None):
    """Run the reference notebook once per seed and record everything in reference_solution/.

    Each seed runs in ``runs/seed-N/``. When it finishes, its record goes to ``runs/seed-N/record.json``
    and ``results.json`` is rewritten with the seeds finished so far (``"complete": false`` until the
    last), so a long run can be committed seed by seed; the first seed's executed notebook and model
    are copied next to it as soon as they exist. Run again after an interruption: seeds finished from
    the same source code are kept (from ``runs/``, or from the committed ``results.json`` in a fresh
    clone), and an interrupted seed resumes in its folder (the notebook's
    ``keras.callbacks.BackupAndRestore`` continues its training from the last finished epoch).

    ``planned`` are the seeds the reference is made of (default: ``seeds``); ``results.json`` is
    ``"complete"`` once all of them are recorded, so a run of fewer seeds says it is not.
    """
    lab_dir = course_config.REFERENCE_DIR / settings.assignment
    runs_dir = lab_dir / "runs"
    notebook = solution_notebook(course_config.SOURCE_DIR / settings.assignment / settings.notebook)
    digest = source_digest(notebook)
    runs, committed_results = [], _committed_results(lab_dir)
    keep_earlier_results(lab_dir, committed_results, digest)
    # Every planned seed in order, so a run of some of them (--seeds 44) keeps the others already recorded from
    # this source, and the kept seed (notebook, model, retraining) stays the first planned one.
    order = sorted({*(planned or seeds), *seeds})
    for seed in order:
        folder = runs_dir / f"seed-{seed}"
        index = len(runs)
        record = _finished_seed(folder, digest)
        committed = None if record is not None else _committed_seed(committed_results, seed, digest)
        if committed is not None and (index > 0 or (lab_dir / settings.model_file).exists()):
            record = committed
            print(
                f"[reference] {settings.assignment}: seed {seed} recorded in results.json from this source: kept",
                flush=True,
            )
        elif record is not None:
            print(f"[reference] {settings.assignment}: seed {seed} already run from this source: kept", flush=True)
        elif seed not in seeds:
            continue  # planned, not asked for in this run, and not recorded yet
        else:
            if folder.exists() and not (folder / "training_backup").is_dir():
                shutil.rmtree(folder)  # nothing to resume from
            folder.mkdir(parents=True, exist_ok=True)
            print(f"[reference] {settings.assignment}: seed {seed} (of {', '.join(map(str, order))})", flush=True)
            load_before = round(os.getloadavg()[0], 2)
            start = time.perf_counter()
            executed = execute(notebook, folder, seed)
            record = {
                "seed": seed,
                **results_line(executed),
                "notebook_seconds": round(time.perf_counter() - start, 1),
                "load_average_before": load_before,
                "load_average_after": round(os.getloadavg()[0], 2),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "hardware": hardware(),
                "source_digest": digest,
            }
            nbformat.write(executed, folder / settings.notebook)
            _save_json(folder / "record.json", record)
            print(f"[reference]   {json.dumps(record)}", flush=True)
        runs.append(record)
        if index == 0:  # the kept seed: its notebook, its model, and the grader's retraining of its architecture
            if record is not committed:  # a committed seed's notebook and model are in place already
                shutil.copyfile(folder / settings.notebook, lab_dir / settings.notebook)
                shutil.copyfile(folder / settings.model_file, lab_dir / settings.model_file)
            retraining = record.get("grader_retraining") or calibrate_retraining(
                lab_dir / settings.model_file, settings
            )
            record["grader_retraining"] = retraining
            if record is not committed:
                _save_json(folder / "record.json", record)
        rows = [{key: value for key, value in run.items() if key != "grader_retraining"} for run in runs]
        _write_results(lab_dir, settings, order, rows, retraining)
    results = json.loads((lab_dir / "results.json").read_text(encoding="utf-8"))
    shutil.rmtree(runs_dir, ignore_errors=True)
    print(
        f"[reference] wrote {lab_dir / 'results.json'}: mean test accuracy {results['test_accuracy_mean']:.4f} "
        f"± {results['test_accuracy_std']:.4f} over seeds {[run['seed'] for run in results['runs']]}",
        flush=True,
    )
    return results
