"""`FastTokenizer`: a Hugging Face tokenizer folder read with the `tokenizers` library alone.

The ONNX Runtime student and the re-ranker's ONNX path need token ids, word pieces and their
offsets, the vocabulary and the special tokens, nothing of `transformers`; importing
`transformers` costs seconds (it pulls torch), a tokenizer file milliseconds. This class gives
the part of the `transformers` fast-tokenizer interface they use (`__call__` with offsets,
`encode`, `decode`, `tokenize`, `get_vocab`, token/id conversion, the special-token ids), with
the same ids: ``tokenizer.json`` is the same pipeline `transformers` runs (the tests compare
them over the sample corpus and conversations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from convsparse.errors import UnsupportedModelError

TOKENIZER_FILE = "tokenizer.json"
#: BERT's special tokens, for a folder whose configs name none
_BERT_SPECIALS = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}

#: `transformers`' `clean_up_tokenization`: spaces a WordPiece decode leaves before punctuation
#: and English contractions, removed as `decode(..., clean_up_tokenization_spaces=True)` does.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class FastTokenizer:
    """A tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json`` and
    ``special_tokens_map.json`` where present) without `transformers`. Thread-safe: the shared
    tokenizer's settings are never changed (truncation is applied to its output)."""

    is_fast = True

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.folder = folder
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # a saved tokenizer.json may carry a training-time cut or padding; transformers'
        # tokenizers override both per call
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        config = _read_config(folder / "tokenizer_config.json")
        #: what `vocabulary_name` calls this vocabulary's tokenizer (the class `transformers` loads)
        self.vocabulary_class: str = str(config.get("tokenizer_class") or "PreTrainedTokenizerFast")
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        specials = {**config, **_read_config(folder / "special_tokens_map.json")}
        vocab_has = self._tokenizer.token_to_id
        for role, bert in _BERT_SPECIALS.items():
            token = _token_text(specials.get(f"{role}_token"))
            if token is None and vocab_has(bert) is not None:
                token = bert
            setattr(self, f"{role}_token", token)
            setattr(self, f"{role}_token_id", vocab_has(token) if token is not None else None)

    @classmethod
    def load(cls, folder: str | Path, *, require: Sequence[str] = ("cls", "sep")) -> FastTokenizer:
        """From a tokenizer folder; any fault (no ``tokenizer.json``, an unreadable file, a
        required special token missing) is an `UnsupportedModelError` naming the file."""
        folder = Path(folder)
        f = folder / TOKENIZER_FILE
        if not f.is_file():
            raise UnsupportedModelError(f"{folder}: no {TOKENIZER_FILE} (a fast tokenizer is "
                                        "needed to serve without transformers)")
        try:
            tok = cls(folder)
        except UnsupportedModelError:
            raise
        except Exception as e:  # the Rust side raises a plain Exception for any parse error
            raise UnsupportedModelError(f"{f}: unreadable tokenizer ({str(e).splitlines()[0]})"
                                        ) from None
        missing = [r for r in require if getattr(tok, f"{r}_token_id") is None]
        if missing:
            raise UnsupportedModelError(f"{folder}: the tokenizer has no "
                                        f"{', '.join(r + ' token' for r in missing)}")
        return tok

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
                 truncation: bool = False, max_length: int | None = None,
                 return_offsets_mapping: bool = False, verbose: bool = True) -> dict[str, Any]:
        """``{"input_ids": ...}`` for one text (a list of ids) or a batch (a list of lists),
        and ``"offset_mapping"`` (character spans) when asked; with `truncation`, at most
        `max_length` ids, special tokens kept (as `transformers` truncates one sequence: the
        text's end is cut). `verbose` is accepted for `transformers`' signature (its warning
        about inputs longer than the model reads does not exist here)."""
        limit = max_length if truncation and max_length else None
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        # without offsets, the tokenizer's fast path: the same ids, ~30% less time (a re-rank
        # tokenizes 20 whole passages on the chat turn's core)
        encode = (self._tokenizer.encode_batch if return_offsets_mapping
                  else self._tokenizer.encode_batch_fast)
        encodings = encode(texts, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [
            _truncate(e.ids, e.special_tokens_mask, limit) if limit else e.ids for e in encodings]}
        if return_offsets_mapping:
            out["offset_mapping"] = [
                _truncate(e.offsets, e.special_tokens_mask, limit) if limit else e.offsets
                for e in encodings]
        return {k: v[0] for k, v in out.items()} if single else out

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
        """Unknown tokens give the unknown token's id, as transformers' fast tokenizers do."""
        return [self.unk_token_id if (i := self._tokenizer.token_to_id(t)) is None else i
                for t in tokens]

    def tokenize(self, text: str) -> list[str]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).tokens)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsupportedModelError(f"{path}: unreadable ({e})") from None
    return conf if isinstance(conf, dict) else {}


def _truncate(ids: list[Any], special: list[int], limit: int) -> list[Any]:
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


__all__ = ["TOKENIZER_FILE", "FastTokenizer"]
