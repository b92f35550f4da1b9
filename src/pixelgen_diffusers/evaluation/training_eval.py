# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""FID-N during training (`pixelgen train --eval-every K --eval-reference REF`): N class-balanced samples of the
pipeline being trained, scored with ADM's FID against a reference file."""

from pathlib import Path

import numpy as np

from ..utils import check_number
from .features import compute_features
from .metrics import feature_statistics, frechet_distance


class ArrayImageSet:
    """uint8 (N, H, W, 3) images held in memory, read in batches like an `ImageSet`."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        stop = len(self) if stop is None else stop
        for batch_start in range(start, stop, batch_size):
            yield self.images[batch_start : min(batch_start + batch_size, stop)]


class TrainingEvaluator:
    """`evaluator(pipeline)` -> `{"fid": FID-N}` of `num_samples` class-balanced samples (sample i: class
    `i % num_classes`, or unconditional, with a generator seeded `seed + i`, the pipeline's own sampling recipe).

    Everything that can be wrong with the inputs (the reference file, the weights) is checked when the evaluator is
    built, before training starts; the Inception network and the reference statistics are loaded at the first call.
    """

    def __init__(
        self,
        reference: str | Path,
        num_samples: int = 1000,
        batch_size: int = 32,
        inception_weights: str | Path | None = None,
        seed: int = 0,
    ):
        from .reference import load_reference
        from .weights import resolve_weights

        check_number("eval_num_samples (--eval-num-samples)", num_samples, integer=True, minimum=2)
        check_number("batch_size", batch_size, integer=True, minimum=1)
        self.reference = load_reference(reference)
        if self.reference.statistics is None and (self.reference.num_images or 0) < 2:
            raise ValueError(f"--eval-reference {reference}: needs mu/sigma or at least 2 images")
        self.weights_path, self.weights_sha256 = resolve_weights(inception_weights)
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self._inception = self._statistics = None

    def _prepare(self, device) -> None:
        from .features import extract_features
        from .weights import load_inception

        self._inception, _ = load_inception(self.weights_path, device)
        statistics = self.reference.statistics or {}
        if "mu" in statistics:
            self._statistics = statistics["mu"], statistics["sigma"]
        else:
            features = extract_features(
                self._inception, self.reference.images, self.weights_sha256, self.batch_size, True, "reference"
            )
            self._statistics = feature_statistics(features["pool_3"])

    def __call__(self, pipeline) -> dict:
        import torch

        device = pipeline.transformer.device
        if self._inception is None:
            self._prepare(device)
        num_classes = getattr(pipeline.transformer.config, "num_classes", 0) or 0
        pipeline.set_progress_bar_config(disable=True)
        images = []
        for start in range(0, self.num_samples, self.batch_size):
            indices = range(start, min(start + self.batch_size, self.num_samples))
            generators = [torch.Generator("cpu").manual_seed(self.seed + i) for i in indices]
            if num_classes:
                output = pipeline(class_labels=[i % num_classes for i in indices], generator=generators)
            else:
                output = pipeline(num_images_per_prompt=len(indices), generator=generators)
            images.extend(np.asarray(image.convert("RGB")) for image in output.images)
        features = compute_features(self._inception, ArrayImageSet(np.stack(images)), self.batch_size)
        fid = frechet_distance(*feature_statistics(features["pool_3"]), *self._statistics)
        return {f"fid_{self.num_samples}": fid}
