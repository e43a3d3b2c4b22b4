#!/usr/bin/env python3
"""Loads a lockstep checkpoint's generator into a PyTorch nn.Sequential.

The README's snippet, runnable: builds nn.Sequential from the layer list in
the checkpoint's config, loads the `generator.*` tensors with
safetensors.torch.load_file (strict: names and shapes must match) and prints,
as JSON, G(z) for the probe latents z[i, j] = sin(7 i + j) (i < 4), each
output flattened (an image in NCHW order).  Layers: linear, conv (Conv2d),
conv_t (ConvTranspose2d), reshape (Unflatten), flatten and the activations.

  python3 scripts/torch_load_generator.py runs/RUN/checkpoints/step-0100000.safetensors
"""
import json, math, sys, tomllib

import torch
from safetensors import safe_open
from safetensors.torch import load_file


class Scale(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return x * self.s


def build(layers, width):
    """nn.Sequential for a lockstep layer list on inputs of `width` features
    (the generator's latent), tracking the (C, H, W) shape as lockstep does."""
    mods, shape = [], (width, 1, 1)
    for spec in layers:
        name, *arg = spec.split()
        if name == "linear":
            mods.append(torch.nn.Linear(shape[0] * shape[1] * shape[2], int(arg[0])))
            shape = (int(arg[0]), 1, 1)
        elif name in ("conv", "conv_t"):
            out, k, s, p = map(int, arg)
            if name == "conv":
                mods.append(torch.nn.Conv2d(shape[0], out, k, s, p))
                size = lambda n: (n + 2 * p - k) // s + 1
            else:
                mods.append(torch.nn.ConvTranspose2d(shape[0], out, k, s, p))
                size = lambda n: (n - 1) * s - 2 * p + k
            shape = (out, size(shape[1]), size(shape[2]))
        elif name == "reshape":
            shape = tuple(map(int, arg))
            mods.append(torch.nn.Unflatten(1, shape))
        elif name == "flatten":
            mods.append(torch.nn.Flatten())
            shape = (shape[0] * shape[1] * shape[2], 1, 1)
        elif name == "relu":
            mods.append(torch.nn.ReLU())
        elif name == "leaky_relu":
            mods.append(torch.nn.LeakyReLU(float(arg[0])))
        elif name == "tanh":
            mods.append(torch.nn.Tanh())
        elif name == "sigmoid":
            mods.append(torch.nn.Sigmoid())
        elif name == "scale":
            mods.append(Scale(float(arg[0])))
        else:
            raise SystemExit(f"unknown layer {spec!r}")
    return torch.nn.Sequential(*mods)


def main(path):
    with safe_open(path, "pt") as f:
        cfg = tomllib.loads(f.metadata()["config"])
    latent = cfg["train"]["latent"]
    G = build(cfg["generator"]["layers"], latent)
    state = {k[len("generator."):]: v for k, v in load_file(path).items() if k.startswith("generator.")}
    G.load_state_dict(state, strict=True)
    z = torch.tensor([[math.sin(7 * i + j) for j in range(latent)] for i in range(4)], dtype=torch.float32)
    with torch.no_grad():
        print(json.dumps({"outputs": G(z).flatten(1).tolist()}))


if __name__ == "__main__":
    main(sys.argv[1])
