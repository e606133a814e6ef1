"""A small Paddle model and a custom ReLU operator, packaged together (the example reprobuild builds)."""

from paddle_model.model import INPUT_FEATURES, OUTPUT_FEATURES, TinyNet, example_input
from paddle_model.ops import custom_relu, load_custom_relu

__all__ = ["INPUT_FEATURES", "OUTPUT_FEATURES", "TinyNet", "custom_relu", "example_input", "load_custom_relu"]
__version__ = "0.1.0"
