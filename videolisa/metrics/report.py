"""Score reports: the result object, a printable table, and JSON / CSV / PNG files.

The JSON holds ``{"benchmark", "overall": {"J", "F", "JF", ...}, "sequences": {"<sequence>/<object>":
{"J", "F", "JF", ...}}, "details", "notes"}`` with J, F, JF as fractions in [0, 1] (cIoU / gIoU and a
per-image IoU for ``refseg``). NaN is written as ``null`` so the file is strict JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.atomic import write_atomically

# Metric shown in the per-sequence plot, by preference; plot size and axes box (left, top, right, bottom).
_PLOT_METRICS = ("JF", "IoU")
_PLOT_SIZE = (1000, 450)
_PLOT_MARGINS = (60, 45, 980, 400)


@dataclass
class ScoreReport:
    """Scores of one benchmark run.

    Attributes:
        benchmark: benchmark name (``mevis``, ``reasonvos``, ``davis-semi``, ...).
        overall: headline numbers, e.g. ``{"J": .., "F": .., "JF": ..}`` (fractions).
        sequences: ``"<sequence>/<object>"`` -> per-item numbers, in scoring order.
        details: benchmark-specific extras (per-annotator results, official-code variants).
        notes: sentences a reader must see (missing predictions scored 0, official-code caveats).
    """

    benchmark: str
    overall: dict[str, float]
    sequences: dict[str, dict[str, float]]
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with NaN replaced by None."""
        return _without_nan(
            {
                "benchmark": self.benchmark,
                "overall": self.overall,
                "sequences": self.sequences,
                "details": self.details,
                "notes": self.notes,
            }
        )


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value


def format_table(report: ScoreReport) -> str:
    """The overall numbers as a small text table (percent, two decimals), plus the notes."""
    names = list(report.overall)
    header = " | ".join(f"{name:>9}" for name in names)
    values = " | ".join(f"{100 * report.overall[name]:9.2f}" for name in names)
    lines = [
        f"{report.benchmark}: {len(report.sequences)} scored items",
        header,
        "-" * len(header),
        values,
    ]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def _csv_bytes(report: ScoreReport) -> bytes:
    columns = sorted({name for scores in report.sequences.values() for name in scores}, key=_column_order)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["sequence", *columns])
    for key, scores in report.sequences.items():
        writer.writerow([key, *(_csv_value(scores.get(column)) for column in columns)])
    writer.writerow(["overall", *(_csv_value(report.overall.get(column)) for column in columns)])
    return buffer.getvalue().encode()


def _column_order(name: str) -> tuple[int, str]:
    preferred = ["JF", "J", "F", "IoU"]
    return (preferred.index(name) if name in preferred else len(preferred), name)


def _csv_value(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def _plot_bytes(report: ScoreReport) -> bytes | None:
    """PNG of the per-item J&F (or IoU), sorted ascending, or None when there is nothing to plot.

    Drawn with OpenCV: importing matplotlib would cost more than scoring a small benchmark.
    """
    import cv2  # here: the scoring itself does not need OpenCV

    metric = next(
        (name for name in _PLOT_METRICS if report.sequences and all(name in s for s in report.sequences.values())),
        None,
    )
    if metric is None:
        return None
    values = sorted(100 * scores[metric] for scores in report.sequences.values())
    width, height = _PLOT_SIZE
    left, top, right, bottom = _PLOT_MARGINS
    canvas = np.full((height, width, 3), 255, np.uint8)

    def to_pixel(index: float, value: float) -> tuple[int, int]:
        x = left + (right - left) * (index / max(len(values) - 1, 1))
        y = bottom - (bottom - top) * (min(max(value, 0.0), 100.0) / 100)
        return int(round(x)), int(round(y))

    for tick in range(0, 101, 20):
        y = to_pixel(0, tick)[1]
        cv2.line(canvas, (left, y), (right, y), (225, 225, 225), 1)
        cv2.putText(canvas, str(tick), (left - 38, y + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (left, top), (right, bottom), (0, 0, 0), 1)
    overall = 100 * report.overall.get(metric, math.nan)
    if not math.isnan(overall):
        y = to_pixel(0, overall)[1]
        for x in range(left, right, 12):  # dashed line: the overall score
            cv2.line(canvas, (x, y), (min(x + 6, right), y), (40, 40, 200), 1, cv2.LINE_AA)
    points = np.array([to_pixel(i, v) for i, v in enumerate(values)], np.int32)
    cv2.polylines(canvas, [points], False, (180, 110, 30), 2, cv2.LINE_AA)
    if len(values) <= 200:
        for point in points:
            cv2.circle(canvas, tuple(int(c) for c in point), 2, (180, 110, 30), -1, cv2.LINE_AA)
    title = f"{report.benchmark}: per-item {metric} (%), sorted; red dashes: overall {overall:.2f}"
    cv2.putText(canvas, title, (left, top - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        canvas, f"{len(values)} items", (left, bottom + 28), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (60, 60, 60), 1, cv2.LINE_AA
    )
    encoded, data = cv2.imencode(".png", canvas)
    return data.tobytes() if encoded else None


def write_report(report: ScoreReport, out_path: str | os.PathLike) -> list[Path]:
    """Write ``out_path`` (JSON), and beside it the same stem as ``.csv`` and a ``.png`` plot.

    Every file is written atomically (temporary name in the same folder, then ``os.replace``).

    Returns:
        The paths written.
    """
    json_path = Path(out_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(json_path, json.dumps(report.to_dict(), indent=2, allow_nan=False).encode() + b"\n")
    written = [json_path]
    csv_path = json_path.with_suffix(".csv")
    write_atomically(csv_path, _csv_bytes(report))
    written.append(csv_path)
    plot = _plot_bytes(report)
    if plot is not None:
        plot_path = json_path.with_suffix(".png")
        write_atomically(plot_path, plot)
        written.append(plot_path)
    return written
