"""The model card and the Hub folder / commit of a UPOCR checkpoint, without network."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

import upocr_hf
from upocr_hf import DEFAULT_MODEL, UpocrImageProcessor
from upocr_hf.hub import (
    MODEL_CARD_TEMPLATE,
    PLACEHOLDER_REPO_ID,
    hub_operations,
    load_evaluation_results,
    prepare_hub_folder,
    push_to_hub,
    render_model_card,
)

#: The remote code a Hub folder must carry: the model, processor and pipeline modules and all they import.
CODE_FILES = {
    "configuration_upocr.py",
    "cpu_inference.py",
    "modeling_upocr.py",
    "image_io.py",
    "image_processing_upocr.py",
    "keep_background.py",
    "losses.py",
    "pipeline_upocr.py",
    "readout.py",
    "tasks.py",
    "tiling.py",
}
PACKAGE = Path(upocr_hf.__file__).parent


def assert_ships_exactly_the_code(files: dict[str, bytes]) -> None:
    """A Hub folder's Python files are exactly CODE_FILES, each byte for byte the installed package's module."""
    shipped = {name: data for name, data in files.items() if name.endswith(".py")}
    assert set(shipped) == CODE_FILES
    for name, data in shipped.items():
        assert data == (PACKAGE / name).read_bytes(), f"{name} differs from the package's"


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


SEGMENTATION_RECORD = {
    "model": "runs/final",
    "task": "text-segmentation",
    "data": "data/synthetic-eval/TextSeg",
    "split": "test",
    "protocol": "resize to 512x512",
    "metrics": {"fg_iou": 0.5123, "precision": 0.6, "recall": 0.7, "f_score": 0.646, "num_samples": 200},
}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def processor() -> UpocrImageProcessor:
    return UpocrImageProcessor(size={"height": 64, "width": 64})


class FakeHub:
    """Stands in for the Hub API calls; records the operations of each commit while their files still exist."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.repos: list[str] = []
        self.commits: list[dict] = []
        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.repos.append(repo_id)
            return SimpleNamespace(repo_id=repo_id)

        def create_commit(api, repo_id, operations, **kwargs):
            files = {}
            for op in operations:
                source = Path(op.path_or_fileobj)
                files[op.path_in_repo] = source.read_bytes()
            hub.commits.append({"repo_id": repo_id, "files": files, **kwargs})
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", oid="0")

        def refuse(*args, **kwargs):
            raise AssertionError("unexpected network call")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setattr(HfApi, "create_branch", refuse)
        monkeypatch.setattr(HfApi, "upload_folder", refuse)
        # transformers before 5.23 calls huggingface_hub's module-level functions, bound to an HfApi at import
        import transformers.utils.hub as transformers_hub

        for name, fake in (("create_repo", create_repo), ("create_commit", create_commit)):
            if hasattr(transformers_hub, name):
                monkeypatch.setattr(transformers_hub, name, functools.partial(fake, None))


def test_template_front_matter_and_sections():
    text = MODEL_CARD_TEMPLATE.read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-to-image"
    assert meta["license"] == "apache-2.0" and "tampered-text-detection" in meta["tags"]
    for heading in (
        "## Intended use",
        "## How to use",
        "## Training data",
        "## Evaluation",
        "## Limitations",
    ):
        assert heading in text
    assert "@inproceedings{peng2024upocr" in text and "synthetic images" in text


def test_render_fills_metrics_training_and_repo_id(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(SEGMENTATION_RECORD))
    metrics = load_evaluation_results([path])
    text = render_model_card(
        metrics,
        {"steps": 3000, "config": {"embed_dim": 48}, "data": "synthetic only"},
        training_data="Synthetic images only.",
        repo_id="someone/upocr-tiny",
    )
    assert "51.23" in text and "TextSeg (test split)" in text and "200 images" in text
    assert "- **steps**: 3000" in text and "embed_dim=48" in text
    assert "Synthetic images only." in text and "No evaluation results" not in text
    assert "someone/upocr-tiny" in text and PLACEHOLDER_REPO_ID not in text
    # without a repo id the examples name a local folder, not somebody's Hub account
    local = render_model_card(metrics)
    assert PLACEHOLDER_REPO_ID == "path/to/this/model" and 'pipeline(model="path/to/this/model"' in local
    assert "your-username" not in local + (Path(DEFAULT_MODEL) / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.library_name == "transformers"
    # the figures are in the front matter too, as the Hub's model-index reads them
    results = {result.metric_type: result for result in card.data.eval_results}
    assert (
        results["fg_iou"].metric_value == pytest.approx(0.5123) and results["f_score"].metric_value == 0.646
    )
    assert (results["fg_iou"].task_name, results["fg_iou"].dataset_name, results["fg_iou"].dataset_split) == (
        "text-segmentation",
        "TextSeg",  # the folder's name, not the local path
        "test",
    )
    assert card.data.model_name == "someone/upocr-tiny" and "fg_iou" in card.data.metrics
    assert text.count("model-index") == 1 and "## Evaluation" in text


def test_render_rejects_a_template_without_blocks(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("---\nlibrary_name: transformers\n---\n# card\n")
    assert render_model_card(template=template).startswith("---")
    with pytest.raises(ValueError, match="metrics"):
        render_model_card({"text-segmentation": SEGMENTATION_RECORD}, template=template)


def test_prepare_hub_folder_is_complete(tiny_model, processor, tmp_path):
    tiny_model.train()
    folder = prepare_hub_folder(
        tiny_model, processor, tmp_path / "hub", {"text-segmentation": SEGMENTATION_RECORD}
    )
    assert tiny_model.training  # mode restored
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= names
    assert_ships_exactly_the_code(folder_files(folder))
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_upocr.UpocrModel"
    assert config["auto_map"]["AutoConfig"] == "configuration_upocr.UpocrConfig"
    assert config["custom_pipelines"]["upocr"]["impl"] == "pipeline_upocr.UpocrPipeline"
    processor_config = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"]["AutoImageProcessor"] == "image_processing_upocr.UpocrImageProcessor"
    readme = (folder / "README.md").read_text()
    assert front_matter(readme)["library_name"] == "transformers" and "51.23" in readme


def test_push_to_hub_sends_one_commit_with_code_weights_and_card(tiny_model, processor, monkeypatch):
    hub = FakeHub(monkeypatch)
    info = push_to_hub(tiny_model, processor, "someone/upocr-tiny", training={"steps": 10})
    assert info.oid == "0" and hub.repos == ["someone/upocr-tiny"] and len(hub.commits) == 1
    commit = hub.commits[0]
    files = commit["files"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert_ships_exactly_the_code(files)
    assert commit["commit_message"].startswith("Upload UPOCR")
    readme = files["README.md"].decode()
    assert front_matter(readme)["pipeline_tag"] == "image-to-image"
    assert 'pipeline(model="someone/upocr-tiny", trust_remote_code=True)' in readme
    assert "- **steps**: 10" in readme
    assert (
        json.loads(files["config.json"])["custom_pipelines"]["upocr"]["impl"]
        == "pipeline_upocr.UpocrPipeline"
    )


def test_model_push_to_hub_alone_uploads_a_folder_the_remote_pipeline_can_run(
    tiny_model, processor, monkeypatch
):
    """`model.push_to_hub` (transformers' spelling) sends processor, pipeline code and card with the weights, in one
    commit: it used to send the model's files only, and `pipeline(model=repo, trust_remote_code=True)` then failed."""
    import transformers.utils.hub as transformers_hub

    hub = FakeHub(monkeypatch)
    monkeypatch.setattr(
        transformers_hub,
        "create_and_tag_model_card",
        lambda repo_id, tags=None, token=None: ModelCard("---\n---\n"),
    )
    tiny_model.push_to_hub("someone/upocr-tiny", image_processor=processor, private=True)
    (commit,) = hub.commits
    files = commit["files"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert_ships_exactly_the_code(files)
    config = json.loads(files["config.json"])
    assert (
        "auto_map" in config and config["custom_pipelines"]["upocr"]["impl"] == "pipeline_upocr.UpocrPipeline"
    )
    assert json.loads(files["preprocessor_config.json"])["size"] == processor.size
    # transformers' own processor upload still carries the processor's code
    processor.push_to_hub("someone/upocr-tiny")
    assert {"preprocessor_config.json", "image_processing_upocr.py"} <= set(hub.commits[1]["files"])


def test_hub_operations_skip_hidden_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x").write_text("x")
    (tmp_path / "b.json").write_text("{}")
    assert [op.path_in_repo for op in hub_operations(tmp_path)] == ["b.json", "sub/a.txt"]


def test_removal_records_of_both_protocols_sit_side_by_side(tmp_path):
    plain = {"task": "text-removal", "protocol": "resize to 64x64", "metrics": {"psnr": 24.0, "mssim": 0.7}}
    kept = {**plain, "protocol": "resize to 64x64, keep background", "keep_background": True,
            "metrics": {"psnr": 28.0, "mssim": 0.96}}  # fmt: skip
    paths = []
    for name, record in (("plain", plain), ("kept", kept), ("again", plain)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(record))
    results = load_evaluation_results(paths[:2])
    assert list(results) == ["text-removal", "text-removal (keep background)"]
    card = render_model_card(results)
    assert "**text-removal (keep background)**" in card and "28.00" in card and "96.00" in card
    with pytest.raises(ValueError, match="a second evaluation record for 'text-removal'"):
        load_evaluation_results(paths)


def test_model_index_keeps_each_protocol_apart_and_names_synthetic_data_as_synthetic():
    # the Hub merges results that share task type, dataset type, config and split: whole-image and keep-background
    # removal used to become one entry with `psnr` twice
    synthetic = (
        "synthetic (upocr_hf.data.synthetic): 150 images 512×512, look photos, held-out style, seed 11"
    )
    whole = {"task": "text-removal", "data": "/home/me/runs/validation/SCUT-EnsText", "dataset": synthetic,
             "split": "test", "metrics": {"psnr": 26.0, "mssim": 0.75}}  # fmt: skip
    kept = {**whole, "keep_background": True, "metrics": {"psnr": 33.0, "mssim": 0.95}}
    card = ModelCard(render_model_card({"text-removal": whole, "text-removal (keep background)": kept}))
    model_index = yaml.safe_load(str(card).split("---")[1])["model-index"][0]
    assert model_index["name"] == "upocr"
    entries = {result["dataset"]["config"]: result for result in model_index["results"]}
    assert set(entries) == {"whole-image", "keep-background"}
    for config, psnr in (("whole-image", 26.0), ("keep-background", 33.0)):
        dataset, metrics = entries[config]["dataset"], entries[config]["metrics"]
        assert dataset["type"] == "upocr_hf-synthetic" and dataset["name"] == synthetic
        assert [m["value"] for m in metrics if m["type"] == "psnr"] == [psnr]
    assert "/home/me" not in str(card)


def test_copy_with_code_gives_a_folder_without_processor_the_default_one(tiny_model, tmp_path, capsys):
    from upocr_hf.hub import main as hub_main

    tiny_model.save_pretrained(tmp_path / "bare")  # weights and config only, as a user's own save may be
    assert hub_main(["copy-with-code", str(tmp_path / "bare"), str(tmp_path / "coded")]) == 0
    processor = json.loads((tmp_path / "coded" / "preprocessor_config.json").read_text())
    assert processor["size"] == UpocrImageProcessor().size  # 512, the paper's
    assert_ships_exactly_the_code(folder_files(tmp_path / "coded"))
