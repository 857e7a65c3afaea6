"""Typed configuration, read from arguments or `CONVSPARSE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The runtimes a student runs on.
Runtime = Literal["torch", "onnx"]
#: The one default runtime: `Settings.runtime` and `load_student`'s ``runtime``. ONNX Runtime
#: because it runs the shipped student without torch (the core install).
DEFAULT_RUNTIME: Runtime = "onnx"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVSPARSE_", extra="ignore")

    # Encoder
    model: str = Field(default="", description="Hub id or local path of the student; '' = shipped default")
    runtime: Runtime = DEFAULT_RUNTIME
    device: str = "auto"
    #: PyTorch runtime precision: "auto" = bfloat16 on CUDA, float32 on CPU.
    dtype: str = "auto"
    max_length: int | None = Field(default=None, ge=8, description="Token limit; None = the model's own (at most 256)")
    cache_dir: Path = Path.home() / ".cache" / "convsparse"
    #: Conversations on ONNX Runtime's CPU: "int8" runs the int8 query graph (documents keep
    #: float32, the index is unchanged; `encoders/query_graph.py`), "fp32" the float32 graph.
    query_precision: Literal["int8", "fp32"] = "int8"
    #: New indices store the re-ranker's passage vectors with the term maps (the second stage
    #: then re-ranks them by default); False: term maps only (`--no-rerank-vectors`).
    rerank_vectors: bool = True

    # Backend
    backend: Literal["embedded", "opensearch", "elasticsearch"] = "embedded"
    data_dir: Path = Path.home() / ".local" / "share" / "convsparse"
    opensearch_url: str = "http://localhost:9200"
    opensearch_user: str | None = None
    opensearch_password: str | None = None
    opensearch_ca_certs: Path | None = None
    opensearch_verify_certs: bool = True
    opensearch_aws_region: str | None = None
    opensearch_timeout_s: float = 30.0
    #: Term field of indices the OpenSearch backend creates: rank_features, or sparse_vector
    #: (neural sparse ANN, OpenSearch 3.3+). An existing index keeps the type it was created with.
    opensearch_field_type: Literal["rank_features", "sparse_vector"] = "rank_features"
    # Elasticsearch (CONVSPARSE_BACKEND=elasticsearch; pip install 'convsparse[elasticsearch]')
    elasticsearch_url: str = "http://localhost:9200"
    elasticsearch_cloud_id: str | None = None
    elasticsearch_api_key: str | None = None
    elasticsearch_user: str | None = None
    elasticsearch_password: str | None = None
    elasticsearch_ca_certs: Path | None = None
    elasticsearch_verify_certs: bool = True
    elasticsearch_timeout_s: float = 30.0
    elasticsearch_field_type: Literal["rank_features", "sparse_vector"] = "rank_features"

    # Queue
    redis_url: str = "redis://127.0.0.1:6379/0"
    result_url: str | None = None
    #: Seconds before Redis hands an unacknowledged chunk to another worker. It must exceed the
    #: longest task (a 64-document chunk takes seconds on a GPU, well under a minute on a CPU);
    #: a worker that dies is noticed sooner, by its missing heartbeat (`worker_heartbeat_s`).
    visibility_timeout_s: int = 600
    query_timeout_s: float = 2.0

    @field_validator("redis_url", "result_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_redis_url(value)
        return value

    # LLM generator (`convsparse rewrite` / `augment`, the `llm` teacher)
    llm_backend: Literal["endpoint", "local"] = "endpoint"
    llm_model: str = Field(default="", description="served model name, or a local HF folder")
    llm_base_url: str = "http://localhost:8000/v1"
    llm_api_key: SecretStr | None = None
    llm_concurrency: int = Field(default=8, ge=1)
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_retries: int = Field(default=4, ge=0)
    llm_max_new_tokens: int = Field(default=128, ge=1)
    llm_batch_size: int = Field(default=8, ge=1)
    llm_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    llm_rerank_depth: int = Field(default=50, ge=1, description="BM25 candidates the llm teacher scores")


REDIS_URL_FORM = ("redis://HOST:PORT/DB (with a password redis://:PASSWORD@HOST:PORT/DB), rediss:// "
                  "for TLS, or unix:///path/to/redis.sock")


def check_redis_url(url: str) -> None:
    """Raise `ValueError` (one sentence, the password masked) unless `url` is a Redis URL the
    client can use. The password may hold any character but ``/ ? #``, which must be
    percent-encoded (``%2F %3F %23``): the URL parser would take them for the path."""
    from urllib.parse import urlsplit

    from convsparse.redaction import mask_url, url_password

    shown = repr(mask_url(url))
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        raise ValueError(f"{shown} is not a URL; use {REDIS_URL_FORM}")
    if scheme.lower() not in ("redis", "rediss", "unix"):
        raise ValueError(f"{shown} has scheme {scheme + '://'!r}; use {REDIS_URL_FORM}")
    password = url_password(url) or ""
    bad = sorted({c for c in password if c in "/?#"})
    if bad:
        raise ValueError(f"the password in {shown} holds {' '.join(bad)}; percent-encode them "
                         "(/ %2F, ? %3F, # %23)")
    if scheme.lower() == "unix":
        if not urlsplit("unix://" + rest.rpartition("@")[2]).path:
            raise ValueError(f"{shown} names no socket path; use unix:///path/to/redis.sock")
        return
    parts = urlsplit("redis://" + rest.rpartition("@")[2])
    if not parts.hostname:
        raise ValueError(f"{shown} names no host; use {REDIS_URL_FORM}")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition(":")[2]
        raise ValueError(f"{shown}: port {port_text!r} is not a number from 1 to 65535") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{shown}: port {port} is not a number from 1 to 65535")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"{shown}: database {db!r} is not a number (/0, /1, ...)")


def get_settings(**overrides: Any) -> Settings:
    """`Settings` from the environment, with the `overrides` that are not None on top (each
    checked as the field it names)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
