"""Output formats that need no Rich: JSON, CSV and Markdown, plus cell formatting.

Every tabular command builds a list of row mappings whose keys are the stable
JSON keys (see docs/json.md). JSON and CSV print raw values, with memory in
integer bytes; Markdown and the Rich tables print human values with units.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from kvsize.errors import InvalidInputError
from kvsize.units import format_bytes

FORMATS = ("table", "json", "csv", "markdown")


def resolve_format(output_format: str | None, json_flag: bool) -> str:
    """Return the output format from `--format` and the `--json` shortcut."""
    if json_flag:
        if output_format not in (None, "json"):
            raise InvalidInputError(f"--json conflicts with --format {output_format}; give one of them")
        return "json"
    chosen = ("table" if output_format is None else output_format).strip().lower()
    if chosen not in FORMATS:
        raise InvalidInputError(f"invalid value for --format: {output_format!r}; expected one of {', '.join(FORMATS)}")
    return chosen


@dataclass(frozen=True)
class Column:
    """One column of a tabular output: its JSON key, its header, and how people read its value."""

    key: str
    header: str
    human: Callable[[Any], str] | None = None

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        if self.human is not None:
            return self.human(value)
        return format_cell(self.key, value)


def format_cell(key: str, value: Any) -> str:
    """Format a raw value for people: bytes with a binary unit, counts with separators."""
    if value is None:
        return "unbounded" if key == "max_context_tokens" else "-"
    if isinstance(value, bool):
        # "NO" in capitals marks a plan that does not fit; other flags read yes/no.
        return ("yes" if value else "NO") if key in ("fits", "weights_fit") else ("yes" if value else "no")
    if isinstance(value, int) and "bytes" in key:
        return format_bytes(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def to_json(document: Any) -> str:
    """Return an indented JSON document."""
    return json.dumps(document, indent=2)


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Return CSV with a header of JSON keys and raw values (bytes as integers, null as empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.key for column in columns])
    for row in rows:
        writer.writerow(["" if row.get(column.key) is None else _csv_value(row.get(column.key)) for column in columns])
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(str(item) for item in value)
    return value


def to_markdown(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Return a GitHub-flavoured Markdown table with human-readable cells."""

    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(escape(column.header) for column in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(escape(column.cell(row)) for column in columns) + " |")
    return "\n".join(lines) + "\n"


def select_columns(available: Sequence[Column], requested: Sequence[str] | None,
                   extra_keys: Sequence[str] = ()) -> list[Column]:  # fmt: skip
    """Return the columns named in `--columns`, in that order, or all of `available`.

    A requested key that is not a default column but is in `extra_keys` (any
    flat JSON key) gets a column headed by its key.
    """
    if not requested:
        return list(available)
    by_key = {column.key: column for column in available}
    chosen = []
    for key in requested:
        if key in by_key:
            chosen.append(by_key[key])
        elif key in extra_keys:
            chosen.append(Column(key, key))
        else:
            valid = sorted(set(by_key) | set(extra_keys))
            raise InvalidInputError(f"invalid value for --columns: unknown column {key!r}; valid columns: {', '.join(valid)}")
    return chosen


def sort_rows(rows: list[dict[str, Any]], sort_key: str | None, valid_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Sort rows by a JSON key, ascending, or descending when the key starts with '-'.

    Missing values (an unbounded max context) sort as larger than any number.
    """
    if sort_key is None:
        return rows
    if not sort_key.strip("- "):
        raise InvalidInputError(f"invalid value for --sort: {sort_key!r}; give a JSON key such as max_batch_size")
    descending = sort_key.startswith("-")
    key = sort_key.lstrip("-")
    if key not in valid_keys:
        raise InvalidInputError(f"invalid value for --sort: unknown key {key!r}; valid keys: {', '.join(sorted(valid_keys))}")

    def order(row: Mapping[str, Any]) -> tuple:
        value = row.get(key)
        if value is None:
            return (1, 0)
        return (0, value)

    return sorted(rows, key=order, reverse=descending)
