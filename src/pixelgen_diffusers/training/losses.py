# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""PixelGen's training objective.

x-prediction flow matching scored on velocities (JiT), plus PixelGen's optional terms: LPIPS and P-DINO perceptual
losses applied only to low-noise samples ("noise gating"), and REPA alignment of an intermediate block's tokens to
DINOv2 features. Defaults and weights follow upstream's `training_repa_JiT_LPIPS_DINO_NoiseGating.REPATrainer`.
"""

import copy
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..schedulers.scheduling_pixelgen import x_to_velocity as velocity  # the sampler's conversion, with its 0.05 clamp


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


# ------------------------------------------------------------------------------------------- flow matching pieces
def sample_time(
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    p_mean: float = -0.8,
    p_std: float = 0.8,
    timeshift: float = 1.0,
) -> torch.Tensor:
    """Logit-normal training times t = sigmoid(N(p_mean, p_std)), then shifted as t / (t + (1 - t) s); t = 0 is
    noise. Upstream samples with p_mean = -0.8, p_std = 0.8 and s = 1, i.e. more often near the noise end."""
    normal = torch.randn(batch_size, generator=generator, device=device) * p_std + p_mean
    t = normal.sigmoid()
    return t / (t + (1 - t) * timeshift)


def drop_labels(
    class_labels: torch.LongTensor, null_class_id: int, probability: float, generator: torch.Generator | None = None
) -> torch.LongTensor:
    """Replaces each label by the null class with the given probability, which trains the unconditional branch
    that classifier-free guidance needs."""
    drop = torch.rand(class_labels.shape, generator=generator, device=class_labels.device) < probability
    return torch.where(drop, torch.full_like(class_labels, null_class_id), class_labels)


def drop_captions(
    prompt_embeds: torch.Tensor,
    empty_prompt_embeds: torch.Tensor,
    probability: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Replaces each caption's embedding (B, L, D) by the empty prompt's (1, L, D) with the given probability: the
    text-to-image counterpart of `drop_labels` (upstream's T2I trainer drops to the empty-prompt embedding)."""
    drop = torch.rand(prompt_embeds.shape[0], generator=generator, device=prompt_embeds.device) < probability
    return torch.where(drop.view(-1, 1, 1), empty_prompt_embeds.to(prompt_embeds), prompt_embeds)


def noise_gate(t: torch.Tensor, threshold: float) -> torch.Tensor:
    """Samples that are clean enough (t >= threshold) for perceptual losses to be meaningful."""
    return t >= threshold


# ---------------------------------------------------------------------------------------------------------- LPIPS
# VGG-16's convolutions per stage; layers are numbered as torchvision's `features` (conv, ReLU, ..., max-pool).
# LPIPS taps the ReLU after the last conv of every stage (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
VGG16_STAGES = (2, 2, 3, 3, 3)
VGG16_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity (Zhang et al., 2018) on a VGG-16 trunk, as `lpips.LPIPS(net="vgg")`.

    Images in [-1, 1] are shifted and scaled with LPIPS's constants, each tapped feature map is unit-normalised over
    channels, the squared differences are weighted per channel by the learned 1x1 `lins`, averaged over space and
    summed over taps. `channels` sets the stage widths, so a tiny trunk can be built for tests.
    """

    def __init__(self, channels: tuple[int, ...] = VGG16_CHANNELS):
        super().__init__()
        if len(channels) != len(VGG16_STAGES):
            raise ValueError(f"channels must list {len(VGG16_STAGES)} stage widths, got {channels!r}.")
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        layers, self.tap_indices = [], []
        in_channels = 3
        for stage, (num_convs, width) in enumerate(zip(VGG16_STAGES, channels)):
            if stage > 0:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for _ in range(num_convs):
                layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU()]
                in_channels = width
            self.tap_indices.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList([nn.Conv2d(width, 1, kernel_size=1, bias=False) for width in channels])

    def forward(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample distance, shape (B,)."""
        batch_size = image.shape[0]
        hidden_states = (torch.cat([image, target]) - self.shift) / self.scale
        taps = dict(zip(self.tap_indices, self.lins))
        distance = 0
        for index, layer in enumerate(self.features):
            hidden_states = layer(hidden_states)
            if index in taps:
                normed = hidden_states / (hidden_states.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                normed_image, normed_target = normed.split(batch_size)
                distance = distance + taps[index]((normed_image - normed_target).square()).mean(dim=(1, 2, 3))
        return distance

    @staticmethod
    def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Maps the layouts LPIPS weights are distributed in onto this module's keys: `lpips.LPIPS(net="vgg")`'s own
        state dict (`net.sliceK.N.*`, `linK.model.1.weight`), torchvision's VGG-16 (`features.N.*`) and LPIPS's
        `weights/v0.1/vgg.pth` (`linK.model.1.weight`); they may be merged from several files."""
        converted = {}
        for key, value in state_dict.items():
            parts = key.split(".")
            if parts[0] == "features" and len(parts) == 3:
                converted[key] = value
            elif parts[0] == "net" and parts[1].startswith("slice") and len(parts) == 4:
                converted[f"features.{parts[2]}.{parts[3]}"] = value
            elif parts[0].startswith("lin") and parts[0][3:].isdigit() and parts[-1] == "weight":
                converted[f"lins.{parts[0][3:]}.weight"] = value
            elif parts[0] == "lins" and parts[-1] == "weight":
                converted[f"lins.{parts[1]}.weight"] = value
        return converted

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> "LPIPS":
        """Builds the trunk with the widths found in the weights, then loads them strictly."""
        state_dict = cls.convert_state_dict(state_dict)
        missing = [f"lins.{i}.weight" for i in range(len(VGG16_STAGES)) if f"lins.{i}.weight" not in state_dict]
        if missing:
            raise ValueError(
                f"The LPIPS weights lack the learned linear layers {missing} (lpips' `linK.model.1.weight`); pass"
                " lpips' vgg.pth or a full `lpips.LPIPS(net='vgg')` state dict alongside the VGG-16 trunk."
            )
        if "features.0.weight" not in state_dict:
            raise ValueError(
                "The LPIPS weights lack the VGG-16 trunk (`features.N.*` or lpips' `net.sliceK.N.*` keys)."
            )
        channels = tuple(state_dict[f"lins.{i}.weight"].shape[1] for i in range(len(VGG16_STAGES)))
        model = cls(channels)
        model.load_state_dict(state_dict, strict=True)
        return model


# ---------------------------------------------------------------------------------------------- DINOv2 features
class DinoFeatures(nn.Module):
    """Normed patch tokens of one DINOv2 layer for images in [0, 1], preprocessed as upstream's encoder: ImageNet
    mean/std, then a bicubic resize that gives DINOv2 the denoiser's token grid (256 px, patch 16 -> 224 px)."""

    def __init__(self, model: nn.Module, grid_size: int, layer: int = -1):
        super().__init__()
        config = model.config
        if not -config.num_hidden_layers <= layer < config.num_hidden_layers:
            raise ValueError(f"dino_layer {layer} is out of range for a {config.num_hidden_layers}-layer DINOv2.")
        self.model = model
        self.layer = layer % config.num_hidden_layers
        self.resolution = grid_size * config.patch_size
        self.num_prefix_tokens = 1 + getattr(config, "num_register_tokens", 0)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.model.config.hidden_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixel_values = (images - self.mean) / self.std
        size = (self.resolution, self.resolution)
        pixel_values = F.interpolate(pixel_values, size=size, mode="bicubic")
        outputs = self.model(pixel_values=pixel_values, output_hidden_states=True)
        # hidden_states[0] is the embedding output; layer i's output is hidden_states[i + 1].
        hidden_states = self.model.layernorm(outputs.hidden_states[self.layer + 1])
        return hidden_states[:, self.num_prefix_tokens :]


# ------------------------------------------------------------------------------------------------------- loading
def resolve_weights_source(source: str | os.PathLike, what: str, allow_patterns: list[str] | None = None) -> Path:
    """A local file or folder as is; anything else that looks like `owner/name` is fetched from the Hub."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if isinstance(source, str) and source.count("/") == 1 and not source.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(source, allow_patterns=allow_patterns))
        except Exception as error:
            raise ValueError(f"Could not fetch the {what} backbone {source!r} from the Hub: {error}") from error
    raise ValueError(f"The {what} backbone {str(source)!r} is neither an existing local path nor a Hub repo id.")


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lpips(source: str | os.PathLike | nn.Module) -> nn.Module:
    """An LPIPS module from a weights file, a folder of weight files (merged), a Hub repo id, or a ready module
    (any `module(image, target) -> (B,) distances` for images in [-1, 1]). Frozen and in eval mode."""
    if isinstance(source, nn.Module):
        module = source
    else:
        path = resolve_weights_source(source, "LPIPS", allow_patterns=[f"*{suffix}" for suffix in WEIGHT_SUFFIXES])
        files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"No weight files ({', '.join(WEIGHT_SUFFIXES)}) in the LPIPS folder {str(path)!r}.")
        state_dict = {}
        for file in files:
            state_dict.update(_load_weight_file(file))
        module = LPIPS.from_state_dict(state_dict)
    return module.eval().requires_grad_(False)


def load_dino(source: str | os.PathLike | nn.Module) -> nn.Module:
    """A transformers `Dinov2Model` from a local folder or Hub id (or a ready one), frozen and in eval mode."""
    if isinstance(source, nn.Module):
        model = source
    else:
        from transformers import Dinov2Model

        path = resolve_weights_source(source, "DINOv2")
        model = Dinov2Model.from_pretrained(path)
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ the objective
class PixelGenLoss(nn.Module):
    r"""
    The training loss of a PixelGen transformer: FM + repa_weight * REPA + w_p * (lpips_weight * LPIPS + dino_weight
    * P-DINO). It owns the denoiser and the REPA projector, which are what the optimizer trains; the perceptual
    backbones are frozen. The same objective trains both model kinds; only the condition and its dropout differ.

    Args:
        transformer ([`PixelGenTransformer2DModel`] or [`PixelGenT2ITransformer2DModel`]): the denoiser.
        label_dropout (`float`): probability of replacing the condition by the unconditional one: a label by the
            null class, a caption embedding by `empty_prompt_embeds`.
        empty_prompt_embeds (`torch.Tensor`, *optional*): (1, txt_max_length, txt_embed_dim) embedding of the empty
            prompt; required for text-to-image transformers.
        p_mean, p_std (`float`): logit-normal time distribution; timeshift (`float`): training time shift.
        t_eps (`float`): clamp of 1 - t in the velocities; noise_scale (`float`): std of the noise.
        lpips (`nn.Module`, *optional*): LPIPS module; enables the LPIPS term with weight `lpips_weight`.
        dino (`nn.Module`, *optional*): a `Dinov2Model`; needed by P-DINO (`dino_weight`) and REPA.
        percept_t_threshold (`float`): noise gate; perceptual terms use only samples with t >= threshold.
        repa_layer (`int`, *optional*): index of the block whose input tokens are aligned to DINOv2 (REPA).
        repa_weight (`float`): weight of REPA's 1 - cosine.
        dino_layer (`int`): DINOv2 layer of the targets (-1: the last, upstream's layer 11 of ViT-B).
        adaptive_weight_start (`int`, *optional*): from this step on, every 50 steps, w_p moves (EMA 0.8/0.2)
            towards |grad FM| / |grad perceptual| on the output projection, as upstream does from step 400k.
    """

    def __init__(
        self,
        transformer: nn.Module,
        label_dropout: float = 0.1,
        p_mean: float = -0.8,
        p_std: float = 0.8,
        timeshift: float = 1.0,
        t_eps: float = 0.05,
        noise_scale: float = 1.0,
        lpips: nn.Module | None = None,
        lpips_weight: float = 0.1,
        dino: nn.Module | None = None,
        dino_weight: float = 0.01,
        percept_t_threshold: float = 0.3,
        repa_layer: int | None = None,
        repa_weight: float = 0.5,
        dino_layer: int = -1,
        adaptive_weight_start: int | None = 400_000,
        adaptive_weight_every: int = 50,
        empty_prompt_embeds: torch.Tensor | None = None,
    ):
        super().__init__()
        config = transformer.config
        self.is_text_to_image = hasattr(config, "txt_max_length")
        if self.is_text_to_image and empty_prompt_embeds is None:
            raise ValueError("A text-to-image transformer needs `empty_prompt_embeds` for caption dropout.")
        if not 0 <= label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}.")
        if repa_layer is not None and not 0 <= repa_layer < config.depth:
            raise ValueError(f"repa_layer must be a block index in [0, {config.depth}), got {repa_layer}.")
        if repa_layer is not None and dino is None:
            raise ValueError("REPA (repa_layer) aligns to DINOv2 features: a `dino` backbone is required.")
        self.transformer = transformer
        self.label_dropout = label_dropout
        self.p_mean, self.p_std, self.timeshift = p_mean, p_std, timeshift
        self.t_eps, self.noise_scale = t_eps, noise_scale
        self.lpips = lpips
        self.lpips_weight = lpips_weight
        self.percept_t_threshold = percept_t_threshold
        self.dino_weight = dino_weight
        self.repa_weight = repa_weight
        self.repa_layer = repa_layer
        self.adaptive_weight_start = adaptive_weight_start
        self.adaptive_weight_every = adaptive_weight_every
        self.dino = None
        self.projector = None
        if dino is not None:
            self.dino = DinoFeatures(dino, config.sample_size // config.patch_size, dino_layer)
        if repa_layer is not None:
            hidden_size = config.hidden_size
            self.projector = nn.Sequential(
                nn.Linear(hidden_size, hidden_size),
                nn.SiLU(),
                nn.Linear(hidden_size, hidden_size),
                nn.SiLU(),
                nn.Linear(hidden_size, self.dino.feature_dim),
            )
            self._captured = None
            transformer.transformer_blocks[repa_layer].register_forward_pre_hook(self._capture_block_input)
        if empty_prompt_embeds is not None:
            self.register_buffer("empty_prompt_embeds", empty_prompt_embeds.detach().clone(), persistent=False)
        # The adaptive perceptual weight w_p (upstream's `cached_percept_weight`); a buffer so checkpoints keep it.
        self.register_buffer("percept_weight", torch.ones(()))

    @property
    def uses_perceptual(self) -> bool:
        return self.lpips is not None or (self.dino is not None and self.dino_weight > 0)

    def _capture_block_input(self, block, args):
        """The tokens entering block `repa_layer`, without the in-context class tokens (as upstream's
        `return_layer`, which reads them before the in-context tokens join or strips them afterwards)."""
        hidden_states = args[0]
        config = self.transformer.config
        if getattr(config, "in_context_len", 0) > 0 and self.repa_layer >= config.in_context_start:
            hidden_states = hidden_states[:, config.in_context_len :]
        self._captured = hidden_states

    def forward(
        self,
        images: torch.Tensor,
        condition: torch.Tensor,
        generator: torch.Generator | None = None,
        step: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Losses for clean `images` (B, 3, H, W) in [-1, 1] under `condition`: class ids (B,), or caption
        embeddings (B, txt_max_length, txt_embed_dim) for text-to-image. `loss` is the total to minimise, the others
        are for logging."""
        batch_size, device = images.shape[0], images.device
        images = images.float()
        if self.is_text_to_image:
            condition = drop_captions(condition, self.empty_prompt_embeds, self.label_dropout, generator)
            condition = condition.to(self.transformer.dtype)  # as the pipeline feeds the cached bfloat16 features
        else:
            condition = drop_labels(condition, self.transformer.config.num_classes, self.label_dropout, generator)
        t = sample_time(batch_size, generator, device, self.p_mean, self.p_std, self.timeshift)
        noise = torch.randn(images.shape, generator=generator, device=device) * self.noise_scale
        t_image = t.view(-1, 1, 1, 1)
        noisy = t_image * images + (1 - t_image) * noise

        prediction = self.transformer(noisy, t, condition, return_dict=False)[0].float()
        # Losses in float32 whatever the autocast dtype of the forward.
        with torch.autocast(device.type, enabled=False):
            target_velocity = velocity(images, noisy, t, self.t_eps)
            predicted_velocity = velocity(prediction, noisy, t, self.t_eps)
            fm_loss = (predicted_velocity - target_velocity).square().mean()
        losses = {"fm": fm_loss}
        loss = fm_loss

        clean_features = None
        if self.dino is not None:
            with torch.no_grad():
                clean_features = self.dino((images + 1) / 2)
        if self.projector is not None:
            projected = self.projector(self._captured)
            self._captured = None
            repa_loss = 1 - F.cosine_similarity(projected.float(), clean_features.float(), dim=-1).mean()
            losses["repa"] = repa_loss
            loss = loss + self.repa_weight * repa_loss

        if self.uses_perceptual:
            gate = noise_gate(t, self.percept_t_threshold)
            perceptual = self.perceptual_losses(prediction, images, clean_features, gate)
            losses.update(perceptual)
            percept_loss = sum(perceptual.values())
            if self._adapt_weight_now(step):
                self._update_percept_weight(fm_loss, percept_loss)
            losses["percept_weight"] = self.percept_weight.detach().clone()
            loss = loss + self.percept_weight * percept_loss

        losses["loss"] = loss
        return losses

    def perceptual_losses(
        self, prediction: torch.Tensor, images: torch.Tensor, clean_features: torch.Tensor | None, gate: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weighted LPIPS and P-DINO, each averaged over the gated samples only; ungated samples get no gradient.
        Computing on the gated subset gives upstream's masked mean, sum(mask * loss) / sum(mask), and 0 without
        any gated sample."""
        losses = {}
        num_gated = int(gate.sum())
        if self.lpips is not None:
            if num_gated == 0:
                losses["lpips"] = prediction.sum() * 0
            else:
                losses["lpips"] = self.lpips_weight * self.lpips_distance(prediction[gate], images[gate]).mean()
        if self.dino is not None and self.dino_weight > 0:
            if num_gated == 0:
                losses["dino"] = prediction.sum() * 0
            else:
                predicted_features = self.dino((prediction[gate] + 1) / 2)
                cosine = F.cosine_similarity(predicted_features.float(), clean_features[gate].float(), dim=-1)
                losses["dino"] = self.dino_weight * (1 - cosine.mean())
        return losses

    def lpips_distance(self, prediction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """LPIPS at the resolution it sees at upstream's scale: images are resized to H * 16 / patch_size (antialiased
        bilinear) when the patch size is not 16, as upstream does."""
        patch_size, height = self.transformer.config.patch_size, prediction.shape[-1]
        if patch_size != 16:
            size = (height * 16 // patch_size,) * 2
            prediction = F.interpolate(prediction, size=size, mode="bilinear", align_corners=False, antialias=True)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.lpips(prediction, images).reshape(prediction.shape[0], -1).mean(dim=1)

    def _adapt_weight_now(self, step: int) -> bool:
        start = self.adaptive_weight_start
        return start is not None and step >= start and step % self.adaptive_weight_every == 0 and self.training

    def _update_percept_weight(self, fm_loss: torch.Tensor, percept_loss: torch.Tensor) -> None:
        """w_p <- 0.8 w_p + 0.2 clamp(|grad FM| / (|grad percept| + 1e-4), 0, 100), gradients on the output layer."""
        last_layer = self.transformer.final_layer.proj_out.weight
        fm_grad = torch.autograd.grad(fm_loss, last_layer, retain_graph=True)[0]
        percept_grad = torch.autograd.grad(percept_loss, last_layer, retain_graph=True)[0]
        ratio = (fm_grad.norm() / (percept_grad.norm() + 1e-4)).clamp(0.0, 100.0).detach()
        self.percept_weight.mul_(0.8).add_(0.2 * ratio)


# ------------------------------------------------------------------------------------------------------------ EMA
class EMA:
    """Float32 exponential moving average of a model's trainable parameters: ema <- decay * ema + (1 - decay) * param
    after every optimizer step (upstream's SimpleEMA). Frozen parameters (the base model of a LoRA run) are not
    averaged, so they stay bit-identical; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if not 0 <= decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_parameters = dict(self.model.named_parameters())
        parameters = dict(model.named_parameters())
        ema_tracked = [ema_parameters[name] for name in self.names]
        tracked = [parameters[name].detach().float() for name in self.names]
        torch._foreach_mul_(ema_tracked, self.decay)
        torch._foreach_add_(ema_tracked, tracked, alpha=1 - self.decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged (trainable) parameters, float32, by name."""
        parameters = dict(self.model.named_parameters())
        return {name: parameters[name].detach().cpu().contiguous() for name in self.names}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.names):
            missing, unexpected = set(self.names) - set(state), set(state) - set(self.names)
            raise ValueError(f"EMA state does not match the model: missing {sorted(missing)[:5]}, unexpected"
                             f" {sorted(unexpected)[:5]}.")  # fmt: skip
        parameters = dict(self.model.named_parameters())
        for name in self.names:
            parameters[name].copy_(state[name])
