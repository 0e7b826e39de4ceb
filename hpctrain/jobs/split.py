"""The seeded train/validation/test split of a project's pages, identical for every kraken version
(kraken 7 dropped `compile --random-split`), and the list files written into the job folder."""

from __future__ import annotations

import random

from ..core.errors import GroundTruthError
from ..core.layout import SPLIT_PARTS, split_file


def split_pages(
    pages: list[str], train: float, validation: float, test: float, seed: int
) -> dict[str, list[str]]:
    """Validation and test get at least one page each; the order of `pages` does not matter."""
    if len(pages) < 3:
        raise GroundTruthError(
            f"{len(pages)} pages cannot be split into train/validation/test; push at least 10"
        )
    shuffled = sorted(pages)
    random.Random(seed).shuffle(shuffled)
    n_val = max(1, round(len(shuffled) * validation))
    n_test = max(1, round(len(shuffled) * test))
    n_train = len(shuffled) - n_val - n_test
    return {
        "train": sorted(shuffled[:n_train]),
        "validation": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def split_files(split: dict[str, list[str]]) -> dict[str, str]:
    """The list files of a split, by their path in the job folder."""
    return {split_file(part): "".join(p + "\n" for p in split[part]) for part in SPLIT_PARTS}
