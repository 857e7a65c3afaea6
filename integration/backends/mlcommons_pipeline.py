"""Bodies for server-side encoding: the ingest pipeline, the two-phase search pipeline, and the
index body of an index that ML Commons fills.

The ingest pipeline. convsparse encodes a document as ``"<title>\\n<text>"``
(`convsparse.documents.document_text`); the `sparse_encoding` processor's `field_map` maps one
field, so a `script` step builds that text into a temporary field, `sparse_encoding` writes its
term map into the term field, and `remove` drops the temporary field before the strict mapping
sees it. Painless `trim()` strips characters <= U+0020 where Python's `strip()` strips all
Unicode whitespace: a title made only of other Unicode spaces is the one case where the two
sides differ. A pipeline body may not carry `_meta` (the server's `Pipeline.create` rejects
unknown keys), so the fingerprint and model id go in its `description`.

Processor options by server version (neural-search): `batch_size` 2.16+, `prune_type` /
`prune_ratio` 2.19+, `skip_existing` 3.0+; each is sent only when asked for.

An ML-Commons-filled index (`with_mlcommons_ingest`) gets `index.default_pipeline` and
`_meta.ingest = {mode: "mlcommons", model_id, pipeline, artifact_sha256}`; its term field holds
the server's raw token names, so `_meta.feature_name_escaping` is "none" and it is searched with
`neural_sparse` only (`OpenSearchBackend` reads `_meta.ingest`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DOC_TEXT_FIELD",
    "INGEST_MODE",
    "PRUNE_TYPES",
    "IngestPrune",
    "MLCommonsIngest",
    "default_pipeline_id",
    "ingest_pipeline_body",
    "two_phase_pipeline_body",
    "with_mlcommons_ingest",
]

INGEST_MODE = "mlcommons"
#: The temporary field the script step writes and the remove step drops.
DOC_TEXT_FIELD = "cs_doc_text"
PRUNE_TYPES = ("top_k", "max_ratio", "alpha_mass", "abs_value")
#: `document_text` in Painless: the trimmed title, a newline, the text (the text alone without
#: a title). `'\\n'` reaches Painless as the `\n` escape.
DOC_TEXT_SCRIPT = (
    "def t = ctx.title == null ? '' : ctx.title.toString().trim(); "
    f"ctx.{DOC_TEXT_FIELD} = t.isEmpty() ? ctx.text : t + '\\n' + ctx.text;"
)


@dataclass(frozen=True)
class IngestPrune:
    """The `sparse_encoding` processor's own pruning (2.19+), validated as `PruneUtils` does."""

    prune_type: str
    prune_ratio: float

    def __post_init__(self) -> None:
        kind, r = self.prune_type, self.prune_ratio
        if kind not in PRUNE_TYPES:
            raise ValueError(f"prune_type must be one of {', '.join(PRUNE_TYPES)}, not {kind!r}")
        ok = {"top_k": r > 0 and float(r).is_integer(), "max_ratio": 0 <= r < 1,
              "alpha_mass": 0 <= r < 1, "abs_value": r >= 0}[kind]
        if not ok:
            need = {"top_k": "an integer > 0", "max_ratio": "in [0, 1)", "alpha_mass": "in [0, 1)",
                    "abs_value": ">= 0"}[kind]
            raise ValueError(f"prune_ratio for {kind} must be {need}, not {r}")

    def to_json(self) -> dict[str, Any]:
        ratio = int(self.prune_ratio) if self.prune_type == "top_k" else float(self.prune_ratio)
        return {"prune_type": self.prune_type, "prune_ratio": ratio}


def default_pipeline_id(fingerprint: str) -> str:
    """`convsparse-<first 12 hex digits of the fingerprint>`."""
    return "convsparse-" + fingerprint.split(":")[-1][:12]


def ingest_pipeline_body(
    model_id: str, fingerprint: str, *, field: str = "terms", batch_size: int | None = None,
    prune: IngestPrune | None = None, skip_existing: bool = False,
) -> dict[str, Any]:
    """`PUT _ingest/pipeline/<id>`: script -> sparse_encoding -> remove (no `_meta`)."""
    if not model_id:
        raise ValueError("model_id is empty")
    encode: dict[str, Any] = {"model_id": model_id, "field_map": {DOC_TEXT_FIELD: field},
                              "tag": "convsparse-encode"}
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        encode["batch_size"] = batch_size
    if prune is not None:
        encode.update(prune.to_json())
    if skip_existing:
        encode["skip_existing"] = True
    return {
        "description": f"convsparse documents; encoder fingerprint {fingerprint}; model {model_id}",
        "version": 1,
        "processors": [
            {"script": {"lang": "painless", "tag": "convsparse-doc-text", "source": DOC_TEXT_SCRIPT}},
            {"sparse_encoding": encode},
            {"remove": {"field": DOC_TEXT_FIELD, "tag": "convsparse-drop-doc-text"}},
        ],
    }


def two_phase_pipeline_body(*, prune_ratio: float = 0.4, expansion_rate: float = 5.0,
                            max_window_size: int = 10000) -> dict[str, Any]:
    """`PUT _search/pipeline/<id>` with `neural_sparse_two_phase_processor` (2.15+). It adds a
    rescorer of its own, so an index searched through it must not get `rescore_window` too."""
    if not 0 < prune_ratio < 1 or expansion_rate < 1 or max_window_size < 50:
        raise ValueError("two-phase needs 0 < prune_ratio < 1, expansion_rate >= 1, "
                         "max_window_size >= 50")
    return {"request_processors": [{"neural_sparse_two_phase_processor": {
        "tag": "convsparse", "enabled": True,
        "two_phase_parameter": {"prune_type": "max_ratio", "prune_ratio": prune_ratio,
                                "expansion_rate": expansion_rate,
                                "max_window_size": max_window_size}}}]}


@dataclass(frozen=True)
class MLCommonsIngest:
    """What an ML-Commons-filled index records in `_meta.ingest`."""

    model_id: str
    pipeline: str
    artifact_sha256: str
    two_phase_pipeline: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"mode": INGEST_MODE, "model_id": self.model_id, "pipeline": self.pipeline,
               "artifact_sha256": self.artifact_sha256}
        if self.two_phase_pipeline:
            out["two_phase_pipeline"] = self.two_phase_pipeline
        return out

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> MLCommonsIngest | None:
        """The record of an index's `_meta` (None for a client-encoded index)."""
        ingest = meta.get("ingest")
        if not isinstance(ingest, Mapping) or ingest.get("mode") != INGEST_MODE:
            return None
        return cls(str(ingest.get("model_id") or ""), str(ingest.get("pipeline") or ""),
                   str(ingest.get("artifact_sha256") or ""), ingest.get("two_phase_pipeline") or None)


def with_mlcommons_ingest(body: Mapping[str, Any], ingest: MLCommonsIngest) -> dict[str, Any]:
    """An `indices.create` body (`mappings.index_body`, rank_features) made ML-Commons-filled."""
    out = copy.deepcopy(dict(body))
    meta = out["mappings"]["_meta"]
    if meta.get("field_type", "rank_features") != "rank_features":
        raise ValueError("ML Commons ingest is built for rank_features indices (a sparse_vector "
                         "field gets token ids from the processor, which this path does not check)")
    settings = out["settings"]["index"]
    settings["default_pipeline"] = ingest.pipeline
    if ingest.two_phase_pipeline:
        settings["search.default_pipeline"] = ingest.two_phase_pipeline
    meta["ingest"] = ingest.to_json()
    meta["feature_name_escaping"] = "none"
    return out
