import numpy as np
import pytest

from sim2real_envs.config import SKIMAGE_IMAGES
from sim2real_envs.textures import skimage_image


@pytest.mark.parametrize("name", SKIMAGE_IMAGES)
def test_skimage_photos_read_directly_equal_skimage_data(name):
    """Textures read the bundled files without skimage's loaders: same pixels as skimage.data."""
    import skimage.data

    want = np.asarray(getattr(skimage.data, name)())
    if want.dtype == bool:
        want = want.astype(np.uint8) * 255
    if want.ndim == 2:
        want = np.repeat(want[..., None], 3, axis=2)
    got = skimage_image(name)
    assert got.dtype == np.uint8 and got.shape == want[..., :3].shape
    assert np.array_equal(got, want[..., :3].astype(np.uint8))
