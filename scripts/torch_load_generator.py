#!/usr/bin/env python3
"""Loads a lockstep checkpoint's generator into a PyTorch nn.Sequential.

The README's snippet, runnable: builds nn.Sequential from the layer list in
the checkpoint's config, loads the `generator.*` tensors with
safetensors.torch.load_file (strict: names and shapes must match) and prints,
as JSON, G(z) for the probe latents z[i, j] = sin(7 i + j) (i < 4).

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
    mods = []
    for spec in layers:
        name, *arg = spec.split()
        if name == "linear":
            mods.append(torch.nn.Linear(width, int(arg[0])))
            width = int(arg[0])
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
        print(json.dumps({"outputs": G(z).tolist()}))


if __name__ == "__main__":
    main(sys.argv[1])
