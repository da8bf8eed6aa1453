"""`whisper-mla-gui --self-test` as a user (or the packaging smoke test) runs it: a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

from gui_helpers import REPO


def test_self_test_exits_zero():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "app", "--self-test", "--self-test-timeout", "240"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-test OK" in proc.stdout
    assert "ask not what your country can do for you" in proc.stdout.lower()
