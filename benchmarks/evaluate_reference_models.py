"""Evaluate each lab's committed reference model on the 10,000 test images with this interpreter's stack.

Used to check that a new TensorFlow/Keras release reproduces the accuracies recorded in
``reference_solution/<lab>/results.json`` (issue 17's stack upgrade) before the pins move:

    /path/to/other-venv/bin/python benchmarks/evaluate_reference_models.py --out result.json
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import course_config  # noqa: E402


def evaluate(lab, x_test, y_test):
    folder = course_config.REFERENCE_DIR / lab.assignment
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    kept = results["kept"]["seed"]
    recorded = next(run["test_accuracy"] for run in results["runs"] if run["seed"] == kept)
    start = time.perf_counter()
    model = keras.models.load_model(folder / lab.model_file, safe_mode=True)
    predicted = model.predict(x_test.astype("float32"), verbose=0, batch_size=256).argmax(axis=-1)
    return {
        "seed": kept,
        "recorded": recorded,
        "measured": round(float(np.mean(predicted == y_test)), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args(argv)
    import tensorflow as tf

    (_, _), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    report = {"tensorflow": tf.__version__, "keras": keras.__version__, "models": {}}
    for lab in course_config.LABS:
        report["models"][lab.assignment] = evaluate(lab, x_test, y_test)
        print(lab.assignment, report["models"][lab.assignment], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    moved = [name for name, row in report["models"].items() if row["measured"] != row["recorded"]]
    print("every recorded accuracy reproduced" if not moved else f"moved: {', '.join(moved)}")
    return 1 if moved else 0


if __name__ == "__main__":
    raise SystemExit(main())
