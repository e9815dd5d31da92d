"""Benchmark data: one split of a hub dataset, or of its local mirror under ``--data_dir``.

Local layout: ``<data_dir>/<hub id>/`` holds the dataset's data files as the Hub lays them out
(``huggingface-cli download --repo-type dataset <hub id> --local-dir <data_dir>/<hub id>``), in
parquet, json, jsonl or csv. When a ``config`` subfolder exists only it is read. Files are matched to
the split by the split's name (or a synonym: valid/val/dev, eval) in their path; a folder whose files
name no split is read whole for any split (a single ``question.jsonl``, say).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from utils.data_files import SPLIT_SYNONYMS, is_data_file, split_of

logger = logging.getLogger(__name__)

FORMATS = (".parquet", ".jsonl", ".json", ".csv")  # first present wins when a folder mixes formats

Row = dict[str, Any]




def _read_file(path: Path) -> list[Row]:
    """All rows of one data file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path)
        return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in frame.to_dict("records")]
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON lines saved as .json, as many hub datasets are
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            # {"data": [...]} wrappers and column-oriented dicts both occur.
            if len(data) == 1 and isinstance(next(iter(data.values())), list):
                return list(next(iter(data.values())))
            if data and all(isinstance(v, list) for v in data.values()):
                keys = list(data)
                return [dict(zip(keys, values, strict=True)) for values in zip(*data.values(), strict=True)]
            return [data]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg} at column {err.colno}); "
                                 "fix or remove it") from err
    return rows


def local_files(folder: Path, split: str, config: str | None = None) -> list[Path]:
    """The data files of ``split`` under ``folder`` (see the module docstring for the rules)."""
    if config is not None and (folder / config).is_dir():
        folder = folder / config
    files = sorted(p for p in folder.rglob("*") if is_data_file(p, folder, FORMATS))
    if not files:
        raise FileNotFoundError(f"{folder} holds no {'/'.join(FORMATS)} files")
    wanted = SPLIT_SYNONYMS.get(split.lower(), split.lower())
    tags = {f: split_of(f.relative_to(folder)) for f in files}
    if any(tag is not None for tag in tags.values()):
        files = [f for f, tag in tags.items() if tag == wanted]
        if not files:
            found = sorted({t for t in tags.values() if t})
            raise FileNotFoundError(f"{folder} has no files for split {split!r} (found: {', '.join(found)})")
    suffix = next(s for s in FORMATS if any(f.suffix.lower() == s for f in files))
    return [f for f in files if f.suffix.lower() == suffix]


def load_rows(
    hub_id: str | None,
    split: str,
    data_dir: str | None,
    config: str | None = None,
    local_name: str | None = None,
    *,
    revision: str | None = None,
    hub_data_dir: str | None = None,
) -> list[Row]:
    """Rows of ``split``: from ``<data_dir>/<local_name or hub_id>/`` when ``data_dir`` is set, else the Hub.

    ``revision`` and ``hub_data_dir`` go to ``datasets.load_dataset`` (e.g. a script-only repository's
    parquet conversion, ``refs/convert/parquet``, whose configs are folders); locally ``hub_data_dir``
    is the subfolder read, as a config's is.
    """
    name = local_name or hub_id
    if data_dir is not None:
        if name is None:
            raise ValueError("this benchmark has no local folder name")
        folder = Path(data_dir).expanduser() / name
        if not folder.is_dir():
            hint = (f"`huggingface-cli download --repo-type dataset {hub_id} --local-dir {folder}`" if hub_id
                    else "copy the files there")
            raise FileNotFoundError(f"--data_dir {data_dir}: expected the folder {folder} ({hint})")
        rows: list[Row] = []
        for path in local_files(folder, split, config or hub_data_dir):
            rows.extend(_read_file(path))
        logger.info("Read %d %s rows from %s", len(rows), split, folder)
        return rows
    if hub_id is None:
        raise ValueError(f"{name}: no hub copy exists; pass --data_dir with the files (see the README)")
    import datasets

    return list(datasets.load_dataset(hub_id, config, split=split, revision=revision, data_dir=hub_data_dir))
