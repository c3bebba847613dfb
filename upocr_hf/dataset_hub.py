"""Publish a task's data on the Hub as a 🤗 dataset in the uniform schema, so that training and evaluation can name
it by id (`--data TASK=OWNER/NAME`):

    python -m upocr_hf.dataset_hub --data text-removal=data/SCUT-EnsText --repo-id you/scut-enstext-upocr
    python -m upocr_hf.dataset_hub --data text-segmentation=data/TextSeg --repo-id you/textseg-upocr \\
        --splits train val test [--private]

The folder is read by the same loaders as training (`upocr_hf.data.load_task_dataset`: a benchmark layout, a
`save_to_disk` folder or anything `datasets.load_dataset` reads), so the rows are exactly those training would
see: `image`, `target` in the task's encoding, `mask` for text removal, `task` and `name`, with the images' bytes
embedded. `DatasetDict.push_to_hub` uploads them as Parquet shards with a dataset card, one split per shard set.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .command_line import module_parser
from .data import DatasetFolderError, load_task_dataset
from .tasks import get_task
from .training import parse_task_folders


def push_task_dataset(
    task: str,
    source: str,
    repo_id: str,
    splits: Sequence[str] | None = None,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> Any:
    """Load `splits` (default: every split there is) of `task`'s data at `source` in the uniform schema and
    `push_to_hub` it to the dataset repository `repo_id`. Returns the `huggingface_hub.CommitInfo`."""
    dataset = load_task_dataset(task, source, splits)
    spec = get_task(task)
    message = f"UPOCR {spec.title.lower()} data ({', '.join(dataset)}) in the uniform schema, from {source}"
    return dataset.push_to_hub(
        repo_id, private=private, token=token, revision=revision, commit_message=message
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = module_parser("upocr_hf.dataset_hub", __doc__)
    parser.add_argument("--data", required=True, metavar="TASK=DIR", help="the task and its data folder")
    parser.add_argument("--repo-id", required=True, help="the dataset repository, OWNER/NAME")
    parser.add_argument(
        "--splits", nargs="+", default=None, help="splits to publish (default: all there are)"
    )
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default=None, help="branch to push to (default: main)")
    args = parser.parse_args(argv)
    try:
        ((task, source),) = parse_task_folders([args.data]).items()
    except ValueError as error:
        parser.error(str(error))
    try:
        commit = push_task_dataset(
            task, str(source), args.repo_id, args.splits, private=args.private or None, revision=args.revision
        )
    except DatasetFolderError as error:
        print(f"upocr_hf.dataset_hub: error: {error}", file=sys.stderr)
        return 2
    print(f"pushed {task} data from {source} to {args.repo_id}: {commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
