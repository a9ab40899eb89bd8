#!/usr/bin/env python3
"""Reference outputs of a Hugging Face DPT-Hybrid DPTForDepthEstimation, for glassbox's hybrid parity test.

Pinned peer: transformers==4.57.1 with torch==2.13.0 (DESIGN.md section 4). Builds a small random-init
DPT-Hybrid (BitBackbone with bottleneck blocks, GroupNorm and weight-standardised convolutions, SAME
padding), perturbs its weights so that the depth output is positive and varied, runs it on random square
images of another size than the config's (HF's hybrid reshapes tokens to a square grid, and only resizes
its position embeddings with `interpolate_pos_encoding`, which DPTModel does not pass on, so the check is
lifted here; the computation is the one HF runs), and writes into OUT_DIR:

- model.safetensors  the state_dict, HF names
- config.json        HF's own DPTConfig file, with the BitConfig as backbone_config
- io.safetensors     pixel_values (B x 3 x S x S) and predicted_depth (B x S x S)

Usage: dpt_hybrid_reference.py OUT_DIR [--input S] [--batch B] [--seed N]
"""

import argparse
import functools

import torch
from reference import check_pins, write_depth_reference
from transformers import BitConfig, DPTConfig, DPTForDepthEstimation


def hybrid_config() -> DPTConfig:
    """A small DPT-Hybrid: BiT widths 32, 64, 128 (1, 2, 2 blocks, 4 groups), D 64, 6 blocks.

    backbone_out_indices [0, 1, 3, 5]: the hybrid reads only the last two (blocks 4 and 6), so a
    wrong hook shows; reassemble_factors [1, 1, 1, 0.5] as dpt-hybrid-midas has them (the first two
    are unused by the hybrid).
    """
    bit = BitConfig(
        embedding_size=16,
        hidden_sizes=[32, 64, 128],
        depths=[1, 2, 2],
        num_groups=4,
        layer_type="bottleneck",
        global_padding="same",
        embedding_dynamic_padding=True,
        out_features=["stage1", "stage2", "stage3"],
    )
    return DPTConfig(
        is_hybrid=True,
        backbone_config=bit,
        backbone_featmap_shape=[1, 128, 4, 4],
        hidden_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=64,
        patch_size=16,
        backbone_out_indices=[0, 1, 3, 5],
        neck_hidden_sizes=[32, 64, 64, 64],
        fusion_hidden_size=32,
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--input", type=int, default=96, help="side of the square input image (a multiple of 32, so that the depth comes back at it)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    check_pins("dpt_hybrid_reference.py")

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    config = hybrid_config()
    model = DPTForDepthEstimation(config).eval()
    embeddings = model.dpt.embeddings
    embeddings.forward = functools.partial(embeddings.forward, interpolate_pos_encoding=True)
    pixel_values = torch.randn(args.batch, 3, args.input, args.input)

    write_depth_reference(model, config, pixel_values, args.out_dir)


if __name__ == "__main__":
    main()
