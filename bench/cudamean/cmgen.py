"""Deterministic inputs shared by probe.py and probe2.py (see compare.c)."""
import numpy as np

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
GOLD = np.uint64(0x9E3779B97F4A7C15)

def stream(seed, n):
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over='ignore'):
        z = np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + (i + np.uint64(1)) * GOLD
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z

def gen(dist, seed, n):
    z = stream(seed * 4 + dist, n)
    m = ((z & np.uint64(0x7FFFFF)) | np.uint64(0x800000)).astype(np.float32)
    if dist == 0:   # absmax-like: [2^-7, 2^-3)
        e = ((z >> np.uint64(23)) & np.uint64(3)).astype(np.int32) - 7
        v = np.ldexp(m, e - 23)
    elif dist == 1: # mixed magnitudes and signs
        e = ((z >> np.uint64(23)) & np.uint64(31)).astype(np.int32) - 20
        s = ((z >> np.uint64(28)) & np.uint64(1)).astype(np.float32)
        v = np.ldexp(m, e - 23) * (1 - 2 * s)
    else:           # large offset: [1024, 2048)
        v = np.ldexp(m, np.int32(10 - 23))
    return v.astype(np.float32)

def bits(t):
    return int(np.frombuffer(np.float32(t).tobytes(), dtype=np.uint32)[0])

