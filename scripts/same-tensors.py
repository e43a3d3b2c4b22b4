#!/usr/bin/env python3
"""Exits 0 when two safetensors files hold bitwise the same tensors (names,
dtypes, shapes and bytes), whatever their metadata; prints the first
difference otherwise.  Usage: scripts/same-tensors.py A.safetensors B.safetensors"""
import json
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}


a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
if a.keys() != b.keys():
    sys.exit(f"different tensors: {sorted(a.keys() ^ b.keys())}")
for k in sorted(a):
    if a[k] != b[k]:
        sys.exit(f"tensor {k} differs")
print(f"{len(a)} tensors bitwise the same")
