# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Definitions the tools (`generate`, `sample`, `convert`, `export`, `hub`, `train`, the CLI) share, kept in one
place: input checks, atomic file and folder writes, and the per-folder lock of long-running commands.

Light on purpose (standard library only): the CLI imports it before parsing, and `pixelgen --help` must not wait for
torch.
"""

import contextlib
import errno
import glob
import inspect
import io
import json
import math
import numbers
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path


# `--dtype` names accepted by every command.
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# The solvers of `PixelGenScheduler` (its `SAMPLING_METHODS`, repeated here so that parsing needs no torch; a test
# keeps the two equal).
SAMPLING_METHODS = ("heun", "euler", "adam_lm")


def torch_dtype(name: str):
    """The torch dtype of a `--dtype` name (one of `DTYPE_NAMES`)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# The largest seed a torch generator takes (`manual_seed` accepts unsigned 64-bit integers); `--seed` is checked
# against it when parsed, not after the model has loaded.
MAX_SEED = 2**64 - 1

# `--compile` modes of the sampling commands: the repeated blocks (diffusers' regional compile) or the whole model.
COMPILE_MODES = ("blocks", "model")


def add_sampling_speed_arguments(parser) -> None:
    """`--dtype` and `--compile`, shared by `pixelgen generate` and `pixelgen sample`."""
    parser.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        help="transformer weights (default: bfloat16 on CUDA, float32 elsewhere); the sample and the solver stay "
        "float32 either way",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="blocks",
        choices=COMPILE_MODES,
        help="torch.compile the transformer: its repeated blocks (the default when given alone; fast to compile) or "
        "the whole model. One graph serves the whole run, guided and unguided steps alike",
    )


def default_dtype(name: str | None, device):
    """The torch dtype of a `--dtype` name, or the default for the device: bf16 weights on CUDA (what the model cards
    run), float32 elsewhere (CPUs gain little from bf16 and lose accuracy)."""
    import torch

    if name is not None:
        return torch_dtype(name)
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def compile_transformer(pipeline, mode: str | None) -> None:
    """`--compile`: compiles the pipeline's transformer in place (nothing when `mode` is None)."""
    if mode == "blocks":
        pipeline.transformer.compile_repeated_blocks(fullgraph=True)
    elif mode == "model":
        pipeline.transformer.compile(fullgraph=True)
    elif mode is not None:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")


def check_output_folder(path: str | Path, option: str) -> Path:
    """The folder `option` names, `~` expanded, checked before any work: it must be a folder or creatable as one (its
    nearest existing parent a folder) and writable (a probe file is created there and removed at once). Raises
    ValueError naming the option, the path and the problem; creates no folder, so that a run that fails later leaves
    no empty folder behind."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {path}: exists and is not a folder; choose a folder path")
    existing = folder if folder.is_dir() else next((p for p in folder.absolute().parents if p.exists()), None)
    if existing is None:
        raise ValueError(f"{option} {path}: none of its parent folders exists")
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder, so the folder cannot be created")
    where = "the folder" if existing == folder else f"its parent {existing}"
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {where} is not writable (permission denied)")
    try:  # permissions do not tell everything (root, read-only mounts, /proc): a file is created there and removed
        descriptor, probe = tempfile.mkstemp(dir=existing, prefix=".pixelgen-write-check-")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{option} {path}: {where} is not writable ({error.strerror or one_line(error)})") from None
    return folder


def one_line(error: BaseException, max_length: int | None = 160) -> str:
    """An exception's message on one line (its type name if it has none), shortened to `max_length` characters, for
    quoting a library's error inside ours; `max_length=None` keeps it whole."""
    text = " ".join(str(error).split()) or type(error).__name__
    if max_length is not None and len(text) > max_length:
        text = text[: max_length - 3] + "..."
    return text


def is_text_to_image(pipeline) -> bool:
    """Text-to-image pipelines take a `prompt`; class-to-image ones take `class_labels`."""
    return "prompt" in inspect.signature(type(pipeline).__call__).parameters


# ------------------------------------------------------------------------------------------------------ input checks
def check_number(name, value, *, integer=False, minimum=None, maximum=None, exclusive_minimum=False):
    """Returns `value` if it is a finite real number (an integer, not a bool, when `integer`) in
    [`minimum`, `maximum`] (or (`minimum`, ...] with `exclusive_minimum`); otherwise raises a ValueError naming
    `name`, the value and the accepted range. NaN and infinities are never accepted: they turn images black."""
    kind = "an integer" if integer else "a finite number"
    if integer and minimum == 1 and maximum is None:
        accepted = "a positive integer"
    elif minimum is not None and maximum is not None:
        accepted = f"{kind} in {'(' if exclusive_minimum else '['}{minimum}, {maximum}]"
    elif minimum is not None:
        accepted = f"{kind} {'>' if exclusive_minimum else '>='} {minimum}"
    elif maximum is not None:
        accepted = f"{kind} <= {maximum}"
    else:
        accepted = kind
    wanted = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, wanted) and not isinstance(value, bool) and math.isfinite(value)
    if valid and minimum is not None:
        valid = value > minimum if exclusive_minimum else value >= minimum
    if valid and maximum is not None:
        valid = value <= maximum
    if not valid:
        raise ValueError(f"{name} must be {accepted}, got {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------------- atomic writes
def _file_mode() -> int:
    """The permissions a plain `open(path, "w")` would give a new file (mkstemp creates owner-only files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Makes a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_error(error: OSError, path: Path) -> OSError:
    """The same OSError (errno kept), with a message that names the file it was writing."""
    return type(error)(error.errno, f"cannot write {path}: {error.strerror or one_line(error)}")


@contextlib.contextmanager
def naming_write_errors(path: str | Path):
    """For the `with` body that writes `path` (a file, or a folder of several): an OSError, or a safetensors
    `SafetensorError` wrapping one (a full disk while writing weights), becomes an OSError that keeps the errno and
    names `path`, so that the CLI says which file could not be written and what to do."""
    try:
        yield
    except (FileNotFoundError, PermissionError):
        raise
    except OSError as error:
        if str(path) in str(error):
            raise
        raise _write_error(error, Path(path)) from error
    except Exception as error:
        if type(error).__name__ != "SafetensorError":
            raise
        import re

        code = re.search(r"code: (\d+)", str(error))
        number = int(code[1]) if code else errno.EIO
        raise OSError(number, f"cannot write {path}: {os.strerror(number)} ({one_line(error, 100)})") from error


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb"):
    """Opens a new file for writing that appears at `path` complete or not at all.

    The data goes to a unique temporary name created exclusively in the destination folder (`tempfile.mkstemp`:
    O_CREAT | O_EXCL | O_NOFOLLOW, so a planted file or link there is never written through), is flushed and
    fsynced, and is renamed over `path` with `os.replace` (which replaces a link at `path`, never its target). On any
    failure (a full disk, an exception in the `with` body, an interrupt) the temporary file is removed and `path` is
    left as it was; an OSError names `path`.
    """
    path = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _write_error(error, path) from error
    try:
        os.fchmod(descriptor, _file_mode())
        with os.fdopen(descriptor, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError) and not isinstance(error, (FileNotFoundError, PermissionError)):
            raise _write_error(error, path) from error
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as file:
        file.write(data)


def atomic_write_json(path: str | Path, value, indent: int | None = 2) -> None:
    """`value` as JSON (Python's dialect: a library config may hold infinities, e.g. a scheduler's clipping bound)."""
    text = json.dumps(value, indent=indent) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_image(image, path: str | Path, format: str = "PNG") -> None:
    """A PIL image written atomically (encoded in memory first, so a failing encoder never touches the disk)."""
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    atomic_write_bytes(path, buffer.getvalue())


def append_line(path: str | Path, line: str) -> None:
    """Appends `line` and a newline to a log file, created with the permissions of `open(path, "a")`; a link
    planted at `path` is refused (O_NOFOLLOW), never written through. OSErrors name `path`."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link; remove it (logs are never written through a link)") from None
        raise _write_error(error, path) from error
    try:
        with os.fdopen(descriptor, "a", encoding="utf-8") as file:
            file.write(line + "\n")
    except OSError as error:
        raise _write_error(error, path) from error


def make_folder(path: str | Path) -> Path:
    """`path` as a folder of its own (created if missing, with its parents): a link planted there is refused, so
    that nothing is written through it into another folder."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; remove it (output folders are never written through a link)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def apply_umask(folder: str | Path) -> None:
    """Gives a folder tree the permissions of normally created files and folders (`tempfile.mkdtemp` creates
    owner-only folders, and some weight writers owner-only files)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
    _fsync_folder(folder)


def replace_directory(temporary: Path, path: Path) -> None:
    """Moves the finished folder `temporary` to `path` (a sibling), replacing whatever folder is there: its files
    are fsynced first, so the folder appears complete even after a power cut. A folder at
    `path` is first renamed to a unique backup name and removed only once the new one is in place; if the second
    rename fails, the backup is put back. A link at `path` is replaced, never followed."""
    temporary, path = Path(temporary), Path(path)
    _fsync_tree(temporary)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    if not path.exists():
        os.rename(temporary, path)
        _fsync_folder(path.parent)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rename(path, backup / path.name)  # into the (unique, exclusively created) backup folder
    try:
        os.rename(temporary, path)
    except BaseException:
        os.rename(backup / path.name, path)
        shutil.rmtree(backup, ignore_errors=True)
        raise
    _fsync_folder(path.parent)
    shutil.rmtree(backup, ignore_errors=True)


def recover_directory(path: str | Path) -> list[str]:
    """Undoes what a killed folder write left next to `path` (see `replace_directory` and `atomic_directory`), and
    returns what it did, one line each: a kill between the two renames of a replacement leaves `path` missing and
    the old folder at `.<name>.old-*/<name>`, which is put back; a backup left once the new folder was in place, and
    unfinished temporary folders (`.<name>.*.tmp`, `.<name>.tmp-*`), are removed. Call it while no other process
    writes `path` (a command holding its lock, or one about to replace the folder)."""
    path = Path(path)
    done = []
    if not path.parent.is_dir():
        return done
    for backup in sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*")):
        if backup.is_symlink() or not backup.is_dir():
            continue
        if not path.exists() and not path.is_symlink() and (backup / path.name).is_dir():
            os.rename(backup / path.name, path)
            done.append(f"recovered {path} from {backup}, left by an interrupted replacement")
        shutil.rmtree(backup, ignore_errors=True)
    for pattern in (f".{glob.escape(path.name)}.*.tmp", f".{glob.escape(path.name)}.tmp-*"):
        for temporary in sorted(path.parent.glob(pattern)):
            if temporary.is_dir() and not temporary.is_symlink():
                shutil.rmtree(temporary, ignore_errors=True)
                done.append(f"removed {temporary}, left by an interrupted write")
    return done


@contextlib.contextmanager
def atomic_directory(path: str | Path, temporary: str | Path | None = None):
    """Yields a new, empty, uniquely named temporary folder next to `path`; once the `with` body finishes, every
    file in it is fsynced and the folder replaces `path` (see `replace_directory`). On failure the temporary folder
    is removed and `path` is left as it was. `temporary`: a folder already created (with `tempfile.mkdtemp` in the
    same parent) to use instead, e.g. one shared by several processes."""
    path = Path(path)
    if temporary is None:
        try:
            temporary = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as error:
            raise _write_error(error, path) from error
    temporary = Path(temporary)
    try:
        yield temporary
        replace_directory(temporary, path)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, (FileNotFoundError, PermissionError)):
            raise _write_error(error, path) from error
        raise


# --------------------------------------------------------------------------------------------------- folder locks
class FolderLock:
    """An exclusive lock on an output folder for one long-running command (`pixelgen sample`, `pixelgen train`).

    A `filelock.FileLock` (an `fcntl.flock` on `.pixelgen.lock`; the file is opened with O_NOFOLLOW, so a planted
    link is refused, not followed): the operating system releases it when the process exits, however it exits, so a
    crashed run never leaves a stale lock. The holder's description (pid, host, command) is written next to it, so
    that a second run can name the process it is waiting for. Acquiring never waits: a held lock is a ValueError
    naming the folder and the holder.
    """

    LOCK_FILE = ".pixelgen.lock"
    OWNER_FILE = ".pixelgen.lock.owner.json"

    def __init__(self, folder: str | Path, command: str):
        self.folder = Path(folder)
        self.command = command
        self._lock = None

    def acquire(self) -> "FolderLock":
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock_path = self.folder / self.LOCK_FILE
        if lock_path.is_symlink():
            raise ValueError(f"{lock_path} is a symbolic link; remove it (a lock file is never followed)")
        lock = FileLock(lock_path, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise ValueError(
                f"{self.folder} is in use by another run ({self._holder()}); wait for it to finish, or use another "
                "output folder"
            ) from None
        except OSError as error:
            raise type(error)(error.errno, f"cannot lock {lock_path}: {error.strerror or one_line(error)}") from None
        self._lock = lock
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "argv": sys.argv}
        try:
            atomic_write_json(self.folder / self.OWNER_FILE, owner)
        except BaseException:
            self.release()
            raise
        return self

    def _holder(self) -> str:
        try:
            owner = json.loads((self.folder / self.OWNER_FILE).read_text())
            return f"pixelgen {owner['command']}, process {owner['pid']} on {owner['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that has not yet recorded itself"

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                (self.folder / self.OWNER_FILE).unlink()
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


@contextlib.contextmanager
def locked_folder(folder: str | Path, command: str, state=None):
    """Holds a `FolderLock` on `folder` for the `with` body. With several processes (`state`: accelerate's
    `PartialState` or `Accelerator`), the main process holds it and every process fails together if it is taken."""
    is_main = state is None or state.is_main_process
    lock, error = None, None
    if is_main:
        try:
            lock = FolderLock(folder, command).acquire()
        except ValueError as refused:
            error = str(refused)
    if state is not None and state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    if error is not None:
        raise ValueError(error)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------------------------ command-line types
def cli_number(integer: bool = False, **bounds):
    """An argparse `type` that accepts only finite numbers in range (`check_number`'s bounds): `--guidance-scale
    inf` or `--steps 0` is a usage error naming the option, not a run that draws black images."""
    import argparse

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if integer else 'a number'}") from None
        try:
            check_number("value", value, integer=integer, **bounds)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("value ").rstrip(".")) from None
        return value

    parse.__name__ = "integer" if integer else "number"
    return parse


def check_shard_size(value, name: str = "max_shard_size") -> str | int:
    """`value` if huggingface_hub's sharding (which `save_pretrained` uses) accepts it as a positive size: bytes as an
    int, or a number with a unit ("10GB", "500MB"; TB, GB, MB, KB). Checked before any work, so a typo is not found
    only once the weights have been converted."""
    from huggingface_hub.serialization._base import parse_size_to_int

    accepted = "accepted: a positive size such as 10GB or 500MB (units TB, GB, MB, KB) or a number of bytes"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{name} must be a size, got {type(value).__name__}: {value!r}; {accepted}")
    try:
        size = value if isinstance(value, int) else parse_size_to_int(value)
    except ValueError:
        size = None
    if size is None or not size > 0:
        raise ValueError(f"{name} must be a size, got {value!r}; {accepted}")
    return value


def cli_shard_size(text: str) -> str:
    """An argparse `type` for `--max-shard-size` (see `check_shard_size`); a plain number counts bytes."""
    import argparse

    value = int(text) if text.strip().isdigit() else text
    try:
        return check_shard_size(value, "the shard size")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_hub_reachable(value, option: str) -> None:
    """With the Hub offline (`HF_HUB_OFFLINE=1`), a value that is no local path but a Hub id (`owner/name`, or
    `owner/name/subfolder`) must already be in the local cache: otherwise a ValueError says so before any work,
    instead of a slow or unclear failure once loading starts. Values that exist locally, or that are not Hub-like
    (the loader then names a missing path), pass."""
    if not isinstance(value, str) or Path(value).expanduser().exists():
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    parts = value.split("/")
    if not offline or len(parts) < 2 or not all(part and part not in (".", "..") for part in parts[:2]):
        return
    if value.startswith(("/", "~", ".")):
        return
    from huggingface_hub import snapshot_download

    try:
        snapshot_download("/".join(parts[:2]), local_files_only=True)
    except Exception:  # not cached (or not a valid repo id): nothing can load it offline
        raise ValueError(
            f"{option} {value}: no such local path, and it names a Hub repo that is not in the local cache while"
            " HF_HUB_OFFLINE=1 forbids downloading; give a local path, or download it first (unset HF_HUB_OFFLINE)"
        ) from None


def resolve_device(name: str | None, option: str = "--device"):
    """The torch device a command runs on (default: cuda if available, else cpu), checked before any work: a name
    torch does not know, the `meta` device (no data), or an accelerator this machine lacks is a ValueError."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option} {name!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "meta":
        raise ValueError(f"{option} meta holds no data and cannot generate images; use cpu or cuda")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{option} {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{option} {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option} {name}: MPS is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        backend = getattr(torch, device.type, None)
        if not (hasattr(backend, "is_available") and backend.is_available()):
            raise ValueError(f"{option} {name}: {device.type} is not available on this machine; use --device cpu")
    return device
