"""Export TinyNet for inference: `python export.py OUT_PREFIX` writes OUT_PREFIX.pdmodel/.pdiparams.

A plain script: reprobuild's harness runs it unchanged and makes the export reproducible
(seeds, a fresh unique-name scope, op_callstack removed). Run directly, it works too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paddle
from paddle_model.model import INPUT_FEATURES, TinyNet


def main(prefix: str) -> None:
    model = TinyNet()
    model.eval()
    spec = [paddle.static.InputSpec(shape=[None, INPUT_FEATURES], dtype="float32", name="x")]
    paddle.jit.save(model, prefix, input_spec=spec)


if __name__ == "__main__":
    main(sys.argv[1])
