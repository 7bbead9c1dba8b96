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


def sized(n, start, side):
    return images(n, start)[:, :, :1, :1].expand(n, 3, side, side).clone()


def test_a_stored_fake_of_another_size_cannot_join_a_batch_of_several():
    """Fakes of several sizes (--preprocess scale_width or none, a resume at another size): in a
    batch of 2 a stored fake of another side is not returned (torch.cat failed, as the
    reference's pool does); the new image is, and takes its slot, after the same draws as a
    pool of one size. One image alone gets the stored fake, whatever its size (the reference's)."""
    mixed, plain = ImagePool(2, seed=3), ImagePool(2, seed=3)
    mixed.query(sized(2, 0, 4))
    plain.query(sized(2, 0, 6))
    for start in range(2, 40, 2):  # every draw of a batch of 6x6 images, against a pool of 4x4 ones at first
        got, expected = mixed.query(sized(2, start, 6)), plain.query(sized(2, start, 6))
        assert got.shape == (2, 3, 6, 6)
        # a swap of a 4x4 stored fake (images 0 and 1) passes the new image; one of a 6x6 returns that fake
        assert ids(got) == [start + i if ids(expected)[i] < 2 else ids(expected)[i] for i in range(2)]
        assert [ids(t)[0] for t in mixed.images] == [ids(t)[0] for t in plain.images]
    assert mixed.rng.getstate() == plain.rng.getstate()
    assert all(t.shape[-1] == 6 for t in mixed.images)
    alone = ImagePool(1, seed=0)
    alone.query(sized(1, 0, 4))
    outs = [alone.query(sized(1, k, 6)) for k in range(1, 12)]
    assert any(o.shape[-1] == 4 for o in outs)  # (a swap of the 4x4 fake returned it)
