# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Class-labelled image folders for training, with upstream's (ADM) center crop."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import PIL.Image
import torch


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def center_crop_arr(image: PIL.Image.Image, image_size: int) -> PIL.Image.Image:
    """ADM's center crop (guided-diffusion `center_crop_arr`, used by upstream): halve with a box filter while the
    short side is at least twice the target, resize bicubically so the short side equals it, then crop the center."""
    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=PIL.Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=PIL.Image.BICUBIC)
    array = np.asarray(image)
    top = (array.shape[0] - image_size) // 2
    left = (array.shape[1] - image_size) // 2
    return PIL.Image.fromarray(array[top : top + image_size, left : left + image_size])


def image_to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """RGB PIL image to a (3, H, W) float tensor in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def _is_readable(path: Path) -> bool:
    try:
        with PIL.Image.open(path) as image:
            image.size
        return True
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return False


class ImageClassDataset(torch.utils.data.Dataset):
    r"""
    Labelled images, center-cropped to `sample_size` and scaled to [-1, 1]; items are `(image, class_id)`.

    Two layouts:
    - ImageFolder: `root/<class name>/**/<image>`; classes are the sub-folder names, sorted.
    - A folder plus `labels_file`: a JSON object `{"relative/path.png": label}`, or a text/CSV file with one
      `relative/path.png,label` line per image (comma or tab separated). Labels are class names (ids assigned in
      sorted order) or, when all are integers, class ids.

    Files whose header cannot be read are skipped and counted (`num_skipped`, `skipped`).
    """

    def __init__(self, root: str | os.PathLike, sample_size: int, labels_file: str | os.PathLike | None = None):
        self.root = Path(root)
        self.sample_size = sample_size
        if not self.root.is_dir():
            raise ValueError(f"data_dir {str(root)!r} is not a folder.")
        if labels_file is None:
            entries = self._scan_image_folder()
        else:
            entries = self._read_labels_file(Path(labels_file))
        if not entries:
            raise ValueError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in data_dir {str(root)!r}"
                + ("" if labels_file else "; expected one sub-folder of images per class.")
            )
        self.samples, self.skipped = [], []
        for path, label in entries:
            (self.samples if _is_readable(path) else self.skipped).append((path, label))
        if self.skipped:
            logger.warning(f"Skipped {len(self.skipped)} unreadable image(s) in {root}, e.g. {self.skipped[0][0]}.")
        if not self.samples:
            raise ValueError(f"None of the {len(entries)} images in data_dir {str(root)!r} could be read.")
        num_classes = len(self.classes)
        if num_classes < 2:
            raise ValueError(
                f"data_dir {str(root)!r} has {num_classes} class(es); class-conditional training needs at least 2."
            )

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.classes))

    def _scan_image_folder(self) -> list[tuple[Path, int]]:
        class_dirs = sorted(path for path in self.root.iterdir() if path.is_dir() and not path.name.startswith("."))
        self.classes = [path.name for path in class_dirs]
        entries = []
        for class_id, class_dir in enumerate(class_dirs):
            files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            entries += [(path, class_id) for path in files]
        return entries

    def _read_labels_file(self, labels_file: Path) -> list[tuple[Path, int]]:
        if not labels_file.is_file():
            raise ValueError(f"labels_file {str(labels_file)!r} does not exist.")
        if labels_file.suffix == ".json":
            try:
                mapping = json.loads(labels_file.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(f"labels_file {str(labels_file)!r} is not valid JSON: {error}") from None
            if not isinstance(mapping, dict):
                raise ValueError(
                    f"labels_file {str(labels_file)!r} holds a JSON {type(mapping).__name__}; expected an object"
                    ' {"relative/path.png": label}.'
                )
            pairs = [(str(name), str(label)) for name, label in mapping.items()]
        else:
            pairs = []
            for line_number, line in enumerate(labels_file.read_text().splitlines(), 1):
                if not line.strip() or line.startswith("#"):
                    continue
                separator = "\t" if "\t" in line else ","
                name, _, label = line.rpartition(separator)
                if not name:
                    raise ValueError(
                        f"labels_file line {line_number} is {line!r}; expected `relative/path.png,label`."
                    )
                pairs.append((name.strip(), label.strip()))
        labels = {label for _, label in pairs}
        if labels and all(label.isdigit() for label in labels):
            self.classes = [str(i) for i in range(max(int(label) for label in labels) + 1)]
            label_ids = {label: int(label) for label in labels}
        else:
            self.classes = sorted(labels)
            label_ids = {label: class_id for class_id, label in enumerate(self.classes)}
        entries = []
        for name, label in pairs:
            path = self.root / name
            if not path.is_file():
                raise ValueError(f"labels_file lists {name!r}, which is not a file under {str(self.root)!r}.")
            entries.append((path, label_ids[label]))
        return entries

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        path, _ = self.samples[index]
        with PIL.Image.open(path) as image:
            return image_to_tensor(center_crop_arr(image.convert("RGB"), self.sample_size))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            image = self.load(index)
        except (OSError, ValueError) as error:
            # The header was fine but the data is not (e.g. a truncated file): use the next image, not a crash.
            logger.warning(f"Could not decode {self.samples[index][0]} ({error}); using the next image instead.")
            return self[(index + 1) % len(self)]
        return image, self.samples[index][1]


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset indices for steps `start_step, ..., num_steps - 1` of this process.

    Every epoch is a permutation drawn from `seed + epoch`, cut into global batches (the incomplete tail is dropped);
    process `rank` takes its contiguous share of each. The order is thus a function of the step alone, which is what
    makes `--resume` continue bit-for-bit without saving any data-loader state.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        num_steps: int,
        start_step: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        global_batch_size = batch_size * world_size
        if dataset_size < global_batch_size:
            raise ValueError(
                f"The dataset has {dataset_size} images, fewer than one global batch ({batch_size} per process x"
                f" {world_size} processes); lower batch_size."
            )
        self.dataset_size, self.batch_size = dataset_size, batch_size
        self.num_steps, self.start_step = num_steps, start_step
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.steps_per_epoch = dataset_size // global_batch_size

    def __len__(self) -> int:
        return max(self.num_steps - self.start_step, 0)

    def __iter__(self):
        epoch, permutation = None, None
        for step in range(self.start_step, self.num_steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                generator = torch.Generator().manual_seed(self.seed + epoch)
                permutation = torch.randperm(self.dataset_size, generator=generator)
            position = (step % self.steps_per_epoch) * self.batch_size * self.world_size + self.rank * self.batch_size
            yield permutation[position : position + self.batch_size].tolist()
