"""The e2e benchmark's reporting: ratios in the right direction, the table, and a valid PNG (no processes)."""

from __future__ import annotations

import pathlib
import struct
import zlib

from bench.e2e import Figure, table
from bench.e2e_png import plot_throughput


def test_ratio_is_ours_over_theirs_when_higher_is_better_and_inverted_otherwise() -> None:
    assert Figure("t", "entries/s", 300.0, 100.0).ratio == 3.0
    assert Figure("p50", "ms", 0.5, 1.0, higher_is_better=False).ratio == 2.0
    assert Figure("x", "MB", None, 1.0).ratio is None
    text = table([Figure("throughput async 1 KiB x64", "entries/s", 120_000.0, 8_000.0)])
    assert "| throughput async 1 KiB x64 | entries/s | 120,000 | 8,000 | 15.00x |" in text


def test_plot_writes_a_png_with_the_requested_size(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "plot.png"
    plot_throughput(out, {"dledger async x64": [(100.0, 3.0), (1024.0, 90.0)], "pysyncobj async x1": [(100.0, 0.5)]})
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    width, height = struct.unpack(">II", data[16:24])
    assert (kind, length, width, height) == (b"IHDR", 13, 900, 560)
    idat = data.index(b"IDAT")
    (size,) = struct.unpack(">I", data[idat - 4 : idat])
    pixels = zlib.decompress(data[idat + 4 : idat + 4 + size])
    assert len(pixels) == height * (1 + 3 * width)
    assert pixels.count(b"\xff\xff\xff") < len(pixels) // 3  # something was drawn


def test_plot_without_points_still_writes_an_image(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "empty.png"
    plot_throughput(out, {})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
