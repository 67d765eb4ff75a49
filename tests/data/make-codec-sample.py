#!/usr/bin/python3
"""Write tests/data/codec-sample.bin: a sample of the bitsandbytes CUDA codec
fixtures (../shared/fixtures/bnb), for tests/unit/check_nf4.c.

usage: make-codec-sample.py [FIXTURE_DIR [OUTPUT]]

Layout, all little-endian:
  "PQSAMPL1"  u32 ninputs  u32 ncases  u32 nb8
  inputs:  u8 dtype (0 F32, 1 F16, 2 BF16)  u8 finite  u16 0  u64 n
           data[n * size]
  cases:   u32 id  u32 input  u8 type (0 NF4, 1 FP4)  u8 dq  u8 has_dequant
           u8 kind (0 normal, 1 outliers, 2 uniform, 3 zeros-block,
           4 midpoints, 5 nonfinite)  u32 blocksize
           packed[(n+1)/2]  absmax f32[nb] (dequantized when dq)
           dq: offset f32, qabsmax u8[nb], nested f32[ceil(nb/256)]
           has_dequant: dequant[n * size] (input dtype)
  b8:      u64 n  input f32[n]  codes u8[n]  absmax f32[ceil(n/256)]
           dequant f32[n]
"""
import json, os, struct, sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    HERE, "..", "..", "..", "shared", "fixtures", "bnb")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    HERE, "codec-sample.bin")

# (input, case filter, dequant outputs kept)
PICK = [
    ("in.36", None, 3),        # 37x51 normal f32: every type, blocksize, dq
    ("in.41", None, 3),        # 37x51 outliers bf16: every type, blocksize, dq
    ("in.59", None, 2),        # 1x4097 outliers bf16: every type, blocksize, dq
    ("in.37", None, 1),        # 37x51 normal f16
    ("in.47", None, 1),        # 37x51 zeros-block bf16
    ("in.46", None, 1),        # 37x51 zeros-block f16
    ("in.48", None, 1),        # 37x51 midpoints f32 (finite)
    ("in.85", None, 1),        # 300x11 midpoints f16 (finite)
    ("in.53", None, 1),        # 37x51 nonfinite bf16
]
B8 = ["b8.1", "b8.3"]          # 256 outliers, 1000 normal
DTYPES = {"F32": (0, "<u4", 4), "F16": (1, "<u2", 2), "BF16": (2, "<u2", 2)}
NPDT = {"F32": "<f4", "F16": "<u2", "BF16": "<u2", "U8": "u1"}
KINDS = ["normal", "outliers", "uniform", "zeros-block", "midpoints",
         "nonfinite"]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    hdr.pop("__metadata__", None)
    out = {}
    for k, v in hdr.items():
        s, e = v["data_offsets"]
        out[k] = (v["dtype"], np.frombuffer(data[s:e], NPDT[v["dtype"]]))
    return out


def finite(dt, a):
    if dt == "F32":
        return bool(np.all(np.isfinite(a.view("<f4"))))
    bits = a.view("<u2").astype(np.uint32)
    mask, inf = (0x7c00, 0x7c00) if dt == "F16" else (0x7f80, 0x7f80)
    return bool(np.all((bits & mask) != inf))


def main():
    G = read_safetensors(os.path.join(FIX, "codec-cuda.safetensors"))
    cases = json.load(open(os.path.join(FIX, "cases.json")))["cases"]
    inputs, body_in, body_cases, ncases = [], b"", b"", 0
    for name, filt, ndeq in PICK:
        dt, raw = G[name]
        idx = len(inputs)
        inputs.append(name)
        n = raw.size
        body_in += struct.pack("<BBHQ", DTYPES[dt][0], finite(dt, raw), 0, n)
        body_in += raw.tobytes()
        for c in cases:
            if c["input"] != name or (filt and not filt(c)):
                continue
            k = str(c["id"])
            bs = c["blocksize"]
            nb = (n + bs - 1) // bs
            deq = k + ".dequant" in G and ndeq > 0
            ndeq -= deq
            body_cases += struct.pack(
                "<IIBBBBI", c["id"], idx, c["quant_type"] == "fp4",
                c["double_quant"], deq, KINDS.index(c["kind"]), bs)
            body_cases += G[k + ".packed"][1].tobytes()
            assert G[k + ".absmax"][1].size == nb
            body_cases += G[k + ".absmax"][1].tobytes()
            if c["double_quant"]:
                body_cases += G[k + ".offset"][1].tobytes()
                body_cases += G[k + ".qabsmax"][1].tobytes()
                body_cases += G[k + ".nested_absmax"][1].tobytes()
            if deq:
                body_cases += G[k + ".dequant"][1].tobytes()
            ncases += 1
    body_b8 = b""
    for p in B8:
        x = G[p + ".input"][1]
        body_b8 += struct.pack("<Q", x.size) + x.tobytes()
        body_b8 += G[p + ".codes"][1].tobytes() + G[p + ".absmax"][1].tobytes()
        body_b8 += G[p + ".dequant"][1].tobytes()
    blob = b"PQSAMPL1" + struct.pack("<III", len(inputs), ncases, len(B8))
    blob += body_in + body_cases + body_b8
    assert len(blob) < 300 * 1024, len(blob)
    with open(OUT, "wb") as f:
        f.write(blob)
    print(f"{OUT}: {len(inputs)} inputs, {ncases} cases, {len(B8)} b8 cases, "
          f"{len(blob)} bytes")


if __name__ == "__main__":
    main()
