"""The image pool against REFERENCE.md's statement of it."""

import random

import pytest
import torch

from fastgan.engine.image_pool import ImagePool


def images(n, start):
    # image i is filled with the value start + i, so identities can be read back
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()


def ids(batch):
    return [int(x) for x in batch[:, 0, 0, 0]]


def test_size_zero_passes_through():
    pool = ImagePool(0)
    x = images(4, 0)
    assert pool.query(x) is x


def test_fills_then_returns_new_images():
    pool = ImagePool(5)
    assert ids(pool.query(images(3, 0))) == [0, 1, 2]
    assert ids(pool.query(images(2, 3))) == [3, 4]
    assert len(pool.images) == 5


def test_matches_a_plain_restatement_with_the_same_draws():
    size, seed = 4, 9
    pool = ImagePool(size, seed=seed)
    rng = random.Random(seed)
    stored, expected = [], []
    counter = 0
    for _ in range(30):
        batch = images(3, counter)
        out = []
        for i in range(3):
            new = counter + i
            if len(stored) < size:
                stored.append(new)
                out.append(new)
            elif rng.uniform(0, 1) > 0.5:
                slot = rng.randint(0, size - 1)
                out.append(stored[slot])
                stored[slot] = new
            else:
                out.append(new)
        counter += 3
        assert ids(pool.query(batch)) == out
        expected = stored
    assert [int(t[0, 0, 0, 0]) for t in pool.images] == expected


def test_returns_history_half_the_time():
    pool = ImagePool(10, seed=1)
    pool.query(images(10, 0))
    n = 4000
    out = ids(pool.query(images(n, 10)))
    from_history = sum(1 for i, v in enumerate(out) if v != 10 + i)
    assert from_history / n == pytest.approx(0.5, abs=0.03)


def test_returned_images_are_detached_copies():
    pool = ImagePool(1, seed=0)
    x = images(1, 0).requires_grad_(True)
    out = pool.query(x)
    assert not out.requires_grad


def test_state_round_trip_reproduces_draws():
    a = ImagePool(3, seed=2)
    a.query(images(5, 0))
    b = ImagePool(3, seed=99)
    b.load_state_dict(a.state_dict(), "cpu")
    assert ids(a.query(images(20, 100))) == ids(b.query(images(20, 100)))


def test_a_pool_saved_in_another_precision_returns_this_runs():
    """A run resumed at another precision (saved under --fast's bf16, resumed --eager in fp32):
    the stored fakes come back in the new images' dtype, one at a time as in a batch (a bf16
    fake went to an fp32 D and failed its first conv)."""
    saved = ImagePool(2, seed=3)
    saved.query(images(2, 0).to(torch.bfloat16))
    pool = ImagePool(2, seed=3)
    pool.load_state_dict(saved.state_dict(), "cpu")
    returned = [pool.query(images(1, 10 + i)) for i in range(20)]
    assert {t.dtype for t in returned} == {torch.float32} and {0, 1} & set(sum((ids(t) for t in returned), []))
