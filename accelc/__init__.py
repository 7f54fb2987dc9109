"""accelc: a graph optimizer and compiler for deep-learning models, built on Apache TVM."""

__version__ = "0.1.0"

from .api import CompiledModel, compile, load  # noqa: E402
from .errors import AccelcError  # noqa: E402

__all__ = ["AccelcError", "CompiledModel", "compile", "load", "__version__"]
