"""Line plots as PNG images in pure Python (zlib + struct): enough to look at a curve, no text.

`line_plot` returns the PNG's bytes; writing the file is the caller's business (atomic_write).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

Colour = tuple[int, int, int]
BLUE: Colour = (31, 119, 180)
ORANGE: Colour = (255, 127, 14)
GREEN: Colour = (44, 160, 44)
RED: Colour = (214, 39, 40)
GREY: Colour = (200, 200, 200)
BLACK: Colour = (0, 0, 0)
WHITE: Colour = (255, 255, 255)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Series:
    points: Sequence[tuple[float, float]]  # (x, y) in data units, drawn joined in order
    colour: Colour
    dashed: bool = False


def line_plot(series: Sequence[Series], *, x_range: tuple[float, float], y_range: tuple[float, float] = (0.0, 1.0),
              width: int = 640, height: int = 400, grid: int = 10) -> bytes:
    """A PNG of `series` on a white canvas with axes and a `grid` x `grid` grey grid. Points outside
    the ranges are clipped to the frame."""
    if width < 64 or height < 64:
        raise ValueError(f"a plot of {width}x{height} pixels is too small: give at least 64x64")
    if not (x_range[1] > x_range[0] and y_range[1] > y_range[0]):
        raise ValueError(f"empty range: x {x_range}, y {y_range}")
    canvas = Canvas(width, height)
    left, right, top, bottom = 40, width - 16, 16, height - 32  # the frame, in pixels

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        fx = (x - x_range[0]) / (x_range[1] - x_range[0])
        fy = (y - y_range[0]) / (y_range[1] - y_range[0])
        fx, fy = min(1.0, max(0.0, fx)), min(1.0, max(0.0, fy))
        return round(left + fx * (right - left)), round(bottom - fy * (bottom - top))

    for k in range(1, grid + 1):
        x = left + round(k * (right - left) / grid)
        y = bottom - round(k * (bottom - top) / grid)
        canvas.line(x, top, x, bottom, GREY)
        canvas.line(left, y, right, y, GREY)
        canvas.line(x, bottom, x, bottom + 4, BLACK)  # ticks
        canvas.line(left - 4, y, left, y, BLACK)
    canvas.line(left, top, left, bottom, BLACK)
    canvas.line(left, bottom, right, bottom, BLACK)
    for one in series:
        pixels = [to_pixel(x, y) for x, y in one.points]
        for (x0, y0), (x1, y1) in zip(pixels, pixels[1:]):
            canvas.line(x0, y0, x1, y1, one.colour, thick=not one.dashed, dashed=one.dashed)
    return canvas.png()


class Canvas:
    """An RGB image in memory."""

    def __init__(self, width: int, height: int, background: Colour = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, colour: Colour) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i:i + 3] = bytes(colour)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: Colour, *, thick: bool = False,
             dashed: bool = False) -> None:
        """Bresenham's line; `thick` adds the pixel below and to the right, `dashed` draws 6 of 10."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error, step = dx + dy, 0
        while True:
            if not dashed or step % 10 < 6:
                self.set(x0, y0, colour)
                if thick:
                    self.set(x0 + 1, y0, colour)
                    self.set(x0, y0 + 1, colour)
            if x0 == x1 and y0 == y1:
                return
            step += 1
            double = 2 * error
            if double >= dy:
                error += dy
                x0 += sx
            if double <= dx:
                error += dx
                y0 += sy

    def png(self) -> bytes:
        """The image as PNG: 8-bit RGB, no interlace, each row with filter 0 (none)."""
        row = 3 * self.width
        raw = b"".join(b"\x00" + self.pixels[y * row:(y + 1) * row] for y in range(self.height))
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
