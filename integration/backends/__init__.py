"""Search backends behind the `Backend` protocol: embedded (in-process) and OpenSearch."""
