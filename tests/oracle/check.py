#!/usr/bin/env python3
"""Load what tests/oracle/generate.sh wrote into transformers, PEFT and
bitsandbytes on a CUDA GPU and compare with what those libraries compute
themselves.  Usage: python3 tests/oracle/check.py [OUTDIR]
Prints one PASS or FAIL line per check, with the numbers behind it."""

import os
import sys
import traceback

import torch
import bitsandbytes as bnb
import peft
import transformers
from bitsandbytes.functional import dequantize_4bit
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

O = sys.argv[1] if len(sys.argv) > 1 else "tests/oracle/out"
DEV = "cuda"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
failures = 0


def report(name, ok, msg):
    global failures
    failures += 0 if ok else 1
    print(f"{'PASS' if ok else 'FAIL'} {name}: {msg}", flush=True)


def run(name, fn):
    try:
        fn(name)
    except Exception as e:  # one broken check must not hide the others
        traceback.print_exc()
        report(name, False, f"exception {type(e).__name__}: {e}")


def path(*p):
    return os.path.join(O, *p)


def load(d, **kw):
    m = AutoModelForCausalLM.from_pretrained(d, device_map=DEV, **kw)
    return m.eval()


def logits(m, ids):
    with torch.no_grad():
        return m(input_ids=ids).logits.float()


def rel(a, b):
    """max |a - b| relative to max |b|."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def qmodules(m):
    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return {n: x for n, x in m.named_modules() if isinstance(x, kinds)}


def as_bytes(t):
    return t.detach().contiguous().view(-1).view(torch.uint8)


def deq4(mod):
    w = mod.weight
    packed = w.data.contiguous().view(torch.uint8).reshape(-1, 1)
    return dequantize_4bit(packed, w.quant_state)


IDS = load_file(path("logits.safetensors"))["input_ids"].to(DEV)
FIX = load_file(path("logits.safetensors"))
IDS_SMALL = IDS % 320  # the PEFT fixtures' vocabulary is 320
print(f"torch {torch.__version__} transformers {transformers.__version__} "
      f"peft {peft.__version__} bitsandbytes {bnb.__version__} "
      f"device {torch.cuda.get_device_name()}", flush=True)

BF = torch.bfloat16
QCASES = [
    ("nf4-dq1", "q-nf4-dq1", dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=BF)),
    ("nf4-dq0", "q-nf4-dq0", dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=False,
                                  bnb_4bit_compute_dtype=BF)),
    ("fp4-dq0", "q-fp4-dq0", dict(load_in_4bit=True, bnb_4bit_quant_type="fp4",
                                  bnb_4bit_use_double_quant=False,
                                  bnb_4bit_compute_dtype=BF)),
    ("int8", "q-int8", dict(load_in_8bit=True)),
    ("nf4-dq1-storage-bf16", "q-nf4-dq1-bf16",
     dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=BF,
          bnb_4bit_quant_storage=BF)),
]
REFS = {}


def check_quant(case, d, cfg):
    def fn(name):
        ref = load(path("base-bf16"), dtype=BF,
                   quantization_config=BitsAndBytesConfig(**cfg))
        ours = load(path(d), dtype=BF)
        REFS[case] = ref
        qr, qo = qmodules(ref), qmodules(ours)
        if sorted(qr) != sorted(qo) or not qr:
            report(name, False, f"quantized modules differ: ref {len(qr)} "
                   f"ours {len(qo)} ({sorted(set(qr) ^ set(qo))[:4]})")
            return
        nbytes = nbad = 0
        wdiff = sdiff = 0.0
        for n in qr:
            a, b = qo[n].weight, qr[n].weight
            if a.dtype != b.dtype or a.shape != b.shape:
                report(name, False, f"{n}: {a.dtype}{tuple(a.shape)} vs "
                       f"{b.dtype}{tuple(b.shape)}")
                return
            x, y = as_bytes(a.data), as_bytes(b.data)
            nbytes += x.numel()
            nbad += (x != y).sum().item()
            if "8bit" in case or "int8" in case:
                sdiff = max(sdiff, rel(a.SCB, b.SCB))
            else:
                wdiff = max(wdiff, rel(deq4(qo[n]), deq4(qr[n])))
        others = 0.0
        po = dict(ours.named_parameters())
        for n, p in ref.named_parameters():
            if n.rsplit(".", 1)[0] not in qr:
                others = max(others, (po[n].float() - p.float()).abs().max().item())
        lr, lo = logits(ref, IDS), logits(ours, IDS)
        lrel = rel(lo, lr)
        fix = f"bnb-{case}"
        fixmsg = (f"; transformers vs its fixture logits rel {rel(lr, FIX[fix].to(DEV)):.3g}"
                  if fix in FIX else "")
        ok = (nbad <= 1e-3 * nbytes and others == 0.0 and lrel < 1e-2
              and wdiff < 1e-2 and sdiff == 0.0)
        extra = (f"SCB rel diff {sdiff:.3g}" if case == "int8"
                 else f"dequantized weight rel diff {wdiff:.3g}")
        report(name, ok, f"{len(qr)} quantized linears, weight bytes differing "
               f"{nbad}/{nbytes}, {extra}, other params max diff {others:.3g}, "
               f"logits max abs diff {(lo - lr).abs().max().item():.4g} "
               f"(rel {lrel:.3g}, identical={bool(torch.equal(lo, lr))}){fixmsg}")
    return fn


for case, d, cfg in QCASES:
    run(f"1 load {d} vs transformers quantization ({case})", check_quant(case, d, cfg))


def check_dequant(name):
    import json
    cfg = json.load(open(path("dq-nf4-dq1", "config.json")))
    dq = load(path("dq-nf4-dq1"), dtype=BF)
    ours4 = load(path("q-nf4-dq1"), dtype=BF)
    ref = REFS.get("nf4-dq1") or load(path("base-bf16"), dtype=BF,
                                      quantization_config=BitsAndBytesConfig(**QCASES[0][2]))
    worst_ref = worst_ours = 0.0
    nbad = total = 0
    for n, mod in qmodules(ref).items():
        w = dq.get_submodule(n).weight
        if isinstance(w, (bnb.nn.Params4bit,)):
            report(name, False, f"{n} is still 4-bit after -d")
            return
        a = deq4(mod)
        b = deq4(ours4.get_submodule(n))
        worst_ref = max(worst_ref, rel(w, a))
        worst_ours = max(worst_ours, rel(w, b))
        nbad += (w != b).sum().item()
        total += w.numel()
    ld, l4 = logits(dq, IDS), logits(ours4, IDS)
    ok = "quantization_config" not in cfg and nbad == 0 and worst_ref < 1e-2
    report(name, ok, f"no quantization_config={'quantization_config' not in cfg}, "
           f"weights differing from bnb dequantize_4bit of our file {nbad}/{total}, "
           f"max rel diff vs transformers' own quantization {worst_ref:.3g}, "
           f"logits vs 4-bit model rel {rel(ld, l4):.3g}")


run("2 nf4-quant -d output vs bitsandbytes dequantize_4bit", check_dequant)

F32 = torch.float32
BASE = {}


def init_check(method):
    def fn(name):
        if "f32" not in BASE:
            BASE["f32"] = logits(load(path("init", "base"), dtype=F32), IDS_SMALL)
        bl = BASE["f32"]
        r = load(path("init", f"{method}-residual"), dtype=F32)
        pm = PeftModel.from_pretrained(r, path("init", f"{method}-adapter")).eval()
        lr = logits(r, IDS_SMALL)
        lp = logits(pm, IDS_SMALL)
        e = rel(lp, bl)
        report(name, e < 1e-4, f"PeftModel(residual, adapter) vs base logits rel "
               f"{e:.3g} (residual alone: rel {rel(lr, bl):.3g})")
    return fn


for m in ("pissa", "olora"):
    run(f"3 {m} residual + adapter in PEFT == base", init_check(m))


def loftq_check(name):
    if "f32" not in BASE:
        BASE["f32"] = logits(load(path("init", "base"), dtype=F32), IDS_SMALL)
    bl = BASE["f32"]
    res = load(path("init", "loftq-residual"), dtype=F32)
    nq = len(qmodules(res))
    pm = PeftModel.from_pretrained(res, path("init", "loftq-adapter")).eval()
    e_lq = rel(logits(pm, IDS_SMALL), bl)
    plain = load(path("init", "base"), dtype=F32,
                 quantization_config=BitsAndBytesConfig(
                     load_in_4bit=True, bnb_4bit_quant_type="nf4",
                     bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=F32))
    e_plain = rel(logits(plain, IDS_SMALL), bl)
    # without double quantization, against PEFT's own LoftQ (fixture, GPU)
    res0 = load(path("init", "loftq0-residual"), dtype=F32)
    pm0 = PeftModel.from_pretrained(res0, path("init", "loftq0-adapter")).eval()
    l0 = logits(pm0, IDS_SMALL)
    pq = load(path("init", "peft-loftq", "qbase"), dtype=F32)
    pp = PeftModel.from_pretrained(pq, path("init", "peft-loftq", "init")).eval()
    lp = logits(pp, IDS_SMALL)
    e0, ep, e0p = rel(l0, bl), rel(lp, bl), rel(l0, lp)
    ok = nq > 0 and e_lq < e_plain and e0 < e_plain and e0 <= 1.5 * ep
    report(name, ok, f"{nq} 4-bit linears; vs base logits rel: LoftQ(DQ) "
           f"{e_lq:.3g}, LoftQ(no DQ) {e0:.3g}, PEFT's LoftQ {ep:.3g}, plain NF4 "
           f"{e_plain:.3g}; ours(no DQ) vs PEFT's LoftQ rel {e0p:.3g}")


run("3 loftq 4-bit residual + adapter in PEFT ~ base", loftq_check)


def merge_check(base, adapter, merged, tol):
    def fn(name):
        b = load(base, dtype=F32)
        pm = PeftModel.from_pretrained(b, adapter).eval()
        pm = pm.merge_and_unload()
        ours = load(merged, dtype=F32)
        so = ours.state_dict()
        worst, wn = 0.0, ""
        for n, t in pm.state_dict().items():
            if n not in so:
                report(name, False, f"{n} missing from lora-merge output")
                return
            e = rel(so[n], t)
            if e > worst:
                worst, wn = e, n
        extra = sorted(set(so) - set(pm.state_dict()))
        l1, l2 = logits(ours, IDS_SMALL), logits(pm, IDS_SMALL)
        le = rel(l1, l2)
        ok = worst < tol and le < tol and not extra
        report(name, ok, f"worst tensor rel diff {worst:.3g} ({wn or '-'}), "
               f"logits rel {le:.3g}, extra tensors {len(extra)}")
    return fn


run("4 adapter-extract adapter: PEFT merge_and_unload vs lora-merge",
    merge_check(path("extract", "base"), path("extract", "adapter"),
                path("extract", "merged"), 2e-5))
for k in ("loha", "lokr", "oft"):
    run(f"5 {k}: PEFT merge_and_unload (GPU) vs lora-merge",
        merge_check(path("tuners", "base"), path("tuners", k),
                    path("tuners", f"merged-{k}"), 2e-5))

print(f"{failures} check(s) failed", flush=True)
sys.exit(1 if failures else 0)
