"""The grader's brief retraining starts from fresh, trainable weights and does not depend on batch-norm momentum."""

import dataclasses
import json

import numpy as np
import pytest

import course_config
from coursekit.checks import (
    brief_retraining,
    fresh_config,
    fresh_model,
    recompute_batch_norm_statistics,
)

keras = pytest.importorskip("keras")
layers = keras.layers


@pytest.fixture(scope="module")
def small_data():
    from coursekit.data import load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    return (x_train[:6000], y_train[:6000]), (x_test[:2000], y_test[:2000])


def dense(kernel=None, bias=None, trainable=True, units=64):
    """A small dense network; with ``kernel``/``bias`` its layers are initialised to those arrays."""

    def init(values, default):
        return keras.initializers.Constant(values) if values is not None else default

    kernels = kernel or [None, None]
    biases = bias or [None, None]
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            layers.Rescaling(1 / 255),
            layers.Flatten(),
            layers.Dense(
                units,
                activation="relu",
                kernel_initializer=init(kernels[0], "glorot_uniform"),
                bias_initializer=init(biases[0], "zeros"),
                trainable=trainable,
            ),
            layers.Dense(
                10,
                activation="softmax",
                kernel_initializer=init(kernels[1], "glorot_uniform"),
                bias_initializer=init(biases[1], "zeros"),
                trainable=trainable,
            ),
        ]
    )


def test_fresh_config_makes_layers_trainable_and_drops_trained_arrays():
    model = dense(kernel=[np.ones((784, 64)), np.ones((64, 10))], trainable=False)
    model.trainable = False
    config = fresh_config(json.loads(model.to_json()))
    text = json.dumps(config)
    assert '"trainable": false' not in text
    assert "Constant" not in text and "GlorotUniform" in text
    # Standard initializers stay as the student wrote them, zeros included (a network that cannot learn).
    zero = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(3, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(0.1)),
        ]
    )
    kept = json.dumps(fresh_config(json.loads(zero.to_json())))
    assert "Zeros" in kept and '"value": 0.1' in kept


def test_frozen_layers_with_trained_weights_are_retrained_from_fresh_weights(small_data):
    (x_train, y_train), (x_test, y_test) = small_data
    keras.utils.set_random_seed(0)
    trained = dense()
    trained.compile("adam", "sparse_categorical_crossentropy")
    trained.fit(x_train.astype("float32"), y_train, epochs=2, batch_size=128, verbose=0)
    kernels = [layer.get_weights()[0] for layer in trained.layers if layer.weights]
    biases = [layer.get_weights()[1] for layer in trained.layers if layer.weights]
    trick = dense(kernels, biases, trainable=False)  # what the build function returned
    as_built = np.mean(trick.predict(x_test, verbose=0).argmax(-1) == y_test)
    assert as_built > 0.7  # the trained network, frozen

    fresh = fresh_model(trick, seed=1)
    assert all(layer.trainable for layer in fresh.layers)
    assert len(fresh.trainable_weights) == len(fresh.weights) == 4
    assert not np.allclose(fresh.layers[-2].get_weights()[0] if len(fresh.layers[-2].weights) else 0, kernels[0])
    assert np.mean(fresh.predict(x_test, verbose=0).argmax(-1) == y_test) < 0.4

    # With no training step at all, the grader's score is that of fresh weights, not of the trained ones.
    untrained = dataclasses.replace(course_config.LAB1, retrain_train_size=100, retrain_epochs=0)
    assert brief_retraining(trick, small_data, untrained, seed=1) < 0.4


def bn_net(momentum):
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            layers.Rescaling(1 / 255),
            layers.Flatten(),
            layers.Dense(32, use_bias=False),
            layers.BatchNormalization(momentum=momentum),
            layers.ReLU(),
            layers.Dense(10, activation="softmax"),
        ]
    )


def test_batch_norm_statistics_are_recomputed_on_grader_data(small_data):
    (x_train, _), _ = small_data
    keras.utils.set_random_seed(0)
    model = bn_net(0.99)
    images = x_train[:512].astype("float32")
    assert recompute_batch_norm_statistics(model, images) == 1
    bn = model.layers[3]
    hidden = np.asarray(keras.Sequential(model.layers[:3])(images))
    assert np.allclose(bn.moving_mean.numpy(), np.mean(hidden, axis=0), atol=1e-4)
    assert np.allclose(bn.moving_variance.numpy(), np.var(hidden, axis=0), rtol=1e-3, atol=1e-4)
    assert bn.momentum == 0.99  # the student's setting is left as it was


def test_retraining_score_does_not_depend_on_batch_norm_momentum(small_data):
    recipe = dataclasses.replace(course_config.LAB1, retrain_train_size=2000, retrain_epochs=1)
    scores = [brief_retraining(bn_net(momentum), small_data, recipe, seed=3) for momentum in (0.99, 0.9, 0.5)]
    assert max(scores) - min(scores) < 1e-6, scores
    assert min(scores) > 0.6


def test_calibration_is_recorded_and_the_bars_sit_between_honest_and_non_learning():
    for lab in course_config.LABS:
        results = json.loads((course_config.REFERENCE_DIR / lab.assignment / "results.json").read_text())
        calibration = results["grader_retraining_calibration"]
        honest = [row for row in calibration["architectures"] if row["kind"] == "honest"]
        dead = [row for row in calibration["architectures"] if row["kind"] == "non-learning"]
        assert len(honest) >= 8 and len(dead) >= 2
        assert calibration["bar_set"] == lab.retrain_min_accuracy
        assert max(max(row["test_accuracy"]) for row in dead) + 0.2 < lab.retrain_min_accuracy
        assert lab.retrain_min_accuracy + 0.1 < min(row["min"] for row in honest)


def _head(*stack, output_initializer="glorot_uniform"):
    lab = course_config.LAB3
    from coursekit.vgg16 import imagenet_features_model

    shape = imagenet_features_model(lab.feature_layer, lab.feature_image_size).output_shape[1:]
    return keras.Sequential(
        [
            keras.Input(shape),
            layers.Flatten(),
            *stack,
            layers.Dense(10, activation="softmax", kernel_initializer=output_initializer),
        ]
    )


@pytest.mark.parametrize(
    "name, head, learns",
    [
        (
            "the notebook's head (BN after Flatten)",
            lambda: _head(layers.BatchNormalization(), layers.Dense(256, activation="relu"), layers.Dropout(0.5)),
            True,
        ),
        (
            "the keras.io head, no normalisation",
            lambda: _head(layers.Dense(256, activation="relu"), layers.Dropout(0.5)),
            True,
        ),
        (
            "zero-initialised kernels",
            lambda: _head(layers.Dense(256, activation="relu", kernel_initializer="zeros"), output_initializer="zeros"),
            False,
        ),
    ],
)
def test_lab3_head_retraining_does_not_depend_on_the_scale_of_vgg16_features(name, head, learns):
    """VGG16's block-4 outputs run into the hundreds; a head that does not normalise them still learns."""
    from coursekit.data import WeightsNotFoundError, load_fashion_mnist
    from coursekit.vgg16 import head_retraining

    settings = dataclasses.replace(course_config.LAB3, retrain_train_size=2000, retrain_test_size=1000)
    try:
        score = head_retraining(head(), load_fashion_mnist(), settings, seed=0)
    except WeightsNotFoundError:
        pytest.skip("no local copy of VGG16's ImageNet weights")
    assert (score >= settings.retrain_min_accuracy) if learns else (score <= 0.2), (name, score)
