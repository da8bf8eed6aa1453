"""PyInstaller entry point of `whisper-mla` (console)."""
import multiprocessing
import os
import sys

if __name__ == "__main__":
    # No layer is ever swapped for code from the hub (`kernels` is not in the bundle): issue 27.
    os.environ.setdefault("USE_HUB_KERNELS", "NO")
    multiprocessing.freeze_support()  # harmless; any future multiprocessing use in the CLI stays safe
    from engine.cli import main

    sys.exit(main())
