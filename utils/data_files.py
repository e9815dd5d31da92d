"""Reading local data files with ``datasets``, and saying which file and line is broken when one is.

``datasets`` reports a malformed JSON lines or CSV file as ``DatasetGenerationError: An error
occurred while generating the dataset``, several tracebacks deep. Here that becomes one
``ValueError`` naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets


def _text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8", errors="replace")


def _json_problem(path: Path) -> str | None:
    text = _text(path)
    try:
        json.loads(text)
        return None  # one JSON document (an array, or a column dict): readable as a whole
    except json.JSONDecodeError:
        pass
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                return f"line {number} is not valid JSON ({err.msg} at column {err.colno})"
    return None


def _csv_problem(path: Path) -> str | None:
    rows = csv.reader(io.StringIO(_text(path)))
    header = next(rows, None)
    if header is None:
        return "it is empty"
    for row in rows:
        if row and len(row) != len(header):
            return f"line {rows.line_num} has {len(row)} fields, the header line {len(header)}"
    return None


def describe_unreadable(builder: str, files: Sequence[str], err: BaseException) -> str:
    """One line: which of ``files`` ``builder`` could not read, where, and what to do."""
    finders = {"json": _json_problem, "csv": _csv_problem}
    for name in files:
        finder = finders.get(builder)
        problem = finder(Path(name)) if finder is not None else None
        if problem is not None:
            return f"{name}: {problem}; fix or remove it"
    cause = err.__cause__ or err
    return f"{', '.join(files)}: cannot be read as {builder} ({type(cause).__name__}: {cause})".replace("\n", " ")


def load_data_files(builder: str, files: Sequence[str], **kwargs: Any) -> datasets.Dataset:
    """``datasets.load_dataset(builder, data_files=files)`` as one split; a broken file raises one clear ValueError."""
    import datasets

    # datasets logs the parser's message itself before raising; the ValueError below says it once, better.
    readers = logging.getLogger("datasets.packaged_modules")
    level = readers.level
    readers.setLevel(logging.CRITICAL)
    try:
        return datasets.load_dataset(builder, data_files=list(files), split="train", **kwargs)
    except datasets.exceptions.DatasetGenerationError as err:
        raise ValueError(describe_unreadable(builder, files, err)) from err
    finally:
        readers.setLevel(level)
