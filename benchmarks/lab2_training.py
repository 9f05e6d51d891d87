"""Lab 2's training cost and recipe search on this machine (issue 10).

Two commands, both writing JSON lines under ``docs/measurements/``:

``profile``
    Seconds per training step (and so per epoch of 54,000 images) of the reference
    network and of cheaper variants: augmentation layers on or off, cheap shifts by
    padding and cropping, batch size, ``jit_compile``. One short fit per variant on
    an otherwise idle machine; the first steps (graph building) are not timed.

``search``
    Validation runs of candidate recipes: train on 54,000 images, validate on a
    stratified 6,000 (the test set is never touched), and record validation accuracy
    and cumulative seconds after every epoch, so each run is also an
    accuracy-against-minutes curve. ``keras.callbacks.BackupAndRestore`` keeps a
    stopped run's progress; a finished variant is skipped when run again.

Usage::

    .venv/bin/python benchmarks/lab2_training.py profile
    nice .venv/bin/python benchmarks/lab2_training.py search --variants wide3 ...

The Keras backend is whatever ``KERAS_BACKEND`` says (TensorFlow by default).
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from coursekit.data import load_fashion_mnist  # noqa: E402

MEASUREMENTS = ROOT / "docs" / "measurements"
TRAIN_IMAGES = 54_000


def augmentation(kind):
    """The augmentation stage: 'layers' (the notebook's Random* layers), 'cheap' (shifts of up to
    2 pixels, nearest-pixel, and horizontal flips), 'padcrop' (zero padding and a random crop: as
    cheap, but RandomCrop's inference path does not crop back to 28×28 in Keras 3.12, so it serves
    the profile only), 'flip' or 'none'."""
    if kind == "none":
        return []
    if kind == "layers":
        return [
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
            layers.RandomZoom(0.1, fill_mode="constant"),
            layers.RandomContrast(0.1),
        ]
    if kind == "cheap":
        return [
            layers.RandomFlip("horizontal"),
            layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", interpolation="nearest"),
        ]
    if kind == "padcrop":
        return [layers.ZeroPadding2D(2), layers.RandomCrop(28, 28), layers.RandomFlip("horizontal")]
    if kind == "flip":
        return [layers.RandomFlip("horizontal")]
    raise ValueError(kind)


def build(
    filters=(32, 64),
    convs_per_block=2,
    dense_units=256,
    dropout=0.25,
    dense_dropout=0.5,
    augment="layers",
    momentum=0.9,
    head="flatten",
):
    """The notebook's network, with the knobs the search turns."""
    inputs = keras.Input(shape=(28, 28))
    x = layers.Reshape((28, 28, 1))(inputs)
    x = layers.Rescaling(1.0 / 255)(x)
    for layer in augmentation(augment):
        x = layer(x)
    for count in filters:
        for _ in range(convs_per_block):
            x = layers.Conv2D(count, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=momentum)(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout)(x)
    x = layers.GlobalAveragePooling2D()(x) if head == "gap" else layers.Flatten()(x)
    if dense_units:
        x = layers.Dense(dense_units, use_bias=False)(x)
        x = layers.BatchNormalization(momentum=momentum)(x)
        x = layers.Activation("relu")(x)
        x = layers.Dropout(dense_dropout)(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def compile_model(
    model,
    epochs,
    steps,
    learning_rate=2e-3,
    label_smoothing=0.0,
    jit_compile="auto",
    weight_decay=1e-4,
    warmup_epochs=0,
):
    warmup = warmup_epochs * steps
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else learning_rate,
        decay_steps=max(1, epochs * steps - warmup),
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    loss = (
        keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        if label_smoothing
        else keras.losses.SparseCategoricalCrossentropy()
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss=loss,
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def machine():
    cpu = platform.processor() or "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "load_before": os.getloadavg()[0],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def append(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


# profile --------------------------------------------------------------------------------------

PROFILE_VARIANTS = {
    "reference (Random* layers), batch 128": dict(model={}, batch=128),
    "no augmentation, batch 128": dict(model={"augment": "none"}, batch=128),
    "pad-crop + flip, batch 128": dict(model={"augment": "padcrop"}, batch=128),
    "2-pixel shifts + flip, batch 128": dict(model={"augment": "cheap"}, batch=128),
    "2-pixel shifts + flip, batch 256": dict(model={"augment": "cheap"}, batch=256),
    "no augmentation, batch 128, jit_compile": dict(model={"augment": "none"}, batch=128, jit=True),
    "no augmentation, batch 256": dict(model={"augment": "none"}, batch=256),
    "3 blocks (32, 64, 128), 2-pixel shifts + flip, batch 128": dict(
        model={"augment": "cheap", "filters": (32, 64, 128)}, batch=128
    ),
    "3 blocks (32, 64, 128), GAP head, 2-pixel shifts + flip, batch 128": dict(
        model={"augment": "cheap", "filters": (32, 64, 128), "head": "gap"}, batch=128
    ),
    "2 blocks (64, 128), 2-pixel shifts + flip, batch 128": dict(
        model={"augment": "cheap", "filters": (64, 128)}, batch=128
    ),
}


def profile(args):
    (x, y), _ = load_fashion_mnist()
    x = x.astype("float32")
    out = MEASUREMENTS / args.out
    info = machine()
    # A variant's whole name selects it alone; any other text selects every variant whose name contains it.
    names = [
        name
        for name in PROFILE_VARIANTS
        if not args.only or name in args.only or any(part in name for part in args.only if part not in PROFILE_VARIANTS)
    ]
    # Rounds over all variants, so a slow spell of a shared virtual machine does not fall on one variant.
    for round_ in range(args.repeat):
        for name in names:
            variant = PROFILE_VARIANTS[name]
            keras.utils.set_random_seed(0)
            model = build(**variant["model"])
            batch = variant["batch"]
            compile_model(model, 1, 100, jit_compile=variant.get("jit", "auto"))
            warm, timed = 5, args.steps
            n = batch * (warm + timed)
            start = time.perf_counter()
            model.fit(x[: batch * warm], y[: batch * warm], batch_size=batch, epochs=1, verbose=0)
            warm_seconds = time.perf_counter() - start
            start = time.perf_counter()
            model.fit(x[batch * warm : n], y[batch * warm : n], batch_size=batch, epochs=1, verbose=0)
            seconds = time.perf_counter() - start
            per_step = seconds / timed
            record = {
                "variant": name,
                "batch_size": batch,
                "params": model.count_params(),
                "seconds_per_step": round(per_step, 4),
                "images_per_second": round(batch / per_step, 1),
                "seconds_per_epoch_54k": round(per_step * TRAIN_IMAGES / batch, 1),
                "first_steps_seconds": round(warm_seconds, 1),
                "timed_steps": timed,
                "round": round_ + 1,
                **info,
                "load_after": os.getloadavg()[0],
            }
            print(json.dumps(record), flush=True)
            append(out, record)


# search ---------------------------------------------------------------------------------------

SEARCH_VARIANTS = {
    # name: (model kwargs, training kwargs). Each fits the budget of 30 minutes of training
    # on the idle 2-core machine at the seconds per epoch that `profile` measured.
    "ref-cheap-ls-20": ({"augment": "cheap"}, {"epochs": 20, "label_smoothing": 0.1}),
    "three-cheap-ls-15": ({"augment": "cheap", "filters": (32, 64, 128)}, {"epochs": 15, "label_smoothing": 0.1}),
    "ref-layers-20": ({}, {"epochs": 20}),
    "ref-cheap-20": ({"augment": "cheap"}, {"epochs": 20}),
    "ref-cheap-ls-20-b256": (
        {"augment": "cheap"},
        {"epochs": 20, "label_smoothing": 0.1, "batch_size": 256, "learning_rate": 3e-3},
    ),
}


class EpochLog(keras.callbacks.Callback):
    """Validation accuracy and cumulative training seconds after every epoch."""

    def __init__(self, path, name, offset=0.0):
        super().__init__()
        self.path, self.name, self.offset = path, name, offset

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.offset += time.perf_counter() - self.start
        append(
            self.path,
            {
                "variant": self.name,
                "epoch": epoch + 1,
                "seconds": round(self.offset, 1),
                "val_accuracy": round(float(logs["val_accuracy"]), 4),
                "accuracy": round(float(logs["accuracy"]), 4),
                "load": os.getloadavg()[0],
            },
        )


def validation_split(seed=42, size=6000):
    from sklearn.model_selection import train_test_split

    (x, y), _ = load_fashion_mnist()
    x_fit, x_val, y_fit, y_val = train_test_split(x.astype("float32"), y, test_size=size, stratify=y, random_state=seed)
    return x_fit, y_fit, x_val, y_val


def search(args):
    out = MEASUREMENTS / args.out
    curves = out.with_name(out.stem + "-curves.jsonl")
    done = set()
    if out.exists():
        done = {json.loads(line)["variant"] for line in out.read_text().splitlines() if line.strip()}
    x_fit, y_fit, x_val, y_val = validation_split(args.seed)
    for name in args.variants or SEARCH_VARIANTS:
        if name in done:
            print(f"{name}: already recorded in {out.name}", flush=True)
            continue
        model_kwargs, train = SEARCH_VARIANTS[name]
        epochs, batch = train["epochs"], train.get("batch_size", 128)
        keras.utils.set_random_seed(args.seed)
        model = build(**model_kwargs)
        steps = int(np.ceil(len(x_fit) / batch))
        smoothing = train.get("label_smoothing", 0.0)
        compile_model(model, epochs, steps, learning_rate=train.get("learning_rate", 2e-3), label_smoothing=smoothing)
        targets = (
            (keras.utils.to_categorical(y_fit, 10), keras.utils.to_categorical(y_val, 10))
            if smoothing
            else (y_fit, y_val)
        )
        backup = ROOT / ".lab2_search_backup" / name
        start = time.perf_counter()
        history = model.fit(
            x_fit,
            targets[0],
            validation_data=(x_val, targets[1]),
            epochs=epochs,
            batch_size=batch,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(str(backup)), EpochLog(curves, name)],
        )
        record = {
            "variant": name,
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()},
            "training": train,
            "seed": args.seed,
            "params": model.count_params(),
            "epochs_run": len(history.history["val_accuracy"]),
            "best_val_accuracy": round(max(history.history["val_accuracy"]), 4),
            "final_val_accuracy": round(history.history["val_accuracy"][-1], 4),
            "seconds_this_process": round(time.perf_counter() - start, 1),
            **machine(),
        }
        print(json.dumps(record), flush=True)
        append(out, record)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="seconds per epoch of each variant")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeat", type=int, default=3, help="rounds over all variants")
    p.add_argument("--only", nargs="*", help="variants whose name contains one of these")
    p.add_argument("--out", default="lab2-profile.jsonl")
    s = sub.add_parser("search", help="validation runs of candidate recipes")
    s.add_argument("--variants", nargs="*", choices=sorted(SEARCH_VARIANTS))
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--out", default="lab2-search.jsonl")
    args = parser.parse_args()
    profile(args) if args.command == "profile" else search(args)


if __name__ == "__main__":
    main()
