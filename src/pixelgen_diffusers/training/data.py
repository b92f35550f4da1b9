# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Training data: class-labelled image folders and captioned image folders, with upstream's (ADM) center crop."""

import difflib
import json
import logging
import os
from pathlib import Path
from typing import Any

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


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """An image file, center-cropped to `image_size` and scaled to [-1, 1], (3, H, W)."""
    with PIL.Image.open(path) as image:
        return image_to_tensor(center_crop_arr(image.convert("RGB"), image_size))


def _is_readable(path: Path) -> bool:
    try:
        with PIL.Image.open(path) as image:
            image.size
        return True
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return False


class ImageFileDataset(torch.utils.data.Dataset):
    """Images listed as `(path, target)` pairs in `samples`, center-cropped to `sample_size` and scaled to [-1, 1];
    items are `(image, item_target(index))`. Files whose header cannot be read are skipped and counted
    (`num_skipped`, `skipped`); one whose data turns out broken later is replaced by the next image."""

    def __init__(self, root: str | os.PathLike, sample_size: int):
        self.root = Path(root)
        self.sample_size = sample_size
        if not self.root.is_dir():
            raise ValueError(f"data_dir {str(root)!r} is not a folder.")

    def _keep_readable(self, entries: list[tuple[Path, Any]]) -> None:
        self.samples, self.skipped = [], []
        for path, target in entries:
            (self.samples if _is_readable(path) else self.skipped).append((path, target))
        if self.skipped:
            logger.warning(
                f"Skipped {len(self.skipped)} unreadable image(s) in {self.root}, e.g. {self.skipped[0][0]}."
            )
        if not self.samples:
            raise ValueError(f"None of the {len(entries)} images in data_dir {str(self.root)!r} could be read.")

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        return load_image(self.samples[index][0], self.sample_size)

    def item_target(self, index: int) -> int:
        return self.samples[index][1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # An image whose header was fine but whose data is not (e.g. a truncated file) is replaced by the next one
        # that decodes, not a crash; when none does, one error, not a warning per image and a RecursionError.
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            try:
                return self.load(candidate), self.item_target(candidate)
            except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
                logger.warning(
                    f"Could not decode {self.samples[candidate][0]} ({error}); using the next image instead."
                )
        raise ValueError(
            f"None of the {len(self)} images in data_dir {str(self.root)!r} can be decoded (their headers read, their"
            f" data is broken, e.g. {str(self.samples[index][0])!r}); replace the files"
        )


class ImageClassDataset(ImageFileDataset):
    r"""
    Labelled images, center-cropped to `sample_size` and scaled to [-1, 1]; items are `(image, class_id)`.

    Two layouts:
    - ImageFolder: `root/<class name>/**/<image>`; classes are the sub-folder names, sorted.
    - A folder plus `labels_file`: a JSON object `{"relative/path.png": label}`, or a text/CSV file with one
      `relative/path.png,label` line per image (comma or tab separated). Labels are class names (ids assigned in
      sorted order) or, when all are integers, class ids.

    - `unconditional=True`: every image under `root` (any layout), all with label 0 and no classes.

    Files whose header cannot be read are skipped and counted (`num_skipped`, `skipped`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        sample_size: int,
        labels_file: str | os.PathLike | None = None,
        unconditional: bool = False,
    ):
        super().__init__(root, sample_size)
        if unconditional:
            self.classes = []
            files = self.root.rglob("*")
            entries = sorted((p, 0) for p in files if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif labels_file is None:
            entries = self._scan_image_folder()
        else:
            entries = self._read_labels_file(Path(labels_file))
        if not entries:
            raise ValueError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in data_dir {str(root)!r}"
                + ("" if labels_file or unconditional else "; expected one sub-folder of images per class")
                + ("." if unconditional else " (or train unconditionally on any layout: --unconditional).")
            )
        self._keep_readable(entries)

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


class ImageCaptionDataset(ImageFileDataset):
    r"""
    Captioned images for text-to-image training, center-cropped to `sample_size` and scaled to [-1, 1]; items are
    `(image, caption_index)` into `captions` (the embeddings are looked up by index, see `CaptionEmbeddingCache`).

    Two layouts, as Hugging Face `datasets`' `imagefolder`:
    - `root/metadata.jsonl`: one JSON object per line with `file_name` (relative to `root`) and a caption column
      (`caption_column`, default `"text"`);
    - otherwise one `<image stem>.txt` caption file beside each image (searched recursively).

    Errors, raised before any work: a missing caption (an image without a `.txt`, a row without the column), an
    absent or entirely empty caption column (with the columns that exist), a listed file that does not exist.
    Files whose header cannot be read are skipped and counted (`num_skipped`, `skipped`).
    """

    def __init__(self, root: str | os.PathLike, sample_size: int, caption_column: str = "text"):
        super().__init__(root, sample_size)
        metadata = self.root / "metadata.jsonl"
        entries = self._read_metadata(metadata, caption_column) if metadata.is_file() else self._read_text_files()
        self._keep_readable(entries)
        self.captions = [caption for _, caption in self.samples]

    def _read_metadata(self, metadata: Path, caption_column: str) -> list[tuple[Path, str]]:
        rows = []
        for line_number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{metadata} line {line_number} is not valid JSON: {error}.") from error
            if not isinstance(row, dict) or "file_name" not in row:
                raise ValueError(f"{metadata} line {line_number} has no `file_name`: {line[:200]!r}.")
            if not isinstance(row["file_name"], str) or not row["file_name"].strip():
                raise ValueError(
                    f"{metadata} line {line_number}: `file_name` is {row['file_name']!r}; expected the image's path"
                    " relative to the folder, as a string."
                )
            rows.append((line_number, row))
        if not rows:
            raise ValueError(f"{metadata} lists no images.")
        columns = sorted({name for _, row in rows for name in row if name != "file_name"})
        if caption_column not in columns:
            close = difflib.get_close_matches(caption_column, columns, n=3)
            raise ValueError(
                f"caption_column {caption_column!r} is not a column of {metadata}; columns: {columns}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + ". Set caption_column (--caption-column) to the caption column."
            )
        entries = []
        for line_number, row in rows:
            caption = row.get(caption_column)
            if not isinstance(caption, str):
                raise ValueError(
                    f"{metadata} line {line_number} ({row['file_name']!r}) has no caption: {caption_column!r} is"
                    f" {caption!r}, expected a string."
                )
            path = self.root / row["file_name"]
            if not path.is_file():
                raise ValueError(f"{metadata} line {line_number} lists {row['file_name']!r}, which is not a file.")
            entries.append((path, caption))
        if not any(caption.strip() for _, caption in entries):
            raise ValueError(f"The caption column {caption_column!r} of {metadata} is empty in every row.")
        return entries

    def _read_text_files(self) -> list[tuple[Path, str]]:
        images = sorted(
            path
            for path in self.root.rglob("*")
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith(".")
        )
        if not images:
            raise ValueError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in data_dir {str(self.root)!r}; a captioned folder"
                " has images with a `.txt` caption beside each, or a metadata.jsonl."
            )
        missing = [path for path in images if not path.with_suffix(".txt").is_file()]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(images)} images in data_dir {str(self.root)!r} have no caption, e.g."
                f" {str(missing[0])!r} (expected {missing[0].with_suffix('.txt').name!r} beside it, or a"
                " metadata.jsonl with `file_name` and a caption column)."
            )
        entries = [(path, path.with_suffix(".txt").read_text(encoding="utf-8").strip()) for path in images]
        if not any(caption for _, caption in entries):
            raise ValueError(f"Every caption file in data_dir {str(self.root)!r} is empty.")
        return entries

    def item_target(self, index: int) -> int:
        """The caption index: the embeddings are looked up by it."""
        return index


def is_caption_folder(root: str | os.PathLike) -> bool:
    """Whether a data folder is laid out for text-to-image training: a metadata.jsonl, or `.txt` captions."""
    root = Path(root)
    if (root / "metadata.jsonl").is_file():
        return True
    return any(any(text.with_suffix(suffix).is_file() for suffix in IMAGE_EXTENSIONS) for text in root.rglob("*.txt"))


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
