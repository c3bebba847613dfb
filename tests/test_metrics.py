"""Tests of the paper's metrics (spec §6): hand-computed cases, an independent MSSIM, evaluate loading."""

from __future__ import annotations

import math

import evaluate
import numpy as np
import pytest
from PIL import Image
from scipy import linalg, ndimage, signal
from skimage.metrics import structural_similarity

from upocr_hf.metrics import (
    TamperedTextDetectionMetric,
    TextRemovalMetric,
    TextSegmentationMetric,
    load_metric,
    metric_path,
)
from upocr_hf.metrics import functional as F
from upocr_hf.metrics.fid import find_fid_extractor
from upocr_hf.metrics.paper_results import PAPER_RESULTS, format_results_table, table_columns
from upocr_hf.tasks import (
    IGNORE_VALUE_UINT8,
    TAMPER_CLASS_RGB,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    TEXT_SEGMENTATION,
)

AREA = 512 * 512


def _gray(value: int, size: int = 512) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# text removal: hand-computed per-image figures
# ----------------------------------------------------------------------------------------------
def test_identical_images_psnr_infinite_and_skipped_by_protocol():
    stats = F.text_removal_image_stats(_gray(77), _gray(77))
    assert stats["mse"] == 0.0 and math.isinf(stats["psnr"])
    assert stats["mssim"] == pytest.approx(1.0) and stats["age"] == 0.0 and stats["peps"] == 0.0

    metric = TextRemovalMetric(keep_in_memory=True)
    metric.add(prediction=_gray(77), reference=_gray(77))
    metric.add(prediction=_gray(110), reference=_gray(100))
    protocol = metric.compute()
    # The script skips identical pairs entirely: every average is over the 1 non-identical pair.
    assert protocol["num_images"] == 2 and protocol["num_identical"] == 1 and protocol["num_evaluated"] == 1
    assert protocol["psnr"] == pytest.approx(20 * math.log10(25.5))
    assert protocol["mse"] == pytest.approx((10 / 255) ** 2)
    assert protocol["age"] == 10.0

    metric.add_batch(predictions=[_gray(77), _gray(110)], references=[_gray(77), _gray(100)])
    kept = metric.compute(skip_identical=False)
    # Option: identical pairs enter every average except PSNR's (which stays finite).
    assert kept["num_evaluated"] == 2
    assert kept["psnr"] == pytest.approx(20 * math.log10(25.5))
    assert kept["mse"] == pytest.approx((10 / 255) ** 2 / 2)
    assert kept["age"] == 5.0 and kept["mssim"] < 1.0


def test_all_identical_set_gives_none_not_nan():
    result = TextRemovalMetric(keep_in_memory=True).compute(predictions=[_gray(5)], references=[_gray(5)])
    assert result["psnr"] is None and result["mse"] is None and result["num_identical"] == 1
    empty = TextRemovalMetric(keep_in_memory=True).compute()
    assert empty["num_images"] == 0 and empty["psnr"] is None


@pytest.mark.parametrize(
    ("offset", "eps_fraction", "ceps_fraction"), [(10, 0.0, 0.0), (30, 1.0, 510 * 510 / AREA)]
)
def test_constant_offset(offset, eps_fraction, ceps_fraction):
    stats = F.text_removal_image_stats(_gray(100 + offset), _gray(100))
    assert stats["mse"] == pytest.approx((offset / 255) ** 2, rel=1e-6)  # float32 uint8/255, as ToTensor
    assert stats["psnr"] == pytest.approx(20 * math.log10(255 / offset), rel=1e-6)
    assert stats["age"] == offset  # ΔY = offset·(.299+.587+.114), rounded per pixel
    assert stats["peps"] == eps_fraction
    # Erosion with the 3×3 cross treats outside pixels as background: the 1-pixel frame goes.
    assert stats["pceps"] == pytest.approx(ceps_fraction)


def test_single_pixel_and_blob_errors():
    gt = _gray(0)
    single = gt.copy()
    single[100, 200] = 255
    stats = F.text_removal_image_stats(single, gt)
    assert stats["mse"] == pytest.approx(1 / AREA)
    assert stats["age"] == pytest.approx(255 / AREA)
    assert stats["eps"] == 1 and stats["peps"] == 1 / AREA
    assert stats["ceps"] == 0 and stats["pceps"] == 0.0  # a lone error pixel is eroded away

    blob = gt.copy()
    blob[10:13, 20:23] = 255
    stats = F.text_removal_image_stats(blob, gt)
    assert stats["eps"] == 9 and stats["peps"] == 9 / AREA
    assert stats["ceps"] == 1 and stats["pceps"] == 1 / AREA  # only the blob's centre survives

    below = gt.copy()
    below[:5, :5] = 20  # |ΔY| = 20 is not an error (> 20 is)
    assert F.text_removal_image_stats(below, gt)["eps"] == 0


def test_age_rounds_the_float32_luminance_difference():
    gt = _gray(0, 8)
    pred = gt.copy()
    pred[..., 0] = 3  # ΔY = .299·3 = 0.897 → rounds to 1 per pixel
    stats = F.text_removal_image_stats(pred, gt, size=None)
    assert stats["age"] == 1.0
    pred[..., 0] = 1  # 0.299 → 0
    assert F.text_removal_image_stats(pred, gt, size=None)["age"] == 0.0


def test_protocol_loading_resizes_shorter_side_to_512():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 384, 3), dtype=np.uint8)
    loaded = F.load_removal_image(image)
    assert loaded.shape == (512, 768, 3) and loaded.dtype == np.float32
    expected = np.asarray(Image.fromarray(image).resize((768, 512), Image.Resampling.BICUBIC)) / np.float32(
        255
    )
    np.testing.assert_array_equal(loaded, expected.astype(np.float32))
    square = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        F.load_removal_image(Image.fromarray(square)), square.astype(np.float32) / 255
    )
    # float [0, 1] inputs and CHW layout give the same figures as the 8-bit image
    stats_uint8 = F.text_removal_image_stats(square, _gray(128))
    stats_float = F.text_removal_image_stats(np.moveaxis(square / 255.0, -1, 0), _gray(128))
    for key in ("mse", "mssim", "age", "peps", "pceps"):
        assert stats_float[key] == pytest.approx(stats_uint8[key], rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# MSSIM against independent implementations
# ----------------------------------------------------------------------------------------------
def _fspecial_gauss(size: int, sigma: float) -> np.ndarray:
    x, y = np.mgrid[-size // 2 + 1 : size // 2 + 1, -size // 2 + 1 : size // 2 + 1]
    g = np.exp(-((x**2 + y**2) / (2.0 * sigma**2)))
    return g / g.sum()


def _reference_ssim(img1: np.ndarray, img2: np.ndarray) -> tuple[float, float]:
    """Direct transcription of the published script's ssim(): 2-D FFT 'valid' convolution."""
    window = _fspecial_gauss(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1 = signal.fftconvolve(img1, window, mode="valid")
    mu2 = signal.fftconvolve(img2, window, mode="valid")
    s1 = signal.fftconvolve(img1 * img1, window, mode="valid") - mu1 * mu1
    s2 = signal.fftconvolve(img2 * img2, window, mode="valid") - mu2 * mu2
    s12 = signal.fftconvolve(img1 * img2, window, mode="valid") - mu1 * mu2
    cs = (2 * s12 + c2) / (s1 + s2 + c2)
    return float(((2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs).mean()), float(cs.mean())


def _reference_msssim(img1: np.ndarray, img2: np.ndarray, multiscale: bool) -> float:
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    mssim, mcs = [], []
    im1, im2 = img1, img2
    for _ in range(5):
        ssim_value, cs_value = _reference_ssim(im1, im2) if multiscale else _reference_ssim(img1, img2)
        mssim.append(ssim_value)
        mcs.append(cs_value)
        im1 = ndimage.convolve(im1, np.ones((2, 2)) / 4.0, mode="reflect")[::2, ::2]
        im2 = ndimage.convolve(im2, np.ones((2, 2)) / 4.0, mode="reflect")[::2, ::2]
    mcs_arr = np.array(mcs[:4])
    return float(
        np.prod(np.sign(mcs_arr) * np.abs(mcs_arr) ** weights[:4])
        * np.sign(mssim[4])
        * abs(mssim[4]) ** weights[4]
    )


@pytest.fixture(scope="module")
def luminance_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    # 192x224: the coarsest true multi-scale level (12x14) still fits the 11x11 window
    gt = ndimage.gaussian_filter(rng.uniform(0, 255, (192, 224)), 2.0)
    pred = np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255)
    return gt, pred


def test_ssim_map_matches_skimage_on_valid_region(luminance_pair):
    gt, pred = luminance_pair
    _, full = structural_similarity(
        gt, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, full=True
    )
    ssim_map, cs_map = F.ssim_maps(gt, pred)
    assert ssim_map.shape == (182, 214) and cs_map.shape == (182, 214)
    np.testing.assert_allclose(ssim_map, full[5:-5, 5:-5], rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["protocol", "multiscale"])
def test_mssim_matches_transcription(luminance_pair, mode):
    gt, pred = luminance_pair
    expected = _reference_msssim(gt, pred, multiscale=mode == "multiscale")
    assert F.mssim(gt, pred, mode=mode) == pytest.approx(expected, rel=1e-10)
    assert F.mssim(gt, gt, mode=mode) == pytest.approx(1.0)


def test_protocol_mssim_is_cs_and_ssim_power_product(luminance_pair):
    gt, pred = luminance_pair
    ssim_map, cs_map = F.ssim_maps(gt, pred)
    expected = cs_map.mean() ** sum(F.MSSIM_WEIGHTS[:4]) * ssim_map.mean() ** F.MSSIM_WEIGHTS[4]
    assert F.mssim(gt, pred) == pytest.approx(expected, rel=1e-12)
    assert F.mssim(gt, pred, mode="multiscale") != pytest.approx(expected, rel=1e-6)


def test_removal_metric_mssim_mode_option():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    y_gt, y_pred = (F.luminance(F.load_removal_image(x, None)) for x in (gt, pred))
    for mode in ("protocol", "multiscale"):
        metric = TextRemovalMetric(mssim_mode=mode, resize_shorter_side=None, keep_in_memory=True)
        assert metric.compute(predictions=[pred], references=[gt])["mssim"] == pytest.approx(
            F.mssim(y_gt, y_pred, mode=mode)
        )
    with pytest.raises(ValueError):
        TextRemovalMetric(mssim_mode="nope")


# ----------------------------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------------------------
def test_fid_unavailable_path_is_reported(monkeypatch, tmp_path):
    import upocr_hf.metrics.fid as fid_module

    monkeypatch.setattr(fid_module, "_torch_hub_checkpoints", lambda: str(tmp_path))
    extractor, reason = find_fid_extractor()
    assert extractor is None and isinstance(reason, str) and reason
    metric = TextRemovalMetric(fid="auto", keep_in_memory=True)
    result = metric.compute(predictions=[_gray(10), _gray(30)], references=[_gray(20), _gray(40)])
    assert result["fid"] is None and result["fid_unavailable_reason"] == reason
    disabled = TextRemovalMetric(fid=False, keep_in_memory=True).compute(
        predictions=[_gray(1)], references=[_gray(2)]
    )
    assert disabled["fid"] is None and "disabled" in disabled["fid_unavailable_reason"]


def test_fid_with_a_custom_extractor_matches_direct_frechet():
    def extractor(images: np.ndarray) -> np.ndarray:  # toy features: per-channel mean and std
        images = images.astype(np.float64)
        return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)

    rng = np.random.default_rng(3)
    gts = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(8)]
    preds = [(g // (i + 2)).astype(np.uint8) for i, g in enumerate(gts)]
    metric = TextRemovalMetric(fid=extractor, resize_shorter_side=None, keep_in_memory=True)
    metric.add_batch(predictions=preds[:5], references=gts[:5])
    result = metric.compute(predictions=preds[5:], references=gts[5:])
    fp = np.stack([extractor(F.load_removal_image(p, None)[None])[0] for p in preds])
    fr = np.stack([extractor(F.load_removal_image(g, None)[None])[0] for g in gts])
    s1, s2 = np.cov(fp, rowvar=False), np.cov(fr, rowvar=False)
    expected = (
        ((fp.mean(0) - fr.mean(0)) ** 2).sum()
        + np.trace(s1 + s2)
        - 2 * np.trace(np.real(linalg.sqrtm(s1 @ s2)))
    )
    assert result["fid_unavailable_reason"] is None
    assert result["fid"] > 0.1 and result["fid"] == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# text segmentation
# ----------------------------------------------------------------------------------------------
def test_segmentation_hand_computed_confusion():
    reference = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 255]], dtype=np.uint8)
    prediction = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
    # valid: 11 pixels (the 255 one is ignored). tp=3, fn=1, fp=1, tn=6.
    metric = TextSegmentationMetric(keep_in_memory=True)
    result = metric.compute(predictions=[prediction], references=[reference])
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (3, 1, 1, 6)
    assert result["fg_iou"] == pytest.approx(3 / 5)
    assert result["precision"] == pytest.approx(3 / 4) and result["recall"] == pytest.approx(3 / 4)
    assert result["f_score"] == pytest.approx(3 / 4)


def test_segmentation_one_matrix_over_the_set_and_streaming():
    ref_a = np.array([[1, 0]], dtype=np.uint8)
    ref_b = np.array([[1, 1, 1, 0]], dtype=np.uint8)
    pred_a = np.array([[False, False]])  # fn=1, tn=1
    pred_b = np.array([[True, True, True, True]])  # tp=3, fp=1
    metric = TextSegmentationMetric(keep_in_memory=True)
    metric.add(prediction=pred_a, reference=ref_a)
    metric.add_batch(predictions=[pred_b], references=[ref_b])
    result = metric.compute(return_per_image=True)
    # pooled: tp=3 fp=1 fn=1 → IoU 3/5 (the mean of per-image IoUs would be (0 + 3/4)/2).
    assert result["fg_iou"] == pytest.approx(3 / 5) and result["num_images"] == 2
    assert result["per_image"]["tp"] == [0, 3]


def test_segmentation_soft_rgb_maps_ignore_masks_and_resize():
    reference = np.zeros((4, 4, 3), dtype=np.uint8)
    reference[:2, :2] = 255  # white text
    reference[3, 3] = IGNORE_VALUE_UINT8  # gray ignored
    soft = np.zeros((4, 4, 3), dtype=np.float32)
    soft[:2, :2] = [0.5, 0.5, 0.3]  # mean 0.433 > 0.4 → text
    soft[3, 3] = 1.0  # ignored pixel: does not count as fp
    soft[0, 3] = [0.4, 0.4, 0.4]  # mean 0.4 is not > 0.4
    ignore = np.zeros((4, 4), dtype=bool)
    ignore[2, 0] = True
    metric = TextSegmentationMetric(keep_in_memory=True)
    result = metric.compute(predictions=[soft], references=[reference], ignore_masks=[ignore])
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (4, 0, 0, 10)
    # a half-size soft prediction is resized (bilinear) to the reference size before thresholding
    small = np.zeros((2, 2), dtype=np.float32)
    small[0, 0] = 1.0
    mask = F.segmentation_prediction_to_mask(small, size=(4, 4))
    np.testing.assert_array_equal(mask[:2, :2], True)
    assert mask.sum() == 4
    # a higher threshold turns the 0.433 pixels into background
    strict = TextSegmentationMetric(threshold=0.5, keep_in_memory=True).compute(
        predictions=[soft], references=[reference]
    )
    assert strict["tp"] == 0 and strict["fn"] == 4


def test_segmentation_no_text_anywhere_gives_zeros_not_nan():
    result = TextSegmentationMetric(keep_in_memory=True).compute(
        predictions=[np.zeros((3, 3), dtype=bool)], references=[np.zeros((3, 3), dtype=np.uint8)]
    )
    assert result["tn"] == 9
    for key in ("fg_iou", "precision", "recall", "f_score"):
        assert result[key] == 0.0
    assert F.segmentation_scores(0, 0, 0) == {"fg_iou": 0.0, "precision": 0.0, "recall": 0.0, "f_score": 0.0}
    only_fp = F.segmentation_scores(tp=0, fp=4, fn=0)
    assert only_fp["precision"] == 0.0 and only_fp["recall"] == 0.0 and only_fp["f_score"] == 0.0


# ----------------------------------------------------------------------------------------------
# tampered text detection
# ----------------------------------------------------------------------------------------------
def test_tamper_hand_computed_confusion():
    reference = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [255, 2, 0, 0]])
    prediction = np.array([[0, 1, 1, 1], [0, 2, 1, 1], [2, 2, 0, 2]])
    metric = TamperedTextDetectionMetric(keep_in_memory=True)
    result = metric.compute(predictions=[prediction], references=[reference])
    # rows = reference, columns = prediction; the ignored pixel (255) is left out
    assert result["confusion_matrix"] == [[3, 1, 1], [0, 3, 0], [0, 1, 2]]
    # real: tp=3 fp=2 fn=0; tampered: tp=2 fp=1 fn=1
    assert result["real_iou"] == pytest.approx(3 / 5)
    assert result["real_precision"] == pytest.approx(3 / 5) and result["real_recall"] == 1.0
    assert result["real_f_score"] == pytest.approx(2 * 0.6 / 1.6)
    assert result["tampered_iou"] == pytest.approx(2 / 4)
    assert result["tampered_precision"] == pytest.approx(2 / 3) and result[
        "tampered_recall"
    ] == pytest.approx(2 / 3)
    assert result["miou"] == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert result["mf"] == pytest.approx((0.75 + 2 / 3) / 2)


def test_tamper_rgb_targets_and_soft_predictions():
    classes = np.array([[0, 1], [2, 0]])
    target = np.array([[TAMPER_CLASS_RGB[c] for c in row] for row in classes], dtype=np.uint8)
    target[1, 1] = IGNORE_VALUE_UINT8
    decoded, valid = F.tamper_reference_to_classes(target)
    np.testing.assert_array_equal(decoded[valid], [0, 1, 2])
    assert not valid[1, 1]
    # off-palette colours (e.g. compression noise) and [0, 1] float targets decode to the nearest colour
    noisy = target.copy()
    noisy[0, 0], noisy[0, 1], noisy[1, 1] = (240, 20, 5), (10, 200, 60), (120, 131, 125)
    for variant in (noisy, noisy / 255.0):
        decoded_noisy, valid_noisy = F.tamper_reference_to_classes(variant)
        np.testing.assert_array_equal(decoded_noisy, decoded)
        np.testing.assert_array_equal(valid_noisy, valid)
    soft = np.zeros((2, 2, 3), dtype=np.float32)
    soft[0, 0] = [0.9, 0.1, 0.0]
    soft[0, 1] = [0.2, 0.7, 0.3]
    soft[1, 0] = [0.1, 0.2, 1.4]  # clipped, still argmax 2
    soft[1, 1] = [0.0, 0.0, 1.0]  # ignored
    result = TamperedTextDetectionMetric(keep_in_memory=True).compute(predictions=[soft], references=[target])
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert result["miou"] == 1.0 and result["mf"] == 1.0
    upsampled = F.tamper_prediction_to_classes(soft, size=(4, 4))
    assert upsampled.shape == (4, 4) and upsampled[0, 0] == 0 and upsampled[3, 0] == 2


def test_tamper_absent_classes_give_zeros_not_nan():
    reference = np.zeros((3, 3), dtype=np.int64)
    reference[0, 0] = 1
    prediction = np.zeros((3, 3), dtype=np.int64)
    prediction[0, 0] = 1
    result = TamperedTextDetectionMetric(keep_in_memory=True).compute(
        predictions=[prediction], references=[reference]
    )
    assert result["real_iou"] == 1.0 and result["real_f_score"] == 1.0
    # no tampered text in references or predictions: defined as 0.0, and it still counts in the means
    for key in ("tampered_iou", "tampered_precision", "tampered_recall", "tampered_f_score"):
        assert result[key] == 0.0
    assert result["miou"] == 0.5 and result["mf"] == 0.5
    assert not any(isinstance(v, float) and math.isnan(v) for v in result.values())
    with pytest.raises(ValueError):
        F.tamper_reference_to_classes(np.array([[0, 7]]))


# ----------------------------------------------------------------------------------------------
# evaluate loading, helpers and paper table
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "cls"),
    [
        (TEXT_REMOVAL, TextRemovalMetric),
        (TEXT_SEGMENTATION, TextSegmentationMetric),
        (TAMPERED_TEXT_DETECTION, TamperedTextDetectionMetric),
    ],
)
def test_evaluate_load_local_folder(task, cls, tmp_path):
    path = metric_path(task)
    assert metric_path(path.rsplit("/", 1)[-1]) == path
    metric = evaluate.load(path, cache_dir=str(tmp_path))
    assert isinstance(metric, cls) and isinstance(load_metric(task), cls)
    if task == TEXT_REMOVAL:
        predictions, references = [_gray(110, 32)], [_gray(100, 32)]
        metric = evaluate.load(
            path, cache_dir=str(tmp_path), resize_shorter_side=None, mssim_mode="multiscale"
        )
        assert metric.mssim_mode == "multiscale"
        key, expected = "age", 10.0
    elif task == TEXT_SEGMENTATION:
        predictions, references = [np.eye(4, dtype=bool)], [np.eye(4, dtype=np.uint8)]
        key, expected = "fg_iou", 1.0
    else:
        predictions, references = [np.eye(4, dtype=np.int64) * 2], [np.eye(4, dtype=np.int64) * 2]
        key, expected = "tampered_iou", 1.0
    metric.add_batch(predictions=predictions, references=references)
    assert metric.compute()[key] == expected  # stored on disk (Arrow), aggregated on compute


def test_unknown_inputs_and_tasks_are_rejected():
    with pytest.raises(ValueError):
        metric_path("ocr")
    with pytest.raises(ValueError):
        TextSegmentationMetric(keep_in_memory=True).add_batch(
            predictions=[np.zeros((2, 2), bool)], references=[np.zeros((2, 2), np.uint8)], weights=[1]
        )
    with pytest.raises(ValueError):
        TextRemovalMetric(keep_in_memory=True).add_batch(predictions=[_gray(1, 8)], references=[])


def test_paper_table_data_and_formatting():
    upocr_removal = next(row for row in PAPER_RESULTS if row.task == TEXT_REMOVAL)
    assert upocr_removal.values == {"psnr": 37.14, "mssim": 97.62, "mse": 0.04, "fid": 10.47}
    for row in PAPER_RESULTS:
        assert set(row.values) <= {column.key for column in table_columns(row.task)}
    table = format_results_table(TEXT_REMOVAL, {"psnr": 30.0, "mssim": 0.95, "mse": 0.001, "fid": None})
    assert "| ours | 30.00 | 95.00 | 0.10 |" in table and "37.14" in table
