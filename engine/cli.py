"""`whisper-mla`: the command line. Each subcommand lives in its own module and registers here."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from engine import __version__

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whisper-mla",
        description="Transcribe long recordings with Whisper or Whisper-MLA (compressed KV cache).",
    )
    parser.add_argument("--version", action="version", version=f"whisper-mla {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from engine import cli_transcribe

    cli_transcribe.register(sub)
    from engine import cli_compare

    cli_compare.register(sub)
    for module in ("engine.mla.cli", "engine.finetune.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError as e:  # an optional part that is not installed must not break the rest
            log.debug("subcommands of %s unavailable: %s", module, e)
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # answer at once: the subcommands' modules import torch (seconds)
        sys.stdout.write(f"whisper-mla {__version__}\n")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    # The CLI draws its own progress; transformers' "Loading weights" bar on every run is not ours (issue 18).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
