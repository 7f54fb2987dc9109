"""accelc: a graph optimizer and compiler for deep-learning models, built on Apache TVM."""

__version__ = "0.1.0"
