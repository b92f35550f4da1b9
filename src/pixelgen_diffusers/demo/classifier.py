# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The small CNN that scores the demo model: its accuracy on generated images, and its penultimate features for a
Frechet distance against real held-out images. Trained on its own split of the shapes generator."""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .shapes import CLASS_NAMES, CLASSIFIER_SEED, EVAL_SEED, make_shapes


CLASSIFIER_PATH = Path(__file__).parent / "classifier.safetensors"


class ShapeClassifier(nn.Module):
    """Three conv stages (32x32 -> 16 -> 8 -> 4) and global average pooling to `feature_dim` features, then a linear
    classifier. Input: images in [-1, 1]."""

    def __init__(self, num_classes: int = len(CLASS_NAMES), feature_dim: int = 64):
        super().__init__()

        def stage(in_channels: int, out_channels: int) -> list[nn.Module]:
            return [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.Conv2d(out_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]

        self.layers = nn.Sequential(*stage(3, 16), *stage(16, 32), *stage(32, feature_dim))
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features, (B, feature_dim)."""
        return self.layers(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def load_classifier(path: str | Path = CLASSIFIER_PATH) -> ShapeClassifier:
    """The shipped classifier, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No demo classifier at {path}; run scripts/make_demo_model.py to create it.")
    classifier = ShapeClassifier()
    classifier.load_state_dict(load_file(path))
    return classifier.eval()


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = classifier(images[start : start + batch_size])
        correct += (logits.argmax(dim=1) == labels[start : start + batch_size]).sum().item()
    return correct / len(images)


def train_classifier(
    num_per_class: int = 500,
    epochs: int = 5,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    num_eval_per_class: int = 100,
    path: str | Path | None = CLASSIFIER_PATH,
) -> tuple[ShapeClassifier, float]:
    """Trains on the classifier split (CLASSIFIER_SEED), reports accuracy on the held-out split (EVAL_SEED), and
    saves the weights to `path` (unless None). Returns the classifier (eval mode) and that accuracy."""
    torch.manual_seed(seed)
    images, labels = make_shapes(num_per_class, CLASSIFIER_SEED)
    classifier = ShapeClassifier()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=1e-4)
    num_steps = epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=num_steps)
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images) - batch_size + 1, batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(classifier(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    classifier.eval()
    eval_images, eval_labels = make_shapes(num_eval_per_class, EVAL_SEED)
    held_out_accuracy = accuracy(classifier, eval_images, eval_labels)
    if path is not None:
        save_file({name: tensor.contiguous() for name, tensor in classifier.state_dict().items()}, str(path))
    return classifier, held_out_accuracy
