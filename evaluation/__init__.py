"""Retrieval evaluation: metrics (ranx), BM25, FLOPS, reports, pruning tuning."""
