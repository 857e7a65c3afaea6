"""The OpenSearch API spec, closed, with local patches for the ML Commons and pipeline bodies.

`MLCommonsSpecValidator` is `SpecValidator` plus the bodies of issue 33, closed with
`unevaluatedProperties: false`. Where the spec (../shared/opensearch-api-spec, commit fbe9ede)
lags the server, it is patched here, each patch naming the server code it follows:

1. `ml.register_model_meta`: the spec requires `model_config` and lacks
   `model_content_size_in_bytes`. ML Commons' `MLRegisterModelMetaInput` accepts no config for
   SPARSE_ENCODING / SPARSE_TOKENIZE (and opensearch-py-ml never sends one), and parses
   `model_content_size_in_bytes`.
2. `ml.register_model` (by URL): `model_content_size_in_bytes` added (`MLRegisterModelInput`).
3. `SparseEncodingProcessor`: `prune_type`, `prune_ratio` (neural-search 2.19, PR #988,
   `PruneType`) and `skip_existing` (3.0, `SparseEncodingProcessorFactory`) added.
4. `ingest.put_pipeline`: `_meta` removed. The spec allows it; OpenSearch's
   `Pipeline.create` rejects unknown configuration keys, `_meta` among them.
5. `RequestProcessor`: `neural_sparse_two_phase_processor` added (neural-search 2.15,
   `NeuralSparseTwoPhaseProcessor`: `enabled`, `two_phase_parameter` with `prune_type`,
   `prune_ratio`, `expansion_rate`, `max_window_size`).
6. `PredictModelOutput`: the spec requires `data`; a sparse model answers `dataAsMap`
   (`ModelTensor.toXContent`, `SparseEncodingTranslator.processOutput`), so `dataAsMap` is
   added and `data` is optional.
The chunk upload (`ml.upload_chunk`) is not validated: the spec declares a JSON `{chunk}` body,
the server reads the raw bytes (`RestMLUploadModelChunkAction`).
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _spec_validator_module():
    name = "convsparse_tests_opensearch_spec_validator"  # as conftest.py loads it
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "spec_validator.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_sv = _spec_validator_module()

_BODY = "/content/application~1json/schema"
REGISTER_GROUP = f"namespaces/ml.yaml#/components/requestBodies/ml.register_model_group{_BODY}"
SEARCH_GROUP = f"namespaces/ml.yaml#/components/requestBodies/ml.search_model_group{_BODY}"
REGISTER_META = f"namespaces/ml.yaml#/components/requestBodies/ml.register_model_meta{_BODY}"
REGISTER_URL = f"namespaces/ml.yaml#/components/requestBodies/ml.register_model{_BODY}"
PREDICT = f"namespaces/ml.yaml#/components/requestBodies/ml.predict_model{_BODY}"
UNDEPLOY = f"namespaces/ml.yaml#/components/requestBodies/ml.undeploy_model{_BODY}"
PUT_PIPELINE = f"namespaces/ingest.yaml#/components/requestBodies/ingest.put_pipeline{_BODY}"
PUT_SEARCH_PIPELINE = f"namespaces/search_pipeline.yaml#/components/requestBodies/search_pipeline.put{_BODY}"
PREDICT_RESPONSE = "schemas/ml._common.yaml#/components/schemas/PredictModelResponse"
TASK = "schemas/ml._common.yaml#/components/schemas/Task"

_REQUEST_BODIES = ("ml.register_model_group", "ml.register_model_meta", "ml.register_model",
                   "ml.predict_model", "ml.undeploy_model")


def _schema(documents: dict[str, Any], ref: str) -> dict[str, Any]:
    name, pointer = ref.split("#", 1)
    return _sv._resolve_pointer(documents[name], pointer)


class MLCommonsSpecValidator(_sv.SpecValidator):
    """`SpecValidator` with the ML Commons / pipeline patches of the module docstring."""

    def _patch_documents(self, documents: dict[str, Any]) -> None:
        size = {"type": "integer", "minimum": 1,
                "description": "Size of the zip in bytes (MLRegisterModelMetaInput)."}
        meta = _schema(documents, REGISTER_META)
        meta["required"] = [r for r in meta["required"] if r != "model_config"]  # patch 1
        meta["properties"]["model_content_size_in_bytes"] = size
        _schema(documents, REGISTER_URL)["properties"]["model_content_size_in_bytes"] = size  # 2
        for body in _REQUEST_BODIES:
            ref = f"namespaces/ml.yaml#/components/requestBodies/{body}{_BODY}"
            _schema(documents, ref)["unevaluatedProperties"] = False

        ingest = documents["schemas/ingest._common.yaml"]["components"]["schemas"]
        sparse = ingest["SparseEncodingProcessor"]  # patch 3
        sparse["allOf"][1]["properties"].update({
            "prune_type": {"type": "string", "enum": ["none", "top_k", "max_ratio", "alpha_mass", "abs_value"]},
            "prune_ratio": {"type": "number", "minimum": 0},
            "skip_existing": {"type": "boolean"},
        })
        for name in ("SparseEncodingProcessor", "RemoveProcessor", "ProcessorContainer", "Pipeline"):
            ingest[name]["unevaluatedProperties"] = False
        put = _schema(documents, PUT_PIPELINE)  # patch 4
        put["properties"].pop("_meta", None)
        put["unevaluatedProperties"] = False

        search_pipeline = documents["schemas/search_pipeline._common.yaml"]["components"]["schemas"]
        search_pipeline["RequestProcessor"]["oneOf"].append({  # patch 5
            "type": "object", "title": "neural_sparse_two_phase_processor",
            "properties": {"neural_sparse_two_phase_processor": {
                "type": "object",
                "properties": {
                    "tag": {"type": "string"}, "description": {"type": "string"},
                    "ignore_failure": {"type": "boolean"}, "enabled": {"type": "boolean"},
                    "two_phase_parameter": {
                        "type": "object",
                        "properties": {
                            "prune_type": {"type": "string", "enum": ["max_ratio", "top_k", "alpha_mass", "abs_value"]},
                            "prune_ratio": {"type": "number", "minimum": 0},
                            "expansion_rate": {"type": "number", "minimum": 1},
                            "max_window_size": {"type": "integer", "minimum": 50},
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            }},
            "required": ["neural_sparse_two_phase_processor"],
            "additionalProperties": False,
        })
        search_pipeline["SearchPipelineStructure"]["unevaluatedProperties"] = False

        ml = documents["schemas/ml._common.yaml"]["components"]["schemas"]
        output = ml["PredictModelOutput"]  # patch 6
        output["required"] = []
        output["properties"]["dataAsMap"] = {"type": "object", "properties": {"response": {
            "type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}}}}
        for name in ("PredictModelResponse", "PredictModelResult", "PredictModelOutput", "Task"):
            ml[name]["unevaluatedProperties"] = False

    @classmethod
    @cache
    def load(cls) -> MLCommonsSpecValidator | None:  # type: ignore[override]
        if not (_sv.SPEC_DIR / "schemas").is_dir():
            return None
        return cls()

    # the named checks of the ML Commons bodies
    def validate_body(self, kind: str, body: Any) -> None:
        refs = {"register_group": REGISTER_GROUP, "search_group": SEARCH_GROUP,
                "register_meta": REGISTER_META, "register_url": REGISTER_URL, "predict": PREDICT,
                "undeploy": UNDEPLOY, "ingest_pipeline": PUT_PIPELINE,
                "search_pipeline": PUT_SEARCH_PIPELINE, "predict_response": PREDICT_RESPONSE,
                "task": TASK}
        self.validate(refs[kind], body)
