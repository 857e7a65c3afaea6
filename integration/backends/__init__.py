"""Search backends behind the `Backend` protocol: embedded (in-process), OpenSearch and Elasticsearch."""
