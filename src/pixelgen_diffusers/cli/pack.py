# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen pack`: merges the shards of a `pixelgen sample` run into ADM's `samples.npz`.

Processes that do not share one output folder (nodes without a shared filesystem, or each node given its own
`--out`) each pack their share as `samples.rank{r}.npz` in their folder: the images (`arr_0`), class ids (`arr_1`),
the sample indices, the process's rank, the number of processes and the run's settings. Copied into one place (or
read where they are), the shards of one run merge into the set one process would have drawn, byte for byte. Shards
of different runs, a missing or a repeated process are refused before anything is written.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from .sample import shard_name, write_npz


SHARD_FIELDS = ("rank", "world_size", "num_samples", "settings")


def find_shards(inputs: list[str | Path]) -> list[Path]:
    """The shard files among `inputs` (files, or folders whose `samples.rank*.npz` are taken)."""
    shards = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(entry.glob(shard_name("*")))
            if not found:
                raise ValueError(f"{entry} holds no {shard_name('*')} shards of a `pixelgen sample` run")
            shards += found
        elif entry.is_file():
            shards.append(entry)
        else:
            raise ValueError(f"{entry} is neither a shard file nor a folder of shards: not found")
    return shards


def _read_header(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as shard:
            missing = [name for name in SHARD_FIELDS + ("indices", "arr_0", "arr_1") if name not in shard.files]
            if missing:
                raise ValueError(f"{path} is not a shard of `pixelgen sample` (it has no {', '.join(missing)})")
            return {name: shard[name].item() for name in SHARD_FIELDS}
    except (OSError, EOFError) as error:  # not an npz, or one cut short
        raise ValueError(f"cannot read {path}: {error}") from None


def merge_shards(shards: list[Path], output: Path) -> np.ndarray:
    """Writes the samples of `shards` (every process of one run, once) to `output` in index order (`arr_0` uint8
    NHWC, `arr_1` class ids, as `pixelgen sample` packs one folder) and returns the images.

    Raises:
        ValueError: a file is not a shard, shards come from runs with other settings or process counts, a process
            is missing or repeated. Nothing is written then.
    """
    headers = [_read_header(path) for path in shards]
    first = headers[0]
    for path, header in zip(shards, headers):
        if header["settings"] != first["settings"]:
            recorded, other = json.loads(first["settings"]), json.loads(header["settings"])
            keys = [key for key in {**recorded, **other} if recorded.get(key, ...) != other.get(key, ...)]
            raise ValueError(
                f"{path} is a shard of another run than {shards[0]} (other {', '.join(keys)}); pack the shards of "
                "one run"
            )
        if (header["world_size"], header["num_samples"]) != (first["world_size"], first["num_samples"]):
            raise ValueError(
                f"{path} is a shard of another run than {shards[0]} (process {header['rank']} of "
                f"{header['world_size']} with {header['num_samples']} samples, not of {first['world_size']} with "
                f"{first['num_samples']}); pack the shards of one run"
            )
    world_size, num_samples = first["world_size"], first["num_samples"]
    by_rank = {}
    for path, header in zip(shards, headers):
        if header["rank"] in by_rank:
            raise ValueError(f"{path} and {by_rank[header['rank']]} both hold process {header['rank']}'s shard")
        by_rank[header["rank"]] = path
    missing = [rank for rank in range(world_size) if rank not in by_rank]
    if missing:
        raise ValueError(
            f"the shards of process(es) {', '.join(map(str, missing))} of {world_size} are missing; pass every "
            f"process's {shard_name('R')} (each node's --out folder)"
        )
    images = labels = None
    for rank, path in sorted(by_rank.items()):
        with np.load(path, allow_pickle=False) as shard:
            indices, shard_images, shard_labels = shard["indices"], shard["arr_0"], shard["arr_1"]
        if indices.tolist() != list(range(rank, num_samples, world_size)) or len(shard_images) != len(indices):
            raise ValueError(f"{path} does not hold process {rank}'s samples (i % {world_size} == {rank}): damaged")
        if images is None:
            images = np.empty((num_samples, *shard_images.shape[1:]), dtype=np.uint8)
            labels = np.empty(num_samples, dtype=np.int64)
        if shard_images.shape[1:] != images.shape[1:]:
            raise ValueError(f"{path} holds images of {shard_images.shape[1:]}, the other shards {images.shape[1:]}")
        images[indices], labels[indices] = shard_images, shard_labels
    write_npz(output, {"arr_0": images, "arr_1": labels})
    return images


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pack",
        help="merge the per-process shards of a `pixelgen sample` run into one npz",
        description="Merge the samples.rank{r}.npz shards that the processes of a `pixelgen sample` run write when "
        "they do not share one output folder (several nodes without a shared filesystem) into ADM's samples.npz "
        "(arr_0 uint8 NHWC, arr_1 class ids): the set one process would have drawn.",
    )
    parser.add_argument("inputs", nargs="+", help="shard files, or folders holding them (each node's --out folder)")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.set_defaults(func=run, standard_library_only=True)


def run(args: argparse.Namespace) -> int:
    output = Path(args.out)
    if output.is_dir():
        raise ValueError(f"--out {output} is a folder; give the .npz file to write, e.g. {output / 'samples.npz'}")
    if not output.parent.is_dir():
        raise ValueError(f"--out {output}: its folder {output.parent} does not exist")
    shards = find_shards(args.inputs)
    images = merge_shards(shards, output)
    shape = f"{images.shape[1]}x{images.shape[2]}"
    print(f"Packed {len(images)} samples of {shape} from {len(shards)} shards into {output}")
    return 0
