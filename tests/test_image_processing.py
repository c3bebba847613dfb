"""UpocrImageProcessor: input modes, save/load, post-processing of hand-made outputs, image loading errors."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from upocr_hf import UpocrConfig
from upocr_hf.image_processing_upocr import (
    ImageLoadError,
    UpocrImageProcessor,
    connected_regions,
    load_image,
)
from upocr_hf.tasks import SEGMENTATION_THRESHOLD, TAMPER_CLASS_RGB


@pytest.fixture
def processor():
    return UpocrImageProcessor(size={"height": 32, "width": 32})


def unresized(processor, image, **kwargs):
    """The processor's `(3, H, W)` tensor for one image, without resizing."""
    return processor(image, do_resize=False, **kwargs)["pixel_values"][0]


def rgb_array(height=6, width=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def chw(array):
    return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------------ save / load


def test_defaults_follow_the_paper():
    processor = UpocrImageProcessor()
    assert (processor.size.height, processor.size.width) == (512, 512)
    assert processor.do_resize and not processor.do_normalize


def test_save_load_round_trip(tmp_path):
    processor = UpocrImageProcessor(size={"height": 64, "width": 96}, max_pixels=1000)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "UpocrImageProcessor"
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_upocr.UpocrImageProcessor"}
    assert (tmp_path / "image_processing_upocr.py").exists()
    loaded = UpocrImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    image = rgb_array(20, 30)
    assert torch.equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])


def test_auto_image_processor_loads_it(tmp_path):
    from transformers import AutoImageProcessor

    UpocrConfig().save_pretrained(tmp_path)
    UpocrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path)
    for backend in (None, "pil", "torchvision"):
        kwargs = {} if backend is None else {"backend": backend}
        loaded = AutoImageProcessor.from_pretrained(tmp_path, **kwargs)
        assert type(loaded) is UpocrImageProcessor
        assert loaded.size.height == 64


def test_converter_default_processor_call_still_works(tmp_path):
    """convert_original_checkpoint._save_default_image_processor's call."""
    UpocrImageProcessor(size={"height": 512, "width": 512}).save_pretrained(tmp_path)
    assert UpocrImageProcessor.from_pretrained(tmp_path).size.height == 512


# ------------------------------------------------------------------------------------------------ input modes


def test_output_shapes_and_original_sizes(processor):
    images = [rgb_array(40, 50), rgb_array(10, 7, seed=1)]
    batch = processor(images)
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["original_sizes"].tolist() == [[40, 50], [10, 7]]
    single = processor(Image.fromarray(images[0]))
    assert single["pixel_values"].shape == (1, 3, 32, 32)
    assert torch.allclose(single["pixel_values"][0], batch["pixel_values"][0])


def test_resize_is_bilinear_without_normalisation(processor):
    constant = np.full((50, 70, 3), 200, dtype=np.uint8)
    values = processor(constant)["pixel_values"]
    assert torch.allclose(values, torch.full_like(values, 200 / 255))
    image = torch.rand(3, 64, 64)
    expected = torch.nn.functional.interpolate(image[None], size=(32, 32), mode="bilinear", antialias=True)
    assert torch.allclose(processor(image)["pixel_values"], expected, atol=1e-5)
    # already at the model size: untouched
    same = torch.rand(3, 32, 32)
    assert torch.equal(processor(same)["pixel_values"][0], same)


def test_uint8_numpy_hwc_chw_and_pil_agree(processor):
    array = rgb_array()
    expected = chw(array) / 255
    assert torch.allclose(unresized(processor, array), expected)
    assert torch.allclose(unresized(processor, np.ascontiguousarray(array.transpose(2, 0, 1))), expected)
    assert torch.allclose(unresized(processor, Image.fromarray(array)), expected)
    assert torch.allclose(unresized(processor, torch.from_numpy(array).permute(2, 0, 1)), expected)


def test_float_inputs_are_taken_as_unit_range(processor):
    image = torch.rand(3, 6, 5)
    assert torch.equal(unresized(processor, image), image)
    assert torch.equal(unresized(processor, image.permute(1, 2, 0).numpy()), image)
    assert torch.equal(unresized(processor, image * 2 - 0.5), (image * 2 - 0.5).clamp(0, 1))


def test_batched_4d_inputs(processor):
    batch = torch.rand(3, 3, 8, 9)
    values = processor(batch, do_resize=False)["pixel_values"]
    assert torch.equal(values, batch)
    array = rgb_array(8, 9)
    values = processor(np.stack([array, array]), do_resize=False)["pixel_values"]
    assert values.shape == (2, 3, 8, 9)


def test_grayscale_modes(processor):
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    expected = torch.from_numpy(gray.astype(np.float32) / 255)[None].expand(3, -1, -1)
    assert torch.allclose(unresized(processor, gray), expected)
    assert torch.allclose(unresized(processor, Image.fromarray(gray, mode="L")), expected)
    assert torch.allclose(unresized(processor, gray[..., None]), expected)
    bilevel = Image.fromarray(gray > 100)
    assert bilevel.mode == "1"
    assert torch.equal(unresized(processor, bilevel)[0], torch.from_numpy(gray > 100).float())


def test_sixteen_bit_images(processor):
    values = np.array([[0, 257, 65535], [32768, 1000, 65280]], dtype=np.uint16)
    expected = torch.from_numpy(values.astype(np.float32) / 65535)[None].expand(3, -1, -1)
    assert torch.allclose(unresized(processor, values), expected)
    pil = Image.fromarray(values)  # mode I;16
    assert pil.mode.startswith("I;16")
    assert torch.allclose(unresized(processor, pil), expected)
    pil_i = pil.convert("I")  # how PIL opens many 16-bit PNGs
    assert torch.allclose(unresized(processor, pil_i), expected)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    assert torch.allclose(unresized(processor, Image.open(io.BytesIO(buffer.getvalue()))), expected)


def test_rgba_and_gray_alpha_are_composited_on_white(processor):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[..., 3] = [[255, 0], [51, 255]]  # opaque, transparent, 20 %, opaque
    expected = torch.tensor(
        [
            [[1.0, 1.0], [1.0, 1.0]],
            [[0.0, 1.0], [0.8, 0.0]],
            [[0.0, 1.0], [0.8, 0.0]],
        ]
    )
    assert torch.allclose(unresized(processor, Image.fromarray(rgba, mode="RGBA")), expected, atol=1e-6)
    assert torch.allclose(unresized(processor, rgba), expected, atol=1e-6)
    gray_alpha = Image.fromarray(np.zeros((2, 2), dtype=np.uint8), mode="L")
    gray_alpha.putalpha(Image.fromarray(np.array([[255, 0], [0, 255]], dtype=np.uint8)))
    assert gray_alpha.mode == "LA"
    assert torch.allclose(unresized(processor, gray_alpha)[0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_palette_images_with_and_without_transparency(processor):
    palette_image = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    palette_image.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    blue, green = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])
    values = unresized(processor, palette_image)
    assert torch.equal(values[:, 0, 0], blue) and torch.equal(values[:, 0, 1], green)
    palette_image.info["transparency"] = 0  # index 0 (blue) is transparent → white
    values = unresized(processor, palette_image)
    assert torch.equal(values[:, 0, 0], torch.ones(3)) and torch.equal(values[:, 0, 1], green)


def test_cmyk_images_are_converted(processor):
    rgb = Image.fromarray(rgb_array())
    cmyk = rgb.convert("CMYK")
    expected = chw(np.asarray(cmyk.convert("RGB"))) / 255
    assert torch.allclose(unresized(processor, cmyk), expected)
    assert torch.allclose(unresized(processor, cmyk), chw(np.asarray(rgb)) / 255, atol=1 / 255 + 1e-6)


def test_exif_orientation_is_applied(processor, tmp_path):
    array = rgb_array(4, 6)  # 4 rows, 6 columns
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=100)
    values = unresized(processor, str(path))
    assert values.shape == (3, 6, 4)
    batch = processor(path)
    assert batch["original_sizes"].tolist() == [[6, 4]]
    png = tmp_path / "rotated.png"
    image.save(png, exif=exif)
    expected = chw(np.rot90(array, k=-1).copy()) / 255
    assert torch.allclose(unresized(processor, str(png)), expected)


def test_bad_array_inputs_name_the_problem(processor):
    with pytest.raises(ImageLoadError, match="channel dimension"):
        processor(np.zeros((5, 6, 7), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match="outside 0..255"):
        processor(np.full((4, 4), 300, dtype=np.int32))
    with pytest.raises(ImageLoadError, match="unsupported image type"):
        processor.convert_image(12)


def test_pixel_limit_guard(processor):
    small = UpocrImageProcessor(size={"height": 32, "width": 32}, max_pixels=100)
    with pytest.raises(ImageLoadError, match="too large"):
        small(np.zeros((11, 10, 3), dtype=np.uint8))
    small(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match="too large"):
        processor(np.zeros((11, 10, 3), dtype=np.uint8), max_pixels=100)


# ------------------------------------------------------------------------------------------------ load_image


def test_load_image_errors_name_the_file_and_reason(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(rgb_array(40, 40)).save(good)
    assert load_image(good).size == (40, 40)

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    cases = {
        empty: "empty",
        text: "not an image",
        truncated: "truncated",
        tmp_path / "missing.png": "no such file",
        tmp_path: "directory",
        tmp_path / "loop.png": "symbolic link that leads nowhere",
    }
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    for path, reason in cases.items():
        with pytest.raises(ImageLoadError, match=reason) as error:
            load_image(path)
        assert str(path) in str(error.value)
        assert isinstance(error.value, ValueError)
    with pytest.raises(ImageLoadError, match="too large") as error:
        load_image(good, max_pixels=1599)
    assert "good.png" in str(error.value)
    with pytest.raises(ImageLoadError, match="URL"):
        load_image("https://example.com/a.png")


def test_the_pixel_limit_is_ours_even_above_pils_own(tmp_path):
    """PIL refuses images above 178,956,970 pixels by itself; a caller's larger limit must take effect."""
    from upocr_hf.image_io import ImageTooLargeError

    path = tmp_path / "huge.png"
    Image.new("1", (15000, 15000)).save(path)  # 225 million pixels, a few hundred kB on disk
    with pytest.raises(
        ImageTooLargeError, match="15000×15000 = 225,000,000 pixels, the limit is 200,000,000"
    ) as error:
        load_image(path, max_pixels=200_000_000)
    assert (error.value.pixels, error.value.limit) == (225_000_000, 200_000_000)
    assert load_image(path, max_pixels=300_000_000).size == (15000, 15000)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's own guard is back in place for everyone else


def test_an_animated_image_says_only_its_first_frame_is_used(tmp_path, caplog):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "blue", "green")]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with caplog.at_level("WARNING", logger="upocr_hf.image_io"):
        load_image(path)
    assert "anim.gif: an animated image of 3 frames; only the first frame is used" in caplog.text


def test_truncated_jpeg_is_refused(tmp_path):
    good = tmp_path / "photo.jpg"
    Image.fromarray(rgb_array(64, 64)).save(good, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg: truncated"):
        load_image(cut)


# ------------------------------------------------------------------------------------------------ post-processing


def solid(colors, repeat=1):
    """A `(1, 3, h, w)` prediction from an `(h, w)` grid of RGB triples in [0, 1], each cell repeated."""
    grid = torch.tensor(colors, dtype=torch.float32).permute(2, 0, 1)
    return grid.repeat_interleave(repeat, dim=1).repeat_interleave(repeat, dim=2)[None]


def test_text_removal_rounds_and_clamps_to_original_size(processor):
    prediction = torch.tensor([[-0.2, 0.3 / 255, 0.7 / 255], [100.6 / 255, 1.2, 254.4 / 255]]).reshape(
        1, 1, 2, 3
    )
    prediction = prediction.expand(1, 3, 2, 3)
    image = processor.post_process_text_removal(prediction)[0]
    assert image.mode == "RGB" and image.size == (3, 2)
    assert np.asarray(image)[..., 0].tolist() == [[0, 0, 1], [101, 255, 254]]  # rounded, not truncated
    constant = torch.full((2, 3, 8, 8), 0.6)
    images = processor.post_process_text_removal(constant, target_sizes=[(20, 30), (5, 7)])
    assert [im.size for im in images] == [(30, 20), (7, 5)]
    assert (np.asarray(images[0]) == 153).all()


def test_text_segmentation_threshold_is_strict(processor):
    # channel means 0.25 and 0.5 exactly (representable), compared to thresholds at and around them
    prediction = solid([[[0.25, 0.25, 0.25], [0.5, 0.5, 0.5]], [[0.75, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    result = processor.post_process_text_segmentation(prediction, threshold=0.5)[0]
    assert result["mask"].dtype == torch.bool
    assert result["mask"].tolist() == [[False, False], [False, True]]
    assert result["scores"].tolist() == [[0.25, 0.5], [0.25, 1.0]]
    assert processor.post_process_text_segmentation(prediction, threshold=0.25)[0]["mask"].tolist() == [
        [False, True],
        [False, True],
    ]
    assert processor.post_process_text_segmentation(prediction, threshold=0.2499)[0]["mask"].all()


def test_text_segmentation_default_threshold_and_clamping(processor):
    assert SEGMENTATION_THRESHOLD == 0.4
    # per-channel clamping happens before the mean: (1.0 + 0.1 + 0.1) / 3 = 0.4 (not > 0.4), (2.0 + ...) too
    prediction = solid([[[0.39, 0.39, 0.39], [0.41, 0.41, 0.41], [3.0, 0.1, 0.1], [-1.0, 0.7, 0.7]]])
    result = processor.post_process_text_segmentation(prediction)[0]
    assert result["mask"].tolist() == [[False, True, False, True]]
    assert torch.allclose(result["scores"], torch.tensor([[0.39, 0.41, 0.4, 1.4 / 3]]))


def test_text_segmentation_is_resized_bilinearly_to_the_original_size(processor):
    # 4×4 map, left half white (text), right half black; at 8×8 the boundary columns are 0.75/0.25 mixtures
    prediction = solid([[[1, 1, 1], [0, 0, 0]]], repeat=1).repeat_interleave(2, dim=3)
    prediction = prediction.expand(1, 3, 4, 4)
    result = processor.post_process_text_segmentation(prediction, target_sizes=torch.tensor([[8, 8]]))[0]
    assert result["mask"].shape == (8, 8)
    expected_row = [True] * 4 + [False] * 4
    assert result["mask"].tolist() == [expected_row] * 8
    assert result["scores"][0].tolist() == [1, 1, 1, 0.75, 0.25, 0, 0, 0]
    # 0.75 column with threshold 0.75 is not text (strict), with 0.7499 it is
    edge = processor.post_process_text_segmentation(prediction, [(8, 8)], threshold=0.75)[0]["mask"]
    assert edge[0].tolist() == [True] * 3 + [False] * 5


def test_tampered_text_known_colours_give_known_classes(processor):
    red, green, blue = ([c / 255 for c in rgb] for rgb in TAMPER_CLASS_RGB)
    prediction = solid([[red, green, blue], [blue, red, [0.5, 0.5, 0.5]]])
    result = processor.post_process_tampered_text_detection(prediction)[0]
    assert result["class_map"].tolist() == [[0, 1, 2], [2, 0, 0]]  # ties → lowest class
    scores = result["scores"]
    assert scores.shape == (3, 2, 3)
    assert torch.allclose(scores.sum(0), torch.ones(2, 3))
    assert torch.equal(scores[:, 0, 1], torch.tensor([0.0, 1.0, 0.0]))
    # all-zero (or negative) pixels: uniform scores, background class
    zero = processor.post_process_tampered_text_detection(torch.full((1, 3, 1, 1), -1.0))[0]
    assert zero["class_map"].item() == 0 and torch.allclose(zero["scores"].flatten(), torch.full((3,), 1 / 3))


def test_tampered_text_resizing_and_regions(processor):
    red, blue, green = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]
    # 4×4 map: left two columns red, right two blue → at 8×8 the left 4 columns background, right 4 tampered
    prediction = solid([[red, red, blue, blue]] * 4)
    result = processor.post_process_tampered_text_detection(prediction, target_sizes=[(8, 8)])[0]
    assert result["class_map"].shape == (8, 8)
    assert result["class_map"].tolist() == [[0] * 4 + [2] * 4] * 8
    # score: mean tampered score; the boundary column holds 0.75 → (8 · 0.75 + 24) / 32
    assert result["regions"] == [{"box": [4, 0, 8, 8], "area": 32, "score": pytest.approx(0.9375)}]

    grid = [[red] * 10 for _ in range(6)]
    for y, x in [(1, 1), (1, 2), (2, 2)]:  # a 3-pixel region
        grid[y][x] = blue
    grid[4][7] = blue  # a 1-pixel region
    grid[5][8] = [0.0, 0.0, 0.5]  # diagonal neighbour: same region (8-connectivity), lower score
    grid[0][9] = green
    result = processor.post_process_tampered_text_detection(solid(grid))[0]
    assert result["regions"] == [
        {"box": [1, 1, 3, 3], "area": 3, "score": pytest.approx(1.0)},
        {"box": [7, 4, 9, 6], "area": 2, "score": pytest.approx(1.0)},
    ]
    assert result["class_map"][0, 9] == 1
    big_only = processor.post_process_tampered_text_detection(solid(grid), min_region_area=3)[0]["regions"]
    assert [region["area"] for region in big_only] == [3]

    # the rule removes the small region from the map too: the map and the regions always agree
    ruled = processor.post_process_tampered_text_detection(solid(grid), min_region_area=3)[0]
    assert int((ruled["class_map"] == 2).sum()) == sum(region["area"] for region in ruled["regions"]) == 3
    assert ruled["class_map"][4, 7] == 0 and ruled["class_map"][5, 8] == 0  # the runner-up there: background


def test_unconfident_tampered_regions_take_the_runner_up_class(processor):
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    grid = [[red] * 8 for _ in range(4)]
    for x in range(4):
        grid[1][x] = [0.0, 0.9, 1.0]  # tampered by a hair over real text: mean tampered score 1/1.9
        grid[2][x] = [0.0, 0.9, 1.0]
    for x in range(5, 8):
        grid[1][x] = [0.0, 0.0, 1.0]  # a confident region, score 1
    grid[3][0] = green
    result = processor.post_process_tampered_text_detection(solid(grid), min_region_score=0.6)[0]
    assert result["regions"] == [{"box": [5, 1, 8, 2], "area": 3, "score": pytest.approx(1.0)}]
    class_map = result["class_map"]
    assert class_map[1:3, :4].eq(1).all()  # real text: the more likely of the other two classes
    assert class_map[1, 5:].eq(2).all() and class_map[3, 0] == 1 and class_map[0].eq(0).all()
    unruled = processor.post_process_tampered_text_detection(solid(grid))[0]
    assert [region["area"] for region in unruled["regions"]] == [8, 3]
    assert unruled["class_map"][1:3, :4].eq(2).all()


def test_post_processing_accepts_model_outputs(processor, tiny_model):
    pixel_values = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        outputs = tiny_model(pixel_values, task="text-segmentation")
    results = processor.post_process_text_segmentation(outputs, target_sizes=[(50, 40), (64, 64)])
    assert [r["mask"].shape for r in results] == [(50, 40), (64, 64)]
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_text_segmentation(outputs, target_sizes=[(50, 40)])


def test_no_tampered_pixels_no_regions():
    assert connected_regions(np.zeros((3, 3), dtype=bool)) == []
