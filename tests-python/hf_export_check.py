#!/usr/bin/env python3
"""Loads a folder written by `glassbox export --format hf` the way a user would, and runs it.

Pinned peer: transformers==4.57.1 with torch==2.13.0 (DESIGN.md section 4). `from_pretrained` must
report no missing, unexpected or mismatched key; the model (the class its config.json names) then
runs on `pixel_values` from INPUT (a safetensors file) and writes OUT (a safetensors file) with
`predicted_depth` (depth models) or `logits` (segmentation models), and `loading_info.json` beside
it. Exits non-zero, naming the keys, when loading is not clean.

Usage: hf_export_check.py MODEL_DIR INPUT OUT
"""

import json
import os
import sys

import torch
from reference import check_pins
from safetensors.torch import load_file, save_file
from transformers import DPTForDepthEstimation, DPTForSemanticSegmentation


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    model_dir, input_path, out_path = sys.argv[1:]
    check_pins("hf_export_check.py")
    torch.set_num_threads(1)
    with open(os.path.join(model_dir, "config.json")) as f:
        architectures = json.load(f).get("architectures", [])
    cls = DPTForSemanticSegmentation if "DPTForSemanticSegmentation" in architectures else DPTForDepthEstimation
    model, info = cls.from_pretrained(model_dir, output_loading_info=True)
    info = {k: [str(x) for x in v] for k, v in info.items()}
    with open(os.path.join(os.path.dirname(out_path), "loading_info.json"), "w") as f:
        json.dump(info, f, indent=1)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"from_pretrained({model_dir}) was not clean: {problems}")
    model.eval()
    pixel_values = load_file(input_path)["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values)
    result = {"predicted_depth": out.predicted_depth} if cls is DPTForDepthEstimation else {"logits": out.logits}
    save_file({k: v.contiguous() for k, v in result.items()}, out_path)


if __name__ == "__main__":
    main()
