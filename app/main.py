"""Entry point: `whisper-mla-gui [FILES...]`, `whisper-mla-gui --self-test`."""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys


def parse_args(argv: list[str]) -> argparse.Namespace:
    from app import APP_NAME

    p = argparse.ArgumentParser(prog="whisper-mla-gui", description=f"{APP_NAME}: transcribe long recordings.")
    p.add_argument("files", nargs="*", help="audio/video files or folders to queue")
    p.add_argument("--self-test", action="store_true",
                   help="transcribe the bundled sample through the GUI and worker, then exit 0 on success")
    p.add_argument("--self-test-timeout", type=float, default=300.0, metavar="SECONDS")
    p.add_argument("--no-preload", action="store_true", help="load the model only when the first job starts")
    p.add_argument("-v", "--verbose", action="count", default=0)
    from engine import __version__

    p.add_argument("--version", action="version", version=f"whisper-mla-gui {__version__}")
    return p.parse_args(argv)


def make_app():
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from app import APP_NAME, DESKTOP_ID, ORG_NAME, qt_compat, theme
    from app.main_window import app_icon

    qt_compat.install()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    QGuiApplication.setApplicationName("whisper-mla-gui")
    QGuiApplication.setApplicationDisplayName(APP_NAME)
    QGuiApplication.setOrganizationName(ORG_NAME)
    QGuiApplication.setDesktopFileName(DESKTOP_ID)
    app.setWindowIcon(app_icon())
    theme.apply(app)
    return app


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()  # a frozen build's worker process starts here and never returns
    try:
        multiprocessing.set_start_method("spawn")
    except RuntimeError:
        pass  # already set (tests, embedding); the worker asks for a spawn context anyway
    args = parse_args(sys.argv[1:] if argv is None else argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    app = make_app()
    if args.self_test:
        from app.self_test import run

        return run(app, args.self_test_timeout)
    from app.main_window import MainWindow

    window = MainWindow(preload=not args.no_preload)
    window.show()
    if args.files:
        window.add_paths(args.files)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
