"""An image folder harder than the digits, drawn here: eight shapes in clutter and noise.

    python -m benchmarks.shapes OUT [--size 64] [--train 500] [--test 100] [--seed 0]

Writes OUT/train/<class>/*.png and OUT/test/<class>/*.png (a `folder:` source): eight classes
(circle, ring, triangle, square, star, cross, crescent, half_disk), each image one shape of a random
colour, size (a fifth to three fifths of the image), position and rotation, on a background of a
random colour and gradient, among two to six distractors (line segments, small dots, arcs: none of
them a class), with Gaussian pixel noise. Colour says nothing about the class. The same seed gives
the same files, image by image (each image has its own seed drawn from the seed, its split and its
index), so a larger set keeps the smaller one's images. Nothing is downloaded.

README, "Your own data", records what the built-in CNN makes of it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("circle", "ring", "triangle", "square", "star", "cross", "crescent", "half_disk")
SPLITS = {"train": 0, "test": 1}


def _polygon(cx: float, cy: float, radius: float, corners: int, turn: float) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(turn + 2 * math.pi * i / corners),
            cy + radius * math.sin(turn + 2 * math.pi * i / corners),
        )
        for i in range(corners)
    ]


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, turn: float) -> list[tuple[float, float]]:
    cos, sin = math.cos(turn), math.sin(turn)
    return [(cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos) for x, y in points]


def _shape(
    draw: Any, name: str, cx: float, cy: float, r: float, turn: float, fill: tuple[int, ...], back: tuple[int, ...]
) -> None:
    """Draw one class's shape of radius r centred at (cx, cy), rotated by `turn` radians."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if name == "circle":
        draw.ellipse(box, fill=fill)
    elif name == "ring":
        draw.ellipse(box, fill=fill)
        inner = r * 0.55
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=back)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, r, 3, turn), fill=fill)
    elif name == "square":
        draw.polygon(_polygon(cx, cy, r, 4, turn), fill=fill)
    elif name == "star":
        points = [
            (
                cx + (r if i % 2 == 0 else r * 0.42) * math.cos(turn + math.pi * i / 5),
                cy + (r if i % 2 == 0 else r * 0.42) * math.sin(turn + math.pi * i / 5),
            )
            for i in range(10)
        ]
        draw.polygon(points, fill=fill)
    elif name == "cross":
        w = r * 0.32
        for bar in (
            [(cx - r, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx - r, cy + w)],
            [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy + r), (cx - w, cy + r)],
        ):
            draw.polygon(_rotated(bar, cx, cy, turn), fill=fill)
    elif name == "crescent":
        draw.ellipse(box, fill=fill)
        dx, dy = r * 0.5 * math.cos(turn), r * 0.5 * math.sin(turn)
        draw.ellipse((cx - r + dx, cy - r + dy, cx + r + dx, cy + r + dy), fill=back)
    elif name == "half_disk":
        start = math.degrees(turn)
        draw.pieslice(box, start, start + 180, fill=fill)
    else:
        raise ValueError(f"unknown shape {name!r}")


def _colour(rng: np.random.Generator, away_from: tuple[int, ...] | None = None) -> tuple[int, int, int]:
    """A random colour; with `away_from`, one at least 120 apart from it (sum of channel differences)."""
    while True:
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if away_from is None or sum(abs(a - b) for a, b in zip(colour, away_from, strict=True)) >= 120:
            return colour  # type: ignore[return-value]


def draw_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One size x size RGB image of class CLASSES[label], as uint8 pixels."""
    from PIL import Image, ImageDraw

    back = _colour(rng)
    tint = _colour(rng)
    # The background: its colour blended along a random direction towards another.
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle) + 1.5) / 3.0 * rng.uniform(0.0, 0.7)
    canvas = (1 - ramp[..., None]) * np.array(back) + ramp[..., None] * np.array(tint)
    image = Image.fromarray(canvas.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    distractors = int(rng.integers(2, 7))
    behind = int(rng.integers(0, distractors + 1))  # some distractors lie under the shape, the rest over it

    def distractor() -> None:
        kind = rng.integers(0, 3)
        colour = _colour(rng)
        x0, y0 = rng.uniform(0, size, 2)
        if kind == 0:  # a line segment
            length, turn = rng.uniform(0.15, 0.45) * size, rng.uniform(0, 2 * math.pi)
            end = (x0 + length * math.cos(turn), y0 + length * math.sin(turn))
            draw.line([(x0, y0), end], fill=colour, width=int(rng.integers(1, max(2, size // 24) + 1)))
        elif kind == 1:  # a small dot
            d = rng.uniform(0.02, 0.06) * size
            draw.ellipse((x0 - d, y0 - d, x0 + d, y0 + d), fill=colour)
        else:  # an arc of a circle's outline
            d = rng.uniform(0.1, 0.25) * size
            start = rng.uniform(0, 360)
            draw.arc(
                (x0 - d, y0 - d, x0 + d, y0 + d),
                start,
                start + rng.uniform(60, 160),
                fill=colour,
                width=max(1, size // 32),
            )

    for _ in range(behind):
        distractor()
    r = rng.uniform(0.1, 0.3) * size
    cx, cy = rng.uniform(r, size - r, 2)
    mean_back = tuple(int(c) for c in canvas.reshape(-1, 3).mean(axis=0))
    _shape(draw, CLASSES[label], cx, cy, r, rng.uniform(0, 2 * math.pi), _colour(rng, mean_back), mean_back)
    for _ in range(distractors - behind):
        distractor()
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(5.0, 25.0), pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def generate(
    folder: Path,
    size: int = 64,
    train: int = 500,
    test: int = 100,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """`train` and `test` images per class under folder/<split>/<class>/; the count per split."""
    from PIL import Image

    counts: dict[str, int] = {}
    for split, per_class in (("train", train), ("test", test)):
        for label, name in enumerate(CLASSES):
            target = folder / split / name
            target.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                rng = np.random.default_rng([seed, SPLITS[split], label, index])
                Image.fromarray(draw_image(label, size, rng), "RGB").save(target / f"{index:05d}.png")
        counts[split] = per_class * len(CLASSES)
        if progress:
            progress(f"{split}: {counts[split]} images")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write (OUT/train/<class>, OUT/test/<class>)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--train", type=int, default=500, help="training images per class (default 500)")
    parser.add_argument("--test", type=int, default=100, help="test images per class (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out}: not empty; choose a new folder")
    counts = generate(args.out, args.size, args.train, args.test, args.seed)
    print(
        f"{args.out}: {len(CLASSES)} classes, {counts['train']} train and {counts['test']} test images, "
        f"{args.size}x{args.size} RGB (chance: {1 / len(CLASSES):.3f})"
    )


if __name__ == "__main__":
    main()
