"""UpocrPipeline end to end on a tiny random model, and the high-resolution tiling."""

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FLOAT64_ATOL, randomised_tiny_model
from PIL import Image
from transformers import pipeline

from upocr_hf import UpocrPipeline, load_upocr_pipeline
from upocr_hf.image_processing_upocr import ImageLoadError, UpocrImageProcessor
from upocr_hf.keep_background import compose_keep_background, dilate_mask
from upocr_hf.tasks import resolve_task
from upocr_hf.tiling import tile_starts, tiled_predict, tiled_predict_tasks


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-upocr")
    randomised_tiny_model().save_pretrained(folder)
    UpocrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(model_dir):
    return pipeline("upocr", model=str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def pipe64(model_dir):
    """The same model in float64, for tests that compare two runs that may round differently (other batch sizes,
    another process): in float32 those differ by up to 1e-3 depending on the CPU's kernels."""
    return pipeline("upocr", model=str(model_dir), device="cpu", dtype=torch.float64)


def photo(height=50, width=90, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ tiling


@pytest.mark.parametrize(
    "length, tile, overlap", [(10, 64, 16), (64, 64, 16), (65, 64, 16), (300, 64, 16), (513, 512, 128)]
)
def test_tile_starts_cover_the_axis_with_enough_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + min(tile, length) == length
    for previous, current in zip(starts, starts[1:]):
        assert previous < current and previous + tile - current >= overlap


class ConstantModel:
    def __init__(self, value):
        self.value = value
        self.calls = []

    def __call__(self, pixel_values, task):
        self.calls.append(tuple(pixel_values.shape))
        return SimpleNamespace(prediction=torch.full_like(pixel_values, self.value))


class IdentityModel:
    def __call__(self, pixel_values, task):
        return SimpleNamespace(prediction=pixel_values * 1.0)


def test_constant_model_gives_a_constant_result_without_seams():
    model = ConstantModel(0.6)
    image = torch.rand(1, 3, 300, 457)
    blended = tiled_predict(model, image, "text-removal", tile_size=64, overlap=16, batch_size=5)
    assert blended.shape == image.shape
    # Σ w·0.6 / Σ w over at most 4 windows in float32: a few roundings of 6e-8 each
    assert torch.allclose(blended, torch.full_like(blended, 0.6), atol=1e-6, rtol=0)
    assert all(shape[2:] == (64, 64) for shape in model.calls) and max(s[0] for s in model.calls) == 5
    # after post-processing the answer is exactly constant
    pixels = np.asarray(UpocrImageProcessor().post_process_text_removal(blended)[0])
    assert (pixels == 153).all()


def test_identity_model_reconstructs_the_image():
    """Every tile lands where it came from (positions and weights are right)."""
    image = torch.rand(2, 3, 130, 97)
    blended = tiled_predict(IdentityModel(), image, 0, tile_size=32, overlap=8, batch_size=3)
    assert torch.allclose(blended, image, atol=1e-6)  # the same float32 rounding bound as above


def test_one_tile_equals_the_untiled_result():
    model = randomised_tiny_model()
    for shape in [(64, 64), (50, 40), (64, 33)]:
        image = torch.rand(1, 3, *shape)
        with torch.no_grad():
            untiled = model(image, task="text-segmentation").prediction
            tiled = tiled_predict(model, image, "text-segmentation", tile_size=64)
        assert torch.equal(tiled, untiled)  # one tile is the very same model call: identical bits


class RecordingModel:
    """A real model that records the tasks of every call."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, pixel_values, task):
        self.calls.append(list(task) if isinstance(task, list) else [task] * len(pixel_values))
        return self.model(pixel_values, task=task)


@pytest.mark.numerics
def test_several_tasks_share_each_tile_call_and_equal_separate_passes():
    model = RecordingModel(randomised_tiny_model(dtype=torch.float64))
    image = torch.rand(1, 3, 100, 150, dtype=torch.float64)
    tasks = ["text-removal", "text-segmentation"]
    options = dict(tile_size=64, overlap=16, batch_size=4)  # 2×3 windows, 2 per call: 4 images per call
    with torch.no_grad():
        together = tiled_predict_tasks(model, image, tasks, **options)
        assert model.calls == [[tasks[0]] * 2 + [tasks[1]] * 2] * 3
        apart = [tiled_predict(model, image, task, **options) for task in tasks]
    for one, other in zip(together, apart):
        torch.testing.assert_close(one, other, rtol=0, atol=FLOAT64_ATOL)  # a batch's samples are independent
    assert not torch.allclose(together[0], together[1])  # the prompts really differ


@pytest.mark.numerics
def test_only_the_windows_that_hold_needed_pixels_are_run():
    model = RecordingModel(randomised_tiny_model(dtype=torch.float64))
    image = torch.rand(2, 3, 100, 150, dtype=torch.float64)
    # 2×3 windows, starting at rows 0, 36 and columns 0, 48, 86
    options = dict(tile_size=64, overlap=16, batch_size=1)
    needed = torch.zeros(2, 100, 150, dtype=torch.bool)
    needed[0, 10:20, 50:60] = True  # held by the windows at columns 0 and 48 of the first row
    with torch.no_grad():
        full = tiled_predict(model, image, "text-removal", **options)
        model.calls.clear()
        partial = tiled_predict(model, image, "text-removal", needed=needed, **options)
    assert len(model.calls) == 2  # the second image needs nothing: no call for it
    # where only those two windows reach (rows < 36, columns < 86, the needed pixels among them): the same calls
    # as the full run, identical bits; where neither reaches, the input
    assert torch.equal(partial[0, :, :36, :86], full[0, :, :36, :86])
    covered = torch.zeros(2, 100, 150, dtype=torch.bool)
    covered[0, :64, :112] = True
    assert torch.equal(partial.permute(1, 0, 2, 3)[:, ~covered], image.permute(1, 0, 2, 3)[:, ~covered])
    with pytest.raises(ValueError, match=r"needed must be \(batch, height, width\)"):
        tiled_predict(model, image, "text-removal", needed=needed[0], **options)
    with torch.no_grad():  # several tiles per call: other batches, the same function
        batched = tiled_predict(model, image, "text-removal", needed=needed, **{**options, "batch_size": 4})
    torch.testing.assert_close(batched, partial, rtol=0, atol=FLOAT64_ATOL)


def test_needed_pixels_of_an_image_under_the_model_minimum():
    model = RecordingModel(randomised_tiny_model())
    image = torch.rand(2, 3, 10, 20)  # edge-padded to 32 for the model: one window each
    needed = torch.zeros(2, 10, 20, dtype=torch.bool)
    needed[1, 5, 5] = True
    with torch.no_grad():
        alone = tiled_predict(model, image[1:], "text-removal", tile_size=64)
        model.calls.clear()
        result = tiled_predict(model, image, "text-removal", tile_size=64, needed=needed)
    assert len(model.calls) == 1 and result.shape == image.shape
    assert torch.equal(result[0], image[0])  # nothing needed: the input, no model call
    torch.testing.assert_close(result[1], alone[0])  # its own call, the same image


def test_a_task_given_as_a_list_still_tiles():
    model = RecordingModel(randomised_tiny_model())
    image = torch.rand(2, 3, 40, 50)  # one window per image: the per-image tasks go to the model as given
    with torch.no_grad():
        mixed = tiled_predict(model, image, ["text-removal", "text-segmentation"], tile_size=64)
        one = tiled_predict(model, image[:1], ["text-removal"], tile_size=64)
    assert model.calls[0] == ["text-removal", "text-segmentation"] and mixed.shape == image.shape
    assert one.shape == (1, 3, 40, 50)


@pytest.mark.numerics
def test_tiled_real_model_batch_size_does_not_matter():
    model = randomised_tiny_model(dtype=torch.float64)
    image = torch.rand(1, 3, 100, 150, dtype=torch.float64)
    with torch.no_grad():
        one = tiled_predict(model, image, "text-removal", tile_size=64, overlap=16, batch_size=1)
        many = tiled_predict(model, image, "text-removal", tile_size=64, overlap=16, batch_size=8)
    assert one.shape == image.shape and one.dtype == torch.float64
    torch.testing.assert_close(one, many, rtol=0, atol=FLOAT64_ATOL)


# ------------------------------------------------------------------------------------------------ pipeline


def test_all_three_tasks_end_to_end(pipe, tmp_path):
    assert isinstance(pipe, UpocrPipeline)
    image = photo()
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)

    removal = pipe(str(path), task="text-removal")
    assert removal["task"] == "text-removal" and removal["text_mask"] is None
    assert removal["image"].mode == "RGB" and removal["image"].size == (90, 50)

    segmentation = pipe(Image.fromarray(image), task="text-segmentation")
    assert segmentation["mask"].shape == (50, 90) and segmentation["mask"].dtype == bool
    assert segmentation["scores"].shape == (50, 90)
    assert np.array_equal(segmentation["mask"], segmentation["scores"] > 0.4)
    assert np.array_equal(np.asarray(segmentation["image"]) == 255, segmentation["mask"])

    tamper = pipe(image, task="tampered-text-detection")
    assert tamper["class_map"].shape == (50, 90) and set(np.unique(tamper["class_map"])) <= {0, 1, 2}
    assert tamper["scores"].shape == (3, 50, 90)
    assert tamper["image"].size == (90, 50)
    colours = np.asarray(tamper["image"])
    assert np.array_equal(
        colours[tamper["class_map"] == 2], np.tile([0, 0, 255], ((tamper["class_map"] == 2).sum(), 1))
    )
    json.dumps(tamper["regions"])  # serialisable

    # the pipeline is the processor + model + post-processing
    processor = pipe.image_processor
    inputs = processor(image)
    with torch.no_grad():
        outputs = pipe.model(**inputs, task="text-segmentation")  # the processor's output as it is
    expected = processor.post_process_text_segmentation(outputs, inputs["original_sizes"])[0]
    direct = pipe(image, task="text-segmentation")
    assert np.array_equal(direct["mask"], expected["mask"].numpy())


def test_aliases_threshold_and_unknown_task(pipe):
    image = photo()
    assert pipe(image, task="segment")["task"] == "text-segmentation"
    assert pipe(image, task="detect-tampering")["task"] == "tampered-text-detection"
    loose = pipe(image, task="segment", threshold=0.0)
    assert loose["mask"].sum() == (loose["scores"] > 0).sum()
    with pytest.raises(ValueError, match="Unknown task 'ocr'.*text-removal.*tampered-text-detection"):
        pipe(image, task="ocr")
    with pytest.raises(ValueError, match="Pass task="):
        pipe(image)
    with pytest.raises(ValueError, match="this model knows \\['text-removal'\\]"):
        resolve_task("segment", ["text-removal"])


def test_a_default_task_at_construction_is_resolved_once_per_call(model_dir, monkeypatch):
    """`upocr_task` gives the task at construction (`task` is pipeline()'s own argument); a call resolves its task
    name once, however many images it runs, and a call's `task` overrides the default."""
    from upocr_hf import pipeline_upocr

    pipe = pipeline("upocr", model=str(model_dir), device="cpu", upocr_task="segment")
    resolved = []
    resolve = pipeline_upocr.resolve_task
    monkeypatch.setattr(pipeline_upocr, "resolve_task", lambda *a: resolved.append(a[0]) or resolve(*a))
    results = pipe([photo(seed=1), photo(seed=2), photo(seed=3)])
    assert [r["task"] for r in results] == ["text-segmentation"] * 3 and "mask" in results[0]
    assert pipe(photo(), task="remove")["task"] == "text-removal"
    assert resolved == ["remove"]  # the default was resolved at construction, "remove" once for its call


@pytest.mark.numerics
def test_batches_match_single_images(pipe, pipe64):
    images = [photo(50, 90, seed=1), photo(64, 64, seed=2), photo(33, 70, seed=3)]
    batched = pipe64(images, task="text-segmentation", batch_size=2)
    assert isinstance(batched, list) and len(batched) == 3
    for image, result in zip(images, batched):
        single = pipe64(image, task="text-segmentation")
        assert result["scores"].shape == image.shape[:2]
        # float64 runs ~1e-14 apart, handed back as float32 scores in [0, 1]: at most a few float32 roundings
        np.testing.assert_allclose(result["scores"], single["scores"], rtol=0, atol=1e-6)
    tiled = pipe(images, task="tampered-text-detection", tile=True, batch_size=4)
    assert [r["class_map"].shape for r in tiled] == [image.shape[:2] for image in images]


def test_batching_is_transformers_own_and_keeps_no_call_state(pipe):
    """`batch_size` images per model call in resize mode, tiles per call in tile mode; tuples and datasets work."""
    from datasets import Dataset
    from transformers.pipelines.pt_utils import KeyDataset

    calls = []
    hook = pipe.model.register_forward_hook(lambda module, args, kwargs, output: calls.append(len(output.prediction)),
                                            with_kwargs=True)  # fmt: skip
    try:
        images = (photo(50, 90, seed=1), photo(64, 64, seed=2), photo(33, 70, seed=3))
        assert len(pipe(images, task="segment", batch_size=2)) == 3
        assert calls == [2, 1]
        calls.clear()
        pipe(
            photo(150, 200, seed=5), task="segment", tile=True, batch_size=4
        )  # 4×3 tiles of 64 with overlap 16
        assert calls == [4, 4, 4]
        calls.clear()
        dataset = Dataset.from_dict(
            {"image": [photo(40, 40, seed=i).tolist() for i in range(3)]}
        ).with_format("numpy")
        streamed = list(pipe(KeyDataset(dataset, "image"), task="segment", batch_size=3))
        assert len(streamed) == 3 and calls == [3] and streamed[0]["mask"].shape == (40, 40)
        direct = list(
            pipe(dataset, task="segment", batch_size=3)
        )  # its `image` column, as upocr_hf.data names it
        assert [r["mask"].tolist() for r in direct] == [r["mask"].tolist() for r in streamed]
    finally:
        hook.remove()
    assert not any(name.startswith("_call") for name in vars(pipe))


def test_tile_mode_at_the_model_size_equals_resize_mode(pipe):
    image = photo(64, 64, seed=4)
    for task in ("text-removal", "text-segmentation", "tampered-text-detection"):
        resized = pipe(image, task=task)
        tiled = pipe(image, task=task, tile=True)
        assert np.array_equal(np.asarray(resized["image"]), np.asarray(tiled["image"]))


def test_tile_mode_keeps_native_resolution(pipe):
    image = photo(150, 200, seed=5)
    result = pipe(image, task="text-removal", tile=True, tile_overlap=16, batch_size=8)
    assert result["image"].size == (200, 150)
    # sides below the model's 32-pixel minimum are edge-padded for the model and cropped back
    tiny = pipe(photo(10, 20, seed=6), task="text-segmentation", tile=True)
    assert tiny["mask"].shape == (10, 20)
    small = pipe(photo(10, 20, seed=6), task="text-segmentation")  # resize mode: resized to 64×64 and back
    assert small["mask"].shape == (10, 20)


def test_tile_progress_counts_every_model_call(pipe):
    reports = []
    image = photo(150, 200, seed=5)  # 3×4 tiles of 64 with overlap 16
    pipe(
        image,
        task="text-segmentation",
        tile=True,
        tile_overlap=16,
        batch_size=5,
        progress_callback=lambda *r: reports.append(r),
    )
    assert reports == [(5, 12), (10, 12), (12, 12)]
    # keep-background: the segmentation pass counts against twice its tiles, then the removal's tiles are known
    keep = dict(task="text-removal", tile=True, tile_overlap=16, batch_size=5, keep_background=True)
    reports.clear()  # text (score > 0.4) on most of the image: every window is removed in
    pipe(image, **keep, progress_callback=lambda *r: reports.append(r))
    assert reports == [(5, 24), (10, 24), (12, 24), (17, 24), (22, 24), (24, 24)]
    reports.clear()  # no text (no score reaches 1): no window is removed in, and the end is still reported
    pipe(image, **keep, threshold=1.0, progress_callback=lambda *r: reports.append(r))
    assert reports == [(5, 24), (10, 24), (12, 24), (12, 12)]
    reports.clear()
    pipe(photo(40, 40), task="text-segmentation", tile=True, progress_callback=lambda *r: reports.append(r))
    assert reports == [(1, 1)]  # one window: one call
    with pytest.raises(ValueError, match="progress_callback must be callable"):
        pipe(image, task="segment", tile=True, progress_callback="yes")


@pytest.mark.numerics
@pytest.mark.parametrize("tile", [False, True])
def test_keep_background_leaves_non_text_pixels_byte_identical(pipe64, tile):
    pipe = pipe64  # the region comes from a run batched with the removal, compared below with one alone
    image = photo(80, 100, seed=6)
    result = pipe(image, task="text-removal", keep_background=True, tile=tile, threshold=0.45, dilation=1)
    mask = result["text_mask"]
    output = np.asarray(result["image"])
    assert mask.shape == (80, 100) and mask.dtype == bool
    assert 0 < mask.sum() < mask.size  # the random model marks some pixels as text, not all
    assert np.array_equal(output[~mask], image[~mask])
    plain = np.asarray(pipe(image, task="text-removal", tile=tile)["image"])
    # inside the region: the plain prediction (run in a batch with the segmentation: values ~1e-14 apart may round
    # to neighbouring 8-bit levels)
    assert np.abs(output[mask].astype(int) - plain[mask].astype(int)).max() <= 1
    # the region is the (dilated) segmentation mask of the same image
    segmentation = pipe(image, task="text-segmentation", tile=tile, threshold=0.45)["mask"]
    assert (mask >= segmentation).all()


@pytest.mark.numerics
def test_tiled_keep_background_removes_only_in_the_windows_that_hold_text(pipe64):
    image = photo(150, 200, seed=5)  # 3×4 windows of 64 with overlap 16
    calls = []
    hook = pipe64.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["task"]), with_kwargs=True
    )
    try:  # text (score > 0.9) in a few small spots
        result = pipe64(
            image, task="text-removal", tile=True, keep_background=True, threshold=0.9, dilation=1
        )
    finally:
        hook.remove()
    assert calls[:12] == ["text-segmentation"] * 12
    assert 0 < len(calls[12:]) < 12 and set(calls[12:]) == {"text-removal"}
    mask, output = result["text_mask"], np.asarray(result["image"])
    assert 0 < mask.sum() and np.array_equal(output[~mask], image[~mask])
    plain = np.asarray(pipe64(image, task="text-removal", tile=True)["image"])
    assert np.array_equal(output[mask], plain[mask])  # the same tile calls as a full removal, one tile each


def test_keep_background_without_a_segmentation_task_uses_the_difference(tmp_path):
    folder = tmp_path / "removal-only"
    randomised_tiny_model(tasks=["text-removal"]).save_pretrained(folder)
    pipe = pipeline(
        "upocr", model=str(folder), device="cpu"
    )  # no preprocessor_config.json: default processor
    assert pipe.image_processor.size.height == 512  # the paper's
    image = photo(40, 60, seed=7)
    plain = np.asarray(pipe(image, task="text-removal")["image"])
    result = pipe(image, task="text-removal", keep_background=True, dilation=0, difference_threshold=0.3)
    changed = np.abs(plain.astype(int) - image.astype(int)).max(-1) > 0.3 * 255
    assert np.array_equal(result["text_mask"], changed)
    output = np.asarray(result["image"])
    assert np.array_equal(output[~changed], image[~changed])
    assert np.array_equal(output[changed], plain[changed])


def test_bad_files_raise_errors_naming_them(pipe, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        pipe(str(broken), task="text-removal")
    with pytest.raises(ImageLoadError, match="too large"):
        pipe(photo(), task="text-removal", max_pixels=100)


def test_bfloat16(model_dir):
    pipe = pipeline("upocr", model=str(model_dir), device="cpu", dtype=torch.bfloat16)
    assert pipe.model.dtype == torch.bfloat16
    result = pipe(photo(), task="text-segmentation")
    assert result["mask"].shape == (50, 90) and result["scores"].dtype == np.float32


@pytest.mark.slow
@pytest.mark.numerics
def test_saved_pipeline_runs_without_the_package(pipe, pipe64, tmp_path):
    folder = tmp_path / "saved"
    pipe.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"]["upocr"]["impl"] == "pipeline_upocr.UpocrPipeline"
    files = {p.name for p in folder.iterdir()}
    assert {
        "pipeline_upocr.py",
        "image_processing_upocr.py",
        "tiling.py",
        "tasks.py",
        "modeling_upocr.py",
    } <= files
    image = photo(45, 70, seed=8)
    np.save(tmp_path / "image.npy", image)
    # in float64, so that the class map cannot depend on how the other process rounds
    expected = pipe64(image, task="tampered-text-detection")

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["upocr_hf"] = None  # any import of the package now fails
        import numpy as np
        import torch
        from transformers import pipeline
        pipe = pipeline("upocr", model={str(folder)!r}, trust_remote_code=True, device="cpu", dtype=torch.float64)
        assert type(pipeline(model={str(folder)!r}, trust_remote_code=True)).__name__ == "UpocrPipeline"
        assert not type(pipe).__module__.startswith("upocr_hf"), type(pipe).__module__
        assert type(pipe.image_processor).__name__ == "UpocrImageProcessor"
        image = np.load({str(tmp_path / "image.npy")!r})
        result = pipe(image, task="detect-tampering")
        np.save({str(tmp_path / "class_map.npy")!r}, result["class_map"])
        tiled = pipe(image, task="text-removal", tile=True, keep_background=True)
        assert tiled["image"].size == (70, 45)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.array_equal(np.load(tmp_path / "class_map.npy"), expected["class_map"])
    # in-process too, the folder's task name runs its own code once trusted (the package's own is not used)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("upocr", model=str(folder), device="cpu")
    local = pipeline("upocr", model=str(folder), device="cpu", dtype=torch.float64, trust_remote_code=True)
    assert type(local).__name__ == "UpocrPipeline" and type(local) is not type(pipe)
    assert np.array_equal(local(image, task="tampered-text-detection")["class_map"], expected["class_map"])
    # the installed package's code runs the same folder without trusting its copy
    installed = load_upocr_pipeline(folder, device="cpu", dtype=torch.float64)
    assert type(installed) is UpocrPipeline
    assert np.array_equal(
        installed(image, task="tampered-text-detection")["class_map"], expected["class_map"]
    )


@pytest.mark.parametrize("keep_background", [False, True])
def test_a_grayscale_input_gets_a_grayscale_removal(pipe, keep_background):
    colour = photo(48, 64, seed=8)
    gray = np.repeat(np.asarray(Image.fromarray(colour).convert("L"))[..., None], 3, axis=-1)
    for image in (gray, Image.fromarray(gray[..., 0], mode="L")):
        output = np.asarray(pipe(image, task="text-removal", keep_background=keep_background)["image"])
        assert output.shape == (48, 64, 3)
        assert (output[..., 0] == output[..., 1]).all() and (output[..., 1] == output[..., 2]).all()
    # a colour photo keeps its colours (the random model's output is not gray)
    output = np.asarray(pipe(colour, task="text-removal")["image"])
    assert not (output[..., 0] == output[..., 1]).all()


@pytest.mark.parametrize(
    "option, message",
    [
        ({"threshold": 5}, r"threshold must be a number between 0.0 and 1.0, got 5"),
        ({"threshold": -0.1}, "threshold must be a number between"),
        ({"threshold": float("nan")}, "threshold must be a number between"),
        ({"threshold": "high"}, "threshold must be a number, got 'high'"),
        ({"min_region_area": 0}, "min_region_area must be an integer at least 1, got 0"),
        ({"min_region_score": 1.5}, "min_region_score must be a number between 0.0 and 1.0, got 1.5"),
        ({"dilation": 2.5}, "dilation must be an integer at least 0, got 2.5"),
        ({"tile": True, "tile_size": 10}, "tile_size must be an integer at least 32, got 10"),
        ({"tile": True, "batch_size": 0}, None),  # 0 means the default, as in transformers
    ],
)
def test_options_out_of_range_are_refused_by_name(pipe, option, message):
    if message is None:
        assert pipe(photo(40, 40), task="segment", **option)["mask"].shape == (40, 40)
        return
    with pytest.raises(ValueError, match=message):
        pipe(photo(40, 40), task="segment", **option)


def test_keep_background_helpers():
    original = np.random.default_rng(4).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    prediction = np.random.default_rng(5).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    mask = np.zeros((6, 7), dtype=bool)
    mask[2, 3] = True
    composed = compose_keep_background(original, prediction, mask)
    assert np.array_equal(composed[~mask], original[~mask])
    assert np.array_equal(composed[mask], prediction[mask])
    dilated = dilate_mask(mask, 1)
    assert dilated.sum() == 9 and dilated[1:4, 2:5].all()


def test_the_model_folder_sets_the_default_mode_and_threshold(model_dir, pipe64, tmp_path):
    """A folder whose preprocessor_config.json says do_tile and segmentation_threshold gets them when a call does
    not say; a call that does say wins; post_process uses the threshold too."""
    folder = tmp_path / "tiles-by-default"
    for name in ("config.json", "model.safetensors"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes((model_dir / name).read_bytes())
    processor = UpocrImageProcessor(
        size={"height": 64, "width": 64}, do_tile=True, segmentation_threshold=0.7
    )
    processor.save_pretrained(folder)
    assert json.loads((folder / "preprocessor_config.json").read_text())["do_tile"] is True
    tiles = pipeline("upocr", model=str(folder), device="cpu", dtype=torch.float64)
    assert tiles.image_processor.do_tile and tiles.image_processor.segmentation_threshold == 0.7

    image = photo(150, 200, seed=11)  # 3×4 tiles of 64: tiles and one resize differ
    for task, key in (("text-removal", "image"), ("tampered-text-detection", "class_map")):
        by_default = np.asarray(tiles(image, task=task)[key])
        assert np.array_equal(by_default, np.asarray(pipe64(image, task=task, tile=True)[key]))
        assert not np.array_equal(by_default, np.asarray(pipe64(image, task=task)[key]))
        assert np.array_equal(np.asarray(tiles(image, task=task, tile=False)[key]), np.asarray(pipe64(image, task=task)[key]))  # fmt: skip

    default = tiles(image, task="text-segmentation")
    assert np.array_equal(default["mask"], default["scores"] > 0.7)
    assert np.array_equal(
        tiles(image, task="text-segmentation", threshold=0.2)["mask"], default["scores"] > 0.2
    )
    outputs = tiles.model(torch.rand(1, 3, 64, 64, dtype=torch.float64), task="text-segmentation")
    reading = tiles.image_processor.post_process_text_segmentation(outputs)[0]
    assert torch.equal(reading["mask"], reading["scores"] > 0.7)
    # a folder that does not say keeps the paper's protocol: one resize, threshold 0.4
    assert not pipe64.image_processor.do_tile and pipe64.image_processor.segmentation_threshold == 0.4
