"""User-facing errors.

Every error a user can cause (a bad file, an unsupported op, a wrong input) is an
``AccelcError``. The CLI prints it as one line ``error: ...`` and exits with code 2; anything
else that escapes is a bug in accelc and keeps its traceback.
"""


class AccelcError(Exception):
    """An error caused by the user's input, reported as one line."""


class ModelLoadError(AccelcError):
    """The model file is missing, unreadable, truncated or not ONNX."""


class UnsupportedOpsError(AccelcError):
    """The model uses ops the ONNX importer cannot convert.

    ``ops`` maps each unsupported op type to the names of the nodes that use it, so a user
    sees every problem at once instead of fixing them one import at a time.
    """

    def __init__(self, ops: dict[str, list[str]]):
        self.ops = ops
        parts = []
        for op_type, nodes in sorted(ops.items()):
            shown = ", ".join(repr(n) for n in nodes[:3]) + (", ..." if len(nodes) > 3 else "")
            parts.append(f"{op_type} x{len(nodes)} (nodes {shown})")
        super().__init__(f"unsupported ONNX ops: {'; '.join(parts)}")


class ShapeError(AccelcError):
    """A dynamic dimension without ``--input-shape``, or a malformed shape."""


class InputMismatchError(AccelcError):
    """Inputs given at run time do not match the artifact's signature."""


class TargetError(AccelcError):
    """An unknown target, a bad target option, or an artifact this host cannot run."""


class ArtifactError(AccelcError):
    """A file that is not an accelc artifact, or a damaged one."""


class InternalCompilerError(AccelcError):
    """A valid model that accelc (or TVM under it) failed to compile: a bug to report.

    It is an ``AccelcError`` so that the CLI prints one line instead of a traceback
    (``--verbose`` shows it); tests treat it as a failure, never as a clean refusal.
    """
