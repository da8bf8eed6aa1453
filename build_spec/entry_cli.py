"""PyInstaller entry point of `whisper-mla` (console)."""
import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # harmless; any future multiprocessing use in the CLI stays safe
    from engine.cli import main

    sys.exit(main())
