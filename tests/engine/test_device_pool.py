"""The device ring-buffer pool: the reference pool's rule, statistically identical to it."""

import numpy as np
import pytest
import torch

from fastgan.engine.device_pool import DeviceImagePool
from fastgan.engine.image_pool import ImagePool


def images(n, start):
    # image i is filled with the value start + i, so identities can be read back
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()


def ids(batch):
    return [int(x) for x in batch[:, 0, 0, 0]]


def ages(pool, queries, batch):
    """How many images old each returned image was, after the pool filled."""
    out, counter = [], 0
    for _ in range(queries):
        got = ids(pool.query(images(batch, counter)))
        if counter >= pool.size:
            out += [counter + i - g for i, g in enumerate(got)]
        counter += batch
    return np.array(out)


def test_size_zero_passes_through_and_fills_first():
    x = images(4, 0)
    assert DeviceImagePool(0).query(x) is x
    pool = DeviceImagePool(5)
    assert ids(pool.query(images(3, 0))) == [0, 1, 2]
    assert ids(pool.query(images(2, 3))) == [3, 4]
    assert int(pool.count) == 5 and sorted(ids(pool.images)) == [0, 1, 2, 3, 4]


def test_rule_image_by_image_with_known_draws(monkeypatch):
    """Once full: draw < 0.5 returns the new image; else the slot's image, replaced by the new one."""
    pool = DeviceImagePool(3)
    pool.query(images(3, 0))
    draws = torch.tensor([[0.9, 0.5], [0.2, 0.99], [0.7, 0.1], [0.6, 0.99]])  # swap 1, keep, swap 0, swap 2
    monkeypatch.setattr(torch, "rand", lambda *a, **k: draws)
    assert ids(pool.query(images(4, 10))) == [1, 11, 0, 2]  # (the last slot is drawn too)
    assert ids(pool.images) == [12, 10, 13]
    # within one batch a stored image can come back at once
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor([[0.9, 0.0], [0.9, 0.0]]))
    assert ids(pool.query(images(2, 20))) == [12, 20]


@pytest.mark.parametrize("batch", [1, 4])
def test_statistically_identical_to_the_reference_pool(batch):
    torch.manual_seed(0)
    size, queries = 10, 1500 // batch
    device_ages = ages(DeviceImagePool(size), queries, batch)
    reference_ages = ages(ImagePool(size, seed=1), queries, batch)
    for a in (device_ages, reference_ages):
        returned_new = np.mean(a == 0)
        assert abs(returned_new - 0.5) < 0.04  # the coin: half the queries return the new image
    # age of an old image returned: geometric-like tail; its mean is size / p(swap) = 2 * size
    old_device, old_ref = device_ages[device_ages > 0], reference_ages[reference_ages > 0]
    assert abs(old_device.mean() - old_ref.mean()) < 0.15 * old_ref.mean()
    assert abs(old_ref.mean() - 2 * size) < 0.2 * 2 * size
    # the same age histogram (two-sample Kolmogorov-Smirnov distance)
    grid = np.arange(0, 120)
    cdf = lambda a: np.searchsorted(np.sort(a), grid, side="right") / len(a)  # noqa: E731
    assert np.max(np.abs(cdf(device_ages) - cdf(reference_ages))) < 0.06


def test_draws_come_from_the_torch_rng():
    def run():
        torch.manual_seed(4)
        pool = DeviceImagePool(3)
        return [ids(pool.query(images(2, 2 * i))) for i in range(10)]

    assert run() == run()


def test_state_round_trip_and_conversion_from_the_reference_pool():
    pool = DeviceImagePool(4)
    pool.query(images(3, 0))
    copy = DeviceImagePool(4)
    copy.load_state_dict(pool.state_dict(), "cpu")
    torch.manual_seed(1)
    a = ids(pool.query(images(3, 5)))
    torch.manual_seed(1)
    assert ids(copy.query(images(3, 5))) == a

    ref = ImagePool(4, seed=2)
    ref.query(images(2, 0))
    from_ref = DeviceImagePool(4)
    from_ref.load_state_dict(ref.state_dict(), "cpu")
    assert int(from_ref.count) == 2 and ids(from_ref.images)[:2] == [0, 1]
    back = ImagePool(4)
    back.load_state_dict(from_ref.state_dict(), "cpu")
    assert ids(torch.cat(back.images)) == [0, 1]
    x = images(1, 0).requires_grad_(True)
    out = pool.query(x)
    assert not out.requires_grad


def test_a_pool_of_another_size_takes_the_first_stored_images():
    """A run resumed with another --pool_size: each pool keeps the saved pool's first stored
    images, up to its own size, and goes on filling when it is larger."""
    pool = DeviceImagePool(4)
    pool.query(images(3, 0))  # stores 0, 1, 2
    ref = ImagePool(4, seed=2)
    ref.query(images(3, 0))
    for saved in (pool.state_dict(), ref.state_dict()):
        larger, smaller = DeviceImagePool(5), DeviceImagePool(2)
        larger.load_state_dict(saved, "cpu")
        smaller.load_state_dict(saved, "cpu")
        assert int(larger.count) == 3 and ids(larger.images)[:3] == [0, 1, 2]
        assert int(smaller.count) == 2 and ids(smaller.images) == [0, 1]
        assert ids(larger.query(images(2, 10))) == [10, 11] and int(larger.count) == 5  # fills its slots
        small_ref = ImagePool(2)
        small_ref.load_state_dict(saved, "cpu")
        assert ids(torch.cat(small_ref.images)) == [0, 1]
    none = DeviceImagePool(0)
    none.load_state_dict(pool.state_dict(), "cpu")
    assert none.images is None and ids(none.query(images(2, 7))) == [7, 8]


def test_an_allocated_pool_keeps_its_tensors_on_load():
    """A captured CUDA graph points at the pool's tensors: loading into an allocated pool
    writes into them, an empty saved pool included; images of another shape are refused."""
    pool = DeviceImagePool(3)
    pool.query(images(2, 0))
    ring, count = pool.images, pool.count
    pool.load_state_dict(DeviceImagePool(3).state_dict(), "cpu")  # never queried: empty
    assert pool.images is ring and pool.count is count and int(count) == 0
    other = DeviceImagePool(3)
    other.query(images(1, 5))
    pool.load_state_dict(other.state_dict(), "cpu")
    assert pool.images is ring and int(count) == 1 and ids(ring)[0] == 5
    wider = DeviceImagePool(3)
    wider.query(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"holds images of shape \(3, 4, 4\), this run's \(3, 2, 2\)"):
        pool.load_state_dict(wider.state_dict(), "cpu")


def test_a_pool_saved_in_another_precision_takes_this_runs_dtype():
    """A bf16 run's pool resumed in float32: the images stored from then on are kept exactly,
    not rounded to the saved ring's bf16."""
    saved = DeviceImagePool(2)
    saved.query(torch.randn(2, 3, 4, 4).to(torch.bfloat16))
    pool = DeviceImagePool(2)
    pool.load_state_dict(saved.state_dict(), "cpu")
    torch.manual_seed(0)
    image = torch.randn(1, 3, 4, 4, dtype=torch.float64) / 3
    for _ in range(20):  # some query swaps it in: then it is stored, and later returned, exactly
        pool.query(image)
    assert pool.images.dtype == torch.float64
    assert any(torch.equal(slot, image[0]) for slot in pool.images)
