"""`python -m app` starts the GUI (same as the `whisper-mla-gui` entry point)."""
import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
