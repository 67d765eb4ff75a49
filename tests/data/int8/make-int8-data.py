#!/usr/bin/python3
"""Write the 8-bit test data in tests/data/int8 from the fixtures
(../shared/fixtures/bnb-int8): bitsandbytes' CUDA int8_vectorwise_quant
cases and transformers' GPT-2 checkpoints.

usage: make-int8-data.py [FIXTURE_DIR]

codec.safetensors: for each case k of cases.json, some of its rows (rows
are coded independently): all of a small case, else the rows where a
float32 rint(x * 127 / absmax) misses the GPU's code, the rows of zeros,
and the first two.
  in.k (input dtype), k.CB (I8), k.SCB (F32), k.dequant (F32)
gpt2/: the first block's attention of the tiny GPT-2 (two Conv1D weights
with their biases) and its config.json.
"""
import json, os, shutil, struct, sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    HERE, "..", "..", "..", "..", "shared", "fixtures", "bnb-int8")

NP = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16,
      "I8": np.int8, "U8": np.uint8}


def read(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for k, v in h.items():
        s, e = v["data_offsets"]
        a = np.frombuffer(b[8 + n + s:8 + n + e], dtype=NP[v["dtype"]])
        out[k] = (v["dtype"], a.reshape(v["shape"]))
    return out


def write(path, tensors):
    h, off, blobs = {}, 0, []
    for k in sorted(tensors):
        dt, a = tensors[k]
        raw = np.ascontiguousarray(a).tobytes()
        h[k] = {"dtype": dt, "shape": list(a.shape),
                "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    hj = json.dumps(h, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))


def as_f32(dt, a):
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


G = read(os.path.join(FIX, "codec.safetensors"))
cases = json.load(open(os.path.join(FIX, "cases.json")))["cases"]
out = {}
for c in cases:
    k = c["id"]
    dt, x = G[f"in.{k}"]
    cb = G[f"{k}.CB"][1]
    if x.size <= 2560:
        rows = np.arange(x.shape[0])
    else:
        h = as_f32(dt, x).astype(np.float16).astype(np.float32)
        am = np.abs(h).max(axis=1)
        with np.errstate(all="ignore"):
            ieee = np.nan_to_num(np.rint(h * (np.float32(127) / am)[:, None]))
        miss = np.nonzero((ieee.astype(np.int8) != cb).any(axis=1))[0]
        zero = np.nonzero(am == 0)[0]
        rows = np.union1d(np.union1d(np.arange(2), miss), zero)
    out[f"in.{k}"] = (dt, x[rows])
    out[f"{k}.CB"] = ("I8", cb[rows])
    out[f"{k}.SCB"] = ("F32", G[f"{k}.SCB"][1][rows])
    out[f"{k}.dequant"] = ("F32", G[f"{k}.dequant"][1][rows])
write(os.path.join(HERE, "codec.safetensors"), out)

src = os.path.join(FIX, "gpt2-bf16")
m = read(os.path.join(src, "model.safetensors"))
keep = {k: v for k, v in m.items()
        if k.startswith("transformer.h.0.attn.")}
os.makedirs(os.path.join(HERE, "gpt2"), exist_ok=True)
write(os.path.join(HERE, "gpt2", "model.safetensors"), keep)
shutil.copyfile(os.path.join(src, "config.json"),
                os.path.join(HERE, "gpt2", "config.json"))
