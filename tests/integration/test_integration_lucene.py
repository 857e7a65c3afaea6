"""Ranking parity with real Lucene: FeatureField documents + linear feature queries (what an
OpenSearch `rank_features` field and `rank_feature` query with `linear` run) versus
`EmbeddedBackend(quantize=True)`. Needs Debian's liblucene8-java and JPype1; skipped otherwise
(`CONVSPARSE_LUCENE_JARS`, a glob, points at the jars elsewhere).

`test_backend_bodies_score_as_lucene` covers the bodies the OpenSearch and Elasticsearch
backends send: the documents are indexed from the `_bulk` lines `EngineBackendBase` sends (each weight
spelt at stored precision, parsed by Java as a server's JSON parser does: `Float.parseFloat`, or
a double narrowed to float), and each query body is turned into Lucene queries the way the servers' query builders do
(`rank_feature` + `linear`: the field split at its last dot, `FeatureField.newLinearQuery(field,
feature, boost)`; Elasticsearch's `sparse_vector` with `query_vector` and no pruning: one
`FeatureField.newLinearQuery(field, token, weight)` SHOULD clause per token, on the same
FeatureField storage), and must rank and score as the embedded backend does."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.termmap import TermMap

jpype = pytest.importorskip("jpype")
JARS = sorted(glob.glob(os.environ.get("CONVSPARSE_LUCENE_JARS", "/usr/share/java/lucene-core*.jar")))
pytestmark = pytest.mark.skipif(not JARS, reason="lucene-core jar not installed (apt install liblucene8-java)")


@pytest.fixture(scope="module")
def lucene():
    if not jpype.isJVMStarted():
        try:
            jpype.startJVM(classpath=JARS[:1], convertStrings=True)
        except OSError as e:  # no JVM
            pytest.skip(f"cannot start a JVM: {e}")
    return {
        "FeatureField": jpype.JClass("org.apache.lucene.document.FeatureField"),
        "Document": jpype.JClass("org.apache.lucene.document.Document"),
        "StringField": jpype.JClass("org.apache.lucene.document.StringField"),
        "Store": jpype.JClass("org.apache.lucene.document.Field$Store"),
        "Dir": jpype.JClass("org.apache.lucene.store.ByteBuffersDirectory"),
        "IWC": jpype.JClass("org.apache.lucene.index.IndexWriterConfig"),
        "IW": jpype.JClass("org.apache.lucene.index.IndexWriter"),
        "Reader": jpype.JClass("org.apache.lucene.index.DirectoryReader"),
        "Searcher": jpype.JClass("org.apache.lucene.search.IndexSearcher"),
        "BQ": jpype.JClass("org.apache.lucene.search.BooleanQuery$Builder"),
        "Occur": jpype.JClass("org.apache.lucene.search.BooleanClause$Occur"),
        "BQclass": jpype.JClass("org.apache.lucene.search.BooleanQuery"),
        "Term": jpype.JClass("org.apache.lucene.index.Term"),
    }


def random_term_maps(rng, n_docs, vocab, terms_per_doc):
    maps = []
    p = 1.0 / np.arange(1, len(vocab) + 1)  # Zipfian
    p /= p.sum()
    for _ in range(n_docs):
        n = rng.integers(1, terms_per_doc)
        toks = rng.choice(len(vocab), size=n, replace=False, p=p)
        weights = rng.lognormal(mean=-0.5, sigma=1.0, size=n)
        maps.append(TermMap({vocab[t]: float(w) for t, w in zip(toks, weights)}))
    return maps


def lucene_doc(L, doc_id, tm):
    d = L["Document"]()
    d.add(L["StringField"]("id", doc_id, L["Store"].YES))
    for tok, w in tm.to_rank_features().items():
        d.add(L["FeatureField"]("terms", tok, float(w)))
    return d


JAVA_PARSERS = {
    "Float.parseFloat": lambda text: jpype.JClass("java.lang.Float").parseFloat(text),
    "(float) Double.parseDouble": lambda text: jpype.JClass("java.lang.Double")(
        jpype.JClass("java.lang.Double").parseDouble(text)).floatValue(),
}


def lucene_doc_from_bulk_lines(L, lines: bytes, parse) -> object:
    """The Lucene document a server indexes from one `index` operation's NDJSON lines: the
    term field's numbers are read from their JSON text by Java."""
    import json

    source = json.loads(lines.split(b"\n")[1], parse_float=str, parse_int=str)
    d = L["Document"]()
    d.add(L["StringField"]("id", source["id"], L["Store"].YES))
    for feature, text in source["terms"].items():
        d.add(L["FeatureField"]("terms", feature, parse(text)))
    return d


def lucene_search(L, searcher, query_tm, k):
    builder = L["BQ"]()
    for tok, w in query_tm.to_rank_features().items():
        builder.add(L["FeatureField"].newLinearQuery("terms", tok, float(w)), L["Occur"].SHOULD)
    top = searcher.search(builder.build(), k)
    return [(str(searcher.doc(sd.doc).get("id")), float(sd.score)) for sd in top.scoreDocs]


@pytest.mark.parametrize("seed", [0, 1])
def test_topk_and_scores_match_lucene(lucene, tmp_path, seed):
    L = lucene
    rng = np.random.default_rng(seed)
    vocab = [f"t{i}" for i in range(300)] + ["u.s", "100%", "##ing"]
    docs = random_term_maps(rng, 400, vocab, 40)
    ids = [f"d{i}" for i in range(len(docs))]
    # a few overwrites and deletes, as OpenSearch does them (delete + append a new doc)
    updates = {f"d{i}": tm for i, tm in zip(rng.choice(len(docs), 30, replace=False),
                                              random_term_maps(rng, 30, vocab, 40))}
    deletes = [f"d{i}" for i in rng.choice(len(docs), 20, replace=False) if f"d{i}" not in updates]

    L["BQclass"].setMaxClauseCount(4096)
    directory = L["Dir"]()
    writer = L["IW"](directory, L["IWC"]())
    for doc_id, tm in zip(ids, docs):
        writer.addDocument(lucene_doc(L, doc_id, tm))
    for doc_id, tm in updates.items():
        writer.updateDocument(L["Term"]("id", doc_id), lucene_doc(L, doc_id, tm))
    for doc_id in deletes:
        writer.deleteDocuments(L["Term"]("id", doc_id))
    writer.commit()
    searcher = L["Searcher"](L["Reader"].open(directory))

    be = EmbeddedBackend(tmp_path, quantize=True)
    be.create_index("parity", fingerprint="fp")
    list(be.upsert("parity", [IndexedDocument(i, tm) for i, tm in zip(ids, docs)]))
    list(be.upsert("parity", [IndexedDocument(i, tm) for i, tm in updates.items()]))
    list(be.delete_documents("parity", deletes))
    assert be.count("parity") == searcher.getIndexReader().numDocs()

    queries = random_term_maps(rng, 25, vocab, 250)
    for q in queries:
        for k in (10, 100):
            expected = lucene_search(L, searcher, q, k)
            got = [(h.id, h.score) for h in be.search("parity", q, k)]
            assert [i for i, _ in got] == [i for i, _ in expected]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)

    # without quantization the ranking can differ, and scores do (relative error up to 2^-8)
    raw = EmbeddedBackend(tmp_path, quantize=False)
    q = queries[0]
    exp = dict(lucene_search(L, searcher, q, 10))
    for h in raw.search("parity", q, 10):
        if h.id in exp:
            assert abs(h.score - exp[h.id]) <= h.score * 2.0 ** -8 + 1e-6
    directory.close()


def lucene_clauses_from_body(query):
    """(field, feature, weight) Lucene linear FeatureField clauses a server builds from `query`."""
    if "bool" in query:
        clauses = []
        for clause in query["bool"]["should"]:
            rf = clause["rank_feature"]
            assert rf["linear"] == {}, "without linear the server applies saturation"
            field, feature = rf["field"].rsplit(".", 1)
            clauses.append((field, feature, rf.get("boost", 1.0)))
        return clauses
    sv = query["sparse_vector"]
    assert sv["prune"] is False and "pruning_config" not in sv
    return [(sv["field"], token, weight) for token, weight in sv["query_vector"].items()]


def _body_builders():
    from convsparse.integration.backends import opensearch_query

    builders = {"opensearch rank_feature": opensearch_query.rank_feature_query}
    try:
        from convsparse.integration.backends import elasticsearch_query
    except ImportError:
        return builders
    builders["elasticsearch rank_feature"] = elasticsearch_query.rank_feature_query
    builders["elasticsearch sparse_vector"] = elasticsearch_query.sparse_vector_query
    return builders


@pytest.mark.parametrize(("builder", "parser"), [
    (builder, parser) for builder in _body_builders() for parser in JAVA_PARSERS
    if parser == "Float.parseFloat" or builder == "opensearch rank_feature"])
def test_backend_bodies_score_as_lucene(lucene, tmp_path, builder, parser):
    from convsparse.integration.backends.bulk import EngineBackendBase
    from convsparse.termmap import CsrRows, TermMapBatch, Vocabulary

    L = lucene
    build = _body_builders()[builder]
    rng = np.random.default_rng(7)
    vocab = [f"t{i}" for i in range(200)] + ["u.s", "100%", "e.g.", "a%2Eb"]
    docs = random_term_maps(rng, 300, vocab, 30)
    ids = [f"d{i}" for i in range(len(docs))]
    # the bulk path's documents come as CSR views of one batch
    v = Vocabulary(vocab)
    order = [sorted(vocab.index(t) for t in tm) for tm in docs]
    rows = CsrRows.from_counts(np.array([len(o) for o in order]), np.concatenate(order).astype(
        np.int32), np.array([docs[i][vocab[j]] for i, o in enumerate(order) for j in o], np.float32))
    batch = TermMapBatch.from_csr(rows, v, "fp", ids)
    L["BQclass"].setMaxClauseCount(4096)
    directory = L["Dir"]()
    writer = L["IW"](directory, L["IWC"]())
    bulk = EngineBackendBase()
    for pos, (doc_id, tm) in enumerate(zip(ids, batch)):
        lines = bulk._prepare_index("parity", pos, IndexedDocument(doc_id, tm), "fp", "terms").lines
        writer.addDocument(lucene_doc_from_bulk_lines(L, lines, JAVA_PARSERS[parser]))
    writer.commit()
    searcher = L["Searcher"](L["Reader"].open(directory))
    be = EmbeddedBackend(tmp_path, quantize=True)
    be.create_index("parity", fingerprint="fp")
    list(be.upsert("parity", [IndexedDocument(i, tm) for i, tm in zip(ids, docs)]))
    for q in random_term_maps(rng, 15, vocab, 120):
        builder_query = L["BQ"]()
        for field, feature, weight in lucene_clauses_from_body(build(q, "terms")):
            builder_query.add(L["FeatureField"].newLinearQuery(field, feature, float(weight)),
                              L["Occur"].SHOULD)
        top = searcher.search(builder_query.build(), 20)
        expected = [(str(searcher.doc(sd.doc).get("id")), float(sd.score)) for sd in top.scoreDocs]
        got = [(h.id, h.score) for h in be.search("parity", q, 20)]
        assert [i for i, _ in got] == [i for i, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)
    directory.close()
