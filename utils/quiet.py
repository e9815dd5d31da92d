"""Silence library messages known to be harmless here, each by its exact source and text.

Imported first by the entry points (and the tests), before the libraries load. Nothing is silenced
globally: each filter names one logger or one warning message.
"""

from __future__ import annotations

import logging
import warnings

# bitsandbytes on an AVX512-bf16 CPU tries to fetch an optional 4-bit kernel from the hub through
# the `kernels` package; without it, it falls back to its own kernel (measured exact in STACK.md).
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: "kernels-community" not in record.getMessage()
)
# PEFT calls transformers' deprecated `is_gradient_checkpointing` alias; nothing for users to change.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
