"""The notebooks' name for the matched-size comparison: everything here is :mod:`helpers.bench.compare` (the one
evaluation stack; the head-to-head and its verdicts are the benchmark's)."""

from __future__ import annotations

from .bench.compare import (BASE_COLUMNS, RULE_TEXT, Comparison, as_records, compare_files, compare_image,
                            detail_rows, head_to_head, head_to_head_markdown, markdown_table, metric_columns,
                            metric_status_rows, timing_table, verdict_lines, write_report)

__all__ = ["BASE_COLUMNS", "RULE_TEXT", "Comparison", "as_records", "compare_files", "compare_image", "detail_rows",
           "head_to_head", "head_to_head_markdown", "markdown_table", "metric_columns", "metric_status_rows",
           "timing_table", "verdict_lines", "write_report"]
