/*
 * compare.c - check peftio_cuda_mean_f32() against the GPU results that
 * bench/cudamean/probe.py wrote (res.txt lines "dist seed n hexbits").
 * cc -O2 -Ilib bench/cudamean/compare.c lib/cudamean.c -lm
 * ./a.out res.txt [absmax.bin]   (dist 3 lines read absmax.bin)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float	peftio_cuda_mean_f32(const float *x, uint64_t n);

static uint64_t
mix(uint64_t seed, uint64_t i)
{
	uint64_t z = seed * 0xD1B54A32D192ED03ULL + (i + 1) * 0x9E3779B97F4A7C15ULL;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static void
gen(int dist, uint64_t seed, uint64_t n, float *v)
{
	uint64_t i, z;

	for (i = 0; i < n; i++) {
		z = mix(seed * 4 + dist, i);
		float m = (float)((z & 0x7FFFFF) | 0x800000);
		if (dist == 0)
			v[i] = ldexpf(m, (int)((z >> 23) & 3) - 7 - 23);
		else if (dist == 1)
			v[i] = ldexpf(m, (int)((z >> 23) & 31) - 20 - 23) *
			    (((z >> 28) & 1) ? -1.0f : 1.0f);
		else
			v[i] = ldexpf(m, 10 - 23);
	}
}

static uint32_t
f2u(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

int
main(int argc, char **argv)
{
	FILE *f = fopen(argc > 1 ? argv[1] : "res.txt", "r");
	char line[256];
	float *buf = NULL, *ab = NULL, g[5];
	const float *x;
	uint64_t nab = 0;
	uint64_t have = 0, cap = 0, bufseed = ~0ULL;
	int bufdist = -1, d;
	long tot = 0, ok = 0, dbl = 0, naive = 0;

	if (argc > 2) {
		FILE *fa = fopen(argv[2], "rb");
		if (fa != NULL) {
			fseek(fa, 0, SEEK_END);
			nab = (uint64_t)ftell(fa) / sizeof(float);
			rewind(fa);
			ab = malloc(nab * sizeof(float) + 1);
			if (fread(ab, sizeof(float), nab, fa) != nab)
				nab = 0;
			fclose(fa);
		}
	}
	for (d = 0; d < 3; d++) {
		gen(d, 12345, 5, g);
		printf("gen %d %08x %08x %08x %08x %08x\n", d, f2u(g[0]),
		    f2u(g[1]), f2u(g[2]), f2u(g[3]), f2u(g[4]));
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long long seed, n;
		unsigned bits;
		if (line[0] == '#')
			continue;
		if (sscanf(line, "%d %llu %llu %x", &d, &seed, &n, &bits) != 4)
			continue;
		if (d == 3) {
			/* real absmax vectors from absmax.bin at element seed */
			if (ab == NULL || seed + n > nab) {
				printf("no absmax.bin data for line: %s", line);
				continue;
			}
			x = ab + seed;
		} else {
			if (d != bufdist || seed != bufseed || n > have) {
				if (n > cap) {
					cap = n;
					buf = realloc(buf, cap * sizeof(float));
				}
				gen(d, seed, n, buf);
				have = n;
				bufdist = d;
				/* seed == n: per-n data, never a prefix */
				bufseed = seed == n ? ~0ULL : seed;
			}
			x = buf;
		}
		float r = peftio_cuda_mean_f32(x, n);
		double s = 0;
		float fs = 0;
		for (uint64_t i = 0; i < n; i++) {
			s += x[i];
			fs += x[i];
		}
		float dm = (float)(s / (double)n);
		tot++;
		if (f2u(r) == bits)
			ok++;
		else if (tot - ok <= 20)
			printf("MISMATCH d=%d seed=%llu n=%llu gpu=%08x got=%08x\n",
			    d, seed, n, bits, f2u(r));
		if (f2u(dm) != bits)
			dbl++;
		if (f2u(fs * (1.0f / (float)n)) != bits)
			naive++;
	}
	printf("%ld / %ld bit-identical; double-mean differs in %ld, "
	    "sequential float sum differs in %ld\n", ok, tot, dbl, naive);
	return ok == tot ? 0 : 1;
}
