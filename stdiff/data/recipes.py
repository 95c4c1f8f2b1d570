"""Dataset recipes (official STDiff settings and split rules) and :func:`build_dataset`.

Official settings (XiYe20/STDiffProject ``stdiff/configs/*_{train,test}_config.yaml`` and
``stdiff/utils/dataset.py``); To = observed frames, Tp = future frames, k = future frames
drawn per training batch (``rand_Tp``):

=========== ==== ======== ======= === ===== == ===========================================
recipe      To   Tp train Tp test k   size  C  training augmentation
=========== ==== ======== ======= === ===== == ===========================================
kth         10   10       20      6   64    3  random horizontal + vertical flips
bair        2    10       28      6   64    3  random horizontal + vertical flips
smmnist     5    10       10      6   64    1  none (clips are generated)
cityscapes  2    10       28      6   128   3  none
kitti       4    5        5       2   128   3  random horizontal + vertical flips
=========== ==== ======== ======= === ===== == ===========================================

Clips: non-overlapping windows of To + Tp consecutive frames, centred in each video
(``clip_stride=None``). The official code trains the released models in its "deploy" phase
on train + validation data; ``split="train"`` here is that full training set.

Split rules and folder layouts (``root`` is what you pass):

- **kth**: ``root/<action>/personNN_<action>_dK[...]/`` frame folders (the processed KTH the
  authors share) or the original ``root/<action>/personNN_<action>_dK_uncomp.avi`` files.
  Actions: boxing, handclapping, handwaving, jogging, running, walking (the folders may be
  named ``jogging_no_empty`` etc.). Persons 1-16 are train, 17-25 test. Frames (160x120)
  are centre-cropped to 120x120 and resized to 64.
- **bair**: ``root/train/<example>/`` and ``root/test/<example>/`` frame folders (64x64),
  e.g. from the official ``read_BAIR_tfrecords.py``.
- **smmnist**: stochastic moving MNIST generated on the fly from MNIST's raw IDX files in
  ``root`` (or ``root/raw``, ``root/MNIST/raw``): two 32 px digits on 64x64, speed up to 4
  px/frame, new random velocity at each wall. Train clips use MNIST train digits (60,000
  clips per epoch), test clips MNIST test digits (10,000). Unlike the official loader, clip
  ``i`` is a pure function of (seed, split, i).
- **cityscapes**: ``root/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png``
  (``leftImg8bit_sequence``); frames are grouped by (city, seq) and runs of consecutive
  frame numbers. train = ``train/`` + ``val/``, test = ``test/``. Frames are centre-cropped
  and resized to 128 (the official offline preprocessing).
- **kitti**: ``root/<drive>/`` frame folders (e.g. ``2011_09_26_drive_0001_sync/``); in
  sorted order folders 10, 11, 12, 13 (0-based) are test, all others train. Frames are
  centre-cropped and resized to 128.

A plain folder or file path is also accepted: a video file, a folder of video files, or a
folder of frame folders. If ``path/<split>`` exists it is used; otherwise the same videos
serve every split (``split`` then only switches augmentation).
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ..checks import integer
from ..config import PRESETS
from .digits import mnist_digits
from .folder import IMAGE_EXTENSIONS, FrameFolderDataset, find_frame_folders, list_frames, natural_key
from .synthetic import MovingDigits, SyntheticMovingDigits
from .transforms import ClipTransform
from .video import VIDEO_EXTENSIONS, VideoFileDataset, find_video_files

__all__ = ["Recipe", "RECIPES", "get_recipe", "build_dataset", "SPLITS"]

SPLITS = ("train", "test")
DEFAULT_OBSERVED = 5
DEFAULT_FUTURE = 10
DEFAULT_IMAGE_SIZE = 64
SYNTHETIC_VIDEOS = {"train": 10_000, "test": 1_000}


@dataclass(frozen=True)
class Recipe:
    """Official defaults of one dataset (see the module docstring for layouts and splits).

    To, Tp (training), k, image size and channels are read from the model preset ``preset``
    (:data:`stdiff.config.PRESETS`): one source of truth for data and model.
    """

    name: str
    preset: str  # the model preset of this dataset's official config
    num_future_test: int  # Tp for testing (predicted autoregressively beyond num_future)
    hflip: bool  # training augmentation
    vflip: bool

    @property
    def _model(self):
        return PRESETS[self.preset]

    @property
    def num_observed(self) -> int:
        """To."""
        return self._model.num_observed

    @property
    def num_future(self) -> int:
        """Tp for training."""
        return self._model.num_future

    @property
    def k(self) -> int:
        """Future frames drawn per training clip (official ``rand_Tp``)."""
        return self._model.train_future_k

    @property
    def image_size(self) -> int:
        return self._model.image_size

    @property
    def channels(self) -> int:
        return self._model.channels

    def future(self, split: str) -> int:
        """Tp of ``split``."""
        return self.num_future if split == "train" else self.num_future_test


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("kth", "kth64", 20, True, True),
        Recipe("bair", "bair64", 28, True, True),
        Recipe("smmnist", "smmnist64", 10, False, False),
        Recipe("cityscapes", "cityscapes128", 28, False, False),
        Recipe("kitti", "kitti128", 5, True, True),
    )
}

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_TRAIN_PERSONS = range(1, 17)
KTH_TEST_PERSONS = range(17, 26)
KITTI_TEST_FOLDERS = (10, 11, 12, 13)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (case-insensitive)."""
    try:
        return RECIPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset recipe {name!r}; known: {', '.join(RECIPES)}") from None


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a directory")
    return path


def _kth_sources(root: Path, split: str) -> tuple[list[Path], bool]:
    """KTH frame folders (or video files) of the split's persons; bool: True for frame folders."""
    persons = set(KTH_TRAIN_PERSONS if split == "train" else KTH_TEST_PERSONS)
    entries: list[Path] = []
    for action in KTH_ACTIONS:
        for name in (f"{action}_no_empty", action):
            if (root / name).is_dir():
                entries.extend(sorted((root / name).iterdir(), key=natural_key))
                break
    if not entries:
        raise FileNotFoundError(f"no KTH action folders ({', '.join(KTH_ACTIONS)}) under {root}")
    folders = [p for p in entries if p.is_dir()]
    use_folders = bool(folders)
    candidates = folders if use_folders else [p for p in entries if p.suffix.lower() in VIDEO_EXTENSIONS]
    selected = []
    for p in candidates:
        match = re.match(r"person(\d+)_", p.name)
        if match and int(match.group(1)) in persons:
            selected.append(p)
    if not selected:
        raise FileNotFoundError(f"no KTH videos of persons {min(persons)}-{max(persons)} under {root}")
    return selected, use_folders


def _cityscapes_videos(root: Path, split: str) -> list[list[Path]]:
    """Runs of consecutive frames of each (city, sequence) in the split's folders."""
    parts = ("train", "val") if split == "train" else ("test",)
    videos = []
    for part in parts:
        for city in sorted(p for p in _require_dir(root / part, "Cityscapes split folder").iterdir() if p.is_dir()):
            sequences: dict[str, list[tuple[int, Path]]] = defaultdict(list)
            for frame in list_frames(city):
                fields = frame.stem.split("_")
                if len(fields) < 3 or not fields[2].isdigit():
                    raise ValueError(f"Cityscapes frame {frame} is not named <city>_<seq>_<frame>_...")
                sequences[fields[1]].append((int(fields[2]), frame))
            for seq in sorted(sequences):
                run: list[Path] = []
                previous = None
                for number, frame in sorted(sequences[seq]):
                    if previous is not None and number != previous + 1:
                        videos.append(run)
                        run = []
                    run.append(frame)
                    previous = number
                videos.append(run)
    return videos


def _kitti_videos(root: Path, split: str) -> list[list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if len(folders) <= max(KITTI_TEST_FOLDERS):
        raise ValueError(
            f"KITTI root {root} has {len(folders)} drive folders; the official split needs at least "
            f"{max(KITTI_TEST_FOLDERS) + 1} (folders {KITTI_TEST_FOLDERS} are test)"
        )
    chosen = [f for i, f in enumerate(folders) if (i in KITTI_TEST_FOLDERS) == (split == "test")]
    return [list_frames(f) for f in chosen]


def _recipe_dataset(
    recipe: Recipe, root: Path, split: str, num_frames: int, image_size: int, channels: int,
    transform: ClipTransform, frame_step: int, clip_stride: int | None, num_videos: int | None, seed: int,
) -> Dataset:
    _require_dir(root, f"{recipe.name} root")
    if recipe.name == "smmnist":
        bank = mnist_digits(root, split, size=image_size // 2)
        return MovingDigits(
            bank, num_videos or len(bank), num_frames, image_size, channels, 2, seed, SPLITS.index(split),
            max(1, round(image_size / 16)),
        )
    if recipe.name == "kth":
        sources, are_folders = _kth_sources(root, split)
        if not are_folders:
            return VideoFileDataset(sources, num_frames, transform, frame_step, clip_stride)
        videos = [list_frames(p) for p in sources]
    elif recipe.name == "bair":
        videos = [list_frames(p) for p in find_frame_folders(_require_dir(root / split, "BAIR split folder"))]
    elif recipe.name == "cityscapes":
        videos = _cityscapes_videos(root, split)
    else:
        videos = _kitti_videos(root, split)
    return FrameFolderDataset(videos, num_frames, transform, frame_step, clip_stride)


def _has_images(root: Path) -> bool:
    return any(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for _, _, files in os.walk(root) for f in files)


def _path_dataset(
    path: Path, split: str, num_frames: int, transform: ClipTransform, frame_step: int, clip_stride: int | None
) -> Dataset:
    if (path / split).is_dir():
        path = path / split
    if path.is_file():
        return VideoFileDataset([path], num_frames, transform, frame_step, clip_stride)
    if _has_images(path):
        return FrameFolderDataset(path, num_frames, transform, frame_step, clip_stride)
    return VideoFileDataset(find_video_files(path), num_frames, transform, frame_step, clip_stride)


def _split_name(name_or_path: str | os.PathLike, root: str | os.PathLike | None) -> tuple[str, Path | None]:
    """("synthetic" | recipe name | "path", path or None). Accepts ``"kth:/data/KTH"``."""
    text = os.fspath(name_or_path)
    key, sep, rest = text.partition(":")
    if sep and key.lower() in RECIPES and rest:
        if root is not None:
            raise ValueError(f"give the root either in name_or_path ({text!r}) or as root=, not both")
        return key.lower(), Path(rest)
    if text.lower() == "synthetic" or text.lower() in RECIPES:
        return text.lower(), None if root is None else Path(root)
    if root is not None:
        raise ValueError(f"root= is only used with a recipe name ({', '.join(RECIPES)}), got {text!r}")
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"data {text!r} is neither 'synthetic', a recipe ({', '.join(RECIPES)}) nor an existing path"
        )
    return "path", path


def build_dataset(
    name_or_path: str | os.PathLike = "synthetic",
    split: str = "train",
    image_size: int | None = None,
    num_observed: int | None = None,
    num_future: int | None = None,
    *,
    root: str | os.PathLike | None = None,
    channels: int | None = None,
    frame_step: int = 1,
    clip_stride: int | None = None,
    num_videos: int | None = None,
    seed: int = 0,
    augment: bool | None = None,
    crop: str = "center",
    resize: bool | int = True,
    max_speed: int | None = None,
    rate: int = 1,
) -> Dataset:
    """A dataset of (To + Tp, C, H, W) float32 clips in [0, 1].

    Args:
        name_or_path: "synthetic" (built-in moving digits), a recipe name ("kth", "bair",
            "smmnist", "cityscapes", "kitti") with ``root=`` (or written "kth:/data/KTH"),
            or a path to a video file, a folder of videos or a folder of frame folders.
        split: "train" or "test".
        image_size, num_observed, num_future, channels: default to the recipe's values
            (test Tp for ``split="test"``); for "synthetic" and paths 64 px, To=5, Tp=10,
            C=1 (synthetic) or 3 (paths).
        frame_step, clip_stride: temporal subsampling and spacing of clips (real videos).
        num_videos: clips per epoch of generated data (synthetic: 10,000 train / 1,000 test;
            smmnist: the MNIST split size).
        seed: seed of generated data.
        augment: random flips (the recipe's flips; hflip for paths); default: split == "train".
        crop, resize: see :class:`ClipTransform` (real videos), e.g. ``crop="random",
            resize=False`` for native-resolution random crops.
        max_speed, rate: synthetic data only: largest velocity component (px/frame; default
            image_size / 16) and frames per motion step (``rate`` > 1 adds real in-between frames:
            To + Tp frames at times 0, 1/rate, ...).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kind, path = _split_name(name_or_path, root)
    recipe = RECIPES.get(kind)
    if recipe is not None and path is None:
        raise ValueError(
            f"recipe {kind!r} needs root= (the dataset folder), e.g. build_dataset('{kind}', root='/data/{kind}')"
        )
    To = num_observed if num_observed is not None else (recipe.num_observed if recipe else DEFAULT_OBSERVED)
    Tp = num_future if num_future is not None else (recipe.future(split) if recipe else DEFAULT_FUTURE)
    for name, value in (("num_observed", To), ("num_future", Tp)):
        integer(name, value, 1)
    size = image_size if image_size is not None else (recipe.image_size if recipe else DEFAULT_IMAGE_SIZE)
    default_channels = recipe.channels if recipe else (1 if kind == "synthetic" else 3)
    channels = default_channels if channels is None else channels
    if kind == "synthetic":
        return SyntheticMovingDigits(
            num_videos or SYNTHETIC_VIDEOS[split], To + Tp, size, channels, seed=seed, split=split,
            max_speed=max_speed, rate=rate,
        )
    if max_speed is not None or rate != 1:
        raise ValueError("max_speed and rate apply to the synthetic data only (real videos: frame_step)")
    augment = split == "train" if augment is None else augment
    flips = (recipe.hflip, recipe.vflip) if recipe else (True, False)
    transform = ClipTransform(size, channels, resize, crop, augment and flips[0], augment and flips[1])
    if recipe is not None:
        return _recipe_dataset(
            recipe, path, split, To + Tp, size, channels, transform, frame_step, clip_stride, num_videos, seed
        )
    return _path_dataset(path, split, To + Tp, transform, frame_step, clip_stride)
