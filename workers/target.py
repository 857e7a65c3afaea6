"""What an ingestion job writes into, as one comparable value: `IngestTarget`.

A job's done markers are only true of the index they were written into. An index deleted and
created again has the same name and holds none of those documents, and a worker pointed at
another data folder or cluster writes somewhere else. So the target names:

- the backend (``embedded``, ``opensearch``, ``elasticsearch``) and where its data lives (the
  data folder, or the cluster URL without credentials);
- the index name and its creation id (``_meta.creation_id``, a fresh random id written by every
  backend's `create_index`; an index created before creation ids existed has none);
- the encoder fingerprint of the term maps.

The worker computes the target it writes into (`target_of`); the submitter asks a worker for it
before a job starts (`workers.tasks.ingest_target`), derives the job id from it and trusts only
done markers that carry the same `key`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["IngestTarget", "backend_location", "target_of"]


@dataclass(frozen=True)
class IngestTarget:
    backend: str
    location: str
    index: str
    creation_id: str | None
    fingerprint: str

    @property
    def key(self) -> str:
        """A short stable digest of the whole target (what done markers and job ids carry)."""
        raw = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def describe(self) -> str:
        created = self.creation_id or "no creation id"
        return (f"{self.backend} index {self.index!r} at {self.location} ({created}, encoder "
                f"{self.fingerprint})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestTarget:
        return cls(str(data["backend"]), str(data["location"]), str(data["index"]),
                   data.get("creation_id"), str(data["fingerprint"]))


def _without_credentials(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable url>"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def backend_location(settings) -> str:
    """Where `settings`' backend keeps its data: the data folder, or the cluster's URL."""
    if settings.backend == "embedded":
        return str(Path(settings.data_dir).expanduser().resolve())
    if settings.backend == "elasticsearch" and settings.elasticsearch_cloud_id:
        return f"cloud:{settings.elasticsearch_cloud_id.split(':')[0]}"
    url = settings.opensearch_url if settings.backend == "opensearch" else settings.elasticsearch_url
    return _without_credentials(url)


def target_of(settings, info, fingerprint: str) -> IngestTarget:
    """The target a process with `settings` writes into, for an index described by `info`."""
    extra = info.extra or {}
    creation_id = extra.get("creation_id")
    return IngestTarget(backend=str(settings.backend), location=backend_location(settings),
                        index=info.name, creation_id=str(creation_id) if creation_id else None,
                        fingerprint=fingerprint)
