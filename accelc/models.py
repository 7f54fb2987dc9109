"""The embedded default model: a small CNN trained on scikit-learn's digits (8x8, 10 classes).

Why it ships: `accelc demo` must compile and check a real trained model without a download.
Its files live in accelc/data and are written by tools/train_digits.py.
"""

from __future__ import annotations

import pathlib

import numpy as np

DEFAULT_MODEL = "digits_cnn"
DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
# The demo compiles for deployment-style batch 1; the ONNX file keeps the batch symbolic.
DEFAULT_INPUT_SHAPE = {"input": [1, 1, 8, 8]}


def default_model_path() -> pathlib.Path:
    """The ONNX file: input `input` [N,1,8,8] float32 in [0,1], output `logits` [N,10]."""
    return DATA_DIR / f"{DEFAULT_MODEL}.onnx"


def load_digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The held-out test split (never trained on): inputs [N,1,8,8] float32, labels [N] int64."""
    with np.load(DATA_DIR / "digits_test.npz") as data:
        return data["input"], data["label"]


def load_digits_calib() -> dict[str, np.ndarray]:
    """Training images for int8 calibration, keyed by the model's input name."""
    with np.load(DATA_DIR / "digits_calib.npz") as data:
        return {"input": data["input"]}


def accuracy(logits: np.ndarray, labels) -> float:
    """Top-1 accuracy in percent: the share of rows whose largest logit is the label."""
    labels = np.asarray(labels)
    return float(100.0 * np.mean(np.argmax(logits, axis=1) == labels))


# The second shipped model: a residual CNN trained on MNIST (tools/train_mnist.py), the int8
# accuracy acceptance's harder case (28x28, a residual add, a 2,000-image held-out test set).
MNIST_MODEL = "mnist_cnn"
MNIST_INPUT_SHAPE = {"input": [1, 1, 28, 28]}


def mnist_model_path() -> pathlib.Path:
    """The ONNX file: input `input` [N,1,28,28] float32 in [0,1], output `logits` [N,10]."""
    return DATA_DIR / f"{MNIST_MODEL}.onnx"


def load_mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """2,000 images of MNIST's official test set (never trained on): inputs [N,1,28,28]
    float32 in [0,1], labels [N] int64. Stored as uint8 pixels to keep the file small."""
    with np.load(DATA_DIR / "mnist_test.npz") as data:
        return (data["image"].astype(np.float32) / 255.0)[:, None], data["label"]


def load_mnist_calib() -> dict[str, np.ndarray]:
    """200 MNIST training images for int8 calibration, keyed by the model's input name."""
    with np.load(DATA_DIR / "mnist_calib.npz") as data:
        return {"input": data["input"]}
