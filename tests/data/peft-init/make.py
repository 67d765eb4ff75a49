#!/usr/bin/python3
"""Cut the small pieces the unit tests need out of PEFT 0.21's own
initialisations of the tiny Llama (tests/data/lora/llama-f32): the
lora_A and lora_B of model.layers.0.self_attn.k_proj as PEFT's
init_lora_weights="olora" and "pissa" wrote them (r=8, lora_alpha=8).

usage: make.py FIXTURES_DIR (the directory holding peft-init/)"""
import json, os, struct, sys

KEY = "base_model.model.model.layers.0.self_attn.k_proj.lora_%s.weight"


def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items()}


def write(path, t):
    h, off, data = {}, 0, b""
    for k in sorted(t):
        dt, shape, raw = t[k]
        h[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    s = json.dumps(h, separators=(",", ":")).encode()
    s += b" " * (-len(s) % 8)
    open(path, "wb").write(struct.pack("<Q", len(s)) + s + data)


here = os.path.dirname(os.path.abspath(__file__))
for m in ("olora", "pissa"):
    t = read(os.path.join(sys.argv[1], "peft-init", "init-" + m, "init", "adapter_model.safetensors"))
    write(os.path.join(here, m + "-k_proj.safetensors"), {KEY % x: t[KEY % x] for x in "AB"})
