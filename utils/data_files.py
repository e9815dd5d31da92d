"""Local data files: which files of a folder (or hub mirror) hold a split, and reading them with ``datasets``.

A folder's data files are its parquet / json / jsonl / csv files, hidden ones and hub metadata
(``dataset_infos.json``, ...) left out; a file belongs to the split its folder or file name names
(``train``, ``test``, ``validation`` and their synonyms), after the Hub's data-file conventions.
``datasets`` reports a malformed JSON lines or CSV file as ``DatasetGenerationError: An error
occurred while generating the dataset``, several tracebacks deep; here that becomes one
``ValueError`` naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
_BUILDER_PRIORITY = ("parquet", "json", "csv")  # when a folder mixes formats, the first one wins
# Split keywords in file / folder names, after the conventions of the Hub's data-file resolution.
SPLIT_SYNONYMS = {
    "train": "train", "training": "train",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
}
# Metadata a hub repository ships beside its data; ``datasets`` never reads them as rows (its
# FILES_TO_IGNORE), and neither do the local readers here.
METADATA_FILES = frozenset({"dataset_infos.json", "dataset_info.json", "dataset_dict.json", "config.json",
                            "state.json"})


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
    import pyarrow

    empty = [name for name in files if Path(name).stat().st_size == 0]
    if empty:
        raise ValueError(f"{empty[0]}: the file is empty; fill it or remove it")
    # datasets logs the parser's message itself before raising; the ValueError below says it once, better.
    readers = logging.getLogger("datasets.packaged_modules")
    level = readers.level
    readers.setLevel(logging.CRITICAL)
    try:
        return datasets.load_dataset(builder, data_files=list(files), split="train", **kwargs)
    except (datasets.exceptions.DatasetGenerationError, pyarrow.ArrowException) as err:
        raise ValueError(describe_unreadable(builder, files, err)) from err
    finally:
        readers.setLevel(level)


def _is_hidden(path: Path) -> bool:
    return any(part.startswith(".") for part in path.parts)


def is_data_file(path: Path, folder: Path, suffixes: object) -> bool:
    """A data file of a local mirror: a known format, not hidden, not a metadata file."""
    return (path.is_file() and path.suffix.lower() in suffixes and path.name not in METADATA_FILES
            and not _is_hidden(path.relative_to(folder)))


def data_files(folder: Path, config: str | None = None) -> tuple[Path, list[Path]]:
    """The data files under ``folder`` (or its ``config`` subfolder, as hub mirrors lay them out)."""
    if config is not None and (folder / config).is_dir():
        folder = folder / config
    files = sorted(p for p in folder.rglob("*") if is_data_file(p, folder, BUILDERS))
    if not files:
        raise ValueError(f"Folder {folder} holds no {'/'.join(BUILDERS)} files. Put the dataset's "
                         "data files there (e.g. `huggingface-cli download --repo-type dataset <name> "
                         "--local-dir <folder>`) or point --dataset_name at a data file.")
    return folder, files


def split_of(relative: Path) -> str | None:
    """The split a file belongs to from its folder / file name tokens, or None when unnamed."""
    for part in (*relative.parent.parts, relative.stem):
        for token in re.split(r"[-._ 0-9]+", part.lower()):
            if token in SPLIT_SYNONYMS:
                return SPLIT_SYNONYMS[token]
    return None


def files_for_split(folder: Path, files: list[Path], split: str) -> tuple[str, list[str]]:
    """The builder name and the files of ``split``; unnamed files all count as the train split."""
    tags = {f: split_of(f.relative_to(folder)) for f in files}
    wanted = SPLIT_SYNONYMS.get(split.lower(), split.lower())
    found = sorted({t for t in tags.values() if t is not None})
    if not found:
        if wanted != "train":
            raise ValueError(f"Folder {folder} has no split-named files (train*/test*), so all of it is "
                             f"the train split; split {split!r} does not exist there.")
        chosen = files
    else:
        chosen = [f for f, t in tags.items() if t == wanted]
        if not chosen:
            raise ValueError(f"Folder {folder} has no files for split {split!r} (found splits: "
                             f"{', '.join(found)}). Name the files or subfolders after the split.")
    by_builder: dict[str, list[str]] = {}
    for f in chosen:
        by_builder.setdefault(BUILDERS[f.suffix.lower()], []).append(str(f))
    builder = next(b for b in _BUILDER_PRIORITY if b in by_builder)
    if len(by_builder) > 1:
        logger.warning("Folder %s mixes %s files; reading only the %s ones.", folder,
                       "/".join(sorted(by_builder)), builder)
    return builder, by_builder[builder]


def local_data_root(local_data_dir: str | None) -> Path | None:
    """The --local_data_dir folder (None when unset); a ValueError naming the flag when it is missing."""
    if not local_data_dir:
        return None
    root = Path(local_data_dir).expanduser()
    if not root.is_dir():
        raise ValueError(f"--local_data_dir {local_data_dir}: no such folder. Create it (it holds "
                         "<local_data_dir>/<dataset_name>/ mirrors of hub datasets) or drop the flag.")
    return root


def read_files(path: Path, config: str | None, split: str) -> datasets.Dataset:
    """Read a data file, or a folder's files of ``split`` (in its ``config`` subfolder if there), as one split."""
    if path.is_file():
        builder, files = BUILDERS[path.suffix.lower()], [str(path)]
    else:
        folder, found = data_files(path, config)
        builder, files = files_for_split(folder, found, split)
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        # Keep text columns text: pandas would turn "007" into 7.
        kwargs["converters"] = dict.fromkeys(("instruction", "input", "output", "response", "question",
                                         "answer", "problem", "solution"), str)
    logger.info("Reading %d %s file(s) for split %s from %s", len(files), builder, split, path)
    return load_data_files(builder, files, **kwargs)
