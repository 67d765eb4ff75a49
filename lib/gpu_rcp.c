/*
 * gpu_rcp.c - the reciprocal bitsandbytes' CUDA kernels compute.
 *
 * bitsandbytes is built with --use_fast_math, so 1.0f/absmax becomes
 * MUFU.RCP (rcp.approx.ftz.f32).  Its result differs from the correctly
 * rounded reciprocal by -1, 0 or +1 ulp, depending on the mantissa of the
 * input only (bnb-nf4.md section 11).  The library embeds that measured
 * difference for all 2^23 mantissas (lib/data/rcp_delta.bin.gz, a gzip
 * file of 2^23 signed bytes), packed at build time to 2 bits per entry
 * (scripts/rcp_pack.c) and gzip-compressed again; it inflates the 2 MiB
 * once, when first asked for a reciprocal.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "peftio_private.h"

#define RCP_ENTRIES	(1UL << 23)		/* one per f32 mantissa */
#define RCP_PACKED	(RCP_ENTRIES / 4)	/* 2 bits per entry */

static pthread_once_t rcp_once = PTHREAD_ONCE_INIT;
static uint8_t *rcp_table;		/* delta + 1 in 2 bits, or NULL */
static int rcp_ready;			/* set once the init has run */
static int rcp_status;			/* why the table is missing */
static char rcp_msg[PEFTIO_ERRMSG_MAX];

static int
rcp_fail(int code, const char *msg)
{
	rcp_status = code;
	strncpy(rcp_msg, msg, sizeof(rcp_msg) - 1);
	return code;
}

/*
 * Inflate the embedded table into tab: exactly RCP_PACKED bytes, no
 * entry 3 (delta + 1 is 0, 1 or 2).
 */
static int
rcp_load(uint8_t *tab)
{
	z_stream zs;
	unsigned bad = 0;
	size_t i;
	int zr, rc = PEFTIO_OK;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		return rcp_fail(PEFTIO_ENOMEM,
		    "reciprocal table: inflateInit2 failed");
	zs.next_in = (unsigned char *)(uintptr_t)peftio_rcp_packed_gz;
	zs.avail_in = (uInt)peftio_rcp_packed_gz_len;
	zs.next_out = tab;
	zs.avail_out = RCP_PACKED;
	zr = inflate(&zs, Z_FINISH);
	if (zr == Z_STREAM_END && zs.avail_out != 0)
		rc = rcp_fail(PEFTIO_EFORMAT,
		    "reciprocal table: shorter than 2^23 entries");
	else if (zr != Z_STREAM_END && zs.avail_out == 0)
		rc = rcp_fail(PEFTIO_EFORMAT,
		    "reciprocal table: longer than 2^23 entries");
	else if (zr != Z_STREAM_END)
		rc = rcp_fail(PEFTIO_EFORMAT,
		    "reciprocal table: corrupt gzip data");
	inflateEnd(&zs);
	if (rc != PEFTIO_OK)
		return rc;
	for (i = 0; i < RCP_PACKED; i++)
		bad |= tab[i] & tab[i] >> 1 & 0x55;
	if (bad != 0)
		return rcp_fail(PEFTIO_EFORMAT,
		    "reciprocal table: entry out of range");
	return PEFTIO_OK;
}

static void
rcp_init_once(void)
{
	uint8_t *tab;

	if ((tab = calloc(RCP_PACKED, 1)) == NULL)
		rcp_fail(PEFTIO_ENOMEM, "reciprocal table: out of memory");
	else if (rcp_load(tab) != PEFTIO_OK)
		free(tab);
	else
		rcp_table = tab;
	__atomic_store_n(&rcp_ready, 1, __ATOMIC_RELEASE);
}

int
peftio_gpu_rcp_init(struct peftio_error *err)
{
	pthread_once(&rcp_once, rcp_init_once);
	if (rcp_table == NULL)
		return peftio_error_set(err, rcp_status, "%s", rcp_msg);
	return PEFTIO_OK;
}

/*
 * bits(gpu_rcp(a)) = bits(1.0f/a) + delta[mantissa(a)] for normal a
 * whose IEEE reciprocal is normal (section 11).  As rcp.approx.ftz:
 * subnormal inputs count as zero (result +-inf), +-inf gives +-0, a
 * result that falls below the normal range is flushed to zero.  When
 * the table could not be loaded (peftio_gpu_rcp_init() reports it) the
 * IEEE reciprocal is returned, with the same zero and subnormal rules.
 * The caller has run rcp_init_once().
 */
static inline float
rcp_one(float a)
{
	uint32_t u = peftio_f2u(a), sign = u & 0x80000000U, abs = u & 0x7fffffffU;
	uint32_t m, r;
	int d;

	if (abs > 0x7f800000U)			/* NaN */
		return a;
	if (abs < 0x00800000U)			/* zero or subnormal */
		return peftio_u2f(sign | 0x7f800000U);
	if (abs == 0x7f800000U)			/* infinity */
		return peftio_u2f(sign);
	r = peftio_f2u(1.0f / a);
	if ((r & 0x7f800000U) == 0)		/* subnormal result */
		return peftio_u2f(sign);
	if (rcp_table != NULL) {
		m = u & 0x007fffffU;
		d = (int)((rcp_table[m >> 2] >> ((m & 3) * 2)) & 3) - 1;
		r = (uint32_t)((int32_t)r + d);
		if ((r & 0x7f800000U) == 0)
			return peftio_u2f(sign);
	}
	return peftio_u2f(r);
}

static inline void
rcp_ensure(void)
{
	if (!__atomic_load_n(&rcp_ready, __ATOMIC_ACQUIRE))
		pthread_once(&rcp_once, rcp_init_once);
}

float
peftio_gpu_rcp(float a)
{
	rcp_ensure();
	return rcp_one(a);
}

/*
 * r[i] = peftio_gpu_rcp(a[i]), i < n.  The table bytes of the whole
 * batch are requested first, so that their cache misses (the table is
 * 2 MiB, the mantissas of block maxima are random) overlap instead of
 * following one another.
 */
void
peftio_gpu_rcp_n(const float *a, float *r, size_t n)
{
	size_t i;

	rcp_ensure();
	if (rcp_table != NULL)
		for (i = 0; i < n; i++)
			__builtin_prefetch(rcp_table +
			    ((peftio_f2u(a[i]) & 0x007fffffU) >> 2));
	for (i = 0; i < n; i++)
		r[i] = rcp_one(a[i]);
}
