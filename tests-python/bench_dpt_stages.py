#!/usr/bin/env python3
"""Stage-by-stage timings of HF DPTForDepthEstimation's neck and depth head (PyTorch eager), the peer
of crates/trainer/examples/decoder_stages.rs (docs/performance.md, "DPT end to end vs PyTorch").

Pinned peer: transformers==4.57.1 with torch==2.13.0. Builds the dpt-tiny config of bench_dpt.py
(or dpt-base with --model), feeds four random hooked token sequences B x (1 + h*w) x D (what the
ViT hands the neck) and times, in eval mode under torch.no_grad(), each stage on its own input:
reassemble i (Read + Concatenate + Resample, i.e. HF's readout projection and `layers[i]`), neck
conv i, fusion layer j, the depth head, and the whole neck + head. Every stage runs `--warmup`
untimed calls and then `--samples` timed calls; the minimum wall time is reported (the machine is
shared, the minimum is the least disturbed call). `--profile` also prints torch.profiler's per-op
table of the whole neck + head.

Usage: bench_dpt_stages.py [--model dpt-tiny|dpt-base] [--batch B] [--threads N] [--samples S]
"""

import argparse
import json
import os
import resource
import sys
import time

import torch

from bench_dpt import MODELS, build


def min_ms(f, warmup: int, samples: int) -> float:
    """Minimum wall time (ms); prints the minor page faults of the fastest call to stderr when
    GLASSBOX_STAGES_FAULTS is set."""
    for _ in range(warmup):
        f()
    best, faults = float("inf"), 0
    for _ in range(samples):
        flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        f()
        t = time.perf_counter() - start
        if t < best:
            best, faults = t, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt
    if os.environ.get("GLASSBOX_STAGES_FAULTS"):
        print(f"{best * 1e3:9.3f} ms {faults:7} minor faults", file=sys.stderr)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), default="dpt-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, size = build(args.model)
    model.eval()
    hidden = model.config.hidden_size
    g = size // 16
    b = args.batch
    hooks = [torch.randn(b, 1 + g * g, hidden) for _ in range(4)]
    neck, head = model.neck, model.head
    rs = neck.reassemble_stage

    def reassemble(i: int, tokens: torch.Tensor) -> torch.Tensor:
        # HF DPTReassembleStage.forward for one stage, readout = project.
        cls_token, x = tokens[:, 0], tokens[:, 1:]
        x = x.reshape(b, g, g, hidden).permute(0, 3, 1, 2).contiguous()
        shape = x.shape
        x = x.flatten(2).permute((0, 2, 1))
        readout = cls_token.unsqueeze(1).expand_as(x)
        x = rs.readout_projects[i](torch.cat((x, readout), -1))
        x = x.permute(0, 2, 1).reshape(shape)
        return rs.layers[i](x)

    rows = {}
    with torch.no_grad():
        maps = [reassemble(i, t) for i, t in enumerate(hooks)]
        feats = [neck.convs[i](m) for i, m in enumerate(maps)]
        fused = []
        for j, layer in enumerate(neck.fusion_stage.layers):
            skip = feats[3 - j]
            fused.append(layer(skip) if j == 0 else layer(fused[-1], skip))
        for i in range(4):
            rows[f"reassemble{i}"] = min_ms(lambda: reassemble(i, hooks[i]), args.warmup, args.samples)
        for i in range(4):
            rows[f"neck_conv{i}"] = min_ms(lambda: neck.convs[i](maps[i]), args.warmup, args.samples)
        for j, layer in enumerate(neck.fusion_stage.layers):
            if j == 0:
                rows["fusion0"] = min_ms(lambda: layer(feats[3]), args.warmup, args.samples)
            else:
                rows[f"fusion{j}"] = min_ms(lambda: layer(fused[j - 1], feats[3 - j]), args.warmup, args.samples)
        rows["head"] = min_ms(lambda: head(fused), args.warmup, args.samples)
        rows["stages_sum"] = sum(rows.values())
        seq = head.head
        h0 = seq[0](fused[3])
        h1 = seq[1](h0)
        h2 = seq[2](h1)
        h3 = seq[3](h2)
        h4 = seq[4](h3)
        ops = {
            "head_op_conv0": lambda: seq[0](fused[3]),
            "head_op_upsample": lambda: seq[1](h0),
            "head_op_conv2": lambda: seq[2](h1),
            "head_op_relu": lambda: seq[3](h2),
            "head_op_conv4": lambda: seq[4](h3),
            "head_op_relu_last": lambda: seq[5](h4),
        }
        op_rows = {k: min_ms(f, args.warmup, args.samples) for k, f in ops.items()}

        def whole() -> torch.Tensor:
            return head(neck(hooks, g, g))

        rows["neck_and_head"] = min_ms(whole, args.warmup, args.samples)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                whole()
            print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=40))
    rows.update(op_rows)
    print(json.dumps({"model": args.model, "batch": b, "threads": torch.get_num_threads(), "min_ms": rows}))


if __name__ == "__main__":
    main()
