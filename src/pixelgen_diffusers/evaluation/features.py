# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Image sets to evaluate, and their Inception features.

An image set is an npz file whose `arr_0` holds uint8 (N, H, W, 3) images (ADM's layout, what `pixelgen sample`
writes), several such shards `samples.rank{r}.npz` in one folder (taken in rank order), or a folder of image files
(searched recursively, in sorted order, all of one size). Everything about a set (its count, size and dtype) is read
from headers before any feature is computed, so bad input fails at once.

Features are cached by the content of the set and the weights: `cache_dir()/features/<weights>/<content>.npz`. Long
runs write chunks of 1024 images as they go, so a stopped extraction resumes where it stopped.
"""

import contextlib
import hashlib
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..utils import atomic_write, one_line
from .weights import cache_dir, file_sha256


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SHARD_PATTERN = re.compile(r"samples\.rank(\d+)\.npz")
CHUNK_SIZE = 1024
FEATURE_NAMES = ("pool_3", "spatial", "logits")


def _npz_array_header(path: Path, member: str):
    """(shape, dtype) of `member` in an npz file, from its header only."""
    with zipfile.ZipFile(path) as archive, archive.open(member) as file:
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(file)
    return shape, dtype, fortran_order


def _read_header(file):
    """(shape, dtype) of the .npy stream `file`, leaving it at the first byte of data."""
    version = np.lib.format.read_magic(file)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(file)
    return shape, dtype


def npz_members(path: Path) -> list[str]:
    """The array names in an npz file; a ValueError naming the file if it is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [name.removesuffix(".npy") for name in archive.namelist() if name.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable npz file ({one_line(error)})") from None


@dataclass
class ImageSet:
    """Images to evaluate: `len()` images of `size` (height, width), read in batches of uint8 (N, H, W, 3)."""

    path: Path
    files: list[Path]  # npz shards, or image files
    counts: list[int]
    size: tuple[int, int]
    is_npz: bool
    _key: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return sum(self.counts)

    def content_key(self) -> str:
        """SHA-256 over the set's files (names within the set and bytes), which keys the feature cache."""
        if self._key is None:
            digest = hashlib.sha256(b"npz" if self.is_npz else b"images")
            for file in self.files:
                digest.update(file.relative_to(self.path).as_posix().encode() if file != self.path else b"")
                digest.update(bytes.fromhex(file_sha256(file)))
            self._key = digest.hexdigest()
        return self._key

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        """uint8 (B, H, W, 3) arrays of images [start, stop), in order."""
        stop = len(self) if stop is None else stop
        if self.is_npz:
            yield from self._npz_batches(batch_size, start, stop)
            return
        for batch_start in range(start, stop, batch_size):
            paths = self.files[batch_start : min(batch_start + batch_size, stop)]
            yield np.stack([read_image(path) for path in paths])

    def _npz_batches(self, batch_size: int, start: int, stop: int):
        offset = 0
        for path, count in zip(self.files, self.counts):
            first, last = max(start - offset, 0), min(stop - offset, count)
            if first < last:
                with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as file:
                    shape, dtype = _read_header(file)
                    image_bytes = int(np.prod(shape[1:])) * dtype.itemsize
                    _skip(file, first * image_bytes)
                    for index in range(first, last, batch_size):
                        count_in_batch = min(batch_size, last - index)
                        data = file.read(count_in_batch * image_bytes)
                        if len(data) != count_in_batch * image_bytes:
                            raise ValueError(f"{path}: arr_0 ends early (the file is truncated)")
                        yield np.frombuffer(data, dtype=dtype).reshape(count_in_batch, *shape[1:])
            offset += count


def _skip(file, num_bytes: int) -> None:
    while num_bytes > 0:
        data = file.read(min(num_bytes, 1 << 24))
        if not data:
            raise ValueError("the npz member ends early (the file is truncated)")
        num_bytes -= len(data)


def read_image(path: Path) -> np.ndarray:
    import PIL.Image

    try:
        with PIL.Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot read the image ({one_line(error)})") from None


def _check_npz_images(path: Path) -> tuple[int, tuple[int, int]]:
    members = npz_members(path)
    if "arr_0" not in members:
        raise ValueError(f"{path}: no arr_0 images in this npz (it has {', '.join(members) or 'no arrays'})")
    shape, dtype, fortran_order = _npz_array_header(path, "arr_0.npy")
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 must be (N, H, W, 3) RGB images (ADM's NHWC layout), got shape {shape}")
    if dtype != np.uint8 or fortran_order:
        raise ValueError(f"{path}: arr_0 must be uint8 in C order (values 0-255), got {dtype}")
    return shape[0], tuple(shape[1:3])


def open_image_set(path: str | Path, name: str = "SAMPLES") -> ImageSet:
    """The image set at `path` (see the module docstring), checked from headers only: a ValueError naming the file
    and the problem for a missing path, an npz without uint8 NHWC `arr_0`, shards or images of different sizes, an
    empty folder or an unreadable image."""
    path = Path(path).expanduser()
    if path.is_file():
        count, size = _check_npz_images(path)
        return ImageSet(path, [path], [count], size, is_npz=True)
    if not path.is_dir():
        raise ValueError(f"{name} {path}: no such file or folder")
    shards = sorted(
        (int(match.group(1)), file)
        for file in path.iterdir()
        if (match := SHARD_PATTERN.fullmatch(file.name)) and file.is_file()
    )
    if shards:
        ranks = [rank for rank, _ in shards]
        if ranks != list(range(len(ranks))):
            expected = f"0..{len(ranks) - 1}"
            raise ValueError(f"{name} {path}: shards samples.rank{{r}}.npz must be ranks {expected}, got {ranks}")
        counts, size = [], None
        for _, shard in shards:
            count, shard_size = _check_npz_images(shard)
            if size is not None and shard_size != size:
                height, width = shard_size
                raise ValueError(f"{shard}: images are {height}x{width}, other shards {size[0]}x{size[1]}")
            counts.append(count)
            size = shard_size
        return ImageSet(path, [shard for _, shard in shards], counts, size, is_npz=True)
    if (path / "samples.npz").is_file():  # a `pixelgen sample` folder: its packed images
        return open_image_set(path / "samples.npz", name)
    files = sorted(file for file in path.rglob("*") if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file())
    if not files:
        raise ValueError(
            f"{name} {path}: no images (an npz with arr_0, samples.rank{{r}}.npz shards, or image files "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    import PIL.Image

    size = None
    for file in files:
        try:
            with PIL.Image.open(file) as image:
                file_size = (image.height, image.width)
        except (OSError, SyntaxError) as error:
            raise ValueError(f"{file}: cannot read the image ({one_line(error)})") from None
        if size is not None and file_size != size:
            raise ValueError(
                f"{file}: the image is {file_size[0]}x{file_size[1]}, but {files[0]} is {size[0]}x{size[1]}; "
                "all images of a set must have one size"
            )
        size = file_size
    return ImageSet(path, files, [1] * len(files), size, is_npz=False)


@contextlib.contextmanager
def _exact_float32():
    """Full float32 convolutions and matrix products (no TF32 on NVIDIA GPUs): features must not depend on the card."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def compute_features(
    model, images: ImageSet, batch_size: int = 64, start: int = 0, stop: int | None = None, progress=None
) -> dict[str, np.ndarray]:
    """The Inception features (`pool_3`, `spatial`, and `logits` if the model has them) of images [start, stop), as
    float32 numpy arrays. `progress`: a tqdm bar to advance by images."""
    import torch

    device = next(model.parameters()).device
    outputs = {}
    with torch.inference_mode(), _exact_float32():
        for batch in images.batches(batch_size, start, stop):
            pixels = torch.from_numpy(np.array(batch)).to(device).permute(0, 3, 1, 2)
            for key, value in model(pixels).items():
                outputs.setdefault(key, []).append(value.float().cpu().numpy())
            if progress is not None:
                progress.update(len(batch))
    return {key: np.concatenate(values) for key, values in outputs.items()}


def extract_features(
    model,
    images: ImageSet,
    weights_sha256: str,
    batch_size: int = 64,
    cache: bool = True,
    description: str = "features",
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, np.ndarray]:
    """The features of every image of `images`, computed once: with `cache`, stored under
    `cache_dir()/features/<weights>/<content>.npz` (chunks of up to `chunk_size` images are kept while a long run
    goes, so a stopped run resumes where it stopped). A progress bar counts images.

    With several processes (`accelerate launch`, torchrun), the chunks are shared out round-robin, each process
    computes its own on its own device, and every process receives all features (gathered in order).
    """
    from accelerate import PartialState
    from tqdm.auto import tqdm

    state = PartialState()
    total = len(images)
    if total == 0:
        raise ValueError(f"{description}: the image set is empty")
    folder = cache_dir() / "features" / (weights_sha256 or "none")[:16]
    final = folder / f"{images.content_key()}.npz" if cache else None
    if cache and final.is_file():
        with contextlib.suppress(Exception), np.load(final) as stored:  # a damaged cache file is recomputed
            cached = {key: stored[key] for key in stored.files if key in FEATURE_NAMES}
            if all(len(value) == total for value in cached.values()) and "pool_3" in cached:
                return cached
    partial = folder / f"{images.content_key()}.partial" if cache else None
    if cache:
        partial.mkdir(parents=True, exist_ok=True)
    chunk_size = min(chunk_size, -(-total // state.num_processes))
    starts = list(range(0, total, chunk_size))
    mine = starts[state.process_index :: state.num_processes]
    chunks = {}
    with tqdm(total=total, desc=description, unit="img", disable=not state.is_main_process) as progress:
        for start in mine:
            stop = min(start + chunk_size, total)
            chunk_path = partial / f"{start:08d}-{stop:08d}.npz" if cache else None
            if cache and chunk_path.is_file():
                with contextlib.suppress(Exception), np.load(chunk_path) as stored:
                    chunks[start] = {key: stored[key] for key in stored.files}
            single = state.num_processes == 1
            if start not in chunks:
                chunks[start] = compute_features(model, images, batch_size, start, stop, progress if single else None)
                if cache:
                    with atomic_write(chunk_path) as file:
                        np.savez(file, **chunks[start])
            elif single:
                progress.update(stop - start)
            if not single:  # the main process's bar stands for all: the others advance alike
                progress.update(min((stop - start) * state.num_processes, total - progress.n))
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        chunks = dict(gather_object(list(chunks.items())))
    features = {key: np.concatenate([chunks[start][key] for start in starts]) for key in chunks[starts[0]]}
    if cache and state.is_main_process:
        with atomic_write(final) as file:
            np.savez(file, **features)
        shutil.rmtree(partial, ignore_errors=True)
    return features
