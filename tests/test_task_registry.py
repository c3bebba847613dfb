"""The task registry: every part reads a task's facts from its entry, so a new pixel task registered in one place
trains, validates, evaluates, and answers through the pipeline and the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upocr_hf import UpocrModel, UpocrPipeline
from upocr_hf.cli import main as cli_main
from upocr_hf.data import UpocrAugment, load_task_datasets
from upocr_hf.evaluation import evaluate_model
from upocr_hf.losses import UpocrLoss
from upocr_hf.tasks import (
    DEFAULT_TASKS,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    Task,
    get_task,
    register_task,
    registered_tasks,
    resolve_task,
    unregister_task,
)

REPO = Path(__file__).resolve().parents[1]

#: Text binarization as a user would add it: its target is white text on black (like segmentation), read as a mask
#: and scored with the segmentation metric; its data are plain image/target pairs.
BINARIZATION = Task(
    id="text-binarization",
    title="Text binarization",
    description="turn a page into black text on white",
    readout="mask",
    aliases=("binarize",),
    command="binarize",
    dataset="image-pairs",
    metric="text_segmentation",
    selection_metric="fg_iou",
    baseline_margin=("fg_iou", 0.1),
)


@pytest.fixture
def binarization():
    register_task(BINARIZATION)
    yield BINARIZATION
    unregister_task(BINARIZATION.id)


def write_pages(root: Path, count: int = 4) -> Path:
    """`root/{train,test}/{image,target}/NAME.png`: gray pages with dark bars of "text", and their masks."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i in range(count):
            text = np.zeros((48, 64), dtype=bool)
            for _ in range(3):
                y, x = int(rng.integers(4, 40)), int(rng.integers(4, 40))
                text[y : y + 3, x : x + 20] = True
            page = np.where(text, 30, 200 + rng.integers(0, 40, text.shape)).astype(np.uint8)
            for sub, pixels in (("image", np.stack([page] * 3, -1)), ("target", np.where(text, 255, 0))):
                folder = root / split / sub
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB").save(folder / f"p{i}.png")
    return root


def train_in_process(argv: list[str]) -> Path:
    """train.py's `train()` in this process, where the test's registration lives."""
    from accelerate.state import AcceleratorState, PartialState

    sys.path.insert(0, str(REPO))
    import train as train_script

    try:
        return train_script.train(train_script.parse_args(argv))
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()


def test_the_paper_tasks_come_first_in_prompt_row_order():
    assert tuple(task.id for task in registered_tasks()[:3]) == DEFAULT_TASKS
    assert resolve_task("detect-tampering", DEFAULT_TASKS) == TAMPERED_TEXT_DETECTION
    assert resolve_task("tampered", DEFAULT_TASKS) == TAMPERED_TEXT_DETECTION  # the generator's old alias
    with pytest.raises(ValueError, match=r"Unknown task 'remove'; this model knows \['text-segmentation'\]"):
        resolve_task("remove", ["text-segmentation"])
    # a name nobody registered is a new pixel task with the generic facts
    assert (get_task("deblur").readout, get_task("deblur").loss, get_task("deblur").metric) == (
        "image",
        "smooth-l1",
        None,
    )


def test_registration_refuses_clashing_names_and_bad_facts(binarization):
    with pytest.raises(ValueError, match="already registered"):
        register_task(binarization)
    with pytest.raises(ValueError, match=r"name\(s\) \['remove'\] already mean task 'text-removal'"):
        register_task(Task(id="erase", title="Erase", aliases=("remove",)))
    with pytest.raises(ValueError, match="readout must be one of"):
        Task(id="x", title="X", readout="polygons")
    with pytest.raises(ValueError, match="loss must be one of"):
        Task(id="x", title="X", loss="focal")


def test_a_registered_toy_task_runs_end_to_end(binarization, tmp_path, capsys):
    data = write_pages(tmp_path / "pages")
    run = tmp_path / "run"
    final = train_in_process([
        "--data", f"text-binarization={data}", "--validation_data", f"text-binarization={data}",
        "--config", "tiny", "--image_size", "64", "--max_steps", "2", "--batch_size_per_task", "2",
        "--perceptual_loss", "off", "--num_workers", "0", "--eval_steps", "2", "--warmup_steps", "1",
        "--lr_block", "1", "--output_dir", str(run),
    ])  # fmt: skip
    # trained with its augmentation and loss, validated by its selection metric (a best model was kept)
    assert UpocrModel.from_pretrained(final).config.tasks == [binarization.id]
    assert (run / "best" / "config.json").is_file()

    model = UpocrModel.from_pretrained(final).eval()
    pipe = UpocrPipeline(model=model, device="cpu")
    dataset = load_task_datasets({binarization.id: data}, {binarization.id: ["test"]})[binarization.id]
    figures = evaluate_model(pipe, dataset, binarization.id, progress=False)
    assert figures["num_samples"] == 4 and 0.0 <= figures["fg_iou"] <= 1.0

    page = data / "test" / "image" / "p0.png"
    result = pipe(str(page), task="binarize")  # an alias from the registry entry
    assert (
        result["task"] == binarization.id
        and result["mask"].shape == (48, 64)
        and result["mask"].dtype == bool
    )

    assert cli_main(["binarize", str(page), "-o", str(tmp_path / "out"), "--model", str(final), "-q"]) == 0
    written = Image.open(tmp_path / "out" / "p0.png")
    assert (written.mode, written.size) == ("L", (64, 48))


def test_each_part_reads_the_entry(binarization):
    # augmentation: the entry's recipe; a text-mask task resizes its target as an image and needs the mask
    augment = UpocrAugment(32, tasks=[TEXT_REMOVAL, binarization.id])
    image = Image.new("RGB", (40, 30), "white")
    sample = augment.transform_sample(image, image, None, binarization.id)
    assert sample["task_id"] == 1 and sample["labels"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="needs its text mask"):
        augment.transform_sample(image, image, None, TEXT_REMOVAL)
    # loss: the entry's loss name decides; the removal loss builds the VGG only when a task uses it
    assert UpocrLoss([binarization.id], perceptual="random").vgg is None
