"""The evidence: verify (rebuild under variations), compare and its comparators."""
