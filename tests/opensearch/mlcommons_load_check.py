"""Load the ML Commons artifact with another torch (e.g. 2.5.1, the libtorch of OpenSearch 3.x's
ML Commons) and compare its output with the building torch's (the optional step in .ci/run).

    python mlcommons_load_check.py expect ARTIFACT_DIR EXPECTED.json   # the building venv
    python mlcommons_load_check.py check  ARTIFACT_DIR EXPECTED.json   # a venv with only torch

`expect` tokenizes a few texts with the zip's own tokenizer.json and records the ids and the
non-zero outputs; `check` needs nothing but torch: it loads the `.pt` and runs the same ids.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

TEXTS = ["visa", "Passport renewal\nHow do I renew my U.S. passport? The fee is 100% higher.",
         " ".join(["embassy appointments"] * 200)]


def _load(folder: Path):
    import torch

    manifest = json.loads((folder / "manifest.json").read_text())
    with zipfile.ZipFile(folder / manifest["zip_name"]) as zf:
        module = torch.jit.load(io.BytesIO(zf.read(manifest["pt_name"])), map_location="cpu")
        tokenizer = zf.read("tokenizer.json").decode()
    return module, tokenizer


def _run(module, ids: list[int]) -> dict[str, float]:
    import torch

    with torch.no_grad():
        out = module({"input_ids": torch.tensor([ids], dtype=torch.long),
                      "attention_mask": torch.ones(1, len(ids), dtype=torch.long)})["output"][0]
    return {str(i): float(out[i]) for i in torch.nonzero(out).flatten().tolist()}


def main(mode: str, folder: str, expected_path: str) -> int:
    import torch

    module, tokenizer_json = _load(Path(folder))
    if mode == "expect":
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(tokenizer_json)
        rows = [tokenizer.encode(t).ids for t in TEXTS]
        Path(expected_path).write_text(json.dumps([{"ids": r, "output": _run(module, r)} for r in rows]))
        return 0
    worst = 0.0
    for row in json.loads(Path(expected_path).read_text()):
        got = _run(module, row["ids"])
        if set(got) != set(row["output"]):
            print(f"torch {torch.__version__}: different non-zero terms for a {len(row['ids'])}-token input")
            return 1
        worst = max([worst, *(abs(got[k] - v) for k, v in row["output"].items())])
    ok = worst < 1e-5
    print(f"torch {torch.__version__} loaded the artifact: max abs difference {worst:.2e} "
          f"({'ok' if ok else 'above 1e-5'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
