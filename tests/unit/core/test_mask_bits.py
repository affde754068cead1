"""Selected mask planes kept one byte per pixel and put back (visitcal.core.mask_bits, cpp/src/core/mask_bits.cpp)
against the full copy they replace."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from visitcal import _core
from visitcal.core.image import Mask
from visitcal.core.mask_bits import planes_restored


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), positions=st.sets(st.integers(0, 31), min_size=1, max_size=8),
       shape=st.tuples(st.integers(1, 40), st.integers(1, 40)))
def test_restore_puts_back_exactly_the_kept_bits(seed, positions, shape):
    rng = np.random.default_rng(seed)
    mask = rng.integers(-2**31, 2**31, shape, dtype=np.int64).astype(np.int32)  # every bit, the sign bit too
    bits = int(np.uint32(sum(1 << p for p in positions)).astype(np.int32))
    original = mask.copy()
    packed = _core.pack_mask_bits(mask, bits)
    assert packed.dtype == np.uint8 and packed.shape == mask.shape
    mask[...] = rng.integers(-2**31, 2**31, shape, dtype=np.int64).astype(np.int32)  # any change of any bit
    scrambled = mask.copy()
    _core.restore_mask_bits(mask, bits, packed)
    b = np.int32(bits)
    np.testing.assert_array_equal(mask & b, original & b)  # the kept bits as they were
    np.testing.assert_array_equal(mask & ~b, scrambled & ~b)  # the others as the block left them


def test_planes_restored_on_a_mask_and_after_an_exception():
    m = Mask(shape=(30, 50))
    rng = np.random.default_rng(2)
    m.array[...] = rng.integers(0, 1 << 12, m.array.shape, dtype=np.int32)
    before = m.array.copy()
    with pytest.raises(RuntimeError):
        with planes_restored(m, ("DETECTED", "EDGE")):
            m.clear(["DETECTED"])
            m.array[:5] |= m.get_plane_bitmask("EDGE")
            raise RuntimeError("the block failed")
    np.testing.assert_array_equal(m.array, before)


def test_clear_errors():
    m = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="more than 8 mask bits"):
        _core.pack_mask_bits(m, 0x1FF)
    with pytest.raises(ValueError, match="no mask bit"):
        _core.pack_mask_bits(m, 0)
    with pytest.raises(ValueError, match="C-contiguous int32"):
        _core.pack_mask_bits(m.astype(np.int64), 1)
    with pytest.raises(ValueError, match="hold 8 pixels, the mask 16"):
        _core.restore_mask_bits(m, 1, np.zeros(8, np.uint8))
    ro = m.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _core.restore_mask_bits(ro, 1, np.zeros((4, 4), np.uint8))
    with pytest.raises(KeyError):
        with planes_restored(Mask(shape=(2, 2)), ("NOT_A_PLANE",)):
            pass
    with pytest.raises(ValueError, match="at most 8 planes"):
        with planes_restored(Mask(shape=(2, 2)), ("BAD",) * 9):
            pass
