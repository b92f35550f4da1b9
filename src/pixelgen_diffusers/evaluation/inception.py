# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The TensorFlow Inception-v3 graph of 2015-12-05 (`classify_image_graph_def.pb`) that OpenAI's ADM evaluator runs,
as a torch module.

Layer names follow the TensorFlow graph (`conv`, `conv_1`, ..., `mixed`, `mixed_1`, ..., `mixed_10`), so the features
ADM reads are named as ADM names them: `pool_3` (2048 values) and `mixed_6/conv` (the first 1x1 branch of the fifth
17x17 block, of which ADM keeps the first 7 channels for sFID). Where the graph differs from torchvision's
Inception-v3 the graph wins: batch norm without a scale (epsilon 1e-3), average pools that do not count padding, a max
pool in the pool branch of `mixed_10`, and 1008 output classes.

The input handling is the graph's own: a TensorFlow 1 bilinear resize to 299x299 (`ResizeBilinear` without
`align_corners` or half-pixel centres), then `(x - 128) / 128`.
"""

import torch
import torch.nn.functional as F
from torch import nn


INCEPTION_SIZE = 299
POOL_FEATURES = 2048
NUM_LOGITS = 1008
# ADM's sFID features: the first 7 channels of `mixed_6/conv` (17x17), flattened in NHWC order.
SPATIAL_CHANNELS = 7
SPATIAL_FEATURES = SPATIAL_CHANNELS * 17 * 17


def tf1_resize_bilinear(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resizes (N, C, H, W) float images the way TensorFlow 1's `ResizeBilinear` does with `align_corners=False` and
    `half_pixel_centers=False` (the op in the 2015 Inception graph): output pixel `i` reads input coordinate
    `i * in_size / out_size` (float32, no half-pixel offset), interpolating between `floor` and `floor + 1` (clamped
    to the last pixel), rows first then columns. No antialiasing, so downscaling aliases exactly as TensorFlow does.

    Source: tensorflow/core/kernels/image/resize_bilinear_op.cc (`compute_interpolation_weights`, `LegacyScaler`).
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a (N, C, H, W) float tensor, got {tuple(images.shape)} {images.dtype}")
    out_height, out_width = (size, size) if isinstance(size, int) else size
    in_height, in_width = images.shape[-2:]
    if (in_height, in_width) == (out_height, out_width):
        return images

    def weights(in_size: int, out_size: int):
        scale = torch.tensor(in_size / out_size, dtype=torch.float32)  # TF computes the scale in float32
        source = torch.arange(out_size, dtype=torch.float32) * scale
        lower = source.floor()
        fraction = (source - lower).to(images.device, images.dtype)
        lower = lower.long()
        upper = (lower + 1).clamp(max=in_size - 1)
        return lower.to(images.device), upper.to(images.device), fraction

    row_lower, row_upper, row_fraction = weights(in_height, out_height)
    column_lower, column_upper, column_fraction = weights(in_width, out_width)
    top = images[..., row_lower, :]
    bottom = images[..., row_upper, :]
    top_left, top_right = top[..., column_lower], top[..., column_upper]
    bottom_left, bottom_right = bottom[..., column_lower], bottom[..., column_upper]
    top = top_left + (top_right - top_left) * column_fraction
    bottom = bottom_left + (bottom_right - bottom_left) * column_fraction
    return top + (bottom - top) * row_fraction[:, None]


class InceptionConv(nn.Module):
    """A TensorFlow `conv` node of the graph: convolution without bias, batch norm with an offset but no scale
    (`BatchNormWithGlobalNormalization`, epsilon 1e-3), ReLU. `padding` is 0 for the graph's VALID convolutions and
    half the kernel for its SAME ones (all stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1, same: bool = True):
        super().__init__()
        kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride = stride
        self.padding = (kernel_size[0] // 2, kernel_size[1] // 2) if same else (0, 0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *kernel_size))
        self.beta = nn.Parameter(torch.zeros(out_channels))
        self.mean = nn.Parameter(torch.zeros(out_channels))
        self.var = nn.Parameter(torch.ones(out_channels))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.conv2d(hidden_states, self.weight, None, self.stride, self.padding)
        hidden_states = F.batch_norm(hidden_states, self.mean, self.var, None, self.beta, False, 0.0, 1e-3)
        return F.relu(hidden_states)


def _average_pool(hidden_states: torch.Tensor) -> torch.Tensor:
    # TensorFlow's SAME average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(hidden_states, 3, stride=1, padding=1, count_include_pad=False)


class InceptionBlock35(nn.Module):
    """`mixed`, `mixed_1`, `mixed_2` (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_channels: int, pool_channels: int):
        super().__init__()
        self.conv = InceptionConv(in_channels, 64, 1)
        self.tower = nn.Sequential()
        self.tower.add_module("conv", InceptionConv(in_channels, 48, 1))
        self.tower.add_module("conv_1", InceptionConv(48, 64, 5))
        self.tower_1 = nn.Sequential()
        self.tower_1.add_module("conv", InceptionConv(in_channels, 64, 1))
        self.tower_1.add_module("conv_1", InceptionConv(64, 96, 3))
        self.tower_1.add_module("conv_2", InceptionConv(96, 96, 3))
        self.tower_2 = nn.Module()
        self.tower_2.conv = InceptionConv(in_channels, pool_channels, 1)

    def branches(self, hidden_states: torch.Tensor) -> list[torch.Tensor]:
        pooled = self.tower_2.conv(_average_pool(hidden_states))
        return [self.conv(hidden_states), self.tower(hidden_states), self.tower_1(hidden_states), pooled]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.branches(hidden_states), dim=1)


class InceptionReduction35(nn.Module):
    """`mixed_3` (35x35 -> 17x17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = InceptionConv(in_channels, 384, 3, stride=2, same=False)
        self.tower = nn.Sequential()
        self.tower.add_module("conv", InceptionConv(in_channels, 64, 1))
        self.tower.add_module("conv_1", InceptionConv(64, 96, 3))
        self.tower.add_module("conv_2", InceptionConv(96, 96, 3, stride=2, same=False))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(hidden_states, 3, stride=2)
        return torch.cat([self.conv(hidden_states), self.tower(hidden_states), pooled], dim=1)


class InceptionBlock17(nn.Module):
    """`mixed_4` ... `mixed_7` (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

    def __init__(self, channels_7x7: int):
        super().__init__()
        self.conv = InceptionConv(768, 192, 1)
        self.tower = nn.Sequential()
        self.tower.add_module("conv", InceptionConv(768, channels_7x7, 1))
        self.tower.add_module("conv_1", InceptionConv(channels_7x7, channels_7x7, (1, 7)))
        self.tower.add_module("conv_2", InceptionConv(channels_7x7, 192, (7, 1)))
        self.tower_1 = nn.Sequential()
        self.tower_1.add_module("conv", InceptionConv(768, channels_7x7, 1))
        for index, kernel_size in enumerate([(7, 1), (1, 7), (7, 1)], start=1):
            self.tower_1.add_module(f"conv_{index}", InceptionConv(channels_7x7, channels_7x7, kernel_size))
        self.tower_1.add_module("conv_4", InceptionConv(channels_7x7, 192, (1, 7)))
        self.tower_2 = nn.Module()
        self.tower_2.conv = InceptionConv(768, 192, 1)

    def branches(self, hidden_states: torch.Tensor) -> list[torch.Tensor]:
        pooled = self.tower_2.conv(_average_pool(hidden_states))
        return [self.conv(hidden_states), self.tower(hidden_states), self.tower_1(hidden_states), pooled]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.branches(hidden_states), dim=1)


class InceptionReduction17(nn.Module):
    """`mixed_8` (17x17 -> 8x8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self):
        super().__init__()
        self.tower = nn.Sequential()
        self.tower.add_module("conv", InceptionConv(768, 192, 1))
        self.tower.add_module("conv_1", InceptionConv(192, 320, 3, stride=2, same=False))
        self.tower_1 = nn.Sequential()
        self.tower_1.add_module("conv", InceptionConv(768, 192, 1))
        self.tower_1.add_module("conv_1", InceptionConv(192, 192, (1, 7)))
        self.tower_1.add_module("conv_2", InceptionConv(192, 192, (7, 1)))
        self.tower_1.add_module("conv_3", InceptionConv(192, 192, 3, stride=2, same=False))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(hidden_states, 3, stride=2)
        return torch.cat([self.tower(hidden_states), self.tower_1(hidden_states), pooled], dim=1)


class InceptionBlock8(nn.Module):
    """`mixed_9`, `mixed_10` (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1. The graph pools the last
    branch with an average in `mixed_9` and with a maximum in `mixed_10` (`max_pool=True`)."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.conv = InceptionConv(in_channels, 320, 1)
        self.tower_conv = InceptionConv(in_channels, 384, 1)
        self.tower_mixed_conv = InceptionConv(384, 384, (1, 3))
        self.tower_mixed_conv_1 = InceptionConv(384, 384, (3, 1))
        self.tower_1_conv = InceptionConv(in_channels, 448, 1)
        self.tower_1_conv_1 = InceptionConv(448, 384, 3)
        self.tower_1_mixed_conv = InceptionConv(384, 384, (1, 3))
        self.tower_1_mixed_conv_1 = InceptionConv(384, 384, (3, 1))
        self.tower_2_conv = InceptionConv(in_channels, 192, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        tower = self.tower_conv(hidden_states)
        tower_1 = self.tower_1_conv_1(self.tower_1_conv(hidden_states))
        if self.max_pool:
            pooled = F.max_pool2d(hidden_states, 3, stride=1, padding=1)
        else:
            pooled = _average_pool(hidden_states)
        branches = [
            self.conv(hidden_states),
            self.tower_mixed_conv(tower),
            self.tower_mixed_conv_1(tower),
            self.tower_1_mixed_conv(tower_1),
            self.tower_1_mixed_conv_1(tower_1),
            self.tower_2_conv(pooled),
        ]
        return torch.cat(branches, dim=1)


class InceptionV3(nn.Module):
    """The 2015-12-05 TensorFlow Inception-v3 graph, as ADM's evaluator uses it.

    `forward(images)` takes (N, 3, H, W) images with values in [0, 255] (uint8 or float; any size: they are resized
    to 299x299 with `tf1_resize_bilinear`, as the graph does) and returns a dict of float32 tensors:
    - `pool_3`: (N, 2048), the FID features;
    - `spatial`: (N, 2023), the first 7 channels of `mixed_6/conv` flattened in NHWC order (17 x 17 x 7), the sFID
      features, in the coordinate order of ADM's `mu_s` / `sigma_s`;
    - `logits`: (N, 1008), `pool_3 @ softmax/weights`, without the bias (as ADM's Inception Score takes them), only
      when the model has its classifier (`with_logits=True`).

    Weights come from `pixelgen_diffusers.evaluation.load_inception`; a fresh module is randomly initialised.
    """

    def __init__(self, with_logits: bool = True):
        super().__init__()
        self.conv = InceptionConv(3, 32, 3, stride=2, same=False)
        self.conv_1 = InceptionConv(32, 32, 3, same=False)
        self.conv_2 = InceptionConv(32, 64, 3)
        self.conv_3 = InceptionConv(64, 80, 1)
        self.conv_4 = InceptionConv(80, 192, 3, same=False)
        self.mixed = InceptionBlock35(192, pool_channels=32)
        self.mixed_1 = InceptionBlock35(256, pool_channels=64)
        self.mixed_2 = InceptionBlock35(288, pool_channels=64)
        self.mixed_3 = InceptionReduction35(288)
        self.mixed_4 = InceptionBlock17(channels_7x7=128)
        self.mixed_5 = InceptionBlock17(channels_7x7=160)
        self.mixed_6 = InceptionBlock17(channels_7x7=160)
        self.mixed_7 = InceptionBlock17(channels_7x7=192)
        self.mixed_8 = InceptionReduction17()
        self.mixed_9 = InceptionBlock8(1280, max_pool=False)
        self.mixed_10 = InceptionBlock8(2048, max_pool=True)
        self.softmax = nn.Linear(POOL_FEATURES, NUM_LOGITS, bias=False) if with_logits else None
        self.requires_grad_(False)
        self.eval()

    @property
    def with_logits(self) -> bool:
        return self.softmax is not None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) values in [0, 255] -> the graph's input: resized to 299x299 (TensorFlow 1 bilinear), then
        `(x - 128) / 128` (the graph's `Sub` and `Mul` by 1/128, exact in float32)."""
        images = images.to(self.conv.weight.device, torch.float32)
        images = tf1_resize_bilinear(images, INCEPTION_SIZE)
        return (images - 128) / 128

    def forward_preprocessed(self, hidden_states: torch.Tensor) -> dict[str, torch.Tensor]:
        """The graph from its normalised 299x299 input on (the tensor `preprocess` returns)."""
        hidden_states = self.conv_2(self.conv_1(self.conv(hidden_states)))
        hidden_states = F.max_pool2d(hidden_states, 3, stride=2)
        hidden_states = self.conv_4(self.conv_3(hidden_states))
        hidden_states = F.max_pool2d(hidden_states, 3, stride=2)
        for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4, self.mixed_5):
            hidden_states = block(hidden_states)
        branches = self.mixed_6.branches(hidden_states)
        spatial = branches[0][:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)  # NHWC, as ADM flattens it
        hidden_states = torch.cat(branches, dim=1)
        for block in (self.mixed_7, self.mixed_8, self.mixed_9, self.mixed_10):
            hidden_states = block(hidden_states)
        pool_3 = F.avg_pool2d(hidden_states, 8).flatten(1)  # the graph's VALID 8x8 pool of the 8x8 map
        features = {"pool_3": pool_3, "spatial": spatial}
        if self.softmax is not None:
            features["logits"] = self.softmax(pool_3)
        return features

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) RGB values in [0, 255], got shape {tuple(images.shape)}")
        return self.forward_preprocessed(self.preprocess(images))
