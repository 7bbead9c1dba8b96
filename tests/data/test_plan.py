"""The epoch plan: every image once per epoch, ranks slice global batches, equal batch counts."""

from __future__ import annotations

import pytest

from fastgan.data.plan import batches_per_epoch, epoch_plan


@pytest.mark.parametrize("n,bs,world", [(7, 3, 1), (12, 2, 2), (13, 2, 2), (9, 4, 3), (5, 1, 4), (2, 3, 3)])
def test_ranks_split_each_global_batch_of_the_one_rank_plan(n, bs, world):
    single = epoch_plan(0, 3, n, bs * world)
    ranks = [epoch_plan(0, 3, n, bs, rank=r, world_size=world) for r in range(world)]
    assert all(len(p) == batches_per_epoch(n, bs, world) == len(single) for p in ranks)
    for b, global_batch in enumerate(single):
        joined = [i for r in range(world) for i in ranks[r][b]]
        assert all(ranks[r][b] for r in range(world))  # no rank ever gets an empty batch
        if len(global_batch) >= world:
            assert joined == global_batch
        else:  # topped up from the start of the epoch's order
            first = single[0]  # (the single plan's first batch starts the epoch's order)
            assert joined == global_batch + first[: world - len(global_batch)], (joined, first)
    assert sorted({i for p in ranks for batch in p for i in batch}) == list(range(n))


def test_skip_and_seed():
    full = epoch_plan(4, 2, 10, 3)
    assert epoch_plan(4, 2, 10, 3, skip=2) == full[2:]
    assert epoch_plan(5, 2, 10, 3) != full and epoch_plan(4, 3, 10, 3) != full
    assert epoch_plan(4, 2, 10, 3, shuffle=False) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank 2"):
        epoch_plan(0, 1, 4, 1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        epoch_plan(0, 1, 4, 0)


def test_negative_seeds_are_seeds_of_their_own():
    import numpy as np

    from fastgan.data.rng import epoch_order, item_rng

    assert item_rng(-1, 0, 0).random() != item_rng(1, 0, 0).random()
    assert not np.array_equal(epoch_order(-3, 1, 50), epoch_order(3, 1, 50))
