"""STDiff networks: motion encoder, Conv-GRU, motion SDE, SPADE UNet and the full model."""
from .motion import ConvGRU, MotionEncoder
from .sde import MotionSDE, SDEFuncNet, time_grid
from .stdiff import STDiff
from .unet import SpadeUNet

__all__ = ["ConvGRU", "MotionEncoder", "MotionSDE", "SDEFuncNet", "STDiff", "SpadeUNet", "time_grid"]
