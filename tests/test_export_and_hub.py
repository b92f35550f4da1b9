"""Self-contained folders from saved pipelines (`conversion/export.py`) and loading them (`load_pipeline`)."""

import inspect
import json
import os
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from components import (
    run_python,
    tiny_c2i_pipeline,
    tiny_t2i_pipeline,
    upstream_c2i_state_dict,
    upstream_lightning_checkpoint,
)

from pixelgen_diffusers import (
    PixelGenC2IPipeline,
    PixelGenScheduler,
    PixelGenTransformer2DModel,
    convert_checkpoint,
    export_pipeline,
    load_pipeline,
)
from pixelgen_diffusers.conversion.export import make_self_contained, refresh_code
from pixelgen_diffusers.conversion.model_folder import ModelFolderError, read_safetensors_folder, stored_dtype


def sample(pipe, labels=(1, 3), seeds=(5, 6), steps=3):
    """Latents of a 3-step run. Two model instances with equal weights agree to float rounding only (CPU kernels
    may sum in another order for differently aligned weights), so comparisons use a 1e-5 tolerance."""
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return pipe(list(labels), generator=generators, num_inference_steps=steps, output_type="latent").images


def saved_and_exported(tmp_path, **pipeline_config):
    """A tiny pipeline, its `save_pretrained` folder, and the self-contained export of that folder."""
    pipe = tiny_c2i_pipeline(guidance_scale=2.0, guidance_interval_min=0.1, **pipeline_config)
    pipe.save_pretrained(tmp_path / "saved")
    exported = export_pipeline(tmp_path / "saved", tmp_path / "exported")
    return pipe, tmp_path / "saved", exported


# --------------------------------------------------------------------------------------------------------- export
PLAIN_DIFFUSERS_LOAD_AND_RESAVE = """
import sys, torch
from diffusers import DiffusionPipeline

folder, output, resaved = sys.argv[1:4]
pipe = DiffusionPipeline.from_pretrained(
    folder, custom_pipeline=folder + "/pipeline.py", trust_remote_code=True, local_files_only=True
)
pipe.set_progress_bar_config(disable=True)
generators = [torch.Generator().manual_seed(seed) for seed in (5, 6)]
latents = pipe(["golden retriever", 1], generator=generators, num_inference_steps=3, output_type="latent").images
torch.save({"latents": latents, "module": type(pipe.transformer).__module__}, output)
pipe.save_pretrained(resaved)  # loaded as remote code, saved self-contained again
"""


def test_exported_save_pretrained_folder_loads_in_plain_diffusers_and_its_resave_exports_again(tmp_path):
    pipe, saved, exported = saved_and_exported(tmp_path)
    assert (saved / "pipeline.py").is_file()  # save_pretrained alone writes a self-contained folder too
    index = json.loads((exported / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "PixelGenC2IPipeline"]
    assert index["transformer"] == ["transformer_jit", "PixelGenTransformer2DModel"]
    assert index["scheduler"] == ["scheduling_pixelgen", "PixelGenScheduler"]
    assert (exported / "transformer/transformer_jit.py").is_file() and (exported / "README.md").is_file()

    run_python(PLAIN_DIFFUSERS_LOAD_AND_RESAVE, exported, tmp_path / "out.pt", tmp_path / "resaved", cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["module"] == "diffusers_modules.local.transformer_jit"
    expected = sample(pipe, labels=(3, 1))  # "golden retriever" is class 3 in the tiny label table
    torch.testing.assert_close(result["latents"], expected, rtol=0, atol=1e-5)

    resaved_index = json.loads((tmp_path / "resaved/model_index.json").read_text())
    for name in ("_class_name", "transformer", "scheduler"):  # not diffusers_modules.local.*: the code is written too
        assert resaved_index[name] == index[name]
    assert (tmp_path / "resaved/transformer/transformer_jit.py").read_bytes() == (
        exported / "transformer/transformer_jit.py"
    ).read_bytes()
    run_python(
        PLAIN_DIFFUSERS_LOAD_AND_RESAVE, tmp_path / "resaved", tmp_path / "out2.pt", tmp_path / "r2", cwd=tmp_path
    )
    torch.testing.assert_close(torch.load(tmp_path / "out2.pt")["latents"], expected, rtol=0, atol=1e-5)
    reexported = export_pipeline(tmp_path / "resaved", tmp_path / "reexported")
    assert json.loads((reexported / "model_index.json").read_text())["transformer"] == index["transformer"]
    torch.testing.assert_close(
        sample(PixelGenC2IPipeline.from_pretrained(reexported)), sample(pipe), rtol=0, atol=1e-5
    )


def test_package_pipeline_class_loads_a_self_contained_folder_with_the_installed_classes(tmp_path):
    pipe, _, exported = saved_and_exported(tmp_path)
    loaded = PixelGenC2IPipeline.from_pretrained(exported)  # no trust_remote_code: the folder's code is not run
    assert type(loaded.transformer) is PixelGenTransformer2DModel and type(loaded.scheduler) is PixelGenScheduler
    assert loaded.id2label == pipe.id2label
    assert (loaded.config.guidance_scale, loaded.config.guidance_interval_min) == (2.0, 0.1)
    torch.testing.assert_close(sample(loaded), sample(pipe), rtol=0, atol=1e-5)
    loaded.save_pretrained(tmp_path / "again")  # and it saves self-contained again
    again = json.loads((tmp_path / "again/model_index.json").read_text())
    assert again["transformer"] == ["transformer_jit", "PixelGenTransformer2DModel"]


def test_export_sets_the_storage_dtype_and_keeps_conversion_metadata(tmp_path):
    ema = upstream_c2i_state_dict(seed=1)
    torch.save(upstream_lightning_checkpoint(ema, upstream_c2i_state_dict(seed=2)), tmp_path / "tiny.ckpt")
    converted = convert_checkpoint(tmp_path / "tiny.ckpt", tmp_path / "converted", in_context_start=1)
    exported = export_pipeline(converted, tmp_path / "bf16", dtype="bfloat16")
    stored = read_safetensors_folder(exported / "transformer")
    assert {tensor.dtype for tensor in stored.values()} == {torch.bfloat16}
    assert torch.equal(stored["pos_embed"], ema["pos_embed"].to(torch.bfloat16))
    before = json.loads((converted / "conversion_metadata.json").read_text())
    after = json.loads((exported / "conversion_metadata.json").read_text())
    assert after["source"] == before["source"] and after["storage_dtype"] == "bfloat16"
    assert after["exported_from"] == converted.name  # its name: the path is the exporting machine's
    assert json.loads((exported / "model_index.json").read_text())["guidance_scale"] == 2.25

    kept = export_pipeline(exported, tmp_path / "kept")  # without --dtype the stored dtype is kept
    assert {tensor.dtype for tensor in read_safetensors_folder(kept / "transformer").values()} == {torch.bfloat16}


def test_exported_configs_record_no_path_of_the_exporting_machine(tmp_path):
    _, saved, exported = saved_and_exported(tmp_path)
    # Loading the saved folder records it as each component's `_name_or_path`; the export drops such paths.
    configs = list(exported.rglob("*.json"))
    assert {"model_index.json", "config.json", "scheduler_config.json"} <= {path.name for path in configs}
    for path in [*configs, exported / "README.md"]:
        assert str(tmp_path) not in path.read_text(), path
    # conversion_metadata.json records the source folder by name (`exported_from`), not by its path.
    assert json.loads((exported / "conversion_metadata.json").read_text())["exported_from"] == saved.name


def test_refresh_code_rewrites_only_the_shipped_code_files(tmp_path):
    _, _, exported = saved_and_exported(tmp_path)
    stale = [exported / "pipeline.py", exported / "transformer" / "transformer_jit.py"]
    for path in stale:
        path.write_text(path.read_text() + "# stale\n")
    others = {path: path.read_bytes() for path in exported.rglob("*") if path.is_file() and path not in stale}

    assert sorted(refresh_code(exported)) == sorted(stale)
    assert stale[0].read_bytes() == Path(inspect.getsourcefile(PixelGenC2IPipeline)).read_bytes()
    assert stale[1].read_bytes() == Path(inspect.getsourcefile(PixelGenTransformer2DModel)).read_bytes()
    after = {path: path.read_bytes() for path in exported.rglob("*") if path.is_file() and path not in stale}
    assert after == others  # configs, weights, card untouched; no temporary file left behind
    assert refresh_code(exported) == []  # up to date: nothing written
    with pytest.raises(ModelFolderError, match="no model_index.json"):
        refresh_code(tmp_path / "saved" / "transformer")


def test_shared_modules_count_as_shipped_code_for_trust_and_refresh(tmp_path):
    pipe, _, exported = saved_and_exported(tmp_path)
    shared = exported / "pipeline_utils_pixelgen.py"
    shared.write_text(shared.read_text() + "# edited\n")
    (exported / "transformer/jit_layers.py").unlink()
    with pytest.raises(
        ModelFolderError, match=r"differs from the installed package \(pipeline_utils_pixelgen.py, transformer/jit_la"
    ):
        load_pipeline(exported)
    assert sorted(refresh_code(exported)) == [shared, exported / "transformer/jit_layers.py"]
    assert (exported / "transformer/jit_layers.py").read_bytes() == Path(
        inspect.getsourcefile(PixelGenTransformer2DModel)
    ).with_name("jit_layers.py").read_bytes()
    torch.testing.assert_close(sample(load_pipeline(exported)), sample(pipe), rtol=0, atol=1e-5)


def test_export_rejects_folders_that_are_not_our_pipelines_and_unsafe_outputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="not a saved pipeline folder"):
        export_pipeline(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "dit").mkdir()
    (tmp_path / "dit/model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    with pytest.raises(ModelFolderError, match="DiTPipeline, which is not a pixelgen-diffusers pipeline"):
        export_pipeline(tmp_path / "dit", tmp_path / "out")

    _, saved, exported = saved_and_exported(tmp_path)
    with pytest.raises(ModelFolderError, match="exists and is not empty"):
        export_pipeline(saved, exported)
    with pytest.raises(ModelFolderError, match="contains the source"):
        export_pipeline(saved, tmp_path, overwrite=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dit", "empty", "exported", "saved"]


def test_shipped_modules_must_not_import_the_package(tmp_path):
    pipe = tiny_c2i_pipeline()
    pipe.save_pretrained(tmp_path / "saved")
    module = tmp_path / "leaky.py"
    (tmp_path / "sibling.py").write_text("import torch\n")
    for line in (
        "from pixelgen_diffusers.conversion.labels import imagenet_id2label",
        "from .transformer_jit import x",  # not beside it
        "from ..sibling import x",  # outside its folder: diffusers would not copy it
        "from . import sibling",  # a form diffusers does not copy
    ):
        module.write_text(line + "\n")
        from pixelgen_diffusers.conversion.export import _check_standalone

        with pytest.raises(ModelFolderError, match="must be self-contained"):
            _check_standalone(module)
    module.write_text("from .sibling import torch\n")
    _check_standalone(module)  # a sibling shipped beside it
    make_self_contained(tmp_path / "saved", pipe)  # the package's own modules pass
    assert (tmp_path / "saved/pipeline.py").is_file()
    assert (tmp_path / "saved/pipeline_utils_pixelgen.py").is_file()
    assert (tmp_path / "saved/transformer/jit_layers.py").is_file()


# ---------------------------------------------------------------------------------------------------- load_pipeline
def test_load_pipeline_uses_the_installed_classes_for_our_saved_and_self_contained_folders(tmp_path):
    pipe, saved, exported = saved_and_exported(tmp_path)
    for folder in (saved, exported):
        loaded = load_pipeline(folder)
        assert type(loaded) is PixelGenC2IPipeline and type(loaded.transformer) is PixelGenTransformer2DModel
        torch.testing.assert_close(sample(loaded), sample(pipe), rtol=0, atol=1e-5)
    assert load_pipeline(exported, dtype=torch.bfloat16).transformer.dtype == torch.bfloat16


LOAD_FOREIGN_CODE = """
import sys
from pixelgen_diffusers import load_pipeline

pipe = load_pipeline(sys.argv[1], trust_remote_code=True)
assert type(pipe).__module__ == "diffusers_modules.local.pipeline", type(pipe).__module__
assert type(pipe.transformer).__module__ == "diffusers_modules.local.transformer_jit"
assert pipe.transformer.marker == "edited"
"""


# Both kinds in one plain-diffusers process: the C2I folder as a local folder, the T2I one from a Hub-style repo
# subfolder (`huggingface_hub.snapshot_download` is replaced by a local copy of the repo's selected files, the download
# only), loaded through its `model_index.json` `_class_name` entry. Their shared modules land in diffusers' one flat
# namespace, `diffusers_modules.local.<stem>`, with identical content.
PLAIN_DIFFUSERS_C2I_AND_HUB_T2I = """
import fnmatch, os, shutil, sys, huggingface_hub, torch
from diffusers import DiffusionPipeline

c2i_folder, repo, output = sys.argv[1:4]


def snapshot_download(repo_id, allow_patterns=None, **kwargs):
    snapshot = os.path.join(os.path.dirname(output), "snapshot")
    for root, _, files in os.walk(repo):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), repo)
            if allow_patterns is None or any(fnmatch.fnmatch(relative, pattern) for pattern in allow_patterns):
                os.makedirs(os.path.dirname(os.path.join(snapshot, relative)), exist_ok=True)
                shutil.copyfile(os.path.join(root, name), os.path.join(snapshot, relative))
    return snapshot


huggingface_hub.snapshot_download = snapshot_download


def sample_c2i(pipe):
    generators = [torch.Generator().manual_seed(seed) for seed in (5, 6)]
    return pipe([1, 3], generator=generators, num_inference_steps=3, output_type="latent").images


c2i = DiffusionPipeline.from_pretrained(
    c2i_folder, custom_pipeline=c2i_folder + "/pipeline.py", trust_remote_code=True, local_files_only=True
)
c2i.set_progress_bar_config(disable=True)
c2i_first = sample_c2i(c2i)
snapshot = huggingface_hub.snapshot_download(repo_id="someone/PixelGen-diffusers", allow_patterns=["PixelGen-T2I/*"])
t2i = DiffusionPipeline.from_pretrained(
    os.path.join(snapshot, "PixelGen-T2I"), trust_remote_code=True, local_files_only=True
)
t2i.set_progress_bar_config(disable=True)
t2i_latents = t2i(
    ["a red circle", "a blue square"], generator=torch.Generator().manual_seed(0), num_inference_steps=2,
    output_type="latent",
).images
modules = {name: type(module).__module__ for name, module in (("c2i", c2i), ("c2i_transformer", c2i.transformer),
           ("t2i", t2i), ("t2i_transformer", t2i.transformer))}
torch.save(
    {
        "c2i_first": c2i_first,
        "c2i_after_t2i": sample_c2i(c2i),
        "t2i": t2i_latents,
        "modules": modules,
        "shared": sorted(name for name in sys.modules if name.endswith((".pipeline_utils_pixelgen", ".jit_layers"))),
        "snapshot": sorted(os.path.relpath(os.path.join(root, name), snapshot)
                           for root, _, files in os.walk(snapshot) for name in files if name.endswith(".py")),
    },
    output,
)
"""


def test_c2i_and_t2i_folders_load_side_by_side_in_plain_diffusers_one_from_a_hub_subfolder(tmp_path):
    c2i, _, c2i_folder = saved_and_exported(tmp_path)
    t2i = tiny_t2i_pipeline()
    t2i.save_pretrained(tmp_path / "repo" / "PixelGen-T2I")  # save_pretrained alone ships the code and its siblings
    c2i.save_pretrained(tmp_path / "repo" / "Other-Model")  # not selected by the download's allow_patterns

    run_python(PLAIN_DIFFUSERS_C2I_AND_HUB_T2I, c2i_folder, tmp_path / "repo", tmp_path / "out.pt", cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["snapshot"] == [
        "PixelGen-T2I/pipeline.py",
        "PixelGen-T2I/pipeline_utils_pixelgen.py",
        "PixelGen-T2I/scheduler/scheduling_pixelgen.py",
        "PixelGen-T2I/transformer/jit_layers.py",
        "PixelGen-T2I/transformer/transformer_jit_t2i.py",
    ]
    assert result["modules"] == {
        "c2i": "diffusers_modules.local.pipeline",
        "c2i_transformer": "diffusers_modules.local.transformer_jit",
        "t2i": "diffusers_modules.local.pipeline",
        "t2i_transformer": "diffusers_modules.local.transformer_jit_t2i",
    }
    shared = ["diffusers_modules.local.jit_layers", "diffusers_modules.local.pipeline_utils_pixelgen"]
    assert result["shared"] == shared
    torch.testing.assert_close(result["c2i_first"], sample(c2i), rtol=0, atol=1e-5)
    assert torch.equal(result["c2i_after_t2i"], result["c2i_first"])  # the T2I folder's modules left it intact
    expected = t2i(
        ["a red circle", "a blue square"], generator=torch.Generator().manual_seed(0), num_inference_steps=2,
        output_type="latent",
    ).images  # fmt: skip
    # Loaded weights sit at other addresses, which moves CPU BLAS rounding by an ulp; sampling amplifies that.
    torch.testing.assert_close(result["t2i"], expected, rtol=1e-4, atol=1e-4)


def test_load_pipeline_refuses_a_folders_own_code_by_default_and_runs_it_only_if_trusted(tmp_path):
    _, _, exported = saved_and_exported(tmp_path)
    code = exported / "transformer/transformer_jit.py"
    code.write_text(code.read_text() + "\nPixelGenTransformer2DModel.marker = 'edited'\n")
    for refused in ({}, {"trust_remote_code": False}):
        with pytest.raises(
            ModelFolderError, match=r"own code, .* \(transformer/transformer_jit.py\); .* pass --trust-remote-code \("
        ):
            load_pipeline(exported, **refused)
    run_python(LOAD_FOREIGN_CODE, exported, cwd=tmp_path, block_package=False)


class FakeHub:
    """Stands in for `huggingface_hub.snapshot_download`: copies a local folder into a snapshot directory,
    keeping only the files that `allow_patterns` selects, and records each call."""

    def __init__(self, snapshot_root, files_root, layout):
        self.snapshot_root, self.files_root, self.layout, self.calls = snapshot_root, files_root, layout, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        snapshot = self.snapshot_root / f"snapshot-{len(self.calls)}"
        for repo_folder, local_folder in self.layout.items():
            patterns = kwargs.get("allow_patterns")
            if patterns is None or f"{repo_folder}/*" in patterns:
                shutil.copytree(local_folder, snapshot / repo_folder if repo_folder else snapshot, dirs_exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)


def test_load_pipeline_downloads_only_the_subfolder_of_a_hub_id_with_a_subfolder(tmp_path, monkeypatch):
    pipe, _, exported = saved_and_exported(tmp_path)
    hub = FakeHub(tmp_path / "hub", tmp_path, {"PixelGen-Tiny": exported, "Other-Model": exported})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)

    loaded = load_pipeline("someone/PixelGen-diffusers/PixelGen-Tiny", revision="main")
    assert hub.calls == [
        {"repo_id": "someone/PixelGen-diffusers", "revision": "main", "allow_patterns": ["PixelGen-Tiny/*"]}
    ]
    assert not (tmp_path / "hub/snapshot-1/Other-Model").exists()
    torch.testing.assert_close(sample(loaded), sample(pipe), rtol=0, atol=1e-5)

    with pytest.raises(ModelFolderError, match="no model_index.json in subfolder Missing"):
        load_pipeline("someone/PixelGen-diffusers/Missing")


def test_load_pipeline_downloads_the_whole_repo_for_an_owner_repo_id(tmp_path, monkeypatch):
    pipe, _, exported = saved_and_exported(tmp_path)
    hub = FakeHub(tmp_path / "hub", tmp_path, {"": exported})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    loaded = load_pipeline("someone/PixelGen-Tiny", dtype=torch.float32)
    assert hub.calls == [{"repo_id": "someone/PixelGen-Tiny"}]
    torch.testing.assert_close(sample(loaded), sample(pipe), rtol=0, atol=1e-5)


def test_load_pipeline_errors_are_one_line(tmp_path, monkeypatch):
    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelFolderError, match="downloading someone/missing failed: We couldn't connect") as error:
        load_pipeline("someone/missing/Sub")
    assert "\n" not in str(error.value)
    with pytest.raises(ModelFolderError, match="neither a local folder nor a Hub id"):
        load_pipeline("no_such_folder")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelFolderError, match="is a file, not a model folder"):
        load_pipeline(tmp_path / "file.txt")
    with pytest.raises(ModelFolderError, match="no model_index.json"):
        load_pipeline(tmp_path)


def test_export_accepts_a_pipeline_object(tmp_path):
    pipe = tiny_c2i_pipeline(noise_scale=2.0)
    exported = export_pipeline(pipe, tmp_path / "model")
    assert json.loads((exported / "model_index.json").read_text())["noise_scale"] == 2.0
    assert (exported / "pipeline.py").is_file()
    torch.testing.assert_close(sample(PixelGenC2IPipeline.from_pretrained(exported)), sample(pipe), rtol=0, atol=1e-5)


def test_exported_folder_has_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        folder = export_pipeline(tiny_c2i_pipeline(), tmp_path / "model")
    finally:
        os.umask(umask)
    modes = {path.relative_to(folder): path.stat().st_mode & 0o777 for path in [folder, *folder.rglob("*")]}
    assert modes[Path(".")] == 0o755 and modes[Path("transformer/diffusion_pytorch_model.safetensors")] == 0o644
    assert set(modes.values()) == {0o755, 0o644}


def test_export_of_a_pipeline_object_in_another_dtype_leaves_the_callers_pipeline_as_it_was(tmp_path):
    pipe = tiny_c2i_pipeline()
    transformer = pipe.transformer
    before = {key: tensor.clone() for key, tensor in transformer.state_dict().items()}
    exported = export_pipeline(pipe, tmp_path / "model", dtype="bfloat16")
    stored = read_safetensors_folder(exported / "transformer")
    assert {tensor.dtype for tensor in stored.values()} == {torch.bfloat16}
    assert torch.equal(stored["pos_embed"], before["pos_embed"].to(torch.bfloat16))
    assert pipe.transformer is transformer and transformer.dtype == torch.float32
    after = transformer.state_dict()
    assert all(torch.equal(after[key], tensor) for key, tensor in before.items())  # bit for bit, not cast back


def test_export_keeps_the_stored_dtype_of_a_shipped_text_encoder(tmp_path):
    pipe = tiny_t2i_pipeline()
    pipe.text_encoder.to(torch.bfloat16)
    pipe.save_pretrained(tmp_path / "saved")
    assert stored_dtype(tmp_path / "saved/text_encoder") == torch.bfloat16
    for name, dtype in (("kept", None), ("float16", "float16")):
        exported = export_pipeline(tmp_path / "saved", tmp_path / name, dtype=dtype)
        assert stored_dtype(exported / "text_encoder") == torch.bfloat16
        assert stored_dtype(exported / "transformer") == (torch.float16 if dtype else torch.float32)
