"""Shared test setup: `import zoo` (the reference-side helpers) from any test directory."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
