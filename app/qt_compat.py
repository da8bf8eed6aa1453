"""Work around a reference-counting bug of PySide6 6.12.0 on CPython < 3.12.

That wheel (abi3, "Python >= 3.10") returns `None`, `True` and `False` from C++ calls
without taking a new reference: every void method call (`label.setText(...)`,
`rect.setHeight(...)`) drops one reference to `None`, every `signal.emit()` one to `True`.
CPython 3.12+ makes these objects immortal, so nothing happens there; on 3.11 a busy GUI
(live transcript, pyqtgraph repainting) drains them within minutes and CPython aborts with
"Fatal Python error: none_dealloc" (or bool_dealloc).

`install()` measures the leak with a few probe calls and, only where it exists, gives the
three singletons a reserve of 2**40 references: what CPython 3.12 does by design (they are
never freed anyway). Idempotent; call it before creating widgets.
"""
from __future__ import annotations

import ctypes
import sys

_RESERVE = 1 << 40
_installed = False


def leaks() -> bool:
    """True when PySide6 calls drop references to None or True (the 6.12.0 bug)."""
    from PySide6.QtCore import QObject, QRectF, Signal

    class _Probe(QObject):
        ping = Signal()

    probe, rect = _Probe(), QRectF()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(32):
        rect.setHeight(1.0)
        probe.ping.emit()
    return sys.getrefcount(None) < none_before or sys.getrefcount(True) < true_before


def install() -> bool:
    """Apply the workaround if this PySide6/CPython needs it; True when it was applied."""
    global _installed
    if _installed:
        return False
    _installed = True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    if not leaks():
        return False
    for obj in (None, True, False):
        refcnt = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt: the first field of every PyObject
        refcnt.value += _RESERVE
    return True
