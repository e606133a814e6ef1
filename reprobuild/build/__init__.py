"""The build: orchestration, parallel units, the action cache, shards, merge, manifest, provenance."""
