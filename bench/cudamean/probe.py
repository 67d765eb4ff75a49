#!/usr/bin/env python3
"""Probe torch.mean() of 1-D float32 CUDA tensors; write result bits to $OUT.

Inputs are generated from a counter-based splitmix64 stream so that the
C side (compare.c, tests/unit/check_cudamean.c) can regenerate them bit for bit.
Output lines: "<dist> <seed> <n> <hexbits>".
"""
import os, sys, random, time, tarfile, glob
import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

OUT = sys.argv[1]
from cmgen import gen, bits  # noqa: E402

dev = torch.device('cuda')
p = torch.cuda.get_device_properties(0)
with open(os.path.join(OUT, 'info.txt'), 'w') as f:
    f.write('torch %s cuda %s\n' % (torch.__version__, torch.version.cuda))
    f.write('props %r\n' % (p,))
    f.write('sm %d maxthr_per_sm %d\n' % (p.multi_processor_count,
        getattr(p, 'max_threads_per_multi_processor', -1)))
    # generator check values
    for d in range(3):
        f.write('gen %d %s\n' % (d, ' '.join('%08x' % bits(x) for x in gen(d, 12345, 5))))

# ship headers
inc = os.path.join(os.path.dirname(torch.__file__), 'include')
with tarfile.open(os.path.join(OUT, 'hdr.tar.gz'), 'w:gz') as tf:
    for pat in ['ATen/native/cuda/Reduce.cuh', 'ATen/native/SharedReduceOps.h',
                'ATen/native/cuda/reduction_template.cuh', 'ATen/native/cuda/MemoryAccess.cuh',
                'ATen/native/cuda/ReduceOps.h', 'ATen/native/ReduceOps.h',
                'ATen/native/cuda/block_reduce.cuh', 'ATen/cuda/detail/OffsetCalculator.cuh']:
        for fn in glob.glob(os.path.join(inc, pat)):
            tf.add(fn, arcname=pat)

res = open(os.path.join(OUT, 'res.txt'), 'w')
t0 = time.time()
# small: every n, per-n seed
for d in range(3):
    for n in range(1, 2101):
        x = torch.from_numpy(gen(d, n, n)).to(dev)
        res.write('%d %d %d %08x\n' % (d, n, n, bits(x.mean().item())))
print('small done', time.time() - t0, flush=True)

sizes = set()
for k in range(11, 26):
    for dd in (-3, -1, 0, 1, 3):
        sizes.add((1 << k) + dd)
    sizes.add(3 << (k - 1))
sizes.update(range(2101, 200000, 61))
r = random.Random(7)
for _ in range(300):
    sizes.add(int(2 ** r.uniform(11, 23)))
for _ in range(40):
    sizes.add(r.randrange(1 << 23, 50000001))
sizes.update([50000000, 49999999, 33554431, 33554433, 40000007, 25000001, 16777215])
sizes = sorted(sizes)
NMAX = sizes[-1]
for d in range(3):
    base = torch.from_numpy(gen(d, 1000 + d, NMAX)).to(dev)
    for n in sizes:
        x = base[:n].clone()
        res.write('%d %d %d %08x\n' % (d, 1000 + d, n, bits(x.mean().item())))
    # determinism check
    for n in (NMAX, 1 << 22):
        v = set(bits(base[:n].clone().mean().item()) for _ in range(5))
        res.write('# repeat %d %d %s\n' % (d, n, ' '.join('%08x' % b for b in v)))
    del base
    print('dist', d, 'done', time.time() - t0, flush=True)
res.close()
