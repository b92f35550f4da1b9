# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Processes started together by a launcher (`torchrun`, `accelerate launch`, `srun`), on one machine or several.

accelerate's `PartialState` joins the process group only on an accelerator or when asked for the CPU
(`PartialState(cpu=True)`); `ACCELERATE_USE_CPU` is read by `Accelerator` alone. On a machine without an
accelerator, a plain `PartialState()` under `torchrun --nproc_per_node 2` therefore believes it is alone, and every
process does the whole job. `launch_state` asks for the CPU (gloo) where there is no accelerator or
`ACCELERATE_USE_CPU` is set, and checks that the group it joined has the launcher's `WORLD_SIZE` processes.

A folder named by the same path on every process is not necessarily one folder: on several nodes without a shared
filesystem each node has its own. `folder_view` finds out which processes see the same folder (every process leaves a
marker file there and reads which markers it sees), and `locked_shared_folder` locks each distinct folder once, so
that a second run into it is refused, on whichever node it starts (`utils.locked_folder` is the one-folder
version: the main process locks, for commands whose processes all read one folder).
"""

import contextlib
import dataclasses
import os
import uuid
from pathlib import Path

from . import FolderLock, one_line


def launch_state():
    """accelerate's `PartialState` for the processes this launcher started: on the CPU (gloo) where there is no
    accelerator or `ACCELERATE_USE_CPU=1`, on the accelerator otherwise (nccl for CUDA).

    Raises:
        ValueError: the group joined does not hold `WORLD_SIZE` processes (an unsupported launcher, or a process
            started by hand with a stale `WORLD_SIZE`), on every process, before any work.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator)
    world_size = os.environ.get("WORLD_SIZE", "1")
    if not world_size.isdigit() or int(world_size) != state.num_processes:
        raise ValueError(
            f"the launcher set WORLD_SIZE={world_size}, but this process joined a group of {state.num_processes} "
            f"process(es) ({state.distributed_type}); launch with torchrun or accelerate launch, or unset WORLD_SIZE"
        )
    return state


def gather_objects(state, value) -> list:
    """`value` of every process, in rank order (every process must call it)."""
    if state.num_processes == 1:
        return [value]
    import torch.distributed

    gathered = [None] * state.num_processes
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def raise_together(state, error: str | None) -> None:
    """Raises the first process's error (a one-line message, or None) as a ValueError on every process, so that all
    of them stop together instead of the others waiting for ever at the next barrier."""
    errors = gather_objects(state, error)
    failed = [(rank, message) for rank, message in enumerate(errors) if message is not None]
    if failed:
        rank, message = failed[0]
        where = f"process {rank} of {state.num_processes}: " if state.num_processes > 1 else ""
        raise ValueError(where + message)


def check_same_settings(state, settings: dict) -> None:
    """Every process must run with rank 0's settings (a node started with other arguments would draw another set);
    the first difference is an error on every process."""
    reference = gather_objects(state, settings)[0]
    differing = [key for key in {**reference, **settings} if reference.get(key, ...) != settings.get(key, ...)]
    error = None
    if differing:
        key = differing[0]
        error = (
            f"runs with other settings than process 0: {key} is {settings.get(key, 'unset')!r} here and "
            f"{reference.get(key, 'unset')!r} on process 0; start every process with the same arguments"
        )
    raise_together(state, error)


@dataclasses.dataclass
class FolderView:
    """Which processes see the same folder. `groups` lists, for every distinct folder, the ranks that see it (in
    rank order, the group of rank 0 first); `ranks` is this process's group; its lowest rank is the `leader`, the
    one process that locks and writes what the folder shares."""

    folder: Path
    rank: int
    groups: list[list[int]]

    @property
    def ranks(self) -> list[int]:
        return next(group for group in self.groups if self.rank in group)

    @property
    def leader(self) -> bool:
        return self.rank == self.ranks[0]

    @property
    def shared(self) -> bool:
        """Whether every process sees this one folder."""
        return len(self.groups) == 1

    def describe(self) -> str:
        return " | ".join(f"process{'es' if len(g) > 1 else ''} {', '.join(map(str, g))}" for g in self.groups)


def folder_view(folder: str | Path, state) -> FolderView:
    """Finds which processes see the same `folder` (created if missing): every process creates a marker named by a
    token of this run and its rank, and reads which ranks' markers it sees. Every process must call it."""
    folder = Path(folder)
    rank = state.process_index
    if state.num_processes == 1:
        folder.mkdir(parents=True, exist_ok=True)
        return FolderView(folder, rank, [[rank]])
    token = gather_objects(state, uuid.uuid4().hex)[0]  # rank 0's, one per run
    marker = folder / f".pixelgen.probe.{token}.{rank}"
    error, seen = None, []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except OSError as failure:
        error = f"cannot write into {folder}: {one_line(failure)}"
    raise_together(state, error)
    try:
        state.wait_for_everyone()
        seen = sorted(int(path.name.rsplit(".", 1)[1]) for path in folder.glob(f".pixelgen.probe.{token}.*"))
        views = gather_objects(state, seen)
        state.wait_for_everyone()  # every process has looked before any marker goes
    finally:
        marker.unlink(missing_ok=True)
    groups = []
    for group in views:
        if group not in groups:
            groups.append(group)
    # A consistent view: every rank is in exactly one group, and every member of a group saw that same group.
    if sorted(rank for group in groups for rank in group) != list(range(state.num_processes)):
        raise ValueError(
            f"{folder} is seen inconsistently by the processes ({' | '.join(map(str, views))}): a network filesystem "
            "that is not coherent across nodes; use a folder on a coherent shared filesystem, or one local folder "
            "per node"
        )
    return FolderView(folder, rank, groups)


@contextlib.contextmanager
def locked_shared_folder(folder: str | Path, command: str, state, require_shared: bool = False):
    """Holds a `FolderLock` on every distinct `folder` the processes see (its first process locks it) for the `with`
    body, and yields the `FolderView`. A folder in use is an error on every process.

    Args:
        require_shared: a folder that is not shared by every process is an error (for commands whose processes read
            each other's files).
    """
    view = folder_view(folder, state)
    error = None
    if require_shared and not view.shared:
        error = (
            f"{folder} is not one folder shared by every process: separate folders for {view.describe()}; "
            f"pixelgen {command} needs a folder on a filesystem shared between the nodes"
        )
    lock = None
    if error is None and view.leader:
        try:
            lock = FolderLock(folder, command).acquire()
        except ValueError as refused:
            error = str(refused)
    try:
        raise_together(state, error)
        yield view
    finally:
        if lock is not None:
            lock.release()
