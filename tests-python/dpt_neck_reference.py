#!/usr/bin/env python3
"""Reference outputs of the Hugging Face DPT neck and depth head, for glassbox-decoder parity tests.

Pinned peer: transformers==4.57.1 with torch==2.13.0 (DESIGN.md section 4). The script builds a small
random-init `DPTForDepthEstimation`, perturbs its weights so that the depth output is not trivially
zero, feeds random hook token sequences (readout token first) through `model.neck(hidden_states,
patch_height, patch_width)` and `model.head(fused)`, and writes into OUT_DIR:

- model.safetensors   the full state_dict (encoder tensors `dpt.*` included; the Rust side skips them)
- io.safetensors      hidden_states.{i} (B x (1 + h*w) x D), fused.{j} (the neck outputs in HF order,
                      j = 0 from the deepest hook) and depth (B x H' x W', HF's own head output)
- config.json         the DPTConfig and the arguments, for humans

Usage: dpt_neck_reference.py OUT_DIR [--readout project|ignore|add] [--grid H W] [--batch B] [--seed S]
"""

import argparse
import json
import os

import torch
from reference import check_pins, perturb_for_parity, small_config
from safetensors.torch import save_file
from transformers import DPTForDepthEstimation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--readout", choices=["project", "ignore", "add"], default="project")
    parser.add_argument("--grid", type=int, nargs=2, default=[4, 4], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    check_pins("dpt_neck_reference.py")

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    patch_h, patch_w = args.grid
    config = small_config(args.readout, num_layers=4, num_heads=2, out_indices=[0, 1, 2, 3])
    model = DPTForDepthEstimation(config).eval()

    tokens = 1 + patch_h * patch_w
    hidden_states = [torch.randn(args.batch, tokens, config.hidden_size) for _ in range(4)]

    perturb_for_parity(model, lambda: model.head(model.neck(hidden_states, patch_h, patch_w)))

    with torch.no_grad():
        fused = model.neck(hidden_states, patch_h, patch_w)
        depth = model.head(fused)

    os.makedirs(args.out_dir, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(args.out_dir, "model.safetensors"))
    io = {f"hidden_states.{i}": h.contiguous() for i, h in enumerate(hidden_states)}
    io.update({f"fused.{j}": f.contiguous() for j, f in enumerate(fused)})
    io["depth"] = depth.contiguous()
    save_file(io, os.path.join(args.out_dir, "io.safetensors"))
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump({"args": vars(args), "dpt_config": config.to_dict()}, f, indent=2, default=str)


if __name__ == "__main__":
    main()
