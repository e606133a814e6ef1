"""Smoke test of the built artifacts: `python smoke_test.py MODEL_PREFIX [CUSTOM_RELU_SO]`.

Loads the exported model with paddle.inference (the deployment path) and with paddle.jit.load, runs
both on the fixed example input, checks they agree with each other and have the expected shape,
and, given the custom operator library, checks its forward and backward against numpy.
"""

import sys
import zlib  # noqa: F401  (before paddle: libpaddle.so's zlib symbols clash with the system libz)
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import paddle
from paddle import inference
from paddle_model.model import OUTPUT_FEATURES, example_input


def run_inference(prefix: str, x: np.ndarray) -> np.ndarray:
    config = inference.Config(prefix + ".pdmodel", prefix + ".pdiparams")
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.copy_from_cpu(x)
    predictor.run()
    return np.asarray(predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu())


def run_jit(prefix: str, x: np.ndarray) -> np.ndarray:
    layer = paddle.jit.load(prefix)
    layer.eval()
    return np.asarray(layer(paddle.to_tensor(x)).numpy())


def check_custom_relu(library: str) -> None:
    from paddle_model.ops import load_custom_relu

    ops = load_custom_relu(Path(library))
    data = np.array([[-2.0, -0.5, 0.0, 0.5, 2.0]], dtype="float32")
    x = paddle.to_tensor(data, stop_gradient=False)
    y = ops.custom_relu(x)
    y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), np.maximum(data, 0))
    np.testing.assert_array_equal(x.grad.numpy(), (data > 0).astype("float32"))


def main(argv: list[str]) -> int:
    x = example_input()
    a, b = run_inference(argv[1], x), run_jit(argv[1], x)
    assert a.shape == (x.shape[0], OUTPUT_FEATURES), a.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if len(argv) > 2:
        check_custom_relu(argv[2])
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
