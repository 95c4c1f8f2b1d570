"""Synthetic digits report their wall hits (where the future becomes uncertain)."""
from __future__ import annotations

import numpy as np

from stdiff.data import SyntheticMovingDigits
from stdiff.data.synthetic import bounce_trajectory


def test_hits_are_the_frames_clamped_onto_a_wall():
    rng = np.random.default_rng(3)
    hits: list[int] = []
    path = bounce_trajectory(rng, 40, 10, 3, hits)
    assert hits, "40 frames at speed up to 3 in a 10 px box must hit a wall"
    for t in hits:
        assert (path[t] == 0).any() or (path[t] == 10).any()
    velocity = np.diff(path, axis=0)
    changed = [t + 1 for t in range(1, len(velocity)) if (velocity[t] != velocity[t - 1]).any()]
    assert set(changed) <= {t + 1 for t in hits} | set(hits)  # the velocity changes only at wall hits


def test_wall_hits_replay_the_clip_stream():
    data = SyntheticMovingDigits(num_videos=64, num_frames=12, image_size=32, split="test")
    clips = [data.generate(i) for i in range(64)]
    hits = [data.wall_hits(i) for i in range(64)]
    assert any(hits) and not all(hits)
    assert all(np.array_equal(clip, data.generate(i)) for i, clip in enumerate(clips))  # replaying draws nothing new
