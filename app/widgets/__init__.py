"""One widget per module; each knows nothing about the worker (the main window wires them)."""
