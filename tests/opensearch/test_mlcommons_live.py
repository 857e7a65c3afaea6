"""Live ML Commons sequence (issue 33): runs only when OPENSEARCH_URL is set (`-m opensearch`).

    docker run -d -p 9200:9200 -e discovery.type=single-node -e DISABLE_SECURITY_PLUGIN=true \\
        opensearchproject/opensearch:3
    OPENSEARCH_URL=http://localhost:9200 CONVSPARSE_LIVE_APPLY_ML_SETTINGS=1 \\
        python -m pytest -q -m opensearch tests/opensearch/test_mlcommons_live.py

It builds the artifact, registers it in chunks, deploys it (this is where the cluster's
libtorch loads the trace), checks `_predict` against the in-process encoder, runs the pipeline
through `_simulate` and a real `_bulk`, searches with `query_tokens` and `query_text`, then
removes everything it created. The cluster settings it needs are written only with
`CONVSPARSE_LIVE_APPLY_ML_SETTINGS=1`; otherwise a cluster without them skips the suite.
"""

from __future__ import annotations

import os
import uuid

import pytest

from convsparse.documents import document_text
from convsparse.integration.backends.bulk import document_id
from convsparse.integration.backends.mlcommons import MLCommonsClient
from convsparse.integration.backends.mlcommons_artifact import read_manifest
from convsparse.integration.backends.mlcommons_pipeline import MLCommonsIngest
from convsparse.integration.backends.opensearch import OpenSearchBackend, build_client
from convsparse.settings import Settings

pytestmark = [
    pytest.mark.opensearch,
    pytest.mark.skipif(not os.environ.get("OPENSEARCH_URL"), reason="OPENSEARCH_URL is not set"),
]


def _sibling(name: str):
    """A helper module of this folder, loaded once by its conftest.py (`_load`)."""
    import sys

    return sys.modules[f"convsparse_tests_opensearch_{name}"]


DOCS = [("d1", "Passport renewal", "How do I renew my U.S. passport? The fee is 100% higher."),
        ("d2", None, "A visa is an endorsement on a passport allowing entry, e.g. for tourism."),
        ("d3", "Taxes", "Income tax returns are due in April.")]


@pytest.fixture(scope="module")
def client():
    settings = Settings(
        opensearch_url=os.environ["OPENSEARCH_URL"],
        opensearch_user=os.environ.get("OPENSEARCH_USER"),
        opensearch_password=os.environ.get("OPENSEARCH_PASSWORD"),
        opensearch_ca_certs=os.environ.get("OPENSEARCH_CA_CERTS") or None,
        opensearch_verify_certs=os.environ.get("OPENSEARCH_VERIFY_CERTS", "1") not in ("0", "false"),
        opensearch_timeout_s=120,
    )
    return build_client(settings)


def test_the_whole_sequence_live(client):
    pytest.importorskip("torch")
    fake_mlcommons = _sibling("fake_mlcommons")
    ml = MLCommonsClient(client, poll_interval_s=2.0)
    apply = os.environ.get("CONVSPARSE_LIVE_APPLY_ML_SETTINGS") == "1"
    missing = [c.name for c in ml.check_settings(apply=apply) if not c.ok]
    if missing and not apply:
        pytest.skip(f"cluster settings missing: {missing} (set CONVSPARSE_LIVE_APPLY_ML_SETTINGS=1)")
    student = fake_mlcommons.shipped_student()
    manifest, zip_path = read_manifest(fake_mlcommons.built_artifact())
    suffix = uuid.uuid4().hex[:8]
    group = ml.ensure_model_group(f"convsparse-live-{suffix}")
    model = ml.register_chunked(manifest, zip_path, group)
    index, pipeline = f"convsparse-live-{suffix}", f"convsparse-live-{suffix}"
    backend = OpenSearchBackend(client, replicas=0)
    try:
        ml.deploy(model.model_id, timeout_s=600)
        texts = [document_text(t, x) for _, t, x in DOCS]
        predicted = ml.predict(model.model_id, texts)
        for text, got in zip(texts, predicted, strict=True):
            want = {t: w for t, w in student.encode_documents([text])[0].items()
                    if t not in student.tokenizer.all_special_tokens}
            assert set(got) == set(want), (set(got) ^ set(want))
            assert max(abs(got[t] - want[t]) for t in want) < 1e-4

        ml.put_ingest_pipeline(pipeline, model.model_id, manifest.fingerprint)
        simulated = client.ingest.simulate(id=pipeline, body={"docs": [
            {"_source": {"id": "d1", "title": DOCS[0][1], "text": DOCS[0][2]}}]})
        source = simulated["docs"][0]["doc"]["_source"]
        assert "cs_doc_text" not in source and "passport" in source["terms"]

        fp = manifest.fingerprint
        backend.create_index(index, fingerprint=fp,
                             ingest=MLCommonsIngest(model.model_id, pipeline, manifest.sha256))
        lines = []
        for doc_id, title, text in DOCS:
            lines += [{"index": {"_index": index, "_id": document_id(fp, doc_id)}},
                      {"id": doc_id, "title": title, "text": text}]
        assert not client.bulk(body=lines, refresh=True)["errors"]
        query = student.encode_conversation([{"role": "user", "text": "renew my passport"}])
        hits = backend.search(index, query, k=3, fingerprint=fp)
        assert hits and hits[0].id == "d1"
        assert backend.search_text(index, "renew my passport", k=3)[0].id == "d1"
    finally:
        client.indices.delete(index=index, ignore=[404])
        client.ingest.delete_pipeline(id=pipeline, ignore=[404])
        ml.delete(model.model_id)
        client.plugins.ml.delete_model_group(model_group_id=group, ignore=[404])
