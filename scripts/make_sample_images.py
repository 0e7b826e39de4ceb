"""Generate a small, imbalanced two-class image set for the reference trainer (no download needed).

    python scripts/make_sample_images.py OUT [--train 48] [--val 24] [--size 32] [--seed 0]

OUT/train/negative, OUT/train/positive, OUT/val/... PNG files. A positive image has a faint
bright spot somewhere on a noisy background; one image in four is positive, as in a screening set.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image

CLASSES = ("negative", "positive")


def make_image(positive: bool, size: int, rng: random.Random) -> Image.Image:
    """Noisy grey background; a positive one has a faint brighter spot (hard enough to need
    epochs)."""
    r = max(2, size // 10)
    cx, cy = rng.randint(r, size - r - 1), rng.randint(r, size - r - 1)
    pixels = []
    for y in range(size):
        for x in range(size):
            v = rng.randint(30, 200)
            if positive and (x - cx) ** 2 + (y - cy) ** 2 <= r * r:
                v = min(255, v + 40)
            pixels.append((v, v, v))
    image = Image.new("RGB", (size, size))
    image.putdata(pixels)
    return image


def generate(out: Path, train: int = 48, val: int = 24, size: int = 32, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for part, count in (("train", train), ("val", val)):
        for index in range(count):
            positive = index % 4 == 0
            folder = Path(out) / part / CLASSES[positive]
            folder.mkdir(parents=True, exist_ok=True)
            make_image(positive, size, rng).save(folder / f"{part}{index:04d}.png")
    return Path(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--val", type=int, default=24)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(generate(args.out, args.train, args.val, args.size, args.seed))


if __name__ == "__main__":
    main()
