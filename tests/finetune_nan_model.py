"""Writes a copy of an ONNX model whose embedding row ROW is NaN.

Usage: finetune_nan_model.py IN.onnx OUT.onnx ROW

Used by tests/finetune.rs to make real non-finite losses: every sequence that
holds token ROW produces NaN logits.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main() -> None:
    src, dst, row = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = onnx.load(src)
    for i, init in enumerate(model.graph.initializer):
        if "embed_tokens" in init.name:
            table = numpy_helper.to_array(init).copy()
            table[row, :] = np.nan
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(table, init.name))
            break
    else:
        raise SystemExit(f"{src}: no embedding table found")
    onnx.save(model, dst)


if __name__ == "__main__":
    main()
