"""Train the small CNN that `accelc demo` ships, and export it to ONNX by hand.

Why this exists: the demo needs a real trained model with real labelled data, small enough to
live in the package (accelc/data). scikit-learn's digits set (1,797 8x8 grayscale images,
10 classes) is such data and comes with a package the tests already use.

Run from the repository root (dev-only dependencies: torch, scikit-learn, onnxruntime):

    .venv/bin/python tools/train_digits.py

It writes, deterministically (fixed seeds, deterministic torch kernels, one thread):
  accelc/data/digits_cnn.onnx   opset 17, input `input` [N,1,8,8] float32 in [0,1],
                                output `logits` [N,10]; BatchNormalization nodes kept so that
                                the compiler's fusion passes have something to fold
  accelc/data/digits_test.npz   the held-out 20% split: `input`, `label` (int64)
  accelc/data/digits_calib.npz  200 training images (`input`) for int8 calibration

The graph is built with onnx.helper from the trained weights rather than torch.onnx.export,
which would pull in extra packages (onnxscript) for a graph this small.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
EPOCHS = 40
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
CALIB_SAMPLES = 200
OPSET = 17
DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "accelc" / "data"


def load_splits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as NCHW float32 in [0,1] (pixels are 0..16), split 80/20 stratified, seed 0."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=SEED)


def build_network() -> nn.Sequential:
    """The shipped architecture; export_onnx mirrors it layer by layer, keep them in step."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def train(net: nn.Sequential, images: np.ndarray, labels: np.ndarray) -> None:
    """Adam with cosine decay; the seeded generator fixes the batch order."""
    inputs, targets = torch.from_numpy(images), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    generator = torch.Generator().manual_seed(SEED)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(inputs), generator=generator).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss_fn(net(inputs[batch]), targets[batch]).backward()
            optimizer.step()
        scheduler.step()
    net.eval()


def export_onnx(net: nn.Sequential) -> onnx.ModelProto:
    """Write the eval-mode network as an ONNX graph with a symbolic batch dimension `N`."""
    conv1, bn1, _, conv2, bn2, _, _, conv3, _, _, fc = net
    initializers: list[TensorProto] = []

    def const(name: str, tensor: torch.Tensor) -> str:
        initializers.append(numpy_helper.from_array(tensor.detach().numpy().astype(np.float32), name))
        return name

    def conv(name: str, x: str, layer: nn.Conv2d) -> onnx.NodeProto:
        weight, bias = const(f"{name}.weight", layer.weight), const(f"{name}.bias", layer.bias)
        return helper.make_node("Conv", [x, weight, bias], [name], name=name,
                                kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    def batch_norm(name: str, x: str, layer: nn.BatchNorm2d) -> onnx.NodeProto:
        params = [const(f"{name}.scale", layer.weight), const(f"{name}.bias", layer.bias),
                  const(f"{name}.mean", layer.running_mean), const(f"{name}.var", layer.running_var)]
        return helper.make_node("BatchNormalization", [x, *params], [name], name=name,
                                epsilon=layer.eps)

    def relu(name: str, x: str) -> onnx.NodeProto:
        return helper.make_node("Relu", [x], [name], name=name)

    nodes = [
        conv("conv1", "input", conv1), batch_norm("bn1", "conv1", bn1), relu("relu1", "bn1"),
        conv("conv2", "relu1", conv2), batch_norm("bn2", "conv2", bn2), relu("relu2", "bn2"),
        helper.make_node("MaxPool", ["relu2"], ["pool"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        conv("conv3", "pool", conv3), relu("relu3", "conv3"),
        helper.make_node("Flatten", ["relu3"], ["flat"], name="flat", axis=1),
        helper.make_node("Gemm", ["flat", const("fc.weight", fc.weight), const("fc.bias", fc.bias)],
                         ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="accelc tools/train_digits.py")
    model.ir_version = 8  # opset 17's IR version: readable by older onnxruntime too
    onnx.checker.check_model(model, full_check=True)
    return model


def run_onnx(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """Logits of the exported graph: the numbers reported are those of the shipped file."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": images})
    return logits


def check_export(net: nn.Sequential, model: onnx.ModelProto, images: np.ndarray) -> None:
    """A hand-built graph can silently disagree with the network: compare their logits."""
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(run_onnx(model, images), torch_logits, rtol=1e-4, atol=1e-4)


def top1_percent(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray) -> float:
    return float(100.0 * np.mean(run_onnx(model, images).argmax(axis=1) == labels))


def main() -> None:
    torch.manual_seed(SEED)
    # One thread: results do not depend on the core count, and on a busy 2-core machine
    # two spinning OpenMP threads made training 10-20x slower (150-260 s against 14 s).
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    train_x, test_x, train_y, test_y = load_splits()

    start = time.perf_counter()
    net = build_network()
    train(net, train_x, train_y)
    train_seconds = time.perf_counter() - start

    model = export_onnx(net)
    check_export(net, model, test_x)
    train_acc = top1_percent(model, train_x, train_y)
    test_acc = top1_percent(model, test_x, test_y)
    helper.set_model_props(model, {
        "train_accuracy": f"{train_acc:.2f}",
        "test_accuracy": f"{test_acc:.2f}",
        "dataset": "sklearn.datasets.load_digits, 80/20 stratified split, random_state=0",
    })

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    onnx.save(model, DATA_DIR / "digits_cnn.onnx")
    np.savez_compressed(DATA_DIR / "digits_test.npz", input=test_x, label=test_y)
    np.savez_compressed(DATA_DIR / "digits_calib.npz", input=train_x[:CALIB_SAMPLES])

    params = sum(p.numel() for p in net.parameters())
    print(f"parameters: {params}, model file: {(DATA_DIR / 'digits_cnn.onnx').stat().st_size} bytes")
    print(f"training: {train_seconds:.1f} s, train accuracy {train_acc:.2f}%, "
          f"test accuracy {test_acc:.2f}% ({len(test_y)} images)")


if __name__ == "__main__":
    main()
