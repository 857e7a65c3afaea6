"""`quiet_loading()`: load Hugging Face checkpoints without transformers' own terminal output.

transformers 5 draws a "Loading weights" progress bar for every checkpoint and logs a load
report (for example the masked-LM head a re-ranker drops on purpose). Both went to the chat
app's and the CLI's stderr on every model load, drowning the messages that matter. Inside the
context, its progress bars are off and it logs errors only; the previous settings come back
afterwards, so an application that configured transformers itself keeps its choice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


__all__ = ["quiet_loading"]
