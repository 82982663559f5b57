"""The numpy SSIM that StepSaver's labels and benchmarks use equals scikit-image's structural_similarity
(7×7 uniform window, sample covariance), on random and on near-identical images."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynexport.metrics import ssim


def _skimage(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255, win_size=7))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([7, 8, 16, 32]), noise=st.floats(0, 120))
def test_ssim_equals_scikit_image(seed, size, noise):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(_skimage(a, b), abs=1e-9)


def test_ssim_batches_and_bounds():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 32, 32, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (5, 32, 32, 3)).astype(np.uint8)
    got = ssim(a, b)  # [5]
    assert got.shape == (5,) and np.allclose(got, [_skimage(x, y) for x, y in zip(a, b)], atol=1e-9)
    assert np.allclose(ssim(a, a), 1.0)
    with pytest.raises(ValueError, match="one shape"):
        ssim(a, b[:, :16])
