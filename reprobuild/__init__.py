"""reprobuild: hermetic, byte-reproducible builds of Go services and Paddle models, with proof."""

__version__ = "0.1.0"
