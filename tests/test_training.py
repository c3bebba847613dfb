"""train.py and upocr_hf.training: the paper's schedule, parameter groups, overfitting, exact resume, two CPU ranks."""

import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import fixed_synthetic_config
from safetensors.torch import load_file

from upocr_hf import UpocrConfig, UpocrImageProcessor, UpocrModel
from upocr_hf.checkpointing import CheckpointError, CheckpointFolders
from upocr_hf.configuration_upocr import CONFIG_PRESETS
from upocr_hf.data.synthetic import generate_folders
from upocr_hf.losses import UpocrLoss
from upocr_hf.tasks import DEFAULT_TASKS, get_task
from upocr_hf.training import (
    WIDTH_FIELDS,
    PaperSchedule,
    build_model,
    optimizer_param_groups,
    parse_class_weights,
    parse_removal_term_weights,
    parse_split_overrides,
    parse_task_folders,
    parse_task_weights,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    # pinned fonts and photographs: by default the generator uses whatever the machine has
    generate_folders(root, 12, size=64, seed=0, config=fixed_synthetic_config())
    generate_folders(root, 3, size=64, seed=1, split="test", config=fixed_synthetic_config())
    return root


def data_args(root):
    return [
        "--data",
        f"text-removal={root / 'SCUT-EnsText'}",
        f"tampered-text-detection={root / 'Tampered-IC13'}",
        f"text-segmentation={root / 'TextSeg'}",
        "--train_splits",
        "text-segmentation=train",
    ]


def tiny_run_args(root, output_dir, max_steps, extra=()):
    return [
        *data_args(root),
        "--output_dir", str(output_dir),
        "--config", "tiny",
        "--image_size", "64",
        "--max_steps", str(max_steps),
        "--batch_size_per_task", "2",
        "--perceptual_loss", "off",
        "--num_workers", "0",
        "--logging_steps", "1",
        "--warmup_steps", "2",
        "--lr_block", "1",
        *extra,
    ]  # fmt: skip


def run_train(args, env_extra=None, launcher=None, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    command = [*(launcher or [sys.executable]), str(REPO / "train.py"), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_schedule_corner_points():
    schedule = PaperSchedule()
    assert schedule.lr_at(0) == pytest.approx(1e-4)
    assert schedule.lr_at(199) == pytest.approx(1e-4)  # constant within a block of 200
    assert schedule.lr_at(200) == pytest.approx(1e-4 + 4e-4 * 200 / 2000)
    assert schedule.lr_at(1999) == pytest.approx(1e-4 + 4e-4 * 1800 / 2000)
    assert schedule.lr_at(2000) == pytest.approx(5e-4)  # peak at the end of warm-up
    assert schedule.lr_at(41_000) == pytest.approx(5e-4 - 4.9e-4 * 39_000 / 78_000)
    assert schedule.lr_at(79_999) == pytest.approx(1e-5)  # the last iteration ends at the final rate
    assert all(schedule.lr_at(s) >= schedule.lr_at(s + 200) for s in range(2000, 79_800, 200))


def test_encoder_gets_a_tenth_of_the_rate_and_scheduler_scales_all_groups(tiny_model):
    groups = optimizer_param_groups(tiny_model, lr=5e-4)
    encoder_ids = {id(p) for p in tiny_model.encoder.parameters()}
    lateral_ids = {id(p) for p in tiny_model.decoder.lateral_connections.parameters()}
    assert [g["name"] for g in groups] == ["encoder", "decoder", "lateral"]
    assert {id(p) for p in groups[0]["params"]} == encoder_ids
    assert {id(p) for p in groups[2]["params"]} == lateral_ids
    assert [g["lr"] for g in groups] == pytest.approx(
        [5e-5, 5e-4, 5e-4]
    )  # the paper: laterals at the decoder's rate
    assert sum(len(g["params"]) for g in groups) == len(list(tiny_model.parameters()))
    optimizer = torch.optim.AdamW(groups, lr=5e-4)
    scheduler = PaperSchedule().scheduler(optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-5, 1e-4, 1e-4])
    for _ in range(2000):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-5, 5e-4, 5e-4])


def test_lateral_lr_ratio_scales_only_the_lateral_branches(tiny_model):
    groups = optimizer_param_groups(tiny_model, lr=1e-3, encoder_lr_ratio=1.0, lateral_lr_ratio=0.1)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3, 1e-4])


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_overfitting_a_fixed_batch_halves_the_loss(task, synthetic_root):
    from upocr_hf.data import UpocrAugment, load_task_datasets, upocr_collate

    folders = parse_task_folders(data_args(synthetic_root)[1:4])
    splits = {t: list(get_task(t).train_splits) for t in DEFAULT_TASKS} | parse_split_overrides(
        ["text-segmentation=train"]
    )
    dataset = load_task_datasets({task: folders[task]}, splits)[task]
    dataset.set_transform(UpocrAugment(64, train=False))
    batch = upocr_collate([dataset[i] for i in range(2)])
    torch.manual_seed(0)
    model = build_model("scratch", "tiny", DEFAULT_TASKS).train()
    loss_fn = UpocrLoss(DEFAULT_TASKS, perceptual="off")
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, lr=2e-3, encoder_lr_ratio=1.0), lr=2e-3)
    losses = []
    for _ in range(40):
        outputs = model(batch["pixel_values"], task=batch["task"])
        loss = loss_fn(
            outputs.multi_scale_predictions, batch["pixel_values"], batch["labels"], batch["text_mask"],
            batch["ignore_mask"], batch["task"],
        ).loss  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-5:]) <= 0.5 * losses[0], losses


def final_weights(output_dir):
    return load_file(str(Path(output_dir) / "final" / "model.safetensors"))


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_weights(synthetic_root, tmp_path):
    lateral = ["--lateral_lr_ratio", "0.1"]
    straight = run_train(tiny_run_args(synthetic_root, tmp_path / "straight", 6, lateral))
    assert straight.returncode == 0, straight.stderr[-3000:]
    logged = [
        json.loads(line.split("step 6: ", 1)[1])
        for line in straight.stderr.splitlines()
        if "step 6: {" in line
    ]
    assert logged[0]["lr/lateral"] == pytest.approx(0.1 * logged[0]["lr/decoder"])

    killed_dir = tmp_path / "killed"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"),
         *tiny_run_args(synthetic_root, killed_dir, 6, [*lateral, "--checkpointing_steps", "3"])],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "step_3").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "final").exists()
    assert [p.name for p in CheckpointFolders(killed_dir / "checkpoints").completed()] == ["step_3"]

    resumed = run_train(
        tiny_run_args(
            synthetic_root,
            killed_dir,
            6,
            [*lateral, "--checkpointing_steps", "3", "--resume_from_checkpoint", "latest"],
        )
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 3" in resumed.stderr
    expected, actual = final_weights(tmp_path / "straight"), final_weights(killed_dir)
    assert expected.keys() == actual.keys()
    for key in expected:  # same ops in the same order on the same machine: identical up to 1e-6
        assert torch.allclose(expected[key], actual[key], atol=1e-6, rtol=0), key
    state = json.loads((killed_dir / "checkpoints" / "step_6" / "trainer_state.json").read_text())
    assert state["step"] == 6


@pytest.mark.slow
def test_two_cpu_ranks_train_on_different_data(synthetic_root, tmp_path):
    output_dir = tmp_path / "ddp"
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip
    result = run_train(
        tiny_run_args(
            synthetic_root,
            output_dir,
            3,
            ["--record_samples", "true", "--eval_steps", "2", *validation_args(synthetic_root)],
        ),
        env_extra={"ACCELERATE_USE_CPU": "true"},
        launcher=launcher,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [
        [json.loads(line) for line in (output_dir / f"samples_rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    assert [len(r) for r in ranks] == [3, 3]
    for step0, step1 in zip(*ranks):
        assert len(step0["names"]) == len(step1["names"]) == 6  # 2 per task, 3 tasks, in task order
        for task in range(3):  # one synthetic render feeds every task, so compare task by task
            assert not set(step0["names"][2 * task : 2 * task + 2]) & set(
                step1["names"][2 * task : 2 * task + 2]
            )
    model = UpocrModel.from_pretrained(output_dir / "final")
    assert model.config.tasks == list(DEFAULT_TASKS)
    card = (output_dir / "final" / "README.md").read_text()  # the model card, with this run's details
    assert "library_name: transformers" in card and "--max_steps 3" in card
    assert (output_dir / "final" / "pipeline_upocr.py").is_file()
    # periodic validation ran with the metrics at steps 2 and 3 and kept the best model; the main process alone logs
    assert result.stderr.count("validation at step") == 2 and result.stderr.count("step 3: {") == 1
    state = json.loads((output_dir / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    assert state["best_step"] in (2, 3) and 0.0 <= state["best_metric"] <= 1.0
    assert UpocrModel.from_pretrained(output_dir / "best").config.tasks == list(DEFAULT_TASKS)
    assert (output_dir / "best" / "preprocessor_config.json").is_file()


def validation_args(root):
    return [
        f"--validation_data={task}={path}" for task, path in parse_task_folders(data_args(root)[1:4]).items()
    ]


@pytest.mark.slow
def test_fsdp_on_two_cpu_ranks_validates_and_saves_the_gathered_weights(synthetic_root, tmp_path):
    """configs/accelerate/fsdp.yaml on two CPU ranks (FSDP2 over gloo): every rank gathers the shards for validation
    and for the final and best models, final/ holds exactly the weights of Accelerate's own full-state-dict
    checkpoint of the last step, and a run resumes from such a checkpoint."""
    output_dir = tmp_path / "fsdp"
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/fsdp.yaml"),
        "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "tests" / "fsdp_cpu_launch.py"),
    ]  # fmt: skip

    def run_fsdp(max_steps, extra=()):
        argv = tiny_run_args(synthetic_root, output_dir, max_steps, ["--checkpointing_steps", "3", *extra])
        result = run_train(argv, env_extra={"ACCELERATE_USE_CPU": "true"}, launcher=launcher)
        assert result.returncode == 0, result.stderr[-4000:]
        assert "2 process(es), FSDP" in result.stderr
        assert "returned a view tensor" not in result.stderr  # FSDP2's warning at every step
        return result

    def assert_final_is_checkpoint(step):
        # written by Accelerate's FSDP save_state on the main process from the gathered full state dict
        checkpoint = output_dir / "checkpoints" / f"step_{step}" / "pytorch_model_fsdp.bin"
        gathered = torch.load(checkpoint, weights_only=True)
        saved = UpocrModel.from_pretrained(output_dir / "final").state_dict()
        assert gathered.keys() == saved.keys()
        for key, value in gathered.items():
            assert torch.equal(value, saved[key]), key
        return saved

    first = run_fsdp(3, ["--eval_steps", "2", *validation_args(synthetic_root)])
    assert first.stderr.count("validation at step") == 2
    saved = assert_final_is_checkpoint(3)
    initial = build_model("scratch", "tiny", DEFAULT_TASKS).state_dict()
    assert not torch.equal(
        initial["bottleneck.weight"], saved["bottleneck.weight"]
    )  # trained, not re-initialised
    assert UpocrModel.from_pretrained(output_dir / "best").config.tasks == list(DEFAULT_TASKS)
    resumed = run_fsdp(4, ["--resume_from_checkpoint", "latest"])
    assert "at step 3" in resumed.stderr
    assert not torch.equal(assert_final_is_checkpoint(4)["bottleneck.weight"], saved["bottleneck.weight"])


def read_event_scalars(path):
    """`{tag: {step: value}}` of a TensorBoard event file (TFRecord framing: length, its CRC, the `Event`, its CRC)."""
    try:
        from tensorboardX.proto.event_pb2 import Event
    except ImportError:
        from tensorboard.compat.proto.event_pb2 import Event
    data, position, scalars = path.read_bytes(), 0, {}
    while position < len(data):
        (length,) = struct.unpack("<Q", data[position : position + 8])
        event = Event.FromString(data[position + 12 : position + 12 + length])
        position += 12 + length + 4
        for value in event.summary.value:
            scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.mark.slow
def test_report_to_tensorboard_writes_the_logged_figures(synthetic_root, tmp_path):
    from accelerate.utils import is_tensorboard_available

    if not is_tensorboard_available():
        pytest.skip("needs tensorboard or tensorboardX (the `tensorboard` or `test` extra)")
    output_dir = tmp_path / "tensorboard"
    result = run_train(tiny_run_args(synthetic_root, output_dir, 2, ["--report_to", "tensorboard"]))
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [
        json.loads(line.split(f"step {step}: ", 1)[1])
        for step in (1, 2)
        for line in result.stderr.splitlines()
        if f"step {step}: {{" in line
    ]
    scalars = {}
    for events in output_dir.glob("upocr/events.out.tfevents.*"):  # Accelerate's tracker, named after the run
        scalars |= read_event_scalars(events)
    assert scalars["loss"] == pytest.approx({1: logged[0]["loss"], 2: logged[1]["loss"]}, rel=1e-6)
    assert set(scalars) >= {"loss/text-removal", "lr/encoder", "skipped_nonfinite"}


def test_yaml_configuration_and_initialisations(tmp_path, synthetic_root, tiny_model):
    sys.path.insert(0, str(REPO))
    import train as train_script

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"data:\n  - text-removal={synthetic_root / 'SCUT-EnsText'}\nmax_steps: 12\nmixed_precision: bf16\n"
        "perceptual_loss: off\nrecord_samples: true\n"
    )
    args = train_script.parse_args([str(recipe)])
    assert args.data == [f"text-removal={synthetic_root / 'SCUT-EnsText'}"]
    assert (args.max_steps, args.mixed_precision, args.learning_rate) == (12, "bf16", 5e-4)
    assert (args.perceptual_loss, args.record_samples) == (
        "off",
        True,
    )  # YAML 1.2: only true/false are booleans
    # left out, the mixed precision is Accelerate's to decide (`accelerate config`, `accelerate launch --mixed_precision`)
    assert train_script.parse_args(["--data", "text-removal=x"]).mixed_precision is None
    with pytest.raises(SystemExit):
        train_script.parse_args(["--image_size", "100", "--data", "text-removal=x"])

    tiny_model.save_pretrained(tmp_path / "folder")
    from_folder = build_model(str(tmp_path / "folder"), "paper", ["text-removal"])
    assert torch.equal(from_folder.bottleneck.weight, tiny_model.bottleneck.weight)
    from conftest import SHARED

    original = SHARED / "reference" / "upocr_small_original_state_dict.safetensors"
    from_original = build_model(str(original), "paper", DEFAULT_TASKS)
    assert from_original.num_parameters() == 1_489_731
    grown = build_model(str(tmp_path / "folder"), "paper", ["deblur"])  # a new task gets a new prompt row
    assert grown.config.tasks == [*DEFAULT_TASKS, "deblur"]


def test_tasks_may_be_named_by_any_of_their_names():
    assert parse_task_folders(["segment=a", "tampering=b", "deblur=c"]) == {
        "tampered-text-detection": Path("b"),
        "text-segmentation": Path("a"),
        "deblur": Path("c"),
    }
    assert parse_split_overrides(["segmentation=train"]) == {"text-segmentation": ["train"]}


def test_every_per_task_option_reads_task_names_alike():
    """--data, --train_splits, --task_loss_weights and --class_loss_weights share one TASK=VALUE parser: any of a
    task's names, a near miss refused, each task once (the weights took a task's id only, and a repeat silently
    replaced the first)."""
    assert parse_task_weights(["remove=2"]) == {"text-removal": 2.0}
    assert parse_class_weights(["tampering=1,2,4"]) == {"tampered-text-detection": (1.0, 2.0, 4.0)}
    for parse, specs in [
        (parse_task_weights, ["remove=1", "text-removal=2"]),
        (parse_split_overrides, ["segment=train", "text-segmentation=val"]),
        (parse_task_folders, ["remove=a", "removal=b"]),
    ]:
        with pytest.raises(ValueError, match="task 'text-[a-z]+' given twice"):
            parse(specs)
    with pytest.raises(ValueError, match="did you mean 'tampered-text-detection'"):
        parse_class_weights(["tampered-text-detecton=1,2,4"])
    with pytest.raises(ValueError, match=r"expected TASK=SPLIT\[,SPLIT\], got 'segment=train,'"):
        parse_split_overrides(["segment=train,"])


def test_removal_term_weights_parse_into_every_terms_weight(capsys):
    assert parse_removal_term_weights([]) == {"perceptual": 0.01, "style": 120.0}
    assert parse_removal_term_weights(["perceptual=0.5"]) == {"perceptual": 0.5, "style": 120.0}
    for bad, message in [
        ("perceptual", "expected TERM=WEIGHT"),
        ("style=much", "expected TERM=WEIGHT"),
        ("gram=2", "unknown removal term 'gram'"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_removal_term_weights([bad])
    with pytest.raises(ValueError, match="removal term 'style' given twice"):
        parse_removal_term_weights(["style=1", "style=2"])
    # train.py refuses a bad term while parsing, naming the flag, before a model or a run folder exists
    sys.path.insert(0, str(REPO))
    import train as train_script

    with pytest.raises(SystemExit):
        train_script.parse_args(["--data", "text-removal=x", "--removal_term_weights", "styel=1"])
    assert "--removal_term_weights: unknown removal term 'styel'" in capsys.readouterr().err


@pytest.mark.slow
def test_removal_term_weights_reach_the_loss_and_the_card(synthetic_root, tmp_path):
    extra = ["--removal_term_weights", "perceptual=0", "style=0"]
    argv = tiny_run_args(synthetic_root, tmp_path / "run", 1, extra)
    argv[argv.index("--perceptual_loss") + 1] = "random"  # instead of the tiny run's "off"
    result = run_train(argv)
    assert result.returncode == 0, result.stderr
    logged = json.loads(result.stderr.split("step 1: ", 1)[1].splitlines()[0])
    assert logged["loss/text-removal/perceptual"] > 0 and logged["loss/text-removal/style"] > 0
    assert logged["loss/text-removal"] == pytest.approx(logged["loss/text-removal/l1"], rel=1e-6)
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert "**perceptual/style weights**: perceptual=0.0, style=0.0" in card


@pytest.mark.slow
def test_a_misspelt_task_is_refused_not_trained_as_a_new_one(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'text-segmentation'"):
        parse_task_folders(["text-segmentaton=a"])
    with pytest.raises(ValueError, match="did you mean 'tampered-text-detection'"):
        parse_task_folders(["tampered-text-detecton=a"])
    result = run_train(["--data", f"text-segmentaton={tmp_path}", "--output_dir", str(tmp_path / "run")])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1].startswith("train.py: error: unknown task 'text-segmentaton'")
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_task_loss_weights_reach_the_loss(synthetic_root, tmp_path):
    assert parse_task_weights(["tampered-text-detection=4", "text-removal=0.5"]) == {
        "tampered-text-detection": 4.0,
        "text-removal": 0.5,
    }
    for bad in ("tampered-text-detection", "=2", "text-removal=heavy", "text-removal=1,2"):
        with pytest.raises(ValueError, match="TASK=WEIGHT"):
            parse_task_weights([bad])
    assert parse_class_weights(["tampering=1,2,4"]) == {"tampered-text-detection": (1.0, 2.0, 4.0)}
    with pytest.raises(ValueError, match="one number per class"):
        parse_class_weights(["tampering=1,,4"])
    # not a task of the run: the loss refuses it by name
    extra = ["--task_loss_weights", "deblur=2", "--class_loss_weights", "tampering=1,2,4"]
    # (run as `accelerate launch --mixed_precision bf16` runs it: the launcher's setting is honoured)
    result = run_train(
        tiny_run_args(synthetic_root, tmp_path / "run", 1, extra), {"ACCELERATE_MIXED_PRECISION": "bf16"}
    )
    assert result.returncode != 0 and "Unknown task 'deblur'" in result.stderr
    assert "mixed precision: bf16" in result.stderr


def test_nonfinite_losses_are_skipped_then_stop_the_run(synthetic_root, tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState, PartialState

    import upocr_hf.losses

    sys.path.insert(0, str(REPO))
    import train as train_script

    original_forward = upocr_hf.losses.UpocrLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2 or calls["n"] >= 4:  # one isolated bad step, then a run of them
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(upocr_hf.losses.UpocrLoss, "forward", poisoned)
    output_dir = tmp_path / "nan"
    args = train_script.parse_args(
        tiny_run_args(
            synthetic_root, output_dir, 20, ["--checkpointing_steps", "2", "--max_consecutive_nonfinite", "3"]
        )
    )
    try:
        with pytest.raises(
            train_script.NonFiniteLossError, match="3 consecutive non-finite losses at step 2"
        ):
            train_script.train(args)
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    # calls 1 and 3 were good steps: the checkpoint of step 2 is there, complete and loadable, and nothing newer
    checkpoints = CheckpointFolders(output_dir / "checkpoints").completed()
    assert [p.name for p in checkpoints] == ["step_2"]
    state = json.loads((checkpoints[0] / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["skipped_nonfinite"] == 1
    assert not (output_dir / "final").exists()


@pytest.mark.slow
def test_a_new_task_trains_from_a_pretrained_folder(tmp_path, synthetic_root, tiny_model):
    """`--data NEWTASK=DIR` with image/target pairs: the initial model gets a new prompt row and trains on it."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for i in range(4):
        for sub in ("image", "target"):
            folder = tmp_path / "deblur" / "train" / sub
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (torch.rand(48, 64, 3, generator=rng) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"s{i}.png")
    tiny_model.save_pretrained(tmp_path / "initial")
    deeper = tmp_path / "deeper.json"  # the run also deepens the model: the flag reaches the model it trains
    UpocrConfig(**{**CONFIG_PRESETS["tiny"], "encoder_depths": [2, 2, 1, 2]}).to_json_file(deeper)
    # the folder's processor (input size, inference defaults) carries over to the trained model
    chosen = UpocrImageProcessor(size={"height": 96, "width": 96}, do_tile=True, segmentation_threshold=0.55)
    chosen.save_pretrained(tmp_path / "initial")
    result = run_train([
        "--data", f"text-removal={synthetic_root / 'SCUT-EnsText'}", f"deblur={tmp_path / 'deblur'}",
        "--init_from", str(tmp_path / "initial"), "--output_dir", str(tmp_path / "run"), "--image_size", "64",
        "--max_steps", "2", "--batch_size_per_task", "2", "--perceptual_loss", "off", "--num_workers", "0",
        "--logging_steps", "1", "--deepen_to", str(deeper),
    ])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "added task prompts for ['deblur']" in result.stderr
    assert "loss/deblur" in result.stderr
    model = UpocrModel.from_pretrained(tmp_path / "run" / "final")
    assert model.config.tasks == [*DEFAULT_TASKS, "deblur"]
    assert model.task_embeddings.num_embeddings == 4
    assert model.config.encoder_depths == [2, 2, 1, 2]
    processor = UpocrImageProcessor.from_pretrained(tmp_path / "run" / "final")
    assert processor.do_tile and processor.segmentation_threshold == 0.55
    assert (processor.size.height, processor.size.width) == (96, 96)


def test_a_deepened_model_computes_what_it_grew_from_until_trained(tiny_model, tmp_path):
    """`--deepen_to`: the trained blocks are copied, the added ones are identities that still receive gradients."""
    tiny_model.save_pretrained(tmp_path / "initial")
    deeper = tmp_path / "deeper.json"
    UpocrConfig(
        **{**CONFIG_PRESETS["tiny"], "encoder_depths": [2, 2, 3, 2], "decoder_depths": [2, 1, 1, 1, 3]}
    ).to_json_file(deeper)
    deepened = build_model(str(tmp_path / "initial"), "paper", DEFAULT_TASKS, str(deeper)).double().eval()
    assert (deepened.config.encoder_depths, deepened.config.decoder_depths) == ([2, 2, 3, 2], [2, 1, 1, 1, 3])
    assert deepened.num_parameters() > tiny_model.num_parameters()
    pixels = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        expected = tiny_model.double().eval()(pixels, task=[0, 2]).prediction
        assert torch.equal(deepened(pixels, task=[0, 2]).prediction, expected)
    deepened.train()
    deepened(pixels, task=[0, 2]).prediction.square().mean().backward()
    added = deepened.encoder.stages[2].blocks[2]
    assert added.attention_norm.weight.grad.abs().sum() > 0

    compact, deep = (UpocrConfig(**CONFIG_PRESETS[name]) for name in ("compact", "compact-deep"))
    assert all(
        getattr(compact, name) == getattr(deep, name) for name in WIDTH_FIELDS
    )  # the shipped model deepens
    with pytest.raises(ValueError, match="embed_dim is 32 but the --init_from model's is 16"):
        build_model(str(tmp_path / "initial"), "paper", DEFAULT_TASKS, "compact")
    shallower = tmp_path / "shallower.json"
    UpocrConfig(**{**CONFIG_PRESETS["tiny"], "encoder_depths": [1, 1, 1, 2]}).to_json_file(shallower)
    with pytest.raises(ValueError, match=r"encoder_depths \[1, 1, 1, 2\] removes blocks"):
        build_model(str(tmp_path / "initial"), "paper", DEFAULT_TASKS, str(shallower))
    with pytest.raises(ValueError, match="--deepen_to deepens a trained --init_from model"):
        build_model("scratch", "tiny", DEFAULT_TASKS, str(deeper))


class _PlantedCode:
    """A pickle that creates a file when unpickled: what a hostile checkpoint folder would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
def test_resuming_never_unpickles_code_planted_in_a_checkpoint(synthetic_root, tmp_path):
    import pickle
    import shutil

    from accelerate.state import AcceleratorState, PartialState

    sys.path.insert(0, str(REPO))
    import train as train_script

    def train_in_process(argv):
        try:
            return train_script.train(train_script.parse_args(argv))
        finally:
            AcceleratorState._reset_state(True)
            PartialState._reset_state()

    train_in_process(tiny_run_args(synthetic_root, tmp_path / "run", 2, ["--checkpointing_steps", "2"]))
    checkpoint = tmp_path / "run" / "checkpoints" / "step_2"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["data_loader"]["step"] == 2  # the position is JSON, not a pickle
    assert not list(checkpoint.glob("custom_checkpoint_*"))
    pickled = sorted(p.name for p in checkpoint.iterdir() if p.suffix in (".bin", ".pkl"))
    assert pickled == ["optimizer.bin", "random_states_0.pkl", "scheduler.bin"]
    # a checkpoint of the previous version (progress in pickles of plain data) is refused in plain words
    old = tmp_path / "old-version"
    shutil.copytree(tmp_path / "run" / "checkpoints", old / "checkpoints")
    old_state = json.loads((old / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    torch.save(old_state.pop("data_loader"), old / "checkpoints" / "step_2" / "custom_checkpoint_0.pkl")
    (old / "checkpoints" / "step_2" / "trainer_state.json").write_text(json.dumps(old_state))
    with pytest.raises(CheckpointError, match="written by an earlier version"):
        train_in_process(tiny_run_args(synthetic_root, old, 3, ["--resume_from_checkpoint", "latest"]))
    marker = tmp_path / "planted-code-ran"
    for name in [*pickled, "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"]:
        run = tmp_path / f"planted-{name}"
        shutil.copytree(tmp_path / "run" / "checkpoints", run / "checkpoints")
        (run / "checkpoints" / "step_2" / name).write_bytes(pickle.dumps(_PlantedCode(marker)))
        argv = tiny_run_args(synthetic_root, run, 2, ["--resume_from_checkpoint", "latest"])
        with pytest.raises(CheckpointError, match=f"refused to load {name}: it holds more than tensors"):
            train_in_process(argv)  # every pickle-format file is read as tensors and plain data only
        if name == "optimizer.bin":  # from the command line: one line and exit status 2
            result = run_train(argv)
            assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
                f"train.py: error: {run / 'checkpoints' / 'step_2'}: refused to load optimizer.bin: it holds more than"
            )
        assert not marker.exists(), f"code planted in {name} ran"
        assert not (run / "final").exists()


def test_a_full_disk_while_checkpointing_loses_nothing(synthetic_root, tmp_path, monkeypatch):
    import errno

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    sys.path.insert(0, str(REPO))
    import train as train_script

    original_save_state = Accelerator.save_state
    calls = {"n": 0}

    def save_state_on_a_full_disk(self, output_dir=None, **kwargs):
        calls["n"] += 1
        if calls["n"] < 2:
            return original_save_state(self, output_dir, **kwargs)
        Path(output_dir, "model.safetensors").write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Accelerator, "save_state", save_state_on_a_full_disk)
    output_dir = tmp_path / "full"
    argv = tiny_run_args(synthetic_root, output_dir, 4, ["--checkpointing_steps", "1"])
    try:
        assert train_script.main(argv) == 2
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    checkpoints = output_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "step_1"
    ]  # the partial step_2 is gone, step_1 intact
    assert json.loads((checkpoints / "step_1" / "trainer_state.json").read_text())["step"] == 1
    assert not (output_dir / "final").exists()


def test_a_checkpoint_saved_again_replaces_the_old_one_only_when_complete(tmp_path):
    folders = CheckpointFolders(tmp_path, keep=3)
    for attempt in ("first", "second"):
        folders.staging(5).mkdir(parents=True)
        (folders.staging_path(5) / "weights").write_text(attempt)
        folders.commit(5, extra={"step": 5})
    assert (tmp_path / "step_5" / "weights").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_5"]
    # a crash between moving the old one aside and renaming the new one in: the old one is found again
    (tmp_path / "step_5").rename(tmp_path / ".old-step_5")
    folders.staging(6).mkdir(parents=True)
    assert folders.latest() is None  # looking changes nothing
    folders.recover()  # as a run does at its start
    assert folders.latest() == tmp_path / "step_5"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-step_6", "step_5"]


@pytest.mark.slow
def test_a_broken_sample_stops_the_run_in_one_line_or_is_skipped_when_asked(synthetic_root, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    broken = sorted((data / "Tampered-IC13" / "train_img").iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated PNG
    stopped = run_train(tiny_run_args(data, tmp_path / "stopped", 1))
    assert stopped.returncode == 2
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train.py: error: {broken}: ") and "--on_bad_sample skip" in last
    skipped = run_train(tiny_run_args(data, tmp_path / "skipped", 1, ["--on_bad_sample", "skip"]))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "loaded 11, skipped 1" in skipped.stderr and f"skipped: {broken}" in skipped.stderr


def test_deepspeed_clips_at_max_grad_norm():
    """DeepSpeed clips inside its engine at its config's gradient_clipping (accelerate's clip_grad_norm_ does nothing
    there, and fills "auto" with 1.0): --max_grad_norm is written into the config, and a config naming another
    number is refused instead of silently winning."""
    sys.path.insert(0, str(REPO))
    import train as train_script

    for config in ({}, {"gradient_clipping": "auto"}, {"gradient_clipping": 0.5}):
        train_script.apply_gradient_clipping(config, 0.5)
        assert config["gradient_clipping"] == 0.5
    with pytest.raises(ValueError, match=r"gradient_clipping is 1.0 but --max_grad_norm is 0.1"):
        train_script.apply_gradient_clipping({"gradient_clipping": 1.0}, 0.1)


@pytest.mark.parametrize(
    "name, kind, machines",
    [
        ("multi_gpu", "MULTI_GPU", 1),
        ("multi_node", "MULTI_GPU", 2),
        ("deepspeed_zero2", "DEEPSPEED", 1),
        ("fsdp", "FSDP", 1),
    ],
)
def test_shipped_accelerate_configs_parse(name, kind, machines):
    """The multi-GPU, multi-node, DeepSpeed and FSDP configurations the README names are valid `--config_file`s
    (they need GPUs to run as they are; the FSDP one also runs on CPU ranks in the FSDP test above)."""
    from accelerate.commands.config.config_args import load_config_from_file

    folder = REPO / "configs" / "accelerate"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == [
        "deepspeed_zero2",
        "fsdp",
        "multi_gpu",
        "multi_node",
    ]
    config = load_config_from_file(str(folder / f"{name}.yaml"))
    assert (config.distributed_type.value, config.num_machines, config.mixed_precision) == (
        kind,
        machines,
        "bf16",
    )
    if kind == "DEEPSPEED":
        assert (
            config.deepspeed_config["zero_stage"] == 2 and config.deepspeed_config["gradient_clipping"] == 0.1
        )
        sys.path.insert(0, str(REPO))
        import train as train_script

        # the shipped config clips where the recipe's default --max_grad_norm does
        train_script.apply_gradient_clipping(dict(config.deepspeed_config), 0.1)
    if kind == "FSDP":  # FSDP2; full state dicts, which Accelerate reads back with weights_only=True
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


@pytest.mark.parametrize(
    "flag, value", [("--max_steps", "0"), ("--batch-size-per-task", "0"), ("--eval_steps", "-1")]
)
def test_counts_below_their_least_value_are_usage_errors(flag, value, capsys):
    sys.path.insert(0, str(REPO))
    import train as train_script

    with pytest.raises(SystemExit) as exit_info:
        train_script.parse_args(["--data", "text-removal=DIR", flag, value])
    assert exit_info.value.code == 2 and "must be at least" in capsys.readouterr().err


def test_forward_with_labels_returns_the_loss_of_the_loss_module(synthetic_root):
    from upocr_hf.data import UpocrAugment, load_task_datasets, upocr_collate

    folders = parse_task_folders(data_args(synthetic_root)[1:4])
    splits = {t: list(get_task(t).train_splits) for t in DEFAULT_TASKS} | {"text-segmentation": ["train"]}
    datasets = load_task_datasets(folders, splits)
    for dataset in datasets.values():
        dataset.set_transform(UpocrAugment(64, train=False))
    batch = upocr_collate([datasets[task][0] for task in DEFAULT_TASKS], metadata=False)
    torch.manual_seed(0)
    model = build_model("scratch", "tiny", DEFAULT_TASKS).double()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    outputs = model(**batch)
    expected = UpocrLoss(DEFAULT_TASKS, perceptual="off")(
        outputs.multi_scale_predictions, batch["pixel_values"], batch["labels"], batch["text_mask"],
        batch["ignore_mask"], batch["task"],
    ).loss  # fmt: skip
    assert torch.equal(outputs.loss, expected) and outputs.loss.ndim == 0
    as_tuple = model(**batch, return_dict=False)
    assert torch.equal(as_tuple[0], expected) and torch.equal(as_tuple[1], outputs.prediction)
    assert model(batch["pixel_values"], task=batch["task"]).loss is None
    assert "_upocr_loss" not in dict(model.named_modules()) and not any(
        "loss" in k for k in model.state_dict()
    )
    # a loss of the caller's own (e.g. the full recipe's) replaces the default; one over other tasks is refused
    weighted = UpocrLoss(DEFAULT_TASKS, perceptual="off", task_weights={"text-removal": 2.0})
    model.loss_function = weighted
    assert model(**batch).loss > outputs.loss
    model.loss_function = UpocrLoss(DEFAULT_TASKS[:1], perceptual="off")
    with pytest.raises(ValueError, match="the loss is over tasks"):
        model(**batch)


def test_transformers_trainer_trains_the_model(synthetic_root, tmp_path):
    """`transformers.Trainer` drives the model through the loss its forward returns."""
    from functools import partial

    from transformers import Trainer, TrainingArguments

    from upocr_hf.data import UpocrAugment, load_task_datasets, upocr_collate

    folders = parse_task_folders(data_args(synthetic_root)[1:2])
    dataset = load_task_datasets(folders, {"text-removal": ["train"]})["text-removal"]
    dataset.set_transform(UpocrAugment(64))
    torch.manual_seed(0)
    model = build_model("scratch", "tiny", DEFAULT_TASKS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
        remove_unused_columns=False, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
        dataloader_num_workers=0,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=dataset,
        data_collator=partial(upocr_collate, metadata=False),
    )
    result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss) and result.training_loss > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
