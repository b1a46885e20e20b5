"""Render ``mixtral-desk.svg`` to the PNG, ICO and ICNS files the bundles use, with Qt only.

Run from anywhere: ``python packaging/icons/render_icons.py``. The outputs are committed (the
Windows and macOS recipes need them and cannot render them on a build machine without Qt), and
tests/test_packaging.py checks that they are current.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QGuiApplication, QImage, QImageWriter, QPainter
from PySide6.QtSvg import QSvgRenderer

HERE = Path(__file__).resolve().parent
SVG = HERE / "mixtral-desk.svg"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render(size: int) -> QImage:
    """The icon as a ``size``×``size`` ARGB image."""
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        raise SystemExit(f"cannot read {SVG}")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def _write(image: QImage, path: Path, fmt: str) -> None:
    writer = QImageWriter(str(path), fmt.encode())
    if not writer.write(image):
        raise SystemExit(f"cannot write {path}: {writer.errorString()}")


def main() -> int:
    """Write every output next to the SVG; returns the exit code."""
    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    for size in PNG_SIZES:
        _write(render(size), HERE / f"mixtral-desk-{size}.png", "png")
    # Qt's ICO writer stores one image per write; write each size, then join them.
    _write_ico([render(size) for size in ICO_SIZES], HERE / "mixtral-desk.ico")
    _write(render(512), HERE / "mixtral-desk.icns", "icns")
    print(f"icons written to {HERE}")
    return 0


def _write_ico(images: list[QImage], path: Path) -> None:
    """A multi-size .ico (PNG-compressed entries, as Windows Vista and later read them)."""
    blobs = []
    for image in images:
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, b"PNG")
        buffer.close()
        blobs.append(bytes(data.data()))
    header = b"\0\0" + (1).to_bytes(2, "little") + len(blobs).to_bytes(2, "little")
    offset = 6 + 16 * len(blobs)
    entries, payload = b"", b""
    for image, blob in zip(images, blobs, strict=True):
        side = image.width() if image.width() < 256 else 0  # 0 means 256
        entries += (bytes([side, side, 0, 0]) + (1).to_bytes(2, "little")
                    + (32).to_bytes(2, "little") + len(blob).to_bytes(4, "little")
                    + (offset + len(payload)).to_bytes(4, "little"))
        payload += blob
    path.write_bytes(header + entries + payload)


if __name__ == "__main__":
    sys.exit(main())
