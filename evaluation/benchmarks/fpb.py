"""FPB: Financial PhraseBank (Malo et al., 2014), sentences with >= 50% annotator agreement.

The hub repository ``takala/financial_phrasebank`` is a loading script plus a zip, which ``datasets``
4.x no longer runs; its parquet conversion is read instead: revision ``refs/convert/parquet``,
folder ``sentences_50agree``, split ``train`` (columns ``sentence``, ``label``: 0 negative,
1 neutral, 2 positive). Offline, ``--data_dir`` may hold either that conversion
(``<data_dir>/takala/financial_phrasebank/sentences_50agree/train/0000.parquet``, from
``huggingface-cli download --repo-type dataset --revision refs/convert/parquet``) or the repository
itself: ``data/FinancialPhraseBank-v1.0.zip`` (or its unzipped ``Sentences_50Agree.txt``), lines
``sentence@label`` in latin-1, as the loading script reads them. The test set is FinGPT's
``train_test_split(seed=42)`` quarter of the sentences.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from evaluation.benchmarks._sentiment import SentimentBenchmark, fingpt_test_split, sentiment_example
from evaluation.registry import EvalSettings, Row, register

FPB_LABELS = {0: "negative", 1: "neutral", 2: "positive"}
RAW_FILE = "Sentences_50Agree.txt"
RAW_ZIP = "FinancialPhraseBank-v1.0.zip"
ENCODING = "iso-8859-1"  # the loading script's encoding of the txt files


def parse_sentences(text: str, where: str) -> list[Row]:
    """Rows of a ``Sentences_*Agree.txt``: ``sentence@label`` per line, the label the last ``@`` field."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        sentence, sep, label = line.rpartition("@")
        if not sep or label.strip() not in FPB_LABELS.values():
            raise ValueError(f"{where}: line {number} is not 'sentence@negative|neutral|positive'")
        rows.append({"sentence": sentence, "label": label.strip()})
    return rows


def raw_sentences(folder: Path) -> list[Row] | None:
    """The sentences of the repository's own files under ``folder`` (the zip or the txt), None if absent."""
    for archive in sorted(folder.rglob(RAW_ZIP)):
        with zipfile.ZipFile(archive) as zipped:
            member = next((n for n in zipped.namelist() if n.endswith("/" + RAW_FILE) or n == RAW_FILE), None)
            if member is None:
                raise ValueError(f"{archive} holds no {RAW_FILE}")
            return parse_sentences(zipped.read(member).decode(ENCODING), f"{archive}:{member}")
    for text_file in sorted(folder.rglob(RAW_FILE)):
        return parse_sentences(text_file.read_text(encoding=ENCODING), str(text_file))
    return None


@register
class FPB(SentimentBenchmark):
    """Financial PhraseBank sentiment."""

    name = "fpb"
    hub_id = "takala/financial_phrasebank"
    hub_revision = "refs/convert/parquet"
    hub_data_dir = "sentences_50agree"
    split = "train"
    local_layout = ("takala/financial_phrasebank/: sentences_50agree/train/*.parquet (the parquet conversion), "
                    "or data/FinancialPhraseBank-v1.0.zip / Sentences_50Agree.txt (the repository)")

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        if settings.data_dir is not None:
            rows = raw_sentences(Path(settings.data_dir).expanduser() / self.hub_id)
            if rows is not None:
                return rows
        return super().raw_rows(settings)

    def normalize(self, rows: list[Row]) -> list[Row]:
        test = fingpt_test_split(rows, test_size=0.25)
        return [sentiment_example(i, r["sentence"], r["label"] if isinstance(r["label"], str)
                                  else FPB_LABELS[int(r["label"])]) for i, r in enumerate(test)]
