"""`pixelgen distill`: few-step students of tiny teachers (real classes, a few distillation steps)."""

import json

import pytest
import torch
from components import LAYOUT_TOLERANCE, tiny_c2i_pipeline, tiny_t2i_pipeline, tiny_transformer
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler
from pixelgen_diffusers.cli import main
from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline
from pixelgen_diffusers.training.distill import DistillationConfig, distill


def _teacher(tmp_path, **pipeline_config):
    folder = tmp_path / "teacher"
    if not folder.exists():
        pipeline_config = {
            "sampling_method": "heun",
            "guidance_scale": 2.0,
            "num_inference_steps": 3,
        } | pipeline_config
        tiny_c2i_pipeline(**pipeline_config).save_pretrained(folder)
    return folder


def _config(tmp_path, name="run", **overrides):
    values = dict(
        teacher=str(_teacher(tmp_path)), output_dir=str(tmp_path / name), num_inference_steps=2, num_trajectories=8,
        teacher_batch_size=8, max_steps=3, batch_size=4, checkpoint_every=2, log_every=1,
    )  # fmt: skip
    return DistillationConfig(**(values | overrides))


def _count_calls(pipeline):
    """Rows and condition values of every transformer call (a forward hook)."""
    calls = []
    handle = pipeline.transformer.register_forward_hook(lambda module, args, output: calls.append(args))
    return calls, handle


def test_student_folder_holds_its_recipe_and_samples_one_unguided_call_per_step(tmp_path):
    student_dir = distill(_config(tmp_path), progress=False)
    student = PixelGenC2IPipeline.from_pretrained(student_dir)
    student.set_progress_bar_config(disable=True)
    assert student.config.num_inference_steps == 2 and student.config.guidance_scale == 1.0
    assert student.scheduler.config.sampling_method == "euler"
    assert student.config.distillation["num_inference_steps"] == [2]
    assert student.config.distillation["guidance_scale"] == 2.0
    # The teacher's recipe for the trajectories: Heun, its 3 steps rounded up to a multiple of 2.
    assert student.config.distillation["teacher_recipe"]["num_inference_steps"] == 4
    calls, handle = _count_calls(student)
    images = student([1, 2, 3], output_type="latent").images
    handle.remove()
    assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()
    assert len(calls) == 2  # one transformer call per step
    null_class = student.transformer.null_class_id
    assert all(len(args[0]) == 3 and not (args[2] == null_class).any() for args in calls)  # no null-condition rows


def test_student_loads_in_plain_diffusers_with_its_own_code(tmp_path):
    student_dir = distill(_config(tmp_path), progress=False)
    assert (student_dir / "pipeline.py").is_file()
    remote = DiffusionPipeline.from_pretrained(
        student_dir, custom_pipeline=str(student_dir / "pipeline.py"), trust_remote_code=True
    )
    package = PixelGenC2IPipeline.from_pretrained(student_dir)
    assert type(remote).__module__ != type(package).__module__  # the folder's copy of the code ran
    for pipeline in (remote, package):
        pipeline.set_progress_bar_config(disable=True)
    generated = [
        pipeline([4, 5], generator=torch.Generator().manual_seed(0), output_type="latent").images
        for pipeline in (remote, package)
    ]
    torch.testing.assert_close(generated[0], generated[1], **LAYOUT_TOLERANCE)
    with pytest.raises(ValueError, match="accepted: 2"):
        remote([4], num_inference_steps=4)


def test_the_student_learns_the_teachers_landing_points(tmp_path):
    """A few steps lower the distillation loss from the teacher's starting point (the student starts as the
    teacher, which does not land on its own 2-step trajectory)."""
    distill(_config(tmp_path, max_steps=12, batch_size=8, learning_rate=3e-3, ema_decay=0.0), progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "distill_log.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) < sum(losses[:3])


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    straight = distill(_config(tmp_path, "straight", max_steps=4), export=False, progress=False)
    distill(_config(tmp_path, "halves", max_steps=2), export=False, progress=False)
    resumed = distill(_config(tmp_path, "halves", max_steps=4, resume="latest"), export=False, progress=False)
    assert resumed.name == straight.name == "checkpoint-4"
    for name in ("training_state/model.safetensors", "training_state/ema.safetensors"):
        expected, actual = load_file(straight / name), load_file(resumed / name)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name
    with pytest.raises(ValueError, match="a resume keeps it"):
        distill(_config(tmp_path, "halves", max_steps=6, num_trajectories=16, resume="latest"), progress=False)


def test_text_to_image_student_samples_without_the_negative_prompt(tmp_path):
    teacher = tiny_t2i_pipeline(sampling_method="euler", guidance_scale=3.0, num_inference_steps=2)
    teacher.save_pretrained(tmp_path / "t2i")
    config = _config(tmp_path, teacher=str(tmp_path / "t2i"), num_inference_steps=1, prompts=["a star", "a ring"])
    student = PixelGenT2IPipeline.from_pretrained(distill(config, progress=False))
    student.set_progress_bar_config(disable=True)
    assert student.config.num_inference_steps == 1 and student.config.distillation["guidance_scale"] == 3.0
    calls, handle = _count_calls(student)
    images = student(["a star", "a circle"], output_type="latent").images
    handle.remove()
    assert images.shape == (2, 3, 32, 32) and len(calls) == 1 and len(calls[0][0]) == 2


def test_lora_student_is_its_adapter_fused_into_the_teacher(tmp_path):
    student_dir = distill(_config(tmp_path, lora_rank=2, learning_rate=1e-2), progress=False)
    student = PixelGenC2IPipeline.from_pretrained(student_dir)
    assert (student_dir / "pytorch_lora_weights.safetensors").is_file()
    teacher = PixelGenC2IPipeline.from_pretrained(tmp_path / "teacher")
    teacher_output = teacher.transformer(torch.zeros(1, 3, 32, 32), torch.tensor([0.5]), torch.tensor([1])).sample
    teacher.load_lora_weights(student_dir)
    x, t, label = torch.randn(2, 3, 32, 32), torch.tensor([0.0, 0.5]), torch.tensor([1, 2])
    adapted = teacher.transformer(x, t, label).sample
    torch.testing.assert_close(student.transformer(x, t, label).sample, adapted, **LAYOUT_TOLERANCE)
    assert not torch.allclose(teacher_output, adapted[:1], atol=1e-3)  # the adapter did train


def test_bad_inputs_are_one_error_naming_what_is_accepted(tmp_path, capsys):
    student = PixelGenC2IPipeline.from_pretrained(distill(_config(tmp_path), progress=False))
    with pytest.raises(ValueError, match=r"guidance_scale is 3.0, .*distilled in.*accepted: 1.0"):
        student([1], guidance_scale=3.0)
    with pytest.raises(ValueError, match=r"distilled for 2 steps; accepted: 2\."):
        student([1], num_inference_steps=4)
    with pytest.raises(ValueError, match="accepted: 'euler'"):
        student([1], sampling_method="heun")
    with pytest.raises(
        ValueError, match=r"num_inference_steps \(--num-inference-steps\) must be an integer in \[1, 8\], got 16"
    ):
        _config(tmp_path, num_inference_steps=16)
    with pytest.raises(ValueError, match=r"accepted: multiples of 4 \(4, 8, 12, ...\)"):
        _config(tmp_path, num_inference_steps=4, teacher_steps=10)
    unconditional = tmp_path / "unconditional"
    PixelGenC2IPipeline(tiny_transformer(num_classes=0), PixelGenScheduler(), {}, guidance_scale=2.0).save_pretrained(
        unconditional
    )
    with pytest.raises(ValueError, match="no conditional branch to guide; accepted: guidance_scale 1.0"):
        distill(_config(tmp_path, teacher=str(unconditional)), progress=False)
    text_only = tmp_path / "t2i-without-encoder"
    tiny_t2i_pipeline(with_text_encoder=False, text_encoder_id=None).save_pretrained(text_only)
    with pytest.raises(ValueError, match="no text encoder.*unconditional"):
        distill(_config(tmp_path, teacher=str(text_only), prompts=["a star"]), progress=False)
    with pytest.raises(ValueError, match="prompts .* is required"):
        distill(_config(tmp_path, teacher=str(text_only)), progress=False)

    capsys.readouterr()
    assert main(["distill", str(_teacher(tmp_path)), str(tmp_path / "cli"), "--steps", "9"]) == 2
    assert main(["distill", str(tmp_path / "run" / "student"), str(tmp_path / "cli")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "--steps" in errors[0] and "accepted: a PixelGen teacher" in errors[1]


def test_unconditional_teacher_distils_at_guidance_one(tmp_path):
    teacher = PixelGenC2IPipeline(tiny_transformer(num_classes=0), PixelGenScheduler(sampling_method="euler"), {})
    teacher.save_pretrained(tmp_path / "unconditional")
    config = _config(tmp_path, teacher=str(tmp_path / "unconditional"), num_inference_steps=1)
    student = PixelGenC2IPipeline.from_pretrained(distill(config, progress=False))
    student.set_progress_bar_config(disable=True)
    assert student.config.distillation["guidance_scale"] == 1.0
    assert student(num_images_per_prompt=3, output_type="latent").images.shape == (3, 3, 32, 32)
