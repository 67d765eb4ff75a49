#!/usr/bin/python3
"""Cut the unit-test fixtures of tests/data/tuners out of the peft-tuners
fixture set (PEFT 0.21 adapters of every tuner with seeded random
weights, and PEFT's merge_and_unload of each onto llama-f32).

For each tuner one module is kept: its adapter tensors (and the
adapter's shared tensors), its adapter_config.json, and PEFT's merged
weight as merged.safetensors; base.safetensors holds the base weights
of the kept modules.  Usage: make.py [FIXTURES], FIXTURES defaulting to
../../../../shared/fixtures/peft-tuners relative to this script."""
import json, os, shutil, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    HERE, "../../../../shared/fixtures/peft-tuners")
PREFIX = "base_model.model."
# tuner -> module kept (a Linear of layer 0)
KEEP = {
    "adalora": "model.layers.0.self_attn.v_proj",
    "loha": "model.layers.0.self_attn.v_proj",
    "lokr": "model.layers.0.mlp.down_proj",	# w1 full, w2 a low-rank pair
    "lokr-both": "model.layers.0.self_attn.v_proj",
    "vera": "model.layers.0.self_attn.v_proj",
    "oft": "model.layers.0.self_attn.v_proj",
    "boft": "model.layers.0.self_attn.v_proj",
    "hra": "model.layers.0.self_attn.v_proj",
    "miss": "model.layers.0.self_attn.v_proj",
    "vblora": "model.layers.0.self_attn.v_proj",
    "randlora": "model.layers.0.self_attn.v_proj",
    "shira": "model.layers.0.self_attn.v_proj",
    "c3a": "model.layers.0.self_attn.v_proj",
    "delora": "model.layers.0.self_attn.v_proj",
    "fourierft": "model.layers.0.self_attn.v_proj",	# refused
}


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:
            v["data_offsets"][1]]) for k, v in h.items()}


def read_dir(path):
    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            out.update(read(os.path.join(path, f)))
    return out


def write(path, tensors):
    hdr, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k in sorted(tensors):
        dt, shape, b = tensors[k]
        hdr[k] = {"dtype": dt, "shape": shape,
                  "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(hdr, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


base = read_dir(os.path.join(SRC, "llama-f32"))
keep_base = {}
for k, mod in KEEP.items():
    d = os.path.join(HERE, k)
    os.makedirs(d, exist_ok=True)
    shutil.copy(os.path.join(SRC, f"tuner-{k}", "adapter_config.json"), d)
    ad = read(os.path.join(SRC, f"tuner-{k}", "adapter_model.safetensors"))
    write(os.path.join(d, "adapter_model.safetensors"),
          {n: v for n, v in ad.items()
           if n.startswith(PREFIX + mod + ".") or
           not n.startswith(PREFIX)})
    t = mod + ".weight"
    keep_base[t] = base[t]
    merged = read_dir(os.path.join(SRC, f"merged-tuner-{k}"))
    write(os.path.join(d, "merged.safetensors"), {t: merged[t]})
write(os.path.join(HERE, "base.safetensors"), keep_base)
