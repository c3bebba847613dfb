"""The readable-words figure of text removal and the cv2.inpaint anchors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from conftest import fixed_synthetic_config
from PIL import Image, ImageDraw, ImageFont

from upocr_hf.data import load_task_datasets
from upocr_hf.data.synthetic import generate_folders
from upocr_hf.evaluation import InpaintAnchor, TrivialBaseline, evaluate_model, main
from upocr_hf.metrics.readable_words import ReadableWords, words_of
from upocr_hf.tasks import TEXT_REMOVAL, TEXT_SEGMENTATION, get_task


@pytest.fixture(scope="module")
def removal_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("words-data")
    generate_folders(
        root, 2, size=96, seed=5, split="test", tasks=[TEXT_REMOVAL], config=fixed_synthetic_config()
    )
    folder = root / get_task(TEXT_REMOVAL).dataset
    return folder, load_task_datasets({TEXT_REMOVAL: folder}, {TEXT_REMOVAL: ["test"]})[TEXT_REMOVAL]


def test_words_are_lowercased_alphanumeric_runs_of_two_or_more() -> None:
    assert words_of(["SALE 50% off!", "a Cafe-Bar", "cafe"]) == Counter(
        {"sale": 1, "50": 1, "off": 1, "cafe": 2, "bar": 1}
    )


def _reader_of(table: dict[bytes, list[str]]):
    """A fake OCR engine: the words it reads are looked up by the image's pixels."""
    return lambda image: words_of(table.get(np.asarray(image.convert("RGB")).tobytes(), []))


def test_share_counts_input_words_still_read_as_a_multiset() -> None:
    images = [Image.new("RGB", (4, 4), (v, v, v)) for v in (0, 1, 2, 3)]
    key = [np.asarray(i).tobytes() for i in images]
    reader = _reader_of({
        key[0]: ["open open now"],  # input 1: 3 words
        key[1]: ["open new"],  # its output: one "open" still read; "new" was never in the input
        key[2]: ["x"],  # input 2: no word of two characters: not counted at all
    })  # fmt: skip
    counter = ReadableWords(reader)
    counter.add(images[0], images[1])
    counter.add(images[2], images[3])
    assert counter.compute() == {
        "readable_words": pytest.approx(100 / 3),
        "input_words": 3,
        "words_still_read": 1,
    }
    assert ReadableWords(reader).compute()["readable_words"] is None


def test_evaluation_adds_the_figure_and_the_unchanged_input_keeps_every_word(removal_rows) -> None:
    _, rows = removal_rows
    table = {np.asarray(r["image"].convert("RGB")).tobytes(): ["hello world"] for r in rows}
    figures = evaluate_model(
        TrivialBaseline(), rows, TEXT_REMOVAL, readable_words=ReadableWords(_reader_of(table))
    )
    assert figures["readable_words"] == 100.0 and figures["input_words"] == 2 * len(rows)
    with pytest.raises(ValueError, match="applies to text removal only"):
        evaluate_model(
            TrivialBaseline(), rows, TEXT_SEGMENTATION, readable_words=ReadableWords(lambda i: Counter())
        )


def test_true_mask_anchor_inpaints_inside_the_dilated_mask_only(removal_rows, tmp_path) -> None:
    pytest.importorskip("cv2")
    folder, rows = removal_rows
    sample = rows[0]
    anchor = InpaintAnchor()
    result = anchor([sample["image"]], TEXT_REMOVAL, true_masks=[sample["mask"]])[0]
    source, filled = np.asarray(sample["image"].convert("RGB")), np.asarray(result["image"])
    mask = np.asarray(sample["mask"], dtype=bool)
    assert mask.any() and (result["mask"] >= mask).all()  # the region holds the mask, grown
    assert (filled[~result["mask"]] == source[~result["mask"]]).all()
    assert (filled[mask] != source[mask]).any()
    # and through the command: the record names the anchor, and it beats the unchanged input on PSNR
    out = tmp_path / "anchor.json"
    assert main(["--anchor", "true-mask", "--task", TEXT_REMOVAL, "--data", str(folder), "--output-json", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["anchor"] == "true-mask" and "cv2.inpaint" in record["protocol"]
    baseline = tmp_path / "baseline.json"
    assert main(["--baseline", "--task", TEXT_REMOVAL, "--data", str(folder), "--output-json", str(baseline),
                 "--no-progress"]) == 0  # fmt: skip
    assert record["metrics"]["psnr"] > json.loads(baseline.read_text())["metrics"]["psnr"]


def test_anchor_and_readable_words_are_removal_options(removal_rows) -> None:
    folder, _ = removal_rows
    for extra in (["--anchor", "true-mask"], ["--readable-words"]):
        with pytest.raises(SystemExit):
            main(["--baseline", "--task", TEXT_SEGMENTATION, "--data", str(folder), *extra])
    with pytest.raises(SystemExit):
        main(["--baseline", "--anchor", "own-mask", "--task", TEXT_REMOVAL, "--data", str(folder)])


def test_the_ocr_engine_reads_a_large_clean_word() -> None:
    # PP-OCRv4 on an 80-px DejaVu word (DejaVu is on every machine): the engine, its models inside the wheel, runs
    # offline; a blank image reads nothing
    pytest.importorskip("rapidocr_onnxruntime")
    from upocr_hf.metrics.readable_words import WordReader

    image = Image.new("RGB", (640, 200), "white")
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 80)
    ImageDraw.Draw(image).text((30, 50), "COFFEE", fill="black", font=font)
    reader = WordReader()
    assert reader(image) == Counter({"coffee": 1})
    assert reader(Image.new("RGB", (640, 200), "white")) == Counter()
