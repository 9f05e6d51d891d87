"""How much better the reference models do on training images than on the test set.

The saved-model check fails a model that is more accurate on the test images than on
training images the grader draws (course_config.SAVED_MODEL_TEST_ABOVE_TRAIN_MAX). This
measures the gap for every lab's committed reference model, with the grader's own code
(coursekit.saved_model.evaluate_saved_model: the model runs in the sandbox) and a few draws
of the training images, and writes docs/measurements/saved-model-gap.json.

Usage: .venv/bin/python benchmarks/saved_model_gap.py [--draws 3]
"""

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["COURSEKIT_GRADER_CACHE"] = tempfile.mkdtemp(prefix="gap-")  # every draw measured afresh

import course_config  # noqa: E402
from coursekit.data import load_fashion_mnist  # noqa: E402
from coursekit.saved_model import evaluate_saved_model, test_above_train_margin  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    import keras

    data = load_fashion_mnist()
    rows = []
    for lab in course_config.LABS:
        path = course_config.REFERENCE_DIR / lab.assignment / lab.model_file
        if not path.is_file():
            print(f"{lab.assignment}: no reference model yet")
            continue
        for draw in range(args.draws):
            os.environ["COURSEKIT_GRADER_CACHE"] = tempfile.mkdtemp(prefix="gap-")
            course_config.GRADER_CACHE_DIR = Path(os.environ["COURSEKIT_GRADER_CACHE"])
            saved = evaluate_saved_model(path, data, lab)
            row = {
                "lab": lab.assignment,
                "draw": draw + 1,
                "test_accuracy": saved.test_accuracy,
                "train_accuracy": saved.train_accuracy,
                "train_images": saved.train_images,
                "gap_train_minus_test": round(saved.train_accuracy - saved.test_accuracy, 4),
                "fail_margin": round(test_above_train_margin(saved), 4),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = ROOT / "docs" / "measurements" / "saved-model-gap.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "keras": keras.__version__,
                "backend": keras.backend.backend(),
                "load": os.getloadavg()[0],
                "rows": rows,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
