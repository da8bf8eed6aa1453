"""PyInstaller entry point of `whisper-mla-gui` (windowed).

freeze_support() runs before the app is imported: a frozen spawn start re-executes this executable with
`--multiprocessing-fork ...` (the transcription worker) or `-c "from multiprocessing.resource_tracker
import main..."` (multiprocessing's helper); both are diverted here, before argparse sees the arguments.
"""
import multiprocessing
import os
import sys

if __name__ == "__main__":
    # No layer is ever swapped for code from the hub (`kernels` is not in the bundle): issue 27.
    os.environ.setdefault("USE_HUB_KERNELS", "NO")
    # A windowed Windows build has no console: sys.stdout/stderr are None, in the GUI and in the worker it
    # spawns. Libraries that print progress (tqdm's "Loading weights" bar in transformers) would crash.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    multiprocessing.freeze_support()
    from app.main import main

    sys.exit(main())
