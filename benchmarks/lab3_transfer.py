"""Lab 3's transfer recipe on the 2-core CPU, chosen on validation data (issue 11).

VGG16's frozen part is run once over the images and its output cached; the head, and the blocks
to fine-tune, then train on the cached outputs, which is the same as training the whole model
with the frozen part frozen, at a fraction of the cost. Three commands, each appending JSON lines
to ``docs/measurements/lab3-search.jsonl`` (per-epoch curves in ``lab3-search-curves.jsonl``):

``cache --size 32 --cut block3_pool``
    VGG16 (ImageNet weights, from the kit's local file) up to ``cut`` over the 60,000 training
    images at ``size`` × ``size`` (zero padding or resizing), stored in float16 under
    ``.lab3_cache/``; records images per second.
``head --size 32 --cut block3_pool``
    A classifier head (Flatten, Dense, Dropout, Dense 10) trained on the cached outputs of
    54,000 images, validated on a stratified 6,000 (the test set is never touched).
``finetune --size 32 --cut block3_pool --tune block4``
    The VGG16 blocks after the cut (ImageNet weights, trainable) plus a head, trained on the cached
    outputs: first the head alone (``--head-epochs``), then blocks and head at a low learning rate.

Every run records validation accuracy and cumulative seconds after each epoch (an
accuracy-against-minutes curve), the machine's load, and the Keras backend. Usage::

    nice .venv/bin/python benchmarks/lab3_transfer.py cache --size 32 --cut block3_pool
    nice .venv/bin/python benchmarks/lab3_transfer.py head --size 32 --cut block3_pool --epochs 15
    nice .venv/bin/python benchmarks/lab3_transfer.py finetune --size 32 --cut block3_pool --tune block4

``--limit N`` uses the first N training images only (for trying the script out).
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
from keras import layers  # noqa: E402

from benchmarks.lab2_training import EpochLog, append, machine  # noqa: E402
from coursekit.atomic_files import write_atomically  # noqa: E402
from coursekit.data import ensure_vgg16_weights, load_fashion_mnist  # noqa: E402
from coursekit.vgg16 import preprocessed  # noqa: E402

MEASUREMENTS = ROOT / "docs" / "measurements"
CACHE = ROOT / ".lab3_cache"
BLOCKS = ("block1", "block2", "block3", "block4", "block5")


def vgg16(size):
    return keras.applications.VGG16(include_top=False, weights=str(ensure_vgg16_weights()), input_shape=(size, size, 3))


def frozen_part(size, cut):
    """VGG16 from its input up to the layer ``cut`` (e.g. ``block3_pool``)."""
    base = vgg16(size)
    return keras.Model(base.input, base.get_layer(cut).output, name=f"vgg16_to_{cut}")


def blocks_after(size, cut, last_block):
    """VGG16's layers after ``cut`` up to the end of ``last_block``, with their ImageNet weights."""
    base = vgg16(size)
    names = [layer.name for layer in base.layers]
    start, end = names.index(cut) + 1, names.index(f"{last_block}_pool") + 1
    return base.layers[start:end]


def cache_path(size, cut, method, limit):
    return CACHE / f"{method}{size}_{cut}{'_' + str(limit) if limit else ''}.npy"


def training_images(limit):
    (x, y), _ = load_fashion_mnist()
    return (x[:limit], y[:limit]) if limit else (x, y)


def cache(args):
    x, _ = training_images(args.limit)
    model = frozen_part(args.size, args.cut)
    path = cache_path(args.size, args.cut, args.method, args.limit)
    path.parent.mkdir(exist_ok=True)

    def write(partial):
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(x), *model.output_shape[1:]))
        for first in range(0, len(x), args.chunk):
            chunk = preprocessed(x[first : first + args.chunk], args.size, args.method)
            out[first : first + len(chunk)] = model.predict(chunk, batch_size=256, verbose=0).astype(np.float16)
        out.flush()

    start = time.perf_counter()
    write_atomically(path, write, suffix=".npy")
    seconds = time.perf_counter() - start
    record = {
        "command": "cache",
        "size": args.size,
        "cut": args.cut,
        "method": args.method,
        "images": len(x),
        "feature_shape": list(model.output_shape[1:]),
        "seconds": round(seconds, 1),
        "images_per_second": round(len(x) / seconds, 1),
        **machine(),
    }
    print(json.dumps(record), flush=True)
    append(MEASUREMENTS / args.out, record)


def cached_split(args):
    """(fit features, fit labels, validation features, validation labels) from the cache."""
    path = cache_path(args.size, args.cut, args.method, args.limit)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `cache --size {args.size} --cut {args.cut}` first")
    features = np.load(path, mmap_mode="r")
    _, labels = training_images(args.limit)
    from sklearn.model_selection import train_test_split

    fit, val = train_test_split(
        np.arange(len(labels)),
        test_size=args.val_size if not args.limit else 0.1,
        stratify=labels,
        random_state=args.seed,
    )
    fit, val = np.sort(fit), np.sort(val)  # in file order: memory-mapped reads stay sequential
    return (
        np.asarray(features[fit], dtype=np.float32),
        labels[fit],
        np.asarray(features[val], dtype=np.float32),
        labels[val],
    )


def head_layers(units, dropout, batch_norm=True):
    """Flatten, (BatchNormalization: VGG16's middle-block outputs run into the hundreds), Dense, Dropout, Dense 10."""
    normalise = [layers.BatchNormalization()] if batch_norm else []
    return [
        layers.Flatten(),
        *normalise,
        layers.Dense(units, activation="relu"),
        layers.Dropout(dropout),
        layers.Dense(10, activation="softmax"),
    ]


def stack(input_shape, stages):
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for layer in stages:
        x = layer(x)
    return keras.Model(inputs, x)


def curves_file(args):
    out = MEASUREMENTS / args.out
    return out.with_name(out.stem + "-curves.jsonl")


def fit(model, data, args, epochs, learning_rate, name, offset=0.0):
    """Train; return the validation accuracy per epoch and the cumulative training seconds."""
    if not epochs:
        return [], offset
    x_fit, y_fit, x_val, y_val = data
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    log = EpochLog(curves_file(args), name, offset)
    history = model.fit(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=args.batch_size,
        verbose=2,
        callbacks=[log],
    )
    return history.history["val_accuracy"], log.offset


def head(args):
    keras.utils.set_random_seed(args.seed)
    data = cached_split(args)
    name = (
        f"head {args.method}{args.size} {args.cut} units {args.units} lr {args.lr:g}"
        f"{' no BN' if args.no_batch_norm else ''}"
    )
    model = stack(data[0].shape[1:], head_layers(args.units, args.dropout, not args.no_batch_norm))
    curve, seconds = fit(model, data, args, args.epochs, args.lr, name)
    record = {
        "command": "head",
        "variant": name,
        "size": args.size,
        "cut": args.cut,
        "method": args.method,
        "units": args.units,
        "dropout": args.dropout,
        "batch_norm": not args.no_batch_norm,
        "learning_rate": args.lr,
        "epochs": args.epochs,
        "seed": args.seed,
        "fit_images": len(data[1]),
        "val_images": len(data[3]),
        "best_val_accuracy": round(max(curve), 4),
        "final_val_accuracy": round(curve[-1], 4),
        "train_seconds": round(seconds, 1),
        "params": model.count_params(),
        **machine(),
    }
    print(json.dumps(record), flush=True)
    append(MEASUREMENTS / args.out, record)


def finetune(args):
    keras.utils.set_random_seed(args.seed)
    data = cached_split(args)
    name = (
        f"finetune {args.method}{args.size} {args.cut} -> {args.tune} units {args.units} "
        f"lr {args.head_lr:g}/{args.lr:g}{' head BN frozen' if args.freeze_head_bn else ''}"
    )
    tuned = blocks_after(args.size, args.cut, args.tune)
    top = head_layers(args.units, args.dropout, not args.no_batch_norm)
    model = stack(data[0].shape[1:], [*tuned, *top])
    for layer in tuned:
        layer.trainable = False
    head_curve, seconds = fit(model, data, args, args.head_epochs, args.head_lr, name + " (head)")
    for layer in tuned:
        layer.trainable = True
    if args.freeze_head_bn:  # the head's batch normalisation stays in inference mode, with its statistics so far
        for layer in top:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    tune_curve, seconds = fit(model, data, args, args.epochs, args.lr, name, offset=seconds)
    record = {
        "command": "finetune",
        "variant": name,
        "size": args.size,
        "cut": args.cut,
        "tune": args.tune,
        "method": args.method,
        "units": args.units,
        "dropout": args.dropout,
        "batch_norm": not args.no_batch_norm,
        "head_bn_frozen_in_fine_tuning": args.freeze_head_bn,
        "head_epochs": args.head_epochs,
        "head_learning_rate": args.head_lr,
        "epochs": args.epochs,
        "learning_rate": args.lr,
        "seed": args.seed,
        "fit_images": len(data[1]),
        "val_images": len(data[3]),
        "head_val_accuracy": round(max(head_curve), 4) if head_curve else None,
        "best_val_accuracy": round(max(tune_curve), 4),
        "final_val_accuracy": round(tune_curve[-1], 4),
        "train_seconds": round(seconds, 1),
        "params": model.count_params(),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        **machine(),
    }
    print(json.dumps(record), flush=True)
    append(MEASUREMENTS / args.out, record)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("cache", "head", "finetune"):
        p = sub.add_parser(command)
        p.add_argument("--size", type=int, default=32, help="VGG16's input size (28x28 images padded or resized)")
        p.add_argument("--cut", default="block3_pool", help="last frozen VGG16 layer, e.g. block3_pool")
        p.add_argument("--method", choices=("pad", "resize"), default="pad")
        p.add_argument("--limit", type=int, default=0, help="only the first N training images (trying out)")
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--out", default="lab3-search.jsonl")
        p.add_argument("--chunk", type=int, default=2048)
        p.add_argument("--val-size", type=int, default=6000)
        p.add_argument("--units", type=int, default=512)
        p.add_argument("--dropout", type=float, default=0.5)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--epochs", type=int, default=15 if command == "head" else 5)
        p.add_argument("--lr", type=float, default=1e-3 if command == "head" else 1e-4)
        p.add_argument("--tune", choices=BLOCKS, default="block4", help="last VGG16 block to fine-tune")
        p.add_argument("--head-epochs", type=int, default=3)
        p.add_argument("--head-lr", type=float, default=1e-3)
        p.add_argument("--no-batch-norm", action="store_true", help="no BatchNormalization at the head's input")
        p.add_argument(
            "--freeze-head-bn",
            action="store_true",
            help="fine-tuning: keep the head's BatchNormalization frozen (inference mode)",
        )
    args = parser.parse_args(argv)
    {"cache": cache, "head": head, "finetune": finetune}[args.command](args)


if __name__ == "__main__":
    main()
