#!/usr/bin/env python3
"""PyTorch-eager timings of Hugging Face DPTForDepthEstimation, the peer of glassbox's `dpt` bench.

Pinned peer: transformers==4.57.1 with torch==2.13.0. Builds the same random-init DPTs
as glassbox's presets (dpt-tiny: ViT-Tiny/16 at 256 x 256, C = [48, 96, 192, 384], F = 64; dpt-base:
ViT-Base/16 at 384 x 384, C = [96, 192, 384, 768], F = 256; both hooks {3, 6, 9, 12}, readout
project; and their DPT-Hybrids hybrid-tiny and dpt-hybrid, the same ViTs on a BiT ResNet stem) and times, exactly as crates/trainer/benches/dpt.rs does:

- inference: eval mode, torch.no_grad(), one forward of B random images;
- encoder inference: the same, ViT backbone only (`model.dpt`, as DPTForDepthEstimation calls it);
- train step: train mode, forward, loss = mean(predicted_depth), optimizer.zero_grad(),
  loss.backward(), Adam(lr 1e-4).step().

HF's default attention implementation (SDPA) is used: that is what `DPTForDepthEstimation` runs
out of the box in eager mode. Each case gets `--warmup` untimed calls, then `--samples` timed calls;
the median is reported. `--clock cpu` times process CPU time (user + system, all threads) instead of
wall time, as the Rust side's GLASSBOX_BENCH_CLOCK=cpu does. Prints one JSON object: {"threads", "torch", "transformers", "cases": [{"name",
"median_ms", "min_ms", "samples_ms"}]}.

Usage: bench_dpt.py [--threads N] [--warmup W] [--samples S] [--cases a,b,...] [--clock wall|cpu]
"""

import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import BitConfig, DPTConfig, DPTForDepthEstimation

from reference import check_pins

# name -> (hidden, heads, neck channels, fusion, image size)
MODELS = {
    "dpt-tiny": (192, 3, [48, 96, 192, 384], 64, 256),
    "dpt-base": (768, 12, [96, 192, 384, 768], 256, 384),
    "hybrid-tiny": (192, 3, [48, 96, 192, 384], 64, 256),
    "dpt-hybrid": (768, 12, [256, 512, 768, 768], 256, 384),
}

# The ResNet stems of the hybrid presets (glassbox's BitConfig::tiny and BitConfig::resnet50).
STEMS = {
    "hybrid-tiny": dict(embedding_size=32, hidden_sizes=[48, 96, 192], depths=[1, 1, 2], num_groups=8),
    "dpt-hybrid": dict(embedding_size=64, hidden_sizes=[256, 512, 1024], depths=[3, 4, 9], num_groups=32),
}

# case name (the criterion bench uses the same names) -> (model, mode, batch)
CASES = {
    "dpt-tiny/inference": ("dpt-tiny", "inference", 8),
    "dpt-tiny/train_step": ("dpt-tiny", "train_step", 8),
    "dpt-base/inference": ("dpt-base", "inference", 1),
    "dpt-base/train_step": ("dpt-base", "train_step", 2),
    "dpt-tiny/encoder_inference": ("dpt-tiny", "encoder_inference", 8),
    "dpt-base/encoder_inference": ("dpt-base", "encoder_inference", 1),
    "hybrid-tiny/inference": ("hybrid-tiny", "inference", 8),
    "hybrid-tiny/train_step": ("hybrid-tiny", "train_step", 8),
    "hybrid-tiny/encoder_inference": ("hybrid-tiny", "encoder_inference", 8),
    "dpt-hybrid/inference": ("dpt-hybrid", "inference", 1),
    "dpt-hybrid/train_step": ("dpt-hybrid", "train_step", 2),
    "dpt-hybrid/encoder_inference": ("dpt-hybrid", "encoder_inference", 1),
}


def build(name: str) -> tuple[DPTForDepthEstimation, int]:
    """The random-init HF model of a preset; refuses to run against another peer than the pinned one."""
    check_pins("bench_dpt.py")
    hidden, heads, channels, fusion, size = MODELS[name]
    hybrid = {}
    if name in STEMS:
        stem = STEMS[name]
        hybrid = dict(
            is_hybrid=True,
            backbone_config=BitConfig(
                layer_type="bottleneck",
                global_padding="same",
                embedding_dynamic_padding=True,
                out_features=["stage1", "stage2", "stage3"],
                **stem,
            ),
            backbone_featmap_shape=[1, stem["hidden_sizes"][2], size // 16, size // 16],
        )
    config = DPTConfig(
        **hybrid,
        hidden_size=hidden,
        num_hidden_layers=12,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        image_size=size,
        patch_size=16,
        backbone_out_indices=[2, 5, 8, 11],
        neck_hidden_sizes=channels,
        fusion_hidden_size=fusion,
        readout_type="project",
        reassemble_factors=[4, 2, 1, 0.5],
        layer_norm_eps=1e-6,
    )
    return DPTForDepthEstimation(config), size


def time_case(model, mode: str, images: torch.Tensor, warmup: int, samples: int, clock) -> list[float]:
    if mode == "inference":
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(images).predicted_depth

    elif mode == "encoder_inference":
        model.eval()

        def step() -> None:
            # What DPTForDepthEstimation.forward runs before the neck.
            with torch.no_grad():
                model.dpt(images, output_hidden_states=True)

    else:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            loss = model(images).predicted_depth.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(samples):
        start = clock()
        step()
        times.append((clock() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (torch.set_num_threads)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: time.perf_counter; cpu: time.process_time (user + system time of all threads)",
    )
    args = parser.parse_args()

    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {list(CASES)}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for case in names:
        model_name, mode, batch = CASES[case]
        model, size = build(model_name)
        images = torch.randn(batch, 3, size, size)
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        times = time_case(model, mode, images, args.warmup, args.samples, clock)
        results.append(
            {
                "name": case,
                "median_ms": statistics.median(times),
                "min_ms": min(times),
                "samples_ms": times,
            }
        )
        del model
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "attn_implementation": "sdpa",
                "clock": args.clock,
                "cases": results,
            }
        )
    )


if __name__ == "__main__":
    main()
