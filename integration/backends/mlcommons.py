"""`MLCommonsClient`: register, deploy and run the document encoder inside OpenSearch (ML Commons).

Over opensearch-py's `client.plugins.ml` (and `client.ingest`, `client.cluster`, and the
transport for the search-pipeline call the plugin client lacks). Each call is one REST request
of the ML Commons sequence:

1. model group: `model_groups/_search` first (group names are unique across the cluster: a
   second `_register` with the same name fails), then `model_groups/_register`;
2. register, either chunked (`models/_register_meta` with `function_name: SPARSE_ENCODING`,
   `model_format: TORCH_SCRIPT`, the zip's sha256, size and chunk count, and no `model_config`,
   then `models/<id>/upload_chunk/<n>` with each chunk's raw bytes, n from 0), or by URL
   (`models/_register` with `url`, answered by a task);
3. `models/<id>/_deploy`, then `tasks/<task_id>` polled until COMPLETED or FAILED (a failed
   task's `error` is a JSON string keyed by node id: it is surfaced as one line);
4. `models/<id>/_predict` with `text_docs` (a smoke test; the answer's `dataAsMap.response`);
5. `models/<id>/_undeploy`, then `DELETE models/<id>` (a deployed model cannot be deleted).

`check_settings` reads the cluster settings (defaults included) and names each setting a
single-node or small cluster needs; it writes them only with `apply=True`.

Every server error becomes a `BackendError` naming the call and the server's reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import NotFoundError, TransportError

from convsparse.errors import BackendError
from convsparse.integration.backends.mlcommons_artifact import ArtifactManifest, iter_chunks
from convsparse.integration.backends.mlcommons_pipeline import (
    IngestPrune,
    ingest_pipeline_body,
    two_phase_pipeline_body,
)
from convsparse.progress import progress_bar

__all__ = [
    "DEFAULT_GROUP",
    "MLCommonsClient",
    "RegisteredModel",
    "SettingCheck",
    "node_error",
]

log = logging.getLogger(__name__)

DEFAULT_GROUP = "convsparse"
FUNCTION_NAME = "SPARSE_ENCODING"
MODEL_FORMAT = "TORCH_SCRIPT"
Registration = Literal["chunked", "url"]


@dataclass(frozen=True)
class RegisteredModel:
    model_id: str
    model_group_id: str
    name: str


@dataclass(frozen=True)
class SettingCheck:
    """One cluster setting: its current value, the value convsparse needs, and why."""

    name: str
    current: str | None
    wanted: str
    why: str

    @property
    def ok(self) -> bool:
        if self.current is None:
            return False
        try:  # thresholds: at least the wanted value
            return float(self.current) >= float(self.wanted)
        except ValueError:
            return self.current.lower() == self.wanted.lower()


def node_error(error: Any) -> str:
    """One line from a failed task's `error` (a JSON string keyed by node id, or plain text)."""
    text = error if isinstance(error, str) else json.dumps(error)
    try:
        parsed = json.loads(text)
    except (TypeError, ValueError):
        parsed = None
    if isinstance(parsed, dict) and parsed:
        text = "; ".join(f"node {node}: {msg}" for node, msg in parsed.items())
    return " ".join(str(text).split())


def _reason(exc: TransportError) -> str:
    info = exc.info
    if isinstance(info, dict):
        err = info.get("error", info)
        if isinstance(err, dict):
            cause = (err.get("root_cause") or [err])[0]
            return str(cause.get("reason") or err.get("reason") or err)
        return str(err)
    return str(info or exc)


class MLCommonsClient:
    """ML Commons calls for convsparse's document encoder (see the module docstring)."""

    def __init__(self, client: OpenSearch, *, poll_interval_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.ml = client.plugins.ml
        self.poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clock = clock

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        """One ML Commons call; its JSON object response (opensearch-py's calls are untyped)."""
        try:
            response: dict[str, Any] = fn(**kwargs)
            return response
        except OSConnectionError as exc:
            raise BackendError(f"{what}: cannot reach OpenSearch ({exc})") from exc
        except TransportError as exc:
            raise BackendError(f"{what} failed ({exc.status_code}): {_reason(exc)}") from exc

    # ------------------------------------------------------------------ model group
    def find_model_group(self, name: str) -> str | None:
        """The id of the model group called exactly `name` (None if this user sees none)."""
        body = {"query": {"term": {"name.keyword": {"value": name}}}, "size": 10}
        response = self._call(f"search model group {name!r}", self.ml.search_model_group, body=body)
        for hit in (response.get("hits") or {}).get("hits", []):
            if (hit.get("_source") or {}).get("name") == name:
                return str(hit["_id"])
        return None

    def ensure_model_group(self, name: str = DEFAULT_GROUP, *,
                           description: str = "convsparse document encoders") -> str:
        """The id of model group `name`, registered when no group of that name exists."""
        found = self.find_model_group(name)
        if found is not None:
            return found
        response = self._call(f"register model group {name!r}", self.ml.register_model_group,
                              body={"name": name, "description": description})
        return str(response["model_group_id"])

    # ------------------------------------------------------------------ registration
    @staticmethod
    def model_name(manifest: ArtifactManifest) -> str:
        return f"convsparse/{manifest.base_model or 'document-encoder'}"

    @staticmethod
    def model_description(manifest: ArtifactManifest) -> str:
        return (f"convsparse document encoder; fingerprint {manifest.fingerprint}; "
                f"max_length {manifest.max_length}; zip sha256 {manifest.sha256}")

    def _register_fields(self, manifest: ArtifactManifest, group_id: str) -> dict[str, Any]:
        # No model_config: ML Commons accepts none for SPARSE_ENCODING, and a sent one would
        # be cast to a text-embedding config at warm-up.
        return {
            "name": self.model_name(manifest),
            "version": manifest.convsparse_version,
            "description": self.model_description(manifest),
            "model_group_id": group_id,
            "function_name": FUNCTION_NAME,
            "model_format": MODEL_FORMAT,
            "model_content_hash_value": manifest.sha256,
            "model_content_size_in_bytes": manifest.size,
        }

    def register_meta_body(self, manifest: ArtifactManifest, group_id: str) -> dict[str, Any]:
        return {**self._register_fields(manifest, group_id), "total_chunks": manifest.total_chunks}

    def register_url_body(self, manifest: ArtifactManifest, group_id: str, url: str) -> dict[str, Any]:
        return {**self._register_fields(manifest, group_id), "url": url}

    def register_chunked(self, manifest: ArtifactManifest, zip_path: str | Path, group_id: str, *,
                         progress: bool = False) -> RegisteredModel:
        """`_register_meta`, then every chunk of the zip; the model is REGISTERED after the last."""
        meta = self._call("register model meta", self.ml.register_model_meta,
                          body=self.register_meta_body(manifest, group_id))
        model_id = str(meta["model_id"])
        bar = progress_bar(total=manifest.size, unit="B", unit_scale=True, desc="uploading chunks",
                           enabled=progress)
        sent = 0
        for number, chunk in iter_chunks(zip_path, manifest.chunk_size):
            self._call(f"upload chunk {number} of model {model_id}", self.ml.upload_chunk,
                       model_id=model_id, chunk_number=str(number), body=chunk)
            sent += 1
            bar.update(len(chunk))
        bar.close()
        if sent != manifest.total_chunks:
            raise BackendError(f"uploaded {sent} chunks of {zip_path}, manifest says "
                               f"{manifest.total_chunks}; rebuild the artifact")
        return RegisteredModel(model_id, group_id, self.model_name(manifest))

    def register_url(self, manifest: ArtifactManifest, url: str, group_id: str, *,
                     timeout_s: float = 600.0) -> RegisteredModel:
        """`_register` with `url`: the node downloads the zip and checks its sha256."""
        response = self._call("register model by URL", self.ml.register_model,
                              body=self.register_url_body(manifest, group_id, url))
        task = self.wait_task(str(response["task_id"]), what="register", timeout_s=timeout_s)
        return RegisteredModel(str(task["model_id"]), group_id, self.model_name(manifest))

    # ------------------------------------------------------------------ tasks and deploy
    def wait_task(self, task_id: str, *, what: str, timeout_s: float = 600.0) -> dict[str, Any]:
        """Poll `tasks/<id>` until COMPLETED; FAILED (or any end state but COMPLETED) raises
        `BackendError` with the node error in one line; past `timeout_s` too."""
        deadline = self._clock() + timeout_s
        while True:
            task = self._call(f"get task {task_id}", self.ml.get_task, task_id=task_id)
            state = task.get("state")
            if state == "COMPLETED":
                return task
            if state in ("FAILED", "COMPLETED_WITH_ERROR", "CANCELLED", "EXPIRED"):
                detail = node_error(task.get("error", "no error given"))
                raise BackendError(f"{what} task {task_id} {state.lower()}"
                                   f"{' for model ' + task['model_id'] if task.get('model_id') else ''}: {detail}")
            if self._clock() >= deadline:
                raise BackendError(f"{what} task {task_id} still {state} after {timeout_s:g} s; "
                                   f"check it with GET /_plugins/_ml/tasks/{task_id}")
            self._sleep(self.poll_interval_s)

    def deploy(self, model_id: str, *, timeout_s: float = 600.0) -> dict[str, Any]:
        """`_deploy` and wait for its task (the server re-hashes the chunks first)."""
        response = self._call(f"deploy model {model_id}", self.ml.deploy_model, model_id=model_id)
        if response.get("status") == "COMPLETED" or "task_id" not in response:
            return response
        return self.wait_task(str(response["task_id"]), what="deploy", timeout_s=timeout_s)

    def get_model(self, model_id: str) -> dict[str, Any]:
        return self._call(f"get model {model_id}", self.ml.get_model, model_id=model_id)

    def predict(self, model_id: str, texts: Sequence[str]) -> list[dict[str, float]]:
        """Term maps (raw token names) the deployed model gives `texts`."""
        response = self._call(f"predict with model {model_id}", self.ml.predict_model,
                              model_id=model_id, body={"text_docs": list(texts)})
        out = []
        for result in response.get("inference_results", []):
            outputs = result.get("output") or [{}]
            data = outputs[0].get("dataAsMap") or {}
            maps = data.get("response") or [{}]
            out.append({str(k): float(v) for k, v in maps[0].items()})
        return out

    def undeploy(self, model_id: str) -> dict[str, Any]:
        return self._call(f"undeploy model {model_id}", self.ml.undeploy_model, model_id=model_id)

    def delete(self, model_id: str, *, undeploy_first: bool = True) -> dict[str, Any]:
        """Delete the model (undeploying it first: a deployed model cannot be deleted)."""
        if undeploy_first:
            try:
                state = self.get_model(model_id).get("model_state")
            except BackendError:
                state = None
            if state in ("DEPLOYED", "PARTIALLY_DEPLOYED", "DEPLOYING"):
                self.undeploy(model_id)
        return self._call(f"delete model {model_id}", self.ml.delete_model, model_id=model_id)

    # ------------------------------------------------------------------ pipelines
    def put_ingest_pipeline(self, pipeline_id: str, model_id: str, fingerprint: str, *,
                            field: str = "terms", batch_size: int | None = None,
                            prune: IngestPrune | None = None) -> dict[str, Any]:
        body = ingest_pipeline_body(model_id, fingerprint, field=field, batch_size=batch_size,
                                    prune=prune)
        self._call(f"put ingest pipeline {pipeline_id!r}", self.client.ingest.put_pipeline,
                   id=pipeline_id, body=body)
        return body

    def get_ingest_pipeline(self, pipeline_id: str) -> dict[str, Any] | None:
        try:
            response = self.client.ingest.get_pipeline(id=pipeline_id)
        except NotFoundError:
            return None
        except TransportError as exc:
            raise BackendError(f"get ingest pipeline {pipeline_id!r} failed: {_reason(exc)}") from exc
        pipeline: dict[str, Any] | None = response.get(pipeline_id)
        return pipeline

    def put_two_phase_pipeline(self, pipeline_id: str, **parameters: Any) -> dict[str, Any]:
        body = two_phase_pipeline_body(**parameters)
        self._call(f"put search pipeline {pipeline_id!r}", self.client.transport.perform_request,
                   method="PUT", url=f"/_search/pipeline/{pipeline_id}", body=body)
        return body

    # ------------------------------------------------------------------ settings
    @staticmethod
    def wanted_settings(registration: Registration = "chunked") -> list[tuple[str, str, str]]:
        """(setting, value, why) a cluster without dedicated ML nodes needs."""
        reg = (("plugins.ml_commons.allow_registering_model_via_local_file", "true",
                "chunked upload (_register_meta, upload_chunk)") if registration == "chunked" else
               ("plugins.ml_commons.allow_registering_model_via_url", "true", "registering by URL"))
        return [
            ("plugins.ml_commons.only_run_on_ml_node", "false",
             "lets data nodes run the model when the cluster has no ml node"),
            reg,
            ("plugins.ml_commons.native_memory_threshold", "99",
             "the native memory breaker refuses deploys on small nodes at the default 90"),
        ]

    def check_settings(self, registration: Registration = "chunked", *,
                       apply: bool = False) -> list[SettingCheck]:
        """Each wanted setting with its current value (persistent, transient or default);
        with `apply`, the ones that are off are written as persistent settings."""
        response = self._call("read cluster settings", self.client.cluster.get_settings,
                              include_defaults=True, flat_settings=True)
        checks = []
        for name, wanted, why in self.wanted_settings(registration):
            current = None
            for section in ("transient", "persistent", "defaults"):
                value = (response.get(section) or {}).get(name)
                if value is not None:
                    current = str(value)
                    break
            checks.append(SettingCheck(name, current, wanted, why))
        missing = [c for c in checks if not c.ok]
        if apply and missing:
            self._call("update cluster settings", self.client.cluster.put_settings,
                       body={"persistent": {c.name: c.wanted for c in missing}})
        return checks
