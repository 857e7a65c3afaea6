"""`FastTokenizer`: a Hugging Face tokenizer folder read by the `tokenizers` library alone.

The re-ranker's ONNX path must not import torch or transformers (a chat app pays seconds and
hundreds of megabytes for them), yet its features are read in word pieces. A fast tokenizer's
``tokenizer.json`` holds the whole pipeline (normaliser, pre-tokeniser, WordPiece), so
`tokenizers` gives the same pieces as transformers' tokenizer of the folder; this class offers
the part of transformers' interface the re-ranker calls (``tokenizer(text,
add_special_tokens=False)["input_ids"]``, ``convert_tokens_to_ids``, the special token ids).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convsparse.errors import UnsupportedModelError

TOKENIZER_FILE = "tokenizer.json"
_SPECIAL = {"cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]", "pad_token": "[PAD]"}


def _special_tokens(folder: Path) -> dict[str, str]:
    """The special tokens the folder's configs name (BERT's by default)."""
    out = dict(_SPECIAL)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            conf = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UnsupportedModelError(f"{f}: unreadable ({e})") from None
        for key in _SPECIAL:
            value = conf.get(key) if isinstance(conf, dict) else None
            if isinstance(value, dict):  # an AddedToken written out
                value = value.get("content")
            if isinstance(value, str):
                out[key] = value
    return out


class FastTokenizer:
    """A ``tokenizer.json`` with transformers' calling conventions, for the calls made here."""

    is_fast = True

    def __init__(self, tokenizer, special: dict[str, str]):
        tokenizer.no_truncation()  # a saved tokenizer.json may carry a training-time cut or
        tokenizer.no_padding()     # padding; transformers' tokenizers override both per call
        self._tok = tokenizer
        ids = {k: tokenizer.token_to_id(v) for k, v in special.items()}
        missing = [special[k] for k, v in ids.items() if v is None and k != "pad_token"]
        if missing:
            raise UnsupportedModelError(f"the tokenizer has no {', '.join(missing)} token")
        self.cls_token_id, self.sep_token_id = ids["cls_token"], ids["sep_token"]
        self.unk_token_id, self.pad_token_id = ids["unk_token"], ids["pad_token"] or 0

    @classmethod
    def load(cls, folder: str | Path) -> FastTokenizer:
        """From a tokenizer folder with a ``tokenizer.json``; any fault is an
        `UnsupportedModelError` naming the file."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        f = folder / TOKENIZER_FILE
        if not f.is_file():
            raise UnsupportedModelError(f"{folder}: no {TOKENIZER_FILE} (a fast tokenizer is "
                                        "needed to serve without transformers)")
        try:
            tok = Tokenizer.from_file(str(f))
        except Exception as e:  # the Rust side raises a plain Exception for any parse error
            raise UnsupportedModelError(f"{f}: unreadable tokenizer ({str(e).splitlines()[0]})"
                                        ) from None
        return cls(tok, _special_tokens(folder))

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str | Sequence[str], *, add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False, **_: Any) -> dict[str, Any]:
        single = isinstance(text, str)
        encs = ([self._tok.encode(text, add_special_tokens=add_special_tokens)] if single
                else self._tok.encode_batch(list(text), add_special_tokens=add_special_tokens))
        out: dict[str, Any] = {"input_ids": [e.ids for e in encs]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encs]
        return {k: v[0] for k, v in out.items()} if single else out

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        """Unknown tokens give the unknown token's id, as transformers' fast tokenizers do."""
        return [self.unk_token_id if (i := self._tok.token_to_id(t)) is None else i
                for t in tokens]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._tok.id_to_token(int(i)) for i in ids]


__all__ = ["TOKENIZER_FILE", "FastTokenizer"]
