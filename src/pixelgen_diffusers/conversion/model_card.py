# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The README.md of a model folder: diffusers front matter, both ways to load the folder, the stored sampling defaults,
the architecture and the citation."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..utils import is_text_to_image
from .model_folder import ModelFolderError


if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from huggingface_hub import ModelCardData


# The Hub's tags for every PixelGen folder (its search and filters read them), beside the task's own.
CARD_TAGS = ("pixelgen", "pixel-space", "flow-matching")
# `pipeline_tag` by task (keyed by text-to-image): class-to-image folders use `unconditional-image-generation`, as
# the official PixelGen card does (the Hub has no class-to-image task).
PIPELINE_TAGS = {False: "unconditional-image-generation", True: "text-to-image"}


CITATION = """@article{ma2026pixelgen,
  title={PixelGen: Pixel Diffusion Beats Latent Diffusion with Perceptual Loss},
  author={Zehong Ma and Ruihan Xu and Shiliang Zhang},
  year={2026},
  eprint={2602.02493},
  archivePrefix={arXiv},
  primaryClass={cs.CV},
  url={https://arxiv.org/abs/2602.02493},
}"""


def card_data(
    pipeline: DiffusionPipeline, existing: ModelCardData | None = None, tags: tuple[str, ...] = (), **fields
) -> ModelCardData:
    """The Hub metadata of a PixelGen model card: `library_name: diffusers`, the task's `pipeline_tag`, `CARD_TAGS`
    after `existing`'s tags and `tags`, and `fields` (`license`, `base_model`, ...) over what `existing` holds;
    None values are left out (a license is never guessed)."""
    from huggingface_hub import ModelCardData

    data = existing.to_dict() if existing is not None else {}
    all_tags = []
    for tag in [*(data.get("tags") or ()), *tags, *CARD_TAGS]:
        if tag not in all_tags:
            all_tags.append(tag)
    data.update(library_name="diffusers", pipeline_tag=PIPELINE_TAGS[is_text_to_image(pipeline)], tags=all_tags)
    data.update({key: value for key, value in fields.items() if value is not None})
    return ModelCardData(**data)


def card_fields(license: str | None = None, base_model: str | None = None) -> dict:
    """The card metadata a user states (`--license`, `--base-model`), checked: a Hub license id (lowercase letters,
    digits, `.`, `-`, e.g. `mit`, `apache-2.0`, `cc-by-nc-4.0`) and a Hub repo id. Only the given ones are returned."""
    from .hub import check_repo_id

    fields = {}
    if license is not None:
        if not isinstance(license, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", license):
            raise ModelFolderError(
                f"--license must be a Hub license id such as mit, apache-2.0 or cc-by-nc-4.0, got {license!r}"
            )
        fields["license"] = license
    if base_model is not None:
        fields["base_model"] = check_repo_id(base_model, "--base-model")
    return fields


def card_license(data: ModelCardData) -> str | None:
    """The license a card states, or None when it does not determine one (`other` needs a `license_name`)."""
    if data.license == "other":
        return f"other ({data.license_name})" if data.license_name else None
    return data.license or None


def render_model_card(pipeline: DiffusionPipeline, model_name: str, metadata: dict | None = None) -> str:
    """README.md with diffusers front matter, both ways to load the folder, the stored defaults and the citation.
    `model_name` is the folder's name (the title, and the folder in the examples); the architecture's name from the
    conversion metadata, when it differs, is given beside it."""
    text_to_image = is_text_to_image(pipeline)
    pipeline_class = type(pipeline).__name__
    transformer = pipeline.transformer.config
    scheduler = pipeline.scheduler.config
    config = pipeline.config
    folder = model_name
    if text_to_image:
        tags = ["pixelgen", "text-to-image", "pixel-space", "flow-matching", "jit"]
        call = 'pipe(prompt="a photo of a corgi wearing sunglasses", generator=torch.Generator().manual_seed(0))'
        cli = f'pixelgen generate --model {folder} --prompt "a photo of a corgi wearing sunglasses" --num-images 4'
        text_encoder_id = config.get("text_encoder_id")
        included = (metadata or {}).get("text_encoder_included", getattr(pipeline, "text_encoder", None) is not None)
        if included:
            named = f" (`{text_encoder_id}`)" if text_encoder_id else ""
            text_note = f"The text encoder{named} and its tokenizer are included (`text_encoder/`, `tokenizer/`)."
        elif text_encoder_id:
            text_note = (
                f"The text encoder is not included: the pipeline loads `{text_encoder_id}` (its `text_encoder_id`)"
                " on the first prompt, or takes `text_encoder=` / `tokenizer=` / `prompt_embeds=`."
            )
        else:
            text_note = (
                "The text encoder is not included and the folder records none (`text_encoder_id` is null): pass"
                " `text_encoder=` and `tokenizer=`, or `prompt_embeds=`."
            )
    else:
        tags = ["pixelgen", "class-conditional", "pixel-space", "flow-matching", "jit"]
        id2label = {int(key): value for key, value in (getattr(config, "id2label", None) or {}).items()}
        example = id2label.get(207, "").split(",")[0].strip() or id2label.get(0, "0").split(",")[0].strip()
        call = f'pipe(class_labels="{example}", generator=torch.Generator().manual_seed(0))'
        cli = f'pixelgen generate --model {folder} --class "{example}" --num-images 4'
        text_note = f"Class names: `pipe.id2label` ({len(id2label)} classes); `class_labels` takes names or ids."

    source = (metadata or {}).get("source") or {}
    architecture_name = (metadata or {}).get("model_name")
    described = f" Architecture: {architecture_name}." if architecture_name and architecture_name != model_name else ""
    origin = (
        f"Converted from `{source['file_name']}` (sha256 `{(source.get('sha256') or '?')[:16]}…`, "
        f"{source.get('weights', '?')} weights) with pixelgen-diffusers {metadata.get('converter_version', '?')}."
        if source.get("file_name")
        else "Exported with pixelgen-diffusers."
    ) + described
    sampling = {
        "sampling_method": scheduler.sampling_method,
        "num_inference_steps": getattr(config, "num_inference_steps", None),
        "guidance_scale": getattr(config, "guidance_scale", None),
        "guidance_interval_min": getattr(config, "guidance_interval_min", None),
        "guidance_interval_max": getattr(config, "guidance_interval_max", None),
        "timeshift": scheduler.timeshift,
        "solver_order": scheduler.solver_order,
        "noise_scale": getattr(config, "noise_scale", None),
    }
    settings_source = (metadata or {}).get("sampling_defaults_source", "the pipeline config")
    architecture = {key: value for key, value in transformer.items() if not key.startswith("_")}
    license, base_model = (metadata or {}).get("license"), (metadata or {}).get("base_model")
    front_matter = f"---\n{card_data(pipeline, tags=tags, license=license, base_model=base_model).to_yaml()}\n---"
    if license:
        license_text = f"The weights are released under `{license}` (as recorded when they were converted)."
    else:
        license_text = (
            "The weights come from the upstream PixelGen release, whose terms this folder does not record; check them"
            " before redistributing the weights."
        )
    rows = "\n".join(f"| `{key}` | {value} |" for key, value in sampling.items())
    architecture_rows = "\n".join(f"| `{key}` | {value} |" for key, value in architecture.items())
    return f"""{front_matter}

# {model_name}

PixelGen ([arXiv 2602.02493](https://arxiv.org/abs/2602.02493), upstream code: Zehong-Ma/PixelGen) generates images
directly in pixel space with a JiT transformer that predicts the clean image. {origin}

This folder is self-contained: `pipeline.py`, `transformer/{_module_file(pipeline.transformer)}` and
`scheduler/{_module_file(pipeline.scheduler)}` hold the code, so it loads with nothing but diffusers. {text_note}

## Usage

With plain diffusers (the folder's own code runs, hence `trust_remote_code=True`):

```python
import torch
from diffusers import DiffusionPipeline

folder = "path/to/{folder}"  # a local copy of this folder
pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline=f"{{folder}}/pipeline.py", trust_remote_code=True)
image = {call}.images[0]
```

A Hub subfolder can be fetched first with
`huggingface_hub.snapshot_download("owner/repo", allow_patterns=["{folder}/*"])`.

With `pip install pixelgen-diffusers` (the installed code runs; no `trust_remote_code` needed):

```python
from pixelgen_diffusers import {pipeline_class}, load_pipeline

pipe = {pipeline_class}.from_pretrained("path/to/{folder}")  # or load_pipeline("owner/repo/{folder}")
```

```bash
{cli}
```

## Recommended settings

Stored as the pipeline's defaults ({settings_source}); every one can be overridden per call.

| setting | value |
| --- | --- |
{rows}

## Architecture

| field | value |
| --- | --- |
{architecture_rows}

## License

The code in this folder is MIT-licensed (pixelgen-diffusers). {license_text}

## Citation

```bibtex
{CITATION}
```
"""


def _module_file(component) -> str:
    return type(component).__module__.rpartition(".")[2] + ".py"
