/*
 * gpu_rcp.c - the reciprocal bitsandbytes' CUDA kernels compute.
 *
 * bitsandbytes is built with --use_fast_math, so 1.0f/absmax becomes
 * MUFU.RCP (rcp.approx.ftz.f32).  Its result differs from the correctly
 * rounded reciprocal by -1, 0 or +1 ulp, depending on the mantissa of the
 * input only (bnb-nf4.md section 11).  The library embeds that measured
 * difference for all 2^23 mantissas (lib/data/rcp_delta.bin.gz, a gzip
 * file of 2^23 signed bytes) and keeps it in memory packed to 2 bits per
 * entry (2 MiB).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "peftio_private.h"

#define RCP_ENTRIES	(1UL << 23)		/* one per f32 mantissa */
#define RCP_PACKED	(RCP_ENTRIES / 4)	/* 2 bits per entry */
#define RCP_CHUNK	65536

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
 * Pack got entries of buf (each -1, 0 or +1) into tab from entry pos on:
 * 0 when every one is in range.  Four at a time while pos is a multiple
 * of 4 (all but the last piece of the stream), which the compiler turns
 * into vector code; the inflated table is 8 MiB.
 */
static int
rcp_pack(uint8_t *tab, unsigned long pos, const unsigned char *buf,
    size_t got)
{
	unsigned bad = 0, e0, e1, e2, e3;
	size_t i = 0;

	if ((pos & 3) == 0)
		for (; i + 4 <= got; i += 4) {
			e0 = (uint8_t)(buf[i] + 1);
			e1 = (uint8_t)(buf[i + 1] + 1);
			e2 = (uint8_t)(buf[i + 2] + 1);
			e3 = (uint8_t)(buf[i + 3] + 1);
			bad |= (e0 > 2) | (e1 > 2) | (e2 > 2) | (e3 > 2);
			tab[(pos + i) >> 2] = (uint8_t)(e0 | e1 << 2 |
			    e2 << 4 | e3 << 6);
		}
	for (; i < got; i++) {
		e0 = (uint8_t)(buf[i] + 1);
		bad |= e0 > 2;
		tab[(pos + i) >> 2] |= (uint8_t)((e0 & 3) <<
		    ((pos + i) & 3) * 2);
	}
	return bad != 0;
}

/*
 * Inflate the embedded table into a packed 2-bit form.  Every byte must
 * be -1, 0 or +1 and there must be exactly 2^23 of them.
 */
static int
rcp_load(uint8_t *tab)
{
	unsigned char buf[RCP_CHUNK];
	z_stream zs;
	unsigned long pos = 0;
	int zr, rc = PEFTIO_OK;
	size_t got;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		return rcp_fail(PEFTIO_ENOMEM,
		    "reciprocal table: inflateInit2 failed");
	zs.next_in = (unsigned char *)(uintptr_t)peftio_rcp_delta_gz;
	zs.avail_in = (uInt)peftio_rcp_delta_gz_len;
	do {
		zs.next_out = buf;
		zs.avail_out = sizeof(buf);
		zr = inflate(&zs, Z_NO_FLUSH);
		if (zr != Z_OK && zr != Z_STREAM_END) {
			rc = rcp_fail(PEFTIO_EFORMAT,
			    "reciprocal table: corrupt gzip data");
			break;
		}
		got = sizeof(buf) - zs.avail_out;
		if (got > RCP_ENTRIES - pos) {
			rc = rcp_fail(PEFTIO_EFORMAT,
			    "reciprocal table: longer than 2^23 entries");
			break;
		}
		if (rcp_pack(tab, pos, buf, got) != 0) {
			rc = rcp_fail(PEFTIO_EFORMAT,
			    "reciprocal table: entry out of range");
			break;
		}
		pos += got;
		if (zr != Z_STREAM_END && got == 0 && zs.avail_in == 0) {
			rc = rcp_fail(PEFTIO_EFORMAT,
			    "reciprocal table: truncated gzip data");
			break;
		}
	} while (zr != Z_STREAM_END);
	inflateEnd(&zs);
	if (rc == PEFTIO_OK && pos != RCP_ENTRIES)
		rc = rcp_fail(PEFTIO_EFORMAT,
		    "reciprocal table: shorter than 2^23 entries");
	return rc;
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
