# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""FD-DINOv2 (Stein et al. 2023, as EDM2 and dgm-eval compute it): the Fréchet distance between Gaussians fitted to
DINOv2 embeddings. Images are resized to 224x224 (bicubic, antialiased), scaled to [0, 1], normalised with the
ImageNet mean and standard deviation, and embedded as the CLS token after the final layer norm (transformers'
`Dinov2Model` `pooler_output`; 1024 values for ViT-L/14, the model of the protocol: facebook/dinov2-large)."""

import torch
import torch.nn.functional as F
from torch import nn


DINO_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoV2Features(nn.Module):
    """`forward((N, 3, H, W) values in [0, 255])` -> `{"dinov2": (N, hidden_size) float32}`, the CLS embedding."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device="cpu") -> "DinoV2Features":
        """A DINOv2 model from a local folder or a Hub id (transformers' `Dinov2Model.from_pretrained`); a folder
        that is not a DINOv2 checkpoint is a ValueError naming it."""
        from transformers import Dinov2Model

        try:
            model = Dinov2Model.from_pretrained(name_or_path)
        except (OSError, ValueError) as error:
            raise ValueError(f"--dino {name_or_path}: cannot load a DINOv2 model ({error})".splitlines()[0]) from None
        return cls(model).to(device)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        device = self.mean.device
        pixels = images.to(device, torch.float32)
        pixels = F.interpolate(pixels, size=(DINO_SIZE, DINO_SIZE), mode="bicubic", antialias=True)
        pixels = (pixels / 255 - self.mean) / self.std
        return {"dinov2": self.model(pixel_values=pixels).pooler_output.float()}
