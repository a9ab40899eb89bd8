#!/usr/bin/env python3
"""Part-by-part timings of one HF DPTForDepthEstimation train step (PyTorch eager), the peer of
crates/trainer/examples/train_step_parts.rs (docs/performance.md, "train step, part by part").

Pinned peer: transformers==4.57.1 with torch==2.13.0. Same setup as the train_step case of
bench_dpt.py (random init, N(0, 1) images, train mode, loss = mean(predicted_depth), Adam(lr 1e-4)),
but each part is timed on its own: forward (train mode), loss, zero_grad, backward, optimizer step.
`--part encoder` runs the ViT backbone alone (`model.dpt`, loss = sum of the means of the four
hooked hidden states the neck reads), the peer of the Rust side's `--part encoder`. Reports every
part's minimum and median over `--samples` steps after `--warmup` steps.

`--size S` overrides the model's image size (the training loop's 64 x 64, say); `--optimizer adamw`
steps torch.optim.AdamW (lr 6e-4, weight decay 0.01) instead of Adam, the trainer's optimiser.

Usage: bench_dpt_train_parts.py [--model dpt-tiny|dpt-base] [--batch B] [--part dpt|encoder]
       [--threads N] [--warmup W] [--samples S] [--size S] [--optimizer adam|adamw]
"""

import argparse
import json
import statistics
import time

import torch

from bench_dpt import MODELS, build

PARTS = ["forward", "loss", "zero_grad", "backward", "step", "total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), default="dpt-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--part", choices=["dpt", "encoder"], default="dpt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--optimizer", choices=["adam", "adamw"], default="adam")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, size = build(args.model)
    size = args.size or size
    model.train()
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.01)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, size, size)
    hooks = model.config.backbone_out_indices

    def forward() -> list[torch.Tensor]:
        if args.part == "dpt":
            return [model(images).predicted_depth]
        # What DPTForDepthEstimation.forward hands the neck (hidden_states[1:] at the hook indices).
        states = model.dpt(images, output_hidden_states=True).hidden_states[1:]
        return [s for i, s in enumerate(states) if i in hooks]

    times = []
    for i in range(args.warmup + args.samples):
        t = []
        all_start = start = time.perf_counter()
        out = forward()
        t.append(time.perf_counter() - start)
        start = time.perf_counter()
        loss = sum(o.mean() for o in out)
        t.append(time.perf_counter() - start)
        start = time.perf_counter()
        optimizer.zero_grad()
        t.append(time.perf_counter() - start)
        start = time.perf_counter()
        loss.backward()
        t.append(time.perf_counter() - start)
        start = time.perf_counter()
        optimizer.step()
        t.append(time.perf_counter() - start)
        t.append(time.perf_counter() - all_start)
        if i >= args.warmup:
            times.append([x * 1e3 for x in t])
    parts = {
        name: {
            "min_ms": round(min(t[k] for t in times), 1),
            "median_ms": round(statistics.median(t[k] for t in times), 1),
        }
        for k, name in enumerate(PARTS)
    }
    print(
        json.dumps(
            {
                "side": "pytorch",
                "model": args.model,
                "part": args.part,
                "batch": args.batch,
                "threads": torch.get_num_threads(),
                "samples": args.samples,
                "parts": parts,
            }
        )
    )


if __name__ == "__main__":
    main()
