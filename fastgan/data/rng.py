"""Where every random number of the data pipeline comes from.

Nothing reads global random state (random, numpy.random, torch's default
generator): an item's crop, flip and unaligned partner come from a generator
seeded by (seed, epoch, index), an epoch's shuffle from one seeded by
(seed, epoch). So a batch is a pure function of (seed, epoch, position): the
same with 0 or 8 workers, and the same when a run resumes mid-epoch.
"""

from __future__ import annotations

import numpy as np

# Distinct first words keep the two streams apart (SeedSequence pools entropy
# words, so [s, e] and [s, e, 0] must not be allowed to meet).
_ITEM, _SHUFFLE = 0x17E4, 0x5F1E


def _word(x: int) -> int:
    return int(x) % (1 << 64)  # SeedSequence wants non-negative words; seeds may be negative


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of dataset item `index` in `epoch`."""
    return np.random.default_rng([_ITEM, _word(seed), _word(epoch), _word(index)])


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool = True) -> np.ndarray:
    """The order in which an epoch visits the n items: a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([_SHUFFLE, _word(seed), _word(epoch)]).permutation(n)
