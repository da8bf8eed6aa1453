#!/usr/bin/env python3
"""Regenerate the raster app icons from whisper-mla.svg.

Sources: whisper-mla.svg (the icon) and whisper-mla-small.svg (the same mark redrawn on a
16 px grid, used for sizes up to 24 px so they stay crisp).

Writes, next to this script:
  hicolor/<N>x<N>/apps/whisper-mla.png  N = 16 32 48 64 128 256 512 (freedesktop icon theme)
  hicolor/scalable/apps/whisper-mla.svg  (copy of the source)
  whisper-mla.ico                        Windows: 16 24 32 48 64 (BMP) + 128 256 (PNG) entries
  whisper-mla.icns                       macOS: ic11 ic12 ic07 ic13 ic08 ic14 ic09 ic10 (PNG) + TOC

Only PySide6 (QtSvg + QtGui) is needed; ICO and ICNS containers are written in pure Python.
Run headless with:  QT_QPA_PLATFORM=offscreen python assets/icons/render_icons.py
`--check` re-reads every output with Qt's image plugins and exits non-zero on a mismatch.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import (  # noqa: E402
    QBuffer, QByteArray, QIODevice, QRectF, Qt, QtMsgType, qInstallMessageHandler,
)
from PySide6.QtGui import QGuiApplication, QImage, QImageReader, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

HERE = Path(__file__).resolve().parent
NAME = "whisper-mla"
SVG = HERE / f"{NAME}.svg"
SMALL_SVG = HERE / f"{NAME}-small.svg"  # pixel-grid variant for tiny sizes
SMALL_MAX = 24  # sizes up to this are drawn from SMALL_SVG
HICOLOR_SIZES = (16, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
ICO_PNG_FROM = 128  # entries this size and up are PNG-compressed (Vista+); smaller ones are BMP
# (type, pixel size) in the order iconutil writes them; all PNG payloads (macOS 10.7+).
ICNS_TYPES = (
    (b"ic11", 32), (b"ic12", 64), (b"ic07", 128), (b"ic13", 256),
    (b"ic08", 256), (b"ic14", 512), (b"ic09", 512), (b"ic10", 1024),
)


def render(renderer: QSvgRenderer, size: int) -> QImage:
    """Rasterise the SVG to a size x size straight-alpha ARGB image."""
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return image.convertToFormat(QImage.Format.Format_ARGB32)


def png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buf, "PNG"):
        raise RuntimeError("PNG encoding failed")
    buf.close()
    return bytes(data.data())


def bmp_icon_bytes(image: QImage) -> bytes:
    """An ICO 'DIB' entry: BITMAPINFOHEADER, bottom-up BGRA rows, then an all-zero AND mask."""
    w, h = image.width(), image.height()
    header = struct.pack("<IiiHHIIiiII", 40, w, h * 2, 1, 32, 0, 0, 0, 0, 0, 0)
    rows = []
    for y in range(h - 1, -1, -1):  # Format_ARGB32 is 0xAARRGGBB native-endian = B,G,R,A bytes on LE
        line = image.constScanLine(y)
        rows.append(bytes(line)[: w * 4] if sys.byteorder == "little" else _swap32(bytes(line)[: w * 4]))
    mask_row = ((w + 31) // 32) * 4
    return header + b"".join(rows) + bytes(mask_row * h)


def _swap32(data: bytes) -> bytes:
    return b"".join(data[i:i + 4][::-1] for i in range(0, len(data), 4))


def ico_bytes(images: dict[int, QImage]) -> bytes:
    entries = [(s, png_bytes(images[s]) if s >= ICO_PNG_FROM else bmp_icon_bytes(images[s])) for s in ICO_SIZES]
    out = [struct.pack("<HHH", 0, 1, len(entries))]
    offset = 6 + 16 * len(entries)
    for size, payload in entries:
        dim = 0 if size >= 256 else size
        out.append(struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(payload), offset))
        offset += len(payload)
    out.extend(payload for _, payload in entries)
    return b"".join(out)


def icns_bytes(images: dict[int, QImage]) -> bytes:
    chunks = [(kind, png_bytes(images[size])) for kind, size in ICNS_TYPES]
    toc = b"TOC " + struct.pack(">I", 8 + 8 * len(chunks)) + b"".join(
        kind + struct.pack(">I", 8 + len(data)) for kind, data in chunks
    )
    body = toc + b"".join(kind + struct.pack(">I", 8 + len(data)) + data for kind, data in chunks)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    print(f"wrote {path.relative_to(HERE)} ({len(data)} bytes)")


def _quiet_icns_toc_warning(mode: QtMsgType, context: object, message: str) -> None:
    # Qt's ICNS reader (qtimageformats) mis-adds TOC offsets and warns "Table of contents
    # contains a bad entry" even for files Qt itself writes, then falls back to a full scan
    # that reads every entry correctly. Hide that one message; pass everything else on.
    if "Table of contents contains a bad entry" not in message:
        print(message, file=sys.stderr)


def check(images: dict[int, QImage]) -> list[str]:
    """Re-read the outputs with Qt's own PNG/ICO/ICNS readers; return a list of problems."""
    qInstallMessageHandler(_quiet_icns_toc_warning)
    problems = []
    for size in HICOLOR_SIZES:
        img = QImage(str(HERE / "hicolor" / f"{size}x{size}" / "apps" / f"{NAME}.png"))
        if img.isNull() or img.width() != size or img.height() != size:
            problems.append(f"hicolor {size}: unreadable or wrong size")
    icns_sizes = sorted({s for _, s in ICNS_TYPES})
    for path, sizes in ((HERE / f"{NAME}.ico", ICO_SIZES), (HERE / f"{NAME}.icns", icns_sizes)):
        reader = QImageReader(str(path))
        seen = set()
        for i in range(reader.imageCount()):
            reader.jumpToImage(i)
            img = reader.read()
            if img.isNull():
                problems.append(f"{path.name} entry {i}: {reader.errorString()}")
                continue
            seen.add(img.width())
            ref = images[img.width()].convertToFormat(QImage.Format.Format_ARGB32)
            if img.convertToFormat(QImage.Format.Format_ARGB32) != ref:
                problems.append(f"{path.name} {img.width()}px: pixels differ from the render")
        if missing := set(sizes) - seen:
            problems.append(f"{path.name}: sizes not readable: {sorted(missing)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the written files with Qt's readers")
    args = parser.parse_args(argv)

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (QtGui needs one)
    renderers = {path: QSvgRenderer(str(path)) for path in (SVG, SMALL_SVG)}
    for path, renderer in renderers.items():
        if not renderer.isValid():
            print(f"cannot parse {path}", file=sys.stderr)
            return 1
    sizes = sorted(set(HICOLOR_SIZES) | set(ICO_SIZES) | {s for _, s in ICNS_TYPES})
    images = {s: render(renderers[SMALL_SVG if s <= SMALL_MAX else SVG], s) for s in sizes}

    for size in HICOLOR_SIZES:
        write(HERE / "hicolor" / f"{size}x{size}" / "apps" / f"{NAME}.png", png_bytes(images[size]))
    scalable = HERE / "hicolor" / "scalable" / "apps" / f"{NAME}.svg"  # for the icon theme
    scalable.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SVG, scalable)
    print(f"wrote {scalable.relative_to(HERE)}")
    write(HERE / f"{NAME}.ico", ico_bytes(images))
    write(HERE / f"{NAME}.icns", icns_bytes(images))

    if args.check:
        problems = check(images)
        for p in problems:
            print("PROBLEM:", p, file=sys.stderr)
        if problems:
            return 1
        print("check: all outputs read back identically")
    return 0


if __name__ == "__main__":
    sys.exit(main())
