"""What every UPOCR command line shares: the name users type, whole descriptions, both option spellings, and
range errors reported as usage errors before any work."""

import argparse
import subprocess
import sys

import pytest

from upocr_hf.command_line import CommandParser, describe, unit_interval

MODULES = [
    "upocr_hf.evaluation",
    "upocr_hf.packaging",
    "upocr_hf.dataset_hub",
    "upocr_hf.hub",
    "upocr_hf.data.synthetic",
    "upocr_hf.convert_original_checkpoint",
]


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_help_names_the_command_as_typed_and_ends_its_sentences(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: python -m {module} ")
    description = result.stdout.split("\n\n")[1]
    assert description.rstrip().endswith((".", ":")), description


def test_both_spellings_of_an_option_are_accepted_and_help_shows_one():
    parser = CommandParser(prog="x")
    parser.add_argument("--batch-size", type=int, default=1)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run").add_argument("--output-dir")
    assert parser.parse_args(["--batch_size", "3"]).batch_size == 3
    assert parser.parse_args(["--batch_size=4"]).batch_size == 4
    assert parser.parse_args(["run", "--output_dir", "out"]).output_dir == "out"
    assert "--batch_size" not in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch_sizes", "3"])  # a typo is still an error, not guessed


def test_describe_keeps_the_first_paragraph_and_its_examples():
    doc = "Do a thing to a folder\nof images.\n\n    python -m x --in DIR \\\n        --out DIR\n\nDetails nobody asked for."
    assert (
        describe(doc) == "Do a thing to a folder of images.\n\n    python -m x --in DIR \\\n        --out DIR"
    )


@pytest.mark.parametrize("text", ["2", "-0.1", "nan?"])
def test_a_threshold_outside_zero_one_is_a_usage_error(text, capsys):
    with pytest.raises(argparse.ArgumentTypeError):
        unit_interval(text)
    from upocr_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "photo.png", "-o", "out", "--threshold", text])
    assert exit_info.value.code == 2 and "--threshold" in capsys.readouterr().err
