"""Checkpoints of the official STDiff code: key mapping, config conversion and loading.

``load_official(path)`` returns an :class:`stdiff.models.STDiff`; ``stdiff convert-official SRC DST``
writes it in this package's export format (:func:`stdiff.checkpoint.save_pretrained`).
"""
from .config import architecture_differences, config_from_official
from .keys import official_to_ours, ours_to_official, state_official_to_ours, state_ours_to_official
from .load import OfficialFiles, is_official_checkpoint, load_official, locate_official, read_state_dict

__all__ = [
    "OfficialFiles", "architecture_differences", "config_from_official", "is_official_checkpoint", "load_official",
    "locate_official", "official_to_ours", "ours_to_official", "read_state_dict", "state_official_to_ours",
    "state_ours_to_official",
]
