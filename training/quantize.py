"""The network member: a small Keras MLP, converted to TFLite with full int8 quantization.

Weights and activations are int8 (calibrated on a sample of the training rows); input and output
stay float32 so the serving code feeds the design matrix as is. TensorFlow is needed only here:
serving runs the .tflite file on the LiteRT interpreter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class NetworkResult:
    tflite_int8: bytes
    predict_float: Callable[[np.ndarray], np.ndarray]  # the Keras model before quantization
    epochs_run: int


def train_quantized_network(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    epochs: int,
    seed: int,
) -> NetworkResult:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # best effort: determinism is nice to have, not required
        pass
    n_features = X_train.shape[1]
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(n_features,), dtype="float32"),
            tf.keras.layers.Dense(256, activation="relu"),
            tf.keras.layers.Dropout(0.1),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stop = tf.keras.callbacks.EarlyStopping(
        patience=5, restore_best_weights=True, monitor="val_loss"
    )
    history = model.fit(
        X_train.astype(np.float32),
        y_train,
        validation_data=(X_val.astype(np.float32), y_val),
        epochs=epochs,
        batch_size=256,
        callbacks=[stop],
        verbose=0,
    )

    rng = np.random.default_rng(seed)
    calibration = X_train[rng.choice(len(X_train), size=min(1000, len(X_train)), replace=False)]

    def representative_data():
        for row in calibration:
            yield [row.reshape(1, -1).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_data
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    tflite_bytes = converter.convert()

    def predict_float(X: np.ndarray) -> np.ndarray:
        return model.predict(X.astype(np.float32), batch_size=4096, verbose=0).astype(np.float64)

    return NetworkResult(tflite_bytes, predict_float, len(history.history["loss"]))
