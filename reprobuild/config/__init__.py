"""Configuration: the lock, pipelines, YAML with line marks, resolution and the policy table."""
