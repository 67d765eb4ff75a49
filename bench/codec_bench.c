/*
 * codec_bench.c - throughput of the 4-bit quantizer (ns per element).
 *
 *	codec_bench [-b blocksize] [-i impl] [-n elements] [-r repeats]
 *
 * Times peftio_q4_quantize() over one thread for NF4 and FP4 with f32,
 * bf16 and f16 input, blocksize 64 by default, on N(0, 0.02) data with a few 8x
 * outliers, and reports the best of the repeats for each implementation
 * the CPU offers (0 reference, 1 portable, 2 AVX-512, 3 AVX2), or only
 * -i's; then peftio_dq_quantize() of the absmax vector, the 8-bit
 * blockwise codec (peftio_q8_quantize(), blocks of 256) and
 * peftio_q4_dequantize() back to each type.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "peftio_private.h"

static const char *const impl_names[] = { "reference", "portable", "avx512",
    "avx2" };

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static float
randn(uint64_t *s)
{
	double u1 = ((rnd(s) >> 11) + 1.0) / 9007199254740993.0;
	double u2 = (double)(rnd(s) >> 11) / 9007199254740992.0;

	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int
main(int argc, char **argv)
{
	static const enum peftio_dtype dts[] = { PEFTIO_F32, PEFTIO_BF16,
	    PEFTIO_F16 };
	static const char *const dtn[] = { "f32", "bf16", "f16" };
	uint64_t n = 1ULL << 26, bs = 64, nb, i, seed = 42;
	float *f32, *absmax, *nested, *nested8, v, offset;
	uint16_t *bf16, *f16;
	const void *in;
	uint8_t *packed, *out, *qabsmax;
	int reps = 5, only = -1, ch, impl, t, d, r, old;
	double best, t0;

	while ((ch = getopt(argc, argv, "b:i:n:r:")) != -1) {
		switch (ch) {
		case 'b':
			bs = strtoull(optarg, NULL, 10);
			break;
		case 'i':
			only = atoi(optarg);
			break;
		case 'n':
			n = strtoull(optarg, NULL, 10);
			break;
		case 'r':
			reps = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: codec_bench [-b blocksize] "
			    "[-i impl] [-n elements] [-r repeats]\n");
			return 1;
		}
	}
	if (bs == 0 || bs % 2 != 0 || n == 0) {
		fprintf(stderr, "codec_bench: bad blocksize or size\n");
		return 1;
	}
	nb = (n + bs - 1) / bs;
	f32 = malloc(n * 4);
	bf16 = malloc(n * 2);
	f16 = malloc(n * 2);
	packed = malloc((n + 1) / 2);
	out = malloc(n * 4);
	qabsmax = malloc(nb);
	nested = malloc((nb / 256 + 1) * 4);
	absmax = malloc(nb * 4);
	nested8 = malloc((n / 256 + 1) * 4);
	if (f32 == NULL || bf16 == NULL || f16 == NULL || packed == NULL ||
	    absmax == NULL || out == NULL || qabsmax == NULL ||
	    nested == NULL || nested8 == NULL ||
	    peftio_gpu_rcp_init(NULL) != 0) {
		fprintf(stderr, "codec_bench: setup failed\n");
		return 1;
	}
	for (i = 0; i < n; i++) {
		v = 0.02f * randn(&seed);
		if (rnd(&seed) % 1000 == 0)
			v *= 8.0f;
		f32[i] = v;
	}
	peftio_from_f32(PEFTIO_BF16, f32, bf16, n);
	peftio_from_f32(PEFTIO_F16, f32, f16, n);
	printf("%llu elements, blocksize %llu, best of %d, ns/element "
	    "(G elements/s)\n", (unsigned long long)n,
	    (unsigned long long)bs, reps);
	old = peftio_q4_impl_set(-1);
	for (impl = 0; impl <= 3; impl++) {
		if ((only >= 0 && impl != only) ||
		    peftio_q4_impl_set(impl) < 0)
			continue;
		for (t = 0; t < 2; t++)
			for (d = 0; d < 3; d++) {
				in = d == 0 ? (const void *)f32 : d == 1 ?
				    (const void *)bf16 : (const void *)f16;
				best = 1e30;
				for (r = 0; r < (impl == 0 ? 1 : reps); r++) {
					t0 = now();
					peftio_q4_quantize(t, dts[d], in, n, bs,
					    0, nb, packed, absmax);
					t0 = now() - t0;
					if (t0 < best)
						best = t0;
				}
				printf("%-9s %s %-4s %7.3f ns (%.2f G/s)\n",
				    impl_names[impl], t ? "fp4" : "nf4", dtn[d],
				    best * 1e9 / (double)n,
				    (double)n / best * 1e-9);
			}
	}
	peftio_q4_impl_set(old);
	/* Double quantization of the absmax vector, per parameter. */
	peftio_q4_quantize(PEFTIO_Q4_NF4, PEFTIO_F32, f32, n, bs, 0, nb,
	    packed, absmax);
	best = 1e30;
	for (r = 0; r < reps; r++) {
		t0 = now();
		peftio_dq_quantize(absmax, nb, 256, &offset, qabsmax, nested);
		t0 = now() - t0;
		if (t0 < best)
			best = t0;
	}
	printf("double quantization %7.3f ns per parameter (%.2f ns per "
	    "absmax)\n", best * 1e9 / (double)n, best * 1e9 / (double)nb);
	/* The 8-bit blockwise codec (blocks of 256) on the f32 input. */
	best = 1e30;
	for (r = 0; r < reps; r++) {
		t0 = now();
		peftio_q8_quantize(peftio_dynamic_map(), f32, n, 256, 0,
		    (n + 255) / 256, out, nested8);
		t0 = now() - t0;
		if (t0 < best)
			best = t0;
	}
	printf("blockwise 8-bit f32 %7.3f ns (%.2f G/s)\n",
	    best * 1e9 / (double)n, (double)n / best * 1e-9);
	/* Dequantization back to the input type (one implementation). */
	for (t = 0; t < 2; t++)
		for (d = 0; d < 3; d++) {
			in = d == 0 ? (const void *)f32 : d == 1 ?
			    (const void *)bf16 : (const void *)f16;
			peftio_q4_quantize(t, dts[d], in, n, bs, 0, nb, packed,
			    absmax);
			best = 1e30;
			for (r = 0; r < reps; r++) {
				t0 = now();
				peftio_q4_dequantize(peftio_q4_code(t), packed,
				    absmax, n, bs, 0, nb, dts[d], out);
				t0 = now() - t0;
				if (t0 < best)
					best = t0;
			}
			printf("dequant   %s %-4s %7.3f ns (%.2f G/s)\n",
			    t ? "fp4" : "nf4", dtn[d], best * 1e9 / (double)n,
			    (double)n / best * 1e-9);
		}
	free(f32);
	free(bf16);
	free(f16);
	free(packed);
	free(out);
	free(qabsmax);
	free(nested);
	free(nested8);
	free(absmax);
	return 0;
}
