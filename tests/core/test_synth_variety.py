"""The varied synthetic world: mounted cameras, more moving objects, photo textures."""

import numpy as np
import pytest

from l3rocc_core.synth.appearance import PATTERNS, photo_textures, sample_photo
from l3rocc_core.synth.scene import make_scene
from l3rocc_core.synth.sequence import SequenceSpec, SyntheticSequence
from l3rocc_core.synth.variety import MOUNT_HEIGHT, MOUNT_PITCH_DEG


@pytest.mark.parametrize('family', ['industrial', 'driving'])
def test_mounted_cameras_stand_still_within_height_and_pitch(family):
    heights, pitches = [], []
    for seed in range(12):
        seq = SyntheticSequence(SequenceSpec(family, 'static', seed, 2, 1.0, 32, 24,
                                             variety=True), ground_truth=False)
        T0, T1 = seq.trajectory.pose(0.0), seq.trajectory.pose(7.0)
        assert np.array_equal(T0, T1)
        heights.append(T0[2, 3])
        # The optical axis (third column) points down by the pitch.
        pitches.append(np.degrees(np.arcsin(-T0[2, 2])))
    assert MOUNT_HEIGHT[0] <= min(heights) and max(heights) <= MOUNT_HEIGHT[1]
    assert MOUNT_PITCH_DEG[0] - 0.5 <= min(pitches) and max(pitches) <= MOUNT_PITCH_DEG[1] + 0.5
    assert np.ptp(heights) > 1.0 and np.ptp(pitches) > 15.0


@pytest.mark.parametrize('family', ['industrial', 'driving'])
def test_variety_adds_movers_and_photos_and_leaves_plain_scenes_alone(family):
    plain = SyntheticSequence(SequenceSpec(family, 'handheld', 3, 1, 15.0, 32, 24),
                              ground_truth=False)
    again = make_scene(family, 3)
    assert [o.name for o in plain.scene.objects] == [o.name for o in again.objects]
    assert all(o.material.pattern != 'photo' for o in plain.scene.objects)
    varied = SyntheticSequence(SequenceSpec(family, 'handheld', 3, 1, 15.0, 32, 24,
                                            variety=True), ground_truth=False)
    movers = sum(o.dynamic for o in varied.scene.objects)
    assert movers > sum(o.dynamic for o in plain.scene.objects)
    assert any(o.material.pattern == 'photo' for o in varied.scene.objects)
    assert 'photo' in PATTERNS


def test_photo_lookup_returns_the_patch_pixels_and_tiles():
    atlas = photo_textures()
    n, size = atlas.shape[:2]
    assert n >= 64 and atlas.shape[1:] == (size, size, 3)
    k = np.array([0, 5, n + 5])
    x, y = np.array([3, 40, 40]), np.array([7, 60, 60])
    u, v = x / size, 1.0 - y / size
    np.testing.assert_allclose(sample_photo(k, u, v), atlas[k % n, y, x], rtol=1e-6)
    np.testing.assert_allclose(sample_photo(k, u + 2.0, v - 1.0), atlas[k % n, y, x],
                               rtol=1e-5)
