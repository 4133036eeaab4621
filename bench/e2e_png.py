"""A dependency-free PNG line plot for the e2e benchmark: MB/s against payload size, log-log, one line per series.

Draws into an RGB pixel buffer (Bresenham lines, square markers, a 3x5 bitmap font scaled 2x) and writes it
with zlib; no plotting library is needed on the benchmark machine.
"""

from __future__ import annotations

import itertools
import math
import pathlib
import struct
import zlib

_FONT = {  # 3x5 glyphs: five rows of three columns, '#' = ink
    "0": "###|# #|# #|# #|###",
    "1": " # |## | # | # |###",
    "2": "###|  #|###|#  |###",
    "3": "###|  #| ##|  #|###",
    "4": "# #|# #|###|  #|  #",
    "5": "###|#  |###|  #|###",
    "6": "###|#  |###|# #|###",
    "7": "###|  #|  #|  #|  #",
    "8": "###|# #|###|# #|###",
    "9": "###|# #|###|  #|###",
    "A": " # |# #|###|# #|# #",
    "B": "## |# #|## |# #|## ",
    "C": " ##|#  |#  |#  | ##",
    "D": "## |# #|# #|# #|## ",
    "E": "###|#  |## |#  |###",
    "F": "###|#  |## |#  |#  ",
    "G": " ##|#  |# #|# #| ##",
    "H": "# #|# #|###|# #|# #",
    "I": "###| # | # | # |###",
    "J": "  #|  #|  #|# #| # ",
    "K": "# #|## |#  |## |# #",
    "L": "#  |#  |#  |#  |###",
    "M": "# #|###|###|# #|# #",
    "N": "# #|###|###|###|# #",
    "O": " # |# #|# #|# #| # ",
    "P": "## |# #|## |#  |#  ",
    "Q": " # |# #|# #|## | ##",
    "R": "## |# #|## |# #|# #",
    "S": " ##|#  | # |  #|## ",
    "T": "###| # | # | # | # ",
    "U": "# #|# #|# #|# #|###",
    "V": "# #|# #|# #|# #| # ",
    "W": "# #|# #|###|###|# #",
    "X": "# #|# #| # |# #|# #",
    "Y": "# #|# #| # | # | # ",
    "Z": "###|  #| # |#  |###",
    " ": "   |   |   |   |   ",
    ".": "   |   |   |   | # ",
    "/": "  #|  #| # |#  |#  ",
    "-": "   |   |###|   |   ",
}
_COLORS = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
]


class _Canvas:
    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def dot(self, x: int, y: int, c: tuple[int, int, int]) -> None:
        if 0 <= x < self.w and 0 <= y < self.h:
            k = (y * self.w + x) * 3
            self.px[k : k + 3] = bytes(c)

    def rect(self, x0: int, y0: int, x1: int, y1: int, c: tuple[int, int, int]) -> None:
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                self.dot(x, y, c)

    def line(self, x0: int, y0: int, x1: int, y1: int, c: tuple[int, int, int], width: int = 1) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        for _ in range(4 * (self.w + self.h)):
            self.rect(x0, y0, x0 + width - 1, y0 + width - 1, c)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, s: str, c: tuple[int, int, int] = (0, 0, 0), scale: int = 2) -> None:
        for ch in s.upper():
            glyph = _FONT.get(ch, _FONT[" "]).replace("|", "")
            for r in range(5):
                for col in range(3):
                    if glyph[r * 3 + col] == "#":
                        self.rect(
                            x + col * scale, y + r * scale, x + col * scale + scale - 1, y + r * scale + scale - 1, c
                        )
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3 : (y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
        )


def _label(n: float) -> str:
    if n >= 1024 and n % 1024 == 0:
        return f"{int(n) // 1024}K"
    return f"{n:g}"


def plot_throughput(path: pathlib.Path, series: dict[str, list[tuple[float, float]]]) -> None:
    """series: name -> [(payload bytes, MB/s)]; log-log axes; writes a PNG to `path`."""
    w, h, left, right, top, bottom = 900, 560, 80, 300, 40, 60
    cv = _Canvas(w, h)
    pts = [p for s in series.values() for p in s if p[1] > 0]
    cv.text(left, 12, "MB/S OF PAYLOAD VS PAYLOAD SIZE (LOG-LOG)")
    if not pts:
        path.write_bytes(cv.png())
        return
    xs = sorted({p[0] for p in pts})
    x_lo, x_hi = math.log10(xs[0]) - 0.1, math.log10(xs[-1]) + 0.1
    y_lo = math.floor(math.log10(min(p[1] for p in pts)))
    y_hi = math.ceil(math.log10(max(p[1] for p in pts)))
    if y_hi == y_lo:
        y_hi += 1

    def px(x: float) -> int:
        return left + int((math.log10(x) - x_lo) / (x_hi - x_lo) * (w - left - right))

    def py(y: float) -> int:
        return h - bottom - int((math.log10(y) - y_lo) / (y_hi - y_lo) * (h - top - bottom))

    grey, black = (210, 210, 210), (0, 0, 0)
    for e in range(y_lo, y_hi + 1):
        y = py(10.0**e)
        cv.line(left, y, w - right, y, grey)
        cv.text(8, y - 5, _label(10.0**e))
    for x in xs:
        cv.line(px(x), top, px(x), h - bottom, grey)
        cv.text(px(x) - 10, h - bottom + 8, _label(x))
    cv.line(left, h - bottom, w - right, h - bottom, black)
    cv.line(left, top, left, h - bottom, black)
    cv.text(left + 200, h - 24, "PAYLOAD BYTES")
    for k, (name, s) in enumerate(sorted(series.items())):
        color = _COLORS[k % len(_COLORS)]
        s = sorted(p for p in s if p[1] > 0)
        for (x0, y0), (x1, y1) in itertools.pairwise(s):
            cv.line(px(x0), py(y0), px(x1), py(y1), color, width=2)
        for x, y in s:
            cv.rect(px(x) - 3, py(y) - 3, px(x) + 3, py(y) + 3, color)
        ly = top + 10 + 22 * k
        cv.rect(w - right + 15, ly, w - right + 35, ly + 8, color)
        cv.text(w - right + 42, ly, name)
    path.write_bytes(cv.png())
