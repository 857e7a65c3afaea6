"""`FastTokenizer`: a Hugging Face tokenizer folder read with the `tokenizers` library alone.

The ONNX Runtime student needs token ids, the vocabulary and the special tokens, nothing of
`transformers`; importing `transformers` costs seconds (it pulls torch), a tokenizer file
milliseconds. This class gives the part of the `transformers` fast-tokenizer interface the
students use (`__call__`, `encode`, `decode`, `get_vocab`, the special-token ids), with the
same ids: ``tokenizer.json`` is the same pipeline `transformers` runs (the tests compare them
over the sample corpus and conversations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

#: `transformers`' `clean_up_tokenization`: spaces a WordPiece decode leaves before punctuation
#: and English contractions, removed as `decode(..., clean_up_tokenization_spaces=True)` does.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class FastTokenizer:
    """A tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json``) without
    `transformers`. Thread-safe: the shared tokenizer's settings are never changed (truncation
    is applied to its output)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.folder = folder
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        #: what `vocabulary_name` calls this vocabulary's tokenizer (the class `transformers` loads)
        self.vocabulary_class: str = str(config.get("tokenizer_class") or "PreTrainedTokenizerFast")
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        for role in ("cls", "sep", "pad", "unk", "mask"):
            token = _token_text(config.get(f"{role}_token"))
            setattr(self, f"{role}_token", token)
            setattr(self, f"{role}_token_id",
                    self._tokenizer.token_to_id(token) if token is not None else None)

    cls_token: str | None
    sep_token: str | None
    pad_token: str | None
    unk_token: str | None
    mask_token: str | None
    cls_token_id: int | None
    sep_token_id: int | None
    pad_token_id: int | None
    unk_token_id: int | None
    mask_token_id: int | None

    @staticmethod
    def is_folder(folder: str | Path) -> bool:
        return (Path(folder) / "tokenizer.json").is_file()

    def __call__(self, text: str | Sequence[str], *, add_special_tokens: bool = True,
                 truncation: bool = False, max_length: int | None = None) -> dict[str, Any]:
        """``{"input_ids": ...}`` for one text (a list of ids) or a batch (a list of lists);
        with `truncation`, at most `max_length` ids, special tokens kept (as `transformers`
        truncates one sequence: the text's end is cut)."""
        limit = max_length if truncation and max_length else None
        texts = [text] if isinstance(text, str) else list(text)
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        ids = [_truncate(e.ids, e.special_tokens_mask, limit) if limit else e.ids for e in encodings]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        text = self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces:
            for before, after in _CLEAN_UP:
                text = text.replace(before, after)
        return text

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str | None]:
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int | None]:
        return [self._tokenizer.token_to_id(t) for t in tokens]

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)


def _truncate(ids: list[int], special: list[int], limit: int) -> list[int]:
    """`ids` cut to `limit`: the leading and trailing special tokens stay, the text between
    them loses its end."""
    if len(ids) <= limit:
        return ids
    head = next((i for i, s in enumerate(special) if not s), len(ids))
    tail = next((i for i, s in enumerate(reversed(special)) if not s), 0)
    keep = max(0, limit - head - tail)
    return ids[:head + keep] + ids[len(ids) - tail:] if tail else ids[:head + keep]


def _token_text(value: object) -> str | None:
    """A special token as `tokenizer_config.json` writes it: a string, or an added-token dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


__all__ = ["FastTokenizer"]
