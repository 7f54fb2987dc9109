"""Filter native stderr chatter that users cannot act on.

TVM's C++ logging cannot be silenced from Python, so file descriptor 2 is captured around
the noisy calls and every line that is not noise is passed through afterwards. Two users:

- TVM 0.27's VM executable logs ``Warning: Scope Saving:`` / ``Scope Loaded:`` once per
  constant when an executable is exported or loaded (hundreds for a real model);
- MetaSchedule warns once per block whose ``schedule_rule`` names an accelc template it has
  no search space for (see ``accelc/tuning/intrinsics.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

_SCOPE_NOISE = re.compile(rb"executable\.cc:\d+: Warning: Scope (Saving|Loaded):")


@contextlib.contextmanager
def filtered_fd2(noise: re.Pattern, with_continuations: bool = False):
    """Drop fd-2 lines matching ``noise`` (bytes pattern) while the block runs; with
    ``with_continuations``, also the indented lines that follow a dropped one."""
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
            skipping = False
            for line in capture.read().splitlines(keepends=True):
                if noise.search(line):
                    skipping = with_continuations
                    continue
                if skipping and line[:1] in (b" ", b"\t"):
                    continue
                skipping = False
                os.write(2, line)


def quiet_tvm_logs():
    return filtered_fd2(_SCOPE_NOISE)
