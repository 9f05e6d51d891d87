"""Calibration of the grader's brief retraining (coursekit.checks.brief_retraining) for Labs 1, 2 and 3.

The retraining check must tell a network that learns from one that cannot. This script runs the
grader's own recipe (course_config.LAB1 / LAB2) on a family of honest architectures, written the
ways students write them (functional and Sequential, with and without batch norm, Keras's default
batch-norm momentum, strided convolutions with global average pooling, wider, narrower, other
activations, separable convolutions, ...), and on architectures that cannot learn; it prints the
table and writes it as JSON (docs/measurements/). Each lab's bar in course_config.py sits between
the lowest honest and the highest non-learning score, with a margin. For Lab 3 the family is one of
classifier heads, retrained by coursekit.vgg16.head_retraining on the grader's VGG16 features.

    PYTHONPATH=. .venv/bin/python benchmarks/retraining_calibration.py --labs lab1_dense lab2_cnn --seeds 0 1

The machine is usually shared: the JSON records the load average before and after each run.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import course_config  # noqa: E402


def _lab1_architectures():
    import keras
    from keras import layers

    def head(x):
        return layers.Dense(10, activation="softmax")(x)

    def reference(momentum=0.99):  # the source notebook's build_dense_model (Keras's default momentum)
        inputs = keras.Input((28, 28))
        x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
        x = layers.Dropout(0.1)(x)
        for units in (1024, 512, 256):
            x = layers.Dense(units, use_bias=False)(x)
            x = layers.BatchNormalization(momentum=momentum)(x)
            x = layers.Activation("relu")(x)
            x = layers.Dropout(0.3)(x)
        return keras.Model(inputs, head(x))

    def sequential(units=(512, 256, 128), activation="relu", rate=0.3, initializer="glorot_uniform"):
        model = keras.Sequential([keras.Input((28, 28)), layers.Rescaling(1 / 255), layers.Flatten()])
        for count in units:
            model.add(layers.Dense(count, activation=activation, kernel_initializer=initializer))
            model.add(layers.Dropout(rate))
        model.add(layers.Dense(10, activation="softmax"))
        return model

    def bn_after_activation():
        model = keras.Sequential([keras.Input((28, 28)), layers.Flatten(), layers.Rescaling(1 / 255)])
        for count in (512, 256, 128):
            model.add(layers.Dense(count, activation="relu"))
            model.add(layers.BatchNormalization())
            model.add(layers.Dropout(0.2))
        model.add(layers.Dense(10, activation="softmax"))
        return model

    def leaky():
        inputs = keras.Input((28, 28))
        x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
        for units in (256, 256, 128):
            x = layers.Dropout(0.25)(layers.LeakyReLU(0.1)(layers.Dense(units)(x)))
        return keras.Model(inputs, head(x))

    def deep_bn():
        inputs = keras.Input((28, 28))
        x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
        for _ in range(5):
            x = layers.Dropout(0.2)(layers.ReLU()(layers.BatchNormalization()(layers.Dense(256)(x))))
        return keras.Model(inputs, head(x))

    def zero_kernels():  # coursekit.submissions.DENSE_THAT_CANNOT_LEARN
        model = keras.Sequential([keras.Input((28, 28)), layers.Rescaling(1 / 255), layers.Flatten()])
        for units in (512, 256, 128):
            model.add(layers.Dense(units, activation="relu", kernel_initializer="zeros"))
            model.add(layers.Dropout(0.3))
        model.add(layers.Dense(10, activation="softmax", kernel_initializer="zeros"))
        return model

    def dead_relu_bias():  # every hidden ReLU starts far below zero: no unit ever fires
        model = keras.Sequential([keras.Input((28, 28)), layers.Rescaling(1 / 255), layers.Flatten()])
        for units in (512, 256, 128):
            model.add(layers.Dense(units, activation="relu", bias_initializer=keras.initializers.Constant(-100.0)))
        model.add(layers.Dense(10, activation="softmax"))
        return model

    def zero_tanh():
        model = keras.Sequential([keras.Input((28, 28)), layers.Rescaling(1 / 255), layers.Flatten()])
        for units in (256, 128, 64):
            model.add(layers.Dense(units, activation="tanh", kernel_initializer="zeros"))
        model.add(layers.Dense(10, activation="softmax", kernel_initializer="zeros"))
        return model

    honest = {
        "reference (BN momentum 0.99, Keras default)": reference,
        "reference with BN momentum 0.9": lambda: reference(0.9),
        "Sequential 512-256-128 ReLU, dropout 0.3, no BN": sequential,
        "Sequential, BN after the activation": bn_after_activation,
        "ELU, he_normal": lambda: sequential(activation="elu", initializer="he_normal"),
        "LeakyReLU layers, functional": leaky,
        "tanh": lambda: sequential(activation="tanh"),
        "wide 2048-1024-512, dropout 0.5": lambda: sequential((2048, 1024, 512), rate=0.5),
        "narrow 128-64-32": lambda: sequential((128, 64, 32), rate=0.1),
        "deep: 5 x (Dense 256, BN, ReLU, dropout)": deep_bn,
    }
    non_learning = {
        "zero-initialised kernels (ReLU)": zero_kernels,
        "dead ReLUs (bias -100)": dead_relu_bias,
        "zero-initialised kernels (tanh)": zero_tanh,
    }
    return honest, non_learning


def _lab2_architectures():
    import keras
    from keras import layers

    def stem(inputs, augment=""):
        x = layers.Rescaling(1 / 255)(layers.Reshape((28, 28, 1))(inputs))
        if augment == "shifts and flips":  # the source notebook's build_augmentation()
            shift = 2 / 28
            steps = [
                layers.RandomFlip("horizontal"),
                layers.RandomTranslation(shift, shift, fill_mode="constant", interpolation="nearest"),
            ]
            x = keras.Sequential(steps)(x)
        elif augment == "translation, zoom, contrast":  # the notebook's augmentation before 2026-12-01
            steps = [
                layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
                layers.RandomZoom(0.1, fill_mode="constant"),
                layers.RandomContrast(0.1),
            ]
            x = keras.Sequential(steps)(x)
        return x

    def reference(momentum=0.9, filters=(32, 64), augment="shifts and flips"):  # the notebook's build_cnn_model
        inputs = keras.Input((28, 28))
        x = stem(inputs, augment=augment)
        for count in filters:
            for _ in (1, 2):
                x = layers.Conv2D(count, 3, padding="same", use_bias=False)(x)
                x = layers.Activation("relu")(layers.BatchNormalization(momentum=momentum)(x))
            x = layers.Dropout(0.25)(layers.MaxPooling2D()(x))
        x = layers.Flatten()(x)
        x = layers.Dense(256, use_bias=False)(x)
        x = layers.Activation("relu")(layers.BatchNormalization(momentum=momentum)(x))
        x = layers.Dropout(0.5)(x)
        return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))

    def no_bn(filters=(32, 64), conv=layers.Conv2D, activation="relu"):
        inputs = keras.Input((28, 28))
        x = stem(inputs)
        for count in filters:
            x = conv(count, 3, padding="same", activation=activation)(x)
            x = conv(count, 3, padding="same", activation=activation)(x)
            x = layers.Dropout(0.25)(layers.MaxPooling2D()(x))
        x = layers.Dropout(0.5)(layers.Dense(128, activation=activation)(layers.Flatten()(x)))
        return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))

    def strided_gap():  # strided convolutions instead of pooling, global average pooling head
        inputs = keras.Input((28, 28))
        x = stem(inputs)
        for count in (32, 64, 128):
            x = layers.Conv2D(count, 3, padding="same", use_bias=False)(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
            x = layers.Conv2D(count, 3, strides=2, padding="same", use_bias=False)(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))

    def lenet_sequential():
        return keras.Sequential(
            [
                keras.Input((28, 28)),
                layers.Reshape((28, 28, 1)),
                layers.Rescaling(1 / 255),
                layers.Conv2D(32, 5, activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(64, 5, activation="relu"),
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dense(128, activation="relu"),
                layers.Dropout(0.3),
                layers.Dense(10, activation="softmax"),
            ]
        )

    def leaky_bn_after():
        model = keras.Sequential([keras.Input((28, 28)), layers.Reshape((28, 28, 1)), layers.Rescaling(1 / 255)])
        for count in (32, 64):
            model.add(layers.Conv2D(count, 3, padding="same"))
            model.add(layers.LeakyReLU(0.1))
            model.add(layers.BatchNormalization())
            model.add(layers.MaxPooling2D())
        model.add(layers.Flatten())
        model.add(layers.Dense(128, activation="elu"))
        model.add(layers.Dense(10, activation="softmax"))
        return model

    def zero_kernels():  # coursekit.submissions.CNN_THAT_CANNOT_LEARN
        inputs = keras.Input((28, 28))
        x = stem(inputs)
        for count in (32, 64):
            x = layers.MaxPooling2D()(
                layers.Conv2D(count, 3, padding="same", activation="relu", kernel_initializer="zeros")(x)
            )
        x = layers.Dense(256, activation="relu", kernel_initializer="zeros")(layers.Flatten()(x))
        return keras.Model(inputs, layers.Dense(10, activation="softmax", kernel_initializer="zeros")(x))

    def dead_relu_bias():
        inputs = keras.Input((28, 28))
        x = stem(inputs)
        dead = keras.initializers.Constant(-100.0)
        for count in (32, 64):
            x = layers.MaxPooling2D()(
                layers.Conv2D(count, 3, padding="same", activation="relu", bias_initializer=dead)(x)
            )
        x = layers.Dense(128, activation="relu", bias_initializer=dead)(layers.Flatten()(x))
        return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))

    def zero_tanh():
        inputs = keras.Input((28, 28))
        x = stem(inputs)
        for count in (16, 32):
            x = layers.MaxPooling2D()(
                layers.Conv2D(count, 3, padding="same", activation="tanh", kernel_initializer="zeros")(x)
            )
        x = layers.Dense(64, activation="tanh", kernel_initializer="zeros")(layers.Flatten()(x))
        return keras.Model(inputs, layers.Dense(10, activation="softmax", kernel_initializer="zeros")(x))

    honest = {
        "reference (BN momentum 0.9, shifts and flips)": reference,
        "reference with Keras's default BN momentum 0.99": lambda: reference(0.99),
        "reference with translation, zoom and contrast": lambda: reference(augment="translation, zoom, contrast"),
        "no BN: 2 x (Conv, Conv, MaxPool, Dropout), Dense 128": no_bn,
        "strided convolutions + GlobalAveragePooling, BN 0.99": strided_gap,
        "wider 64/128 filters (reference)": lambda: reference(filters=(64, 128)),
        "narrower 16/32 filters, no BN": lambda: no_bn((16, 32)),
        "SeparableConv2D, no BN": lambda: no_bn(conv=layers.SeparableConv2D),
        "ELU, no BN": lambda: no_bn(activation="elu"),
        "LeNet-like Sequential, 5x5 valid convolutions": lenet_sequential,
        "Sequential, LeakyReLU then BN, ELU dense": leaky_bn_after,
    }
    non_learning = {
        "zero-initialised kernels (ReLU)": zero_kernels,
        "dead ReLUs (bias -100)": dead_relu_bias,
        "zero-initialised kernels (tanh)": zero_tanh,
    }
    return honest, non_learning


def _lab3_architectures():
    """Classifier heads on the grader's VGG16 features (LAB3.feature_layer), as students write them."""
    import keras
    from keras import layers

    from coursekit.vgg16 import imagenet_features_model

    lab = course_config.LAB3
    shape = tuple(imagenet_features_model(lab.feature_layer, lab.feature_image_size).output_shape[1:])

    def sequential(*stack):
        return keras.Sequential([keras.Input(shape), *stack, layers.Dense(10, activation="softmax")])

    def reference(units=256, batch_norm=True):  # the source notebook's build_classifier_head
        normalise = [layers.BatchNormalization()] if batch_norm else []
        return sequential(layers.Flatten(), *normalise, layers.Dense(units, activation="relu"), layers.Dropout(0.5))

    def functional_bn_before_activation():
        inputs = keras.Input(shape)
        x = layers.Dense(256, use_bias=False)(layers.Flatten()(inputs))
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
        return keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Dropout(0.3)(x)))

    def dead(output_initializer="glorot_uniform", **kwargs):
        return keras.Sequential(
            [
                keras.Input(shape),
                layers.Flatten(),
                layers.BatchNormalization(),
                layers.Dense(256, **kwargs),
                layers.Dropout(0.5),
                layers.Dense(10, activation="softmax", kernel_initializer=output_initializer),
            ]
        )

    honest = {
        "reference: Flatten, BN, Dense 256, Dropout 0.5": reference,
        "no BN: Flatten, Dense 256, Dropout 0.5 (the keras.io head)": lambda: reference(batch_norm=False),
        "wider: Flatten, BN, Dense 1024": lambda: reference(1024),
        "GlobalAveragePooling2D, Dense 256": lambda: sequential(
            layers.GlobalAveragePooling2D(), layers.Dense(256, activation="relu")
        ),
        "GlobalAveragePooling2D, BN, Dense 128": lambda: sequential(
            layers.GlobalAveragePooling2D(), layers.BatchNormalization(), layers.Dense(128, activation="relu")
        ),
        "two hidden layers 512/128 with BN": lambda: sequential(
            layers.Flatten(),
            layers.BatchNormalization(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(128, activation="relu"),
        ),
        "functional, Dense without bias, BN before ReLU": functional_bn_before_activation,
        "LayerNormalization, Dense 256": lambda: sequential(
            layers.Flatten(), layers.LayerNormalization(), layers.Dense(256, activation="relu")
        ),
        "Rescaling(1/100), Dense 256 ELU": lambda: sequential(
            layers.Flatten(), layers.Rescaling(0.01), layers.Dense(256, activation="elu")
        ),
    }
    below_zero = keras.initializers.Constant(-100.0)
    non_learning = {
        "zero-initialised kernels (ReLU)": lambda: dead(activation="relu", kernel_initializer="zeros"),
        "dead ReLUs (bias -100)": lambda: dead(activation="relu", bias_initializer=below_zero),
        "zero-initialised kernels (tanh), output too": lambda: dead(
            "zeros", activation="tanh", kernel_initializer="zeros"
        ),
    }
    return honest, non_learning


ARCHITECTURES = {"lab1_dense": _lab1_architectures, "lab2_cnn": _lab2_architectures, "lab3_vgg16": _lab3_architectures}


def calibrate(assignment, seeds, data, overrides=None):
    from coursekit.checks import lab_retraining

    settings = course_config.lab_settings(assignment)
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    honest, non_learning = ARCHITECTURES[assignment]()
    rows = []
    for kind, family in (("honest", honest), ("non-learning", non_learning)):
        for name, build in family.items():
            scores, seconds = [], []
            load_before = os.getloadavg()[0]
            for seed in seeds:
                started = time.time()
                scores.append(round(lab_retraining(build(), data, settings, seed), 4))
                seconds.append(round(time.time() - started, 1))
            rows.append(
                {
                    "architecture": name,
                    "kind": kind,
                    "seeds": list(seeds),
                    "test_accuracy": scores,
                    "min": min(scores),
                    "seconds": seconds,
                    "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                }
            )
            print(f"{assignment:10s} {kind:12s} {name:55s} {scores} {seconds} s", flush=True)
    lowest_honest = min(row["min"] for row in rows if row["kind"] == "honest")
    highest_dead = max(max(row["test_accuracy"]) for row in rows if row["kind"] == "non-learning")
    return {
        "recipe": {
            "train_size": settings.retrain_train_size,
            "epochs": settings.retrain_epochs,
            "batch_size": settings.retrain_batch_size,
            "learning_rate": settings.retrain_learning_rate,
            "batch_norm_statistics_images": settings.retrain_bn_images,
            "fresh_weights": "coursekit.checks.fresh_model (all layers trainable, standard initializers)",
        },
        "bar": settings.retrain_min_accuracy,
        "lowest_honest": lowest_honest,
        "highest_non_learning": highest_dead,
        "architectures": rows,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", nargs="+", default=["lab1_dense", "lab2_cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, help="try another epoch count (default: the lab's)")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument(
        "--record-from",
        type=Path,
        metavar="JSON",
        help="record the labs of an earlier run's --out file into results.json, without running anything",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="also write each lab's calibration into reference_solution/LAB/results.json "
        "(grader_retraining_calibration), where tests/test_retraining.py checks the bar against it",
    )
    args = parser.parse_args(argv)
    if args.record_from:
        run = json.loads(args.record_from.read_text(encoding="utf-8"))
        for assignment, lab in run["labs"].items():
            record(assignment, lab, run, args.record_from)
        return

    import keras
    import tensorflow as tf

    from coursekit.data import load_fashion_mnist

    data = load_fashion_mnist()
    started = time.time()
    result = {
        "script": "benchmarks/retraining_calibration.py",
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hardware": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU; "
        "shared with other jobs (load averages per architecture)",
        "keras_backend": keras.backend.backend(),
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__, "python": platform.python_version()},
        "labs": {},
    }
    for assignment in args.labs:
        overrides = {"retrain_epochs": args.epochs} if args.epochs else None
        result["labs"][assignment] = calibrate(assignment, args.seeds, data, overrides)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    result["seconds"] = round(time.time() - started)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for assignment, lab in result["labs"].items():
        print(
            f"{assignment}: lowest honest {lab['lowest_honest']}, highest non-learning "
            f"{lab['highest_non_learning']}, bar {lab['bar']}"
        )
        if args.record and not args.epochs:
            record(assignment, lab, result, args.out)


def record(assignment, calibration, run, out):
    """Put one lab's calibration into its reference results.json, beside the reference runs."""
    path = course_config.REFERENCE_DIR / assignment / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    entry = {key: value for key, value in calibration.items() if key != "bar"}
    entry.update(
        bar_at_measurement=calibration["bar"],
        bar_set=course_config.lab_settings(assignment).retrain_min_accuracy,
        source=str(out.resolve().relative_to(course_config.ROOT)) if out else None,
        script=run["script"],
        command=run["command"],
        hardware=run["hardware"],
        keras_backend=run["keras_backend"],
        versions=run["versions"],
        measured=run["started"],
    )
    results["grader_retraining_calibration"] = entry
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"recorded in {path.relative_to(course_config.ROOT)}")


if __name__ == "__main__":
    main()
