"""Training PixelGen class-to-image and text-to-image models: `train(TrainingConfig(...))` or `pixelgen train`."""

from .captions import CaptionEmbeddingCache
from .data import ImageCaptionDataset, ImageClassDataset, center_crop_arr
from .losses import EMA, LPIPS, PixelGenLoss, load_dino, load_lpips
from .trainer import Trainer, TrainingConfig, train


__all__ = [
    "EMA",
    "CaptionEmbeddingCache",
    "LPIPS",
    "ImageCaptionDataset",
    "ImageClassDataset",
    "PixelGenLoss",
    "Trainer",
    "TrainingConfig",
    "center_crop_arr",
    "load_dino",
    "load_lpips",
    "train",
]
