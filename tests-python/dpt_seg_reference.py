#!/usr/bin/env python3
"""Reference outputs of a whole Hugging Face DPTForSemanticSegmentation, for glassbox's model parity test.

Pinned peer: transformers==4.57.1 with torch==2.13.0 (DESIGN.md section 4). Builds a small random-init
plain-ViT DPT with 5 classes, batch norm in the fusion residual units and the auxiliary head, in eval
mode; perturbs its weights so that the logits vary over pixels and classes (every class wins somewhere)
and gives every batch norm non-trivial running statistics (so a missing BN import would show); runs it
on a random square image (HF's plain-ViT DPT only takes square inputs; a size other than the config's
image_size makes it resize the position embeddings) and writes into OUT_DIR:

- model.safetensors  the state_dict, HF names
- config.json        HF's own DPTConfig file, with architectures = ["DPTForSemanticSegmentation"]
                     so that the loader can tell the task
- io.safetensors     pixel_values (B x 3 x S x S), logits (B x K x S x S), auxiliary_logits (the
                     auxiliary head's output, which HF does not return, captured by a forward hook and
                     resized to S x S bilinearly with align_corners=False as HF does in its loss) and
                     auxiliary_logits_native (the same before resizing, B x K x S/2 x S/2)

Usage: dpt_seg_reference.py OUT_DIR [--input S] [--batch B] [--seed N]
"""

import argparse
import os

import torch
from reference import check_pins, scale_by_fan_in, small_config
from safetensors.torch import save_file
from torch import nn
from transformers import DPTForSemanticSegmentation

NUM_LABELS = 5


@torch.no_grad()
def perturb_for_logits(model, run) -> None:
    """Make the logits of both heads vary over pixels and classes.

    Fan-in scaled weights and noisy biases as for depth; batch norms get affine parameters away
    from (1, 0) and running statistics away from (0, 1) (running_var uniform in [0.5, 2]), so that
    a batch norm skipped or loaded without its buffers changes the output. Each classifier's bias
    then centres its class scores (minus their mean, plus noise) so that no class wins everywhere.
    `run()` performs one forward pass.
    """
    scale_by_fan_in(model)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.1)
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    classifiers = {"head": model.head.head[4], "auxiliary": model.auxiliary_head.head[4]}
    captured = {}
    hooks = []
    for name, conv in classifiers.items():
        conv.bias.zero_()
        hooks.append(conv.register_forward_hook(lambda m, i, o, name=name: captured.setdefault(name, o)))
    run()
    for hook in hooks:
        hook.remove()
    for name, conv in classifiers.items():
        scores = captured[name]
        mean = scores.mean(dim=(0, 2, 3))
        conv.bias.copy_(-mean + torch.randn_like(mean) * 0.1 * scores.std().item())


def check_not_trivial(name: str, logits: torch.Tensor) -> None:
    """Refuse logits that are near-constant or where some class never wins."""
    spread = (logits.std() / logits.abs().mean()).item()
    winners = torch.bincount(logits.argmax(dim=1).flatten(), minlength=logits.shape[1]).float()
    share = (winners / winners.sum()).min().item()
    if spread < 0.2 or share < 0.02:
        raise SystemExit(f"{name} are trivial: std / mean |x| = {spread:.3f}, rarest class wins {share:.3%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--input", type=int, default=96, help="side of the square input image")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    check_pins("dpt_seg_reference.py")

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    # Six blocks with hooks on blocks 2, 4, 5, 6 (0-based 1, 3, 4, 5), so a wrong hook shows.
    config = small_config("project", num_layers=6, num_heads=4, out_indices=[1, 3, 4, 5])
    config.num_labels = NUM_LABELS
    config.use_batch_norm_in_fusion_residual = True
    config.use_auxiliary_head = True
    config.semantic_classifier_dropout = 0.1
    config.architectures = ["DPTForSemanticSegmentation"]
    model = DPTForSemanticSegmentation(config).eval()
    pixel_values = torch.randn(args.batch, 3, args.input, args.input)

    perturb_for_logits(model, lambda: model(pixel_values))
    captured = {}
    hook = model.auxiliary_head.register_forward_hook(lambda m, i, o: captured.setdefault("aux", o))
    with torch.no_grad():
        logits = model(pixel_values).logits
    hook.remove()
    auxiliary_native = captured["aux"]
    auxiliary = nn.functional.interpolate(
        auxiliary_native, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False
    )
    check_not_trivial("logits", logits)
    check_not_trivial("auxiliary logits", auxiliary)

    os.makedirs(args.out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(args.out_dir, "model.safetensors"))
    config.to_json_file(os.path.join(args.out_dir, "config.json"))
    save_file(
        {
            "pixel_values": pixel_values.contiguous(),
            "logits": logits.contiguous(),
            "auxiliary_logits": auxiliary.contiguous(),
            "auxiliary_logits_native": auxiliary_native.contiguous(),
        },
        os.path.join(args.out_dir, "io.safetensors"),
    )


if __name__ == "__main__":
    main()
