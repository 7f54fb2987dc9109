"""The signature of a compiled model: what goes in, what comes out, and what it was built for.

The signature is embedded in every exported artifact (see ``accelc.artifact``), so a ``.so``
file alone says how to call it: input/output names, shapes and dtypes, the target and the
accelc version that built it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .errors import InputMismatchError

SIGNATURE_FORMAT = 1


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor. A ``None`` dimension is only known at run time (data-dependent)."""

    name: str
    shape: tuple[int | None, ...] | None  # None: rank unknown until run time
    dtype: str

    def to_json(self) -> dict:
        shape = None if self.shape is None else list(self.shape)
        return {"name": self.name, "shape": shape, "dtype": self.dtype}

    @staticmethod
    def from_json(d: dict) -> "TensorSpec":
        shape = None if d["shape"] is None else tuple(d["shape"])
        return TensorSpec(d["name"], shape, d["dtype"])

    def matches_shape(self, shape) -> bool:
        """True if ``shape`` fits; unknown dimensions (None) match any size."""
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape)
        )

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name}: {self.dtype}[...]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    target: dict = field(default_factory=dict)
    target_name: str = "llvm"
    accelc_version: str = ""
    opt_level: int = 3
    model: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": SIGNATURE_FORMAT,
                "accelc_version": self.accelc_version,
                "target_name": self.target_name,
                "target": self.target,
                "opt_level": self.opt_level,
                "model": self.model,
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs],
                "extra": self.extra,
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> "Signature":
        d = json.loads(text)
        if d.get("format") != SIGNATURE_FORMAT:
            raise ValueError(f"unknown signature format {d.get('format')!r}")
        return Signature(
            inputs=tuple(TensorSpec.from_json(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in d["outputs"]),
            target=d.get("target", {}),
            target_name=d.get("target_name", "llvm"),
            accelc_version=d.get("accelc_version", ""),
            opt_level=d.get("opt_level", 3),
            model=d.get("model", {}),
            extra=d.get("extra", {}),
        )

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Validate ``inputs`` against the signature; return them in call order.

        Every mismatch is a user error, so the message names the input and both sides.
        """
        unknown = sorted(set(inputs) - set(self.input_names))
        if unknown:
            raise InputMismatchError(
                f"unknown input {unknown[0]!r}; the model's inputs are {self.input_names}"
            )
        ordered = []
        for spec in self.inputs:
            if spec.name not in inputs:
                raise InputMismatchError(f"missing input {spec.name!r} ({spec.describe()})")
            value = np.asarray(inputs[spec.name])
            if str(value.dtype) != spec.dtype:
                raise InputMismatchError(
                    f"input {spec.name!r} has dtype {value.dtype}, expected {spec.dtype}"
                )
            if not spec.matches_shape(value.shape):
                raise InputMismatchError(
                    f"input {spec.name!r} has shape {list(value.shape)}, "
                    f"expected {list(spec.shape)}"
                )
            ordered.append(np.ascontiguousarray(value))
        return ordered
