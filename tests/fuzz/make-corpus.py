#!/usr/bin/env python3
"""make-corpus.py - write the seed corpora of tests/fuzz/corpus/NAME.

Run from the top of the tree after `make` (nf4-quant makes the 4-bit
seeds).  The seeds are small: the smallest committed fixtures of
tests/data and examples/, and a few files made here in the same
layouts.  Crashing inputs found later are added beside them by hand.
"""
import json
import os
import struct
import subprocess
import tempfile

OUT = "tests/fuzz/corpus"
PREFIX = "base_model.model."


def put(name, fname, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def copy(name, fname, path):
    with open(path, "rb") as f:
        put(name, fname, f.read())


def st(tensors, meta=None):
    """A safetensors file: tensors is a list of (name, dtype, shape, bytes)."""
    hdr = {}
    if meta is not None:
        hdr["__metadata__"] = meta
    off = 0
    data = b""
    for name, dt, shape, payload in tensors:
        hdr[name] = {"dtype": dt, "shape": shape,
                     "data_offsets": [off, off + len(payload)]}
        off += len(payload)
        data += payload
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def main():
    # --- safetensors: the header parser and the whole reader ----------
    for name in ("st_header", "safetensors"):
        for f in ("module", "sharded", "tensors"):
            copy(name, f + ".safetensors",
                 "tests/data/torchbin/%s.safetensors" % f)
        put(name, "empty.safetensors", st([]))
        put(name, "meta.safetensors", st([], {"format": "pt", "k": "v"}))
        put(name, "dtypes.safetensors", st([
            ("f4", "F4", [4], b"\x12\x34"),
            ("f6", "F6_E2M3", [2, 2], b"\x01\x02\x03"),
            ("scalar", "F64", [], b"\0" * 8),
            ("empty", "BF16", [0, 3], b""),
            ("e4m3", "F8_E4M3", [2], b"\x38\x40"),
            ("e5m2", "F8_E5M2", [2], b"\x3c\x40"),
            ("h", "F16", [2], b"\x00\x3c\x00\xc0"),
            ("b", "BOOL", [1], b"\x01"),
        ]))
    # Small 4-bit checkpoints, with and without double quantization.
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.safetensors")
        w = f32(*[((i * 37) % 29 - 14) / 7.0 for i in range(4 * 64)])
        with open(src, "wb") as f:
            f.write(st([("m.q_proj.weight", "F32", [4, 64], w),
                         ("m.norm.weight", "F32", [4], f32(1, 2, 3, 4))]))
        for tag, args in (("nf4-dq", []), ("fp4", ["-t", "fp4",
                          "--no-double-quant", "-b", "32"])):
            dst = os.path.join(tmp, tag + ".safetensors")
            subprocess.run(["tools/nf4-quant/nf4-quant", "-q"] + args +
                           ["-o", dst, src], check=True)
            copy("safetensors", tag + ".safetensors", dst)
            # The quant_state blob of the weight.
            with open(dst, "rb") as f:
                b = f.read()
            n = struct.unpack("<Q", b[:8])[0]
            h = json.loads(b[8:8 + n])
            for k, v in h.items():
                if ".quant_state." in k:
                    s, e = v["data_offsets"]
                    put("quant_state", tag + ".json", b[8 + n + s:8 + n + e])
    put("quant_state", "bf16-2d.json",
        '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", '
        '"shape": [128, 344], "nested_blocksize": 256, "nested_dtype": '
        '"float32", "nested_offset": 0.051740068942308426}')
    put("quant_state", "f16-1d.json",
        '{"quant_type": "fp4", "blocksize": 4096, "dtype": "float16", '
        '"shape": [7]}')

    # --- config.json ---------------------------------------------------
    copy("config", "tiny-llama.json", "examples/tiny-llama/config.json")
    copy("config", "nf4-dq1.json", "tests/data/bnb-ref/nf4-dq1.config.json")
    copy("config", "generation.json",
         "examples/tiny-llama/generation_config.json")
    put("config", "torch_dtype.json",
        '{"torch_dtype": "float16", "a": [1.5, -0.0, 1e300, "\\u00e9"], '
        '"b": {"c": null, "d": true}}\n')

    # --- adapter_config.json, alone or with the adapter's tensors ------
    for a in ("lora-bf16", "dora-f32", "ia3-f32", "rslora-f32",
              "embed-f32"):
        copy("adapter_config", a + ".json",
             "tests/data/lora/%s/adapter_config.json" % a)
    with open("tests/data/lora/ia3-f32/adapter_config.json", "rb") as f:
        cfg = f.read()
    with open("tests/data/lora/ia3-f32/adapter_model.safetensors",
              "rb") as f:
        put("adapter_config", "ia3-with-model.bin", cfg + b"\0" + f.read())
    q = PREFIX + "model.layers.0.self_attn.q_proj."
    e = PREFIX + "model.embed_tokens."
    tiny = st([
        (q + "lora_A.weight", "F32", [2, 4], f32(*range(8))),
        (q + "lora_B.weight", "F32", [3, 2], f32(*range(6))),
        (q + "lora_B.bias", "F32", [3], f32(1, 2, 3)),
        (q + "lora_magnitude_vector", "F32", [3], f32(1, 1, 1)),
        (e + "lora_embedding_A", "F32", [2, 5], f32(*range(10))),
        (e + "lora_embedding_B", "F32", [4, 2], f32(*range(8))),
        (PREFIX + "lm_head.weight", "F32", [2, 2], f32(1, 2, 3, 4)),
    ])
    put("adapter_config", "lora-with-model.bin",
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                    "use_rslora": True,
                    "rank_pattern": {"q_proj": 2},
                    "alpha_pattern": {"layers\\.0\\..*": 3}}).encode() +
        b"\0" + tiny)

    # --- model.safetensors.index.json (fuzz_index's shards) -------------
    s1 = "model-00001-of-00002.safetensors"
    s2 = "model-00002-of-00002.safetensors"
    put("index", "two-shards.json", json.dumps({
        "metadata": {"total_size": 32},
        "weight_map": {"a.weight": s1, "b.weight": s1, "c.weight": s2,
                       "d.bias": s2}}, indent=2))
    put("index", "subdir.json", json.dumps({
        "weight_map": {"g": "sub/model.safetensors",
                       "e": "extra.safetensors"}}))
    copy("index", "llama-sharded.json",
         "tests/data/llama-sharded/model.safetensors.index.json")

    # --- 8-bit weights: one good, and each way to be malformed -----------
    w = "model.layers.0.mlp.up_proj"
    codes = bytes([1, 2, 3, 4, 0x81, 0x7f, 0, 9])
    fmt = ("%s.weight_format" % w, "U8", [], b"\0")
    put("bnb8", "good.safetensors", st([
        ("%s.weight" % w, "I8", [2, 4], codes),
        ("%s.SCB" % w, "F32", [2], f32(0.5, 3.0)), fmt]))
    put("bnb8", "noscb.safetensors", st([("%s.weight" % w, "I8", [2, 4],
                                           codes)]))
    put("bnb8", "short.safetensors", st([
        ("%s.weight" % w, "I8", [2, 4], codes),
        ("%s.SCB" % w, "F32", [1], f32(1.0))]))
    put("bnb8", "nan.safetensors", st([
        ("%s.weight" % w, "I8", [2, 4], codes),
        ("%s.SCB" % w, "F32", [2], f32(float("nan"), 1.0))]))
    put("bnb8", "col32.safetensors", st([
        ("%s.weight" % w, "I8", [2, 4], codes),
        ("%s.SCB" % w, "F32", [2], f32(1.0, 1.0)),
        ("%s.weight_format" % w, "U8", [], b"\1")]))

    # --- plan configs: every tuner's adapter_config.json --------------------
    tuners = "tests/data/tuners"
    for k in sorted(os.listdir(tuners)):
        cfg = os.path.join(tuners, k, "adapter_config.json")
        if os.path.isfile(cfg):
            copy("plan_config", k + ".json", cfg)
    copy("plan_config", "lora.json", "tests/data/lora/pair/a/adapter_config.json")
    put("plan_config", "road.json",
        '{"peft_type": "ROAD", "variant": "road_4", "group_size": 16, '
        '"target_modules": ["q_proj"]}')
    put("plan_config", "oft-both.json",
        '{"peft_type": "OFT", "r": 4, "oft_block_size": 16}')
    put("plan_config", "regex.json",
        '{"peft_type": "LOHA", "r": 4, "target_modules": ".*proj"}')
    put("plan_config", "prefix.json",
        '{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 30}')

    # --- recipes -----------------------------------------------------------
    put("recipe", "ties.yaml",
        "base: base\nadapters:\n  - path: a\n    weight: 0.7\n"
        "  - path: /abs/b\n    weight: 0.3\nmethod: ties\ndensity: 0.5\n"
        "output: out.safetensors\n")
    put("recipe", "plain.yaml",
        "base: -\nadapters: [a, b]\nseed: 3\ndtype: bf16\n"
        "unmerge: false\nrequant: yes\n")
    put("recipe", "flow.yaml",
        "{base: &b m, adapters: [{path: *b, weight: 1e-3}], "
        "output: '-'}\n")


if __name__ == "__main__":
    main()
