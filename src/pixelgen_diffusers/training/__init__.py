"""Training PixelGen class-to-image models: `train(TrainingConfig(...))` or `pixelgen train`."""

from .data import ImageClassDataset, center_crop_arr
from .losses import EMA, LPIPS, PixelGenLoss, load_dino, load_lpips
from .trainer import Trainer, TrainingConfig, train


__all__ = [
    "EMA",
    "LPIPS",
    "ImageClassDataset",
    "PixelGenLoss",
    "Trainer",
    "TrainingConfig",
    "center_crop_arr",
    "load_dino",
    "load_lpips",
    "train",
]
