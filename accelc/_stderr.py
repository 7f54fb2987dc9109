"""Filter TVM's native stderr chatter.

TVM 0.27's VM executable logs a ``Warning: Scope Saving:`` / ``Scope Loaded:`` line per
constant when an executable is exported or loaded (hundreds for a real model). They carry no
information for users, and C++ logging cannot be silenced from Python, so the file
descriptor is captured around those calls and every other line is passed through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

_NOISE = re.compile(r"executable\.cc:\d+: Warning: Scope (Saving|Loaded):")


@contextlib.contextmanager
def quiet_tvm_logs():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not _NOISE.search(line):
                    sys.stderr.write(line)
