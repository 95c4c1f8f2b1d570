"""AlexNet convolutional trunk (the ``features`` part of torchvision's AlexNet), for LPIPS.

Written here so torchvision is not needed; parameter names match torchvision's
``alexnet().features`` (``features.0.weight`` ... ``features.10.bias``), so its state dict
loads as is.
"""
from __future__ import annotations

from torch import Tensor, nn

#: Channels of the five ReLU outputs LPIPS compares (relu1 ... relu5).
CHANNELS = (64, 192, 384, 256, 256)
#: Indices in ``features`` after which those ReLU outputs are taken.
_TAPS = (1, 4, 7, 9, 11)


class AlexNetFeatures(nn.Module):
    """AlexNet trunk returning the five ReLU feature maps.

    forward: (B, 3, H, W) ImageNet-normalised images -> list of 5 tensors (B, CHANNELS[k], h_k, w_k).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                outs.append(x)
        return outs
