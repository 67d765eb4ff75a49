#!/usr/bin/env python3
"""Write the torch.save fixtures in this directory and their safetensors twins.

Run from the repository root with PyTorch and safetensors installed:
    python3 tests/data/torchbin/make.py OUTDIR
Every .bin is written by torch.save (zip format, pickle protocol 2); each
twin holds the same tensors as contiguous safetensors.

    python3 tests/data/torchbin/make.py --deflate OUTDIR
only repacks OUTDIR/tensors.bin as tensors-deflated.bin, and

    python3 tests/data/torchbin/make.py --fuzz-seeds OUTDIR CORPUS
writes the pickles of the .bin files in OUTDIR to CORPUS as seeds for
tests/fuzz/fuzz_torchbin.c; both need Python's zipfile and no torch.
"""
import collections
import json
import os
import shutil
import sys
import zipfile


def deflate(out):
    """tensors.bin with every member DEFLATED, as a zip tool may rewrite
    it; same names in the same order, so its twin is tensors.safetensors."""
    src = os.path.join(out, "tensors.bin")
    dst = os.path.join(out, "tensors-deflated.bin")
    with zipfile.ZipFile(src) as zin, \
            zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, zin.read(info))


def fuzz_seeds(out, corpus):
    """Each archive's data.pkl with the sizes of its records, in the form
    fuzz_torchbin.c wraps into an archive: flags (1: deflate), the number
    of records, their sizes (16-bit little-endian), the pickle."""
    for root, _, files in sorted(os.walk(out)):
        for fn in sorted(files):
            if not fn.endswith(".bin") or fn == "legacy.bin":
                continue
            with zipfile.ZipFile(os.path.join(root, fn)) as z:
                names = z.namelist()
                pre = names[0][:names[0].index("/") + 1]
                pkl = z.read(pre + "data.pkl")
                n = sum(1 for x in names if x.startswith(pre + "data/"))
                sizes = [z.getinfo(pre + "data/%d" % i).file_size
                         for i in range(n)]
                deflated = z.getinfo(pre + "data.pkl").compress_type != 0
            seed = bytes([int(deflated), n])
            seed += b"".join(x.to_bytes(2, "little") for x in sizes) + pkl
            with open(os.path.join(corpus, "pkl-" + fn[:-4]), "wb") as f:
                f.write(seed)


if len(sys.argv) == 3 and sys.argv[1] == "--deflate":
    deflate(sys.argv[2])
    sys.exit(0)
if len(sys.argv) == 4 and sys.argv[1] == "--fuzz-seeds":
    fuzz_seeds(sys.argv[2], sys.argv[3])
    sys.exit(0)

# Everything below needs torch.
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(20261123)


def rand(*shape, dtype=torch.float32):
    return (torch.randn(*shape, generator=g) * 0.02).to(dtype)


def twin(sd, name):
    """Contiguous, unshared copies, as safetensors needs them."""
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()},
              os.path.join(out, name))


# 1. dtypes, views and a shared storage.
base = rand(6, 10)
big = rand(4, 8, dtype=torch.float16)
sd = collections.OrderedDict()
sd["f32"] = rand(3, 5)
sd["f16"] = rand(7, dtype=torch.float16)
sd["bf16"] = rand(2, 3, 4, dtype=torch.bfloat16)
sd["f64"] = rand(2, 2, dtype=torch.float64)
sd["i64"] = torch.arange(5, dtype=torch.int64)
sd["u8"] = torch.arange(9, dtype=torch.uint8)
sd["bool"] = torch.tensor([True, False, True])
sd["scalar"] = torch.tensor(1.5)
sd["empty"] = torch.zeros(0, 4)
sd["transposed"] = base.t()                  # stride (1, 10)
sd["rows"] = base[2:5]                        # storage offset 20
sd["cols"] = base[:, 3:7]                     # offset 3, stride (10, 1)
sd["shared.a"] = big                          # two names, one storage
sd["shared.b"] = big[1]                       # offset 8
sd["param"] = torch.nn.Parameter(rand(4))     # _rebuild_parameter
torch.save(sd, os.path.join(out, "tensors.bin"))
twin(sd, "tensors.safetensors")

# 2. a module state_dict (OrderedDict with _metadata set by BUILD).
m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
torch.save(m.state_dict(), os.path.join(out, "module.bin"))
twin(m.state_dict(), "module.safetensors")

# 3. a sharded checkpoint with a pytorch_model.bin.index.json.
shd = os.path.join(out, "sharded")
os.makedirs(shd, exist_ok=True)
parts = [collections.OrderedDict(a=rand(8, 4), b=rand(4)),
         collections.OrderedDict(c=rand(3, 3, dtype=torch.bfloat16))]
wm = {}
total = 0
for i, p in enumerate(parts):
    fn = "pytorch_model-%05d-of-%05d.bin" % (i + 1, len(parts))
    torch.save(p, os.path.join(shd, fn))
    for k, v in p.items():
        wm[k] = fn
        total += v.numel() * v.element_size()
with open(os.path.join(shd, "pytorch_model.bin.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f,
              indent=2)
twin(collections.OrderedDict((k, v) for p in parts for k, v in p.items()),
     "sharded.safetensors")

# 4. a PEFT adapter saved the legacy way (adapter_model.bin).
src = "tests/data/lora/pair/a"
ad = os.path.join(out, "adapter")
os.makedirs(ad, exist_ok=True)
shutil.copy(os.path.join(src, "adapter_config.json"), ad)
torch.save(load_file(os.path.join(src, "adapter_model.safetensors")),
           os.path.join(ad, "adapter_model.bin"))


# 5. malicious: unpickling would call os.system.
class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned >&2",))


torch.save({"w": torch.zeros(2), "x": Evil()}, os.path.join(out, "evil.bin"))

# 6. the pre-1.6 (non-zip) format, which is refused.
torch.save({"w": torch.zeros(2)}, os.path.join(out, "legacy.bin"),
           _use_new_zipfile_serialization=False)

# 7. tensors.bin with deflated members.
deflate(out)

print(torch.__version__)
for root, _, files in os.walk(out):
    for fn in sorted(files):
        p = os.path.join(root, fn)
        print(os.path.relpath(p, out), os.path.getsize(p))
