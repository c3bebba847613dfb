"""The numbers the UPOCR paper and its later peers report, and how the paper's tables lay them out.

Values are stored as the paper prints them (table units), keyed by the result key of the
corresponding metric's ``compute()``; :class:`TableColumn.scale` converts a ``compute()`` value
into table units (e.g. MSSIM ×100). :func:`format_results_table` prints a Markdown table of the
reported rows next to our own results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from upocr_hf.tasks import TAMPERED_TEXT_DETECTION, TEXT_REMOVAL, TEXT_SEGMENTATION, get_task

__all__ = [
    "PAPER_RESULTS",
    "PEER_RESULTS",
    "TABLE_COLUMNS",
    "ReportedResult",
    "TableColumn",
    "format_results_table",
    "reported_results",
    "table_columns",
]


@dataclass(frozen=True)
class TableColumn:
    """One column of a paper table."""

    header: str  #: as printed in the paper
    key: str  #: key of the metric's ``compute()`` result
    scale: float = 1.0  #: ``compute()`` value × scale = table value
    unit: str = ""
    higher_is_better: bool = True
    decimals: int = 2


@dataclass(frozen=True)
class ReportedResult:
    """One method's row on one benchmark, in table units, keyed like :class:`TableColumn.key`."""

    task: str
    benchmark: str
    method: str
    values: Mapping[str, float] = field(default_factory=dict)
    source: str = ""
    note: str = ""


#: The columns of each metric's table (keyed by the metric's folder, a task's ``Task.metric``).
TABLE_COLUMNS: dict[str, tuple[TableColumn, ...]] = {
    "text_removal": (
        TableColumn("PSNR", "psnr", 1.0, "dB", True, 2),
        TableColumn("MSSIM", "mssim", 100.0, "×100", True, 2),
        TableColumn("MSE", "mse", 100.0, "×100", False, 2),
        TableColumn("AGE", "age", 1.0, "grey levels", False, 2),
        TableColumn("pEPs", "peps", 1.0, "fraction", False, 4),
        TableColumn("pCEPs", "pceps", 1.0, "fraction", False, 4),
        TableColumn("FID", "fid", 1.0, "", False, 2),
    ),
    "text_segmentation": (
        TableColumn("fgIoU", "fg_iou", 100.0, "%"),
        TableColumn("P", "precision", 100.0, "%"),
        TableColumn("R", "recall", 100.0, "%"),
        TableColumn("F", "f_score", 100.0, "%"),
    ),
    "tampered_text_detection": (
        TableColumn("Real IoU", "real_iou", 100.0, "%"),
        TableColumn("Real P", "real_precision", 100.0, "%"),
        TableColumn("Real R", "real_recall", 100.0, "%"),
        TableColumn("Real F", "real_f_score", 100.0, "%"),
        TableColumn("Tampered IoU", "tampered_iou", 100.0, "%"),
        TableColumn("Tampered P", "tampered_precision", 100.0, "%"),
        TableColumn("Tampered R", "tampered_recall", 100.0, "%"),
        TableColumn("Tampered F", "tampered_f_score", 100.0, "%"),
        TableColumn("mIoU", "miou", 100.0, "%"),
        TableColumn("mF", "mf", 100.0, "%"),
    ),
}

_PAPER = "UPOCR (Peng et al., ICML 2024)"

#: UPOCR's own reported numbers. Only figures copied from the paper are filled in; the others
#: (e.g. AGE/pEPs/pCEPs, the Tampered-IC13 row) are left out rather than guessed.
PAPER_RESULTS: tuple[ReportedResult, ...] = (
    ReportedResult(
        TEXT_REMOVAL,
        "SCUT-EnsText",
        "UPOCR (paper)",
        {"psnr": 37.14, "mssim": 97.62, "mse": 0.04, "fid": 10.47},
        _PAPER,
    ),
    ReportedResult(TEXT_SEGMENTATION, "TextSeg", "UPOCR (paper)", {"fg_iou": 88.76}, _PAPER),
    ReportedResult(
        TAMPERED_TEXT_DETECTION,
        "Tampered-IC13",
        "UPOCR (paper)",
        {},
        _PAPER,
        "mIoU/mF are reported in the paper but not copied here yet",
    ),
)

#: The strongest later peers, for context only.
PEER_RESULTS: tuple[ReportedResult, ...] = (
    ReportedResult(TEXT_REMOVAL, "SCUT-EnsText", "TMIM", {"psnr": 37.42}, "its authors' paper"),
    ReportedResult(
        TEXT_REMOVAL,
        "SCUT-EnsText",
        "ConText",
        {"psnr": 40.83},
        "its authors' paper",
        "far larger model, extra data",
    ),
    ReportedResult(
        TEXT_SEGMENTATION, "TextSeg", "Hi-SAM-H", {"fg_iou": 88.96, "f_score": 93.87}, "its authors' paper"
    ),
    ReportedResult(TEXT_SEGMENTATION, "TextSeg", "ConText", {"fg_iou": 89.74}, "its authors' paper"),
)


def reported_results(task: str, include_peers: bool = False) -> list[ReportedResult]:
    """The reported rows of ``task`` (UPOCR's, then the peers' if asked)."""
    rows = [row for row in PAPER_RESULTS if row.task == task]
    if include_peers:
        rows += [row for row in PEER_RESULTS if row.task == task]
    return rows


def _cell(value: Any, column: TableColumn, scale: float) -> str:
    if value is None:
        return "–"
    return f"{float(value) * scale:.{column.decimals}f}"


def table_columns(task: str) -> tuple[TableColumn, ...]:
    """The table columns of ``task``'s metric (empty for a task without one)."""
    return TABLE_COLUMNS.get(get_task(task).metric or "", ())


def format_results_table(
    task: str, ours: Mapping[str, Any] | None = None, *, label: str = "ours", include_peers: bool = True
) -> str:
    """A Markdown table of the reported rows of ``task`` and, if given, our ``compute()`` result.

    Args:
        task: task id of :mod:`upocr_hf.tasks`.
        ours: a metric's ``compute()`` output (raw values; scaled here to table units).
        label: the method name of our row.
        include_peers: also list the later peers the paper's results are compared with.
    """
    columns = table_columns(task)
    header = ["method"] + [
        f"{c.header}{' ' + c.unit if c.unit in ('dB', '×100', '%') else ''} {'↑' if c.higher_is_better else '↓'}"
        for c in columns
    ]
    lines = [f"{get_task(task).dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in reported_results(task, include_peers):
        cells = [_cell(row.values.get(c.key), c, 1.0) for c in columns]
        lines.append(f"| {row.method} | " + " | ".join(cells) + " |")
    if ours is not None:
        cells = [_cell(ours.get(c.key), c, c.scale) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notes = [f"{row.method}: {row.note}" for row in reported_results(task, include_peers) if row.note]
    if ours is not None and ours.get("fid_unavailable_reason"):
        notes.append(f"FID unavailable: {ours['fid_unavailable_reason']}")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)
