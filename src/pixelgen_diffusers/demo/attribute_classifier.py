# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The small CNN that scores the text-to-image demo, the way GenEval's detector scores real models: for each image,
which shape is drawn, in which colour, on which background colour. Trained on its own split of the captioned
shapes (all 560 colour/shape/background combinations, held-out ones included)."""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .captions import COLOR_NAMES, T2I_CLASSIFIER_SEED, T2I_EVAL_SEED, make_captioned_shapes
from .classifier import ShapeClassifier
from .shapes import CLASS_NAMES


ATTRIBUTE_CLASSIFIER_PATH = Path(__file__).parent / "attribute_classifier.safetensors"
ATTRIBUTES = ("shape", "color", "background")


class AttributeClassifier(ShapeClassifier):
    """The demo's shape classifier (same convolutional trunk and shape head) plus a shape-colour and a
    background-colour head. Input: images in [-1, 1]; output: a dict of (B, classes) logits per attribute."""

    def __init__(self, feature_dim: int = 64):
        super().__init__(num_classes=len(CLASS_NAMES), feature_dim=feature_dim)
        self.color_head = nn.Linear(feature_dim, len(COLOR_NAMES))
        self.background_head = nn.Linear(feature_dim, len(COLOR_NAMES))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(images)
        return {
            "shape": self.head(features),
            "color": self.color_head(features),
            "background": self.background_head(features),
        }

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 500) -> torch.LongTensor:
        """(B, 3) predicted (shape, colour, background) indices into CLASS_NAMES and COLOR_NAMES."""
        predictions = []
        for start in range(0, len(images), batch_size):
            logits = self(images[start : start + batch_size])
            predictions.append(torch.stack([logits[name].argmax(dim=1) for name in ATTRIBUTES], dim=1))
        return torch.cat(predictions)


def load_attribute_classifier(path: str | Path = ATTRIBUTE_CLASSIFIER_PATH) -> AttributeClassifier:
    """The shipped classifier, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No attribute classifier at {path}; run scripts/make_demo_t2i_model.py to create it.")
    classifier = AttributeClassifier()
    classifier.load_state_dict(load_file(path))
    return classifier.eval()


def attribute_accuracy(classifier: AttributeClassifier, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy per attribute and of all three at once, on (B, 3) labels."""
    correct = classifier.predict(images) == labels
    return {name: correct[:, index].float().mean().item() for index, name in enumerate(ATTRIBUTES)} | {
        "all": correct.all(dim=1).float().mean().item()
    }


def train_attribute_classifier(
    num_images: int = 16000,
    epochs: int = 8,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    num_eval_images: int = 1000,
    path: str | Path | None = ATTRIBUTE_CLASSIFIER_PATH,
) -> tuple[AttributeClassifier, dict]:
    """Trains on the classifier split (T2I_CLASSIFIER_SEED, all combinations), reports `attribute_accuracy` on
    real images of the held-out evaluation split (T2I_EVAL_SEED, held-out combinations only), and saves the weights
    to `path` (unless None). Returns the classifier (eval mode) and that accuracy."""
    torch.manual_seed(seed)
    images, _, labels = make_captioned_shapes(num_images, T2I_CLASSIFIER_SEED, held_out=None)
    classifier = AttributeClassifier()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=1e-4)
    num_steps = epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=num_steps)
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images) - batch_size + 1, batch_size):
            batch = order[start : start + batch_size]
            logits = classifier(images[batch])
            loss = sum(F.cross_entropy(logits[name], labels[batch, i]) for i, name in enumerate(ATTRIBUTES))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    classifier.eval()
    eval_images, _, eval_labels = make_captioned_shapes(num_eval_images, T2I_EVAL_SEED, held_out=True)
    held_out_accuracy = attribute_accuracy(classifier, eval_images, eval_labels)
    if path is not None:
        save_file({name: tensor.contiguous() for name, tensor in classifier.state_dict().items()}, str(path))
    return classifier, held_out_accuracy
