"""Shared pieces of the pinned Hugging Face reference scripts (DESIGN.md section 4).

The peer is transformers==4.57.1 with torch==2.13.0, installed by `cargo xtask setup`.
"""

import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import DPTConfig

PINNED_TRANSFORMERS = "4.57.1"
PINNED_TORCH = "2.13.0"


def check_pins(script: str) -> None:
    """Refuse to produce reference numbers with another peer than the pinned one."""
    if transformers.__version__ != PINNED_TRANSFORMERS or not torch.__version__.startswith(PINNED_TORCH):
        raise SystemExit(
            f"{script} is pinned to transformers {PINNED_TRANSFORMERS} and torch {PINNED_TORCH}; "
            f"found transformers {transformers.__version__} and torch {torch.__version__}"
        )


def small_config(readout: str, num_layers: int, num_heads: int, out_indices: list) -> DPTConfig:
    """A small plain-ViT DPT (D 64, patch 16, stored position grid for 64 x 64)."""
    return DPTConfig(
        hidden_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=128,
        image_size=64,
        patch_size=16,
        backbone_out_indices=out_indices,
        neck_hidden_sizes=[16, 32, 64, 64],
        fusion_hidden_size=32,
        readout_type=readout,
        reassemble_factors=[4, 2, 1, 0.5],
    )


@torch.no_grad()
def scale_by_fan_in(model) -> None:
    """Fan-in scaled weights (unit-variance activations through the depth) and biases with 0.05 noise.

    HF's N(0, 0.02) weights and zero biases shrink the signal block after block, so that a wrong
    name or a wrong op could hide behind outputs that barely depend on the input.
    """
    for param in model.parameters():
        if param.dim() > 1:
            param.copy_(torch.randn_like(param) * (1.0 / param[0].numel() ** 0.5))
        else:
            param.add_(torch.randn_like(param) * 0.05)


@torch.no_grad()
def perturb_for_parity(model, run) -> None:
    """Make the depth output positive on ~90% of the pixels and varied.

    HF initialises conv/linear weights with N(0, 0.02) and zero biases: the depth output is a
    near-constant ReLU of tiny numbers, behind which a wrong name or a wrong op could hide.
    Fan-in scaled weights, noisy biases and a last bias that puts the 10th percentile of the head's
    pre-activation at zero give a map with structure. `run()` performs one forward pass.
    """
    scale_by_fan_in(model)
    last = model.head.head[4]
    last.bias.zero_()
    captured = {}
    hook = last.register_forward_hook(lambda module, inputs, output: captured.setdefault("pre", output))
    run()
    hook.remove()
    last.bias.fill_(-torch.quantile(captured["pre"].flatten(), 0.1).item())


def write_depth_reference(model, config, pixel_values, out_dir: str) -> None:
    """Perturb `model` for parity, run it on `pixel_values` and write model.safetensors, config.json
    and io.safetensors (pixel_values, predicted_depth) into `out_dir`."""
    perturb_for_parity(model, lambda: model(pixel_values))
    with torch.no_grad():
        depth = model(pixel_values).predicted_depth
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, "model.safetensors"))
    config.to_json_file(os.path.join(out_dir, "config.json"))
    save_file(
        {"pixel_values": pixel_values.contiguous(), "predicted_depth": depth.contiguous()},
        os.path.join(out_dir, "io.safetensors"),
    )
