#!/usr/bin/env python3
"""Reference outputs of a whole Hugging Face DPTForDepthEstimation, for glassbox's model parity test.

Pinned peer: transformers==4.57.1 with torch==2.13.0 (DESIGN.md section 4). Builds a small random-init
plain-ViT DPT, perturbs its weights so that the depth output is positive and varied, runs it on a random
square image (HF's plain-ViT DPT only takes square inputs; a size other than the config's image_size
makes it resize the position embeddings), and writes into OUT_DIR:

- model.safetensors  the state_dict, HF names
- config.json        HF's own DPTConfig file (layer_norm_eps, backbone_out_indices, ...)
- io.safetensors     pixel_values (B x 3 x S x S) and predicted_depth (B x S x S)

Usage: dpt_reference.py OUT_DIR [--readout project|ignore|add] [--input S] [--seed N]
"""

import argparse

import torch
from reference import check_pins, small_config, write_depth_reference
from transformers import DPTForDepthEstimation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--readout", choices=["project", "ignore", "add"], default="project")
    parser.add_argument("--input", type=int, default=96, help="side of the square input image")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    check_pins("dpt_reference.py")

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    # Six blocks with hooks on blocks 2, 4, 5, 6 (0-based 1, 3, 4, 5), so a wrong hook shows.
    config = small_config(args.readout, num_layers=6, num_heads=4, out_indices=[1, 3, 4, 5])
    model = DPTForDepthEstimation(config).eval()
    pixel_values = torch.randn(args.batch, 3, args.input, args.input)

    write_depth_reference(model, config, pixel_values, args.out_dir)


if __name__ == "__main__":
    main()
