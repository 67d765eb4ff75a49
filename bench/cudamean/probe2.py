#!/usr/bin/env python3
"""Second probe: fresh seeds per size (no prefixes) and real absmax vectors.

res2.txt lines "<dist> <seed> <n> <hexbits>"; dist 3 lines take their
input from absmax.bin (float32) starting at element <seed>.
"""
import os, sys, random
import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmgen import gen, bits  # noqa: E402

OUT = sys.argv[1]
dev = torch.device('cuda')
res = open(os.path.join(OUT, 'res2.txt'), 'w')
r = random.Random(11)
cases = []
for i in range(150):
    cases.append((r.randrange(3), 5000 + i, int(2 ** r.uniform(7, 23))))
for i in range(12):
    cases.append((r.randrange(3), 6000 + i, r.randrange(1 << 23, 50000001)))
for d, seed, n in cases:
    x = torch.from_numpy(gen(d, seed, n)).to(dev)
    res.write('%d %d %d %08x\n' % (d, seed, n, bits(x.mean().item())))
# real absmax vectors: blocks of 64 of N(0, 0.02) weights
torch.manual_seed(0)
off = 0
chunks = []
for n in (1, 7, 100, 127, 128, 129, 1000, 2048, 4096, 65537, 131072, 131073,
          262144, 300001, 1000003):
    w = torch.randn(n * 64, device=dev) * 0.02
    a = w.view(-1, 64).abs().amax(1).contiguous()
    res.write('3 %d %d %08x\n' % (off, n, bits(a.mean().item())))
    chunks.append(a.cpu().numpy())
    off += n
np.concatenate(chunks).astype(np.float32).tofile(os.path.join(OUT, 'absmax.bin'))
res.close()
print('done', len(cases))
