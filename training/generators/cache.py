"""The generation cache: one JSONL line per finished item, keyed by sha256 over (generator
identity, task, rendered prompt, turn id). A line is appended and flushed as soon as its item
is done, so a re-run costs nothing and an interrupted run resumes where it stopped. Failures
are not cached (a re-run tries them again). A torn last line (killed mid-write) is skipped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from convsparse.training.generators.base import Prompt


def cache_key(generator_identity: str, task: str, prompt: Prompt, turn_id: str) -> str:
    blob = json.dumps([generator_identity, task, [dict(m) for m in prompt], turn_id],
                      ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, str] = {}
        if self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self._data[row["key"]] = row["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
        self._f = self.path.open("a", encoding="utf-8")

    def get(self, key: str) -> str | None:
        return self._data.get(key)

    def put(self, key: str, text: str, **meta: str) -> None:
        self._data[key] = text
        self._f.write(json.dumps({"key": key, "text": text, **meta}, ensure_ascii=False) + "\n")
        self._f.flush()

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._f.close()


__all__ = ["GenerationCache", "cache_key"]
