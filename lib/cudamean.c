/*
 * cudamean.c - the float32 mean that PyTorch computes on an H100.
 *
 * bitsandbytes' double quantization takes offset = absmax.mean() on the
 * GPU, and the nested 8-bit codes depend on every bit of it.  This file
 * reproduces torch.mean() of a contiguous, 16-byte aligned 1-D float32
 * CUDA tensor bit for bit (measured with PyTorch 2.11, CUDA 13.0, on an
 * H100 SXM with 132 SMs; bench/cudamean/).
 *
 * torch runs mean_kernel_cuda (aten/src/ATen/native/cuda/
 * ReduceMomentKernel.cu): MeanOps<float> (ATen/native/SharedReduceOps.h)
 * sums in float and multiplies the sum by factor = 1.0f / (float)n, both
 * computed in float.  The sum's order is that of gpu_reduce_kernel()
 * with vt0 = input_vec_size = 4 in aten/src/ATen/native/cuda/Reduce.cuh:
 *
 *  - setReduceConfig(): for n >= 128 the input is read as float4
 *    vectors ("vectorize along input") and the block is one row of
 *    bw = min(last_pow2(n / 4), 512) threads; below 128 it is read as
 *    scalars by bw = last_pow2(n) threads.  When a thread would see at
 *    least 256 values (v = ceil(n / bw) >= 256), the input is split over
 *    ctas = max(min(132 * (2048 / bw), ceil(v / 16)), ceil(v / 256))
 *    blocks (bw is then 512: 16 blocks from n = 130561, 528 from
 *    n = 4325377 up to 69 million).
 *  - input_vectorized_thread_reduce_impl(): thread t of T = bw * ctas
 *    keeps 4 accumulators; for vector k = t, t + T, t + 2T, ... it adds
 *    x[4k + i] to accumulator i.  The n % 4 trailing values are added to
 *    accumulator 0 of lanes 0.. of block 0, after the loop.  The four
 *    are then combined as ((a0 + a1) + a2) + a3.  The scalar path
 *    (thread_reduce_impl()) is the same with element k = t, t + T, ...
 *    going to accumulator (k / T) % 4.
 *  - block_x_reduce(): lane x adds lane x + s for s = bw/2, bw/4, ..., 1
 *    (through shared memory down to s = 32, then warp shuffles with
 *    decreasing offsets); lane 0 holds the block's sum.
 *  - global_reduce(): with several blocks, lane x of the last block to
 *    finish sums the block partials x, x + bw, x + 2bw, ... in order,
 *    starting from 0, and the lanes are combined by block_x_reduce()
 *    again.
 *
 * Every step is a float addition rounded to nearest, so doing the same
 * additions in the same order on the CPU gives the same bits.  The code
 * must not be built with -ffast-math (no reassociation) and does no
 * multiply-add.  Every sum is stored to a float object, so a compiler
 * with FLT_EVAL_METHOD != 0 (x87) rounds it to float before the next
 * addition as C11 requires, and that double rounding of a float sum,
 * product or quotient is harmless (64 >= 2 * 24 + 2 bits).
 */
#include <stdint.h>
#include <string.h>

#include "peftio_private.h"

float	peftio_cuda_mean_f32(const float *x, uint64_t n);

#define CM_MAX_THREADS	512	/* Reduce.cuh, MAX_NUM_THREADS for float */
#define CM_WARP		32
#define CM_VEC		4	/* vt0 == input_vec_size */
#define CM_NUM_SMS	132	/* H100 SXM multiProcessorCount */
#define CM_SM_THREADS	2048	/* maxThreadsPerMultiProcessor */
#define CM_MIN_VPT	16	/* min_values_per_thread (CUDA) */
#define CM_MAX_VPT	256	/* max_values_per_thread */

/* floor(log2(v)) as a power of two, at least 1. */
static uint64_t
cm_last_pow2(uint64_t v)
{
	uint64_t p = 1;

	while (p <= v / 2)
		p *= 2;
	return p;
}

static uint64_t
cm_div_up(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

/* The accumulators of one thread: ((a0 + a1) + a2) + a3, each rounded. */
static float
cm_combine(const float *a)
{
	float s;

	s = a[0] + a[1];
	s = s + a[2];
	s = s + a[3];
	return s;
}

/*
 * block_x_reduce(): the tree over the bw lanes of one block; v is
 * overwritten.  Only lane 0's result matters, so only the lanes that
 * feed it are computed.
 */
static float
cm_block_reduce(float *v, unsigned bw)
{
	unsigned s, i;

	for (s = bw / 2; s >= CM_WARP; s /= 2)
		for (i = 0; i < s; i++)
			v[i] = v[i] + v[i + s];
	for (s = (bw < CM_WARP ? bw : CM_WARP) / 2; s > 0; s /= 2)
		for (i = 0; i < s; i++)
			v[i] = v[i] + v[i + s];
	return v[0];
}

/*
 * The scalar path (n < 128): one block, element k to lane k % bw,
 * accumulator (k / bw) % 4.
 */
static float
cm_sum_scalar(const float *x, unsigned n)
{
	float lane[CM_MAX_THREADS], acc[CM_VEC];
	unsigned bw, t, k, i;

	bw = (unsigned)cm_last_pow2(n);
	for (t = 0; t < bw; t++) {
		for (i = 0; i < CM_VEC; i++)
			acc[i] = 0.0f;
		for (k = t, i = 0; k < n; k += bw, i = (i + 1) % CM_VEC)
			acc[i] = acc[i] + x[k];
		lane[t] = cm_combine(acc);
	}
	return cm_block_reduce(lane, bw);
}

/*
 * The vectorized path (n >= 128), possibly over several blocks.
 */
static float
cm_sum_vector(const float *x, uint64_t n)
{
	float acc[CM_MAX_THREADS][CM_VEC];
	float lane[CM_MAX_THREADS], part[CM_MAX_THREADS];
	uint64_t dim0, vpt, ctas, c1, c2, c3, nvec, T, b, k;
	unsigned bw, x0, i, tail;

	dim0 = n / CM_VEC;
	bw = dim0 < CM_MAX_THREADS ? (unsigned)cm_last_pow2(dim0) :
	    CM_MAX_THREADS;
	vpt = cm_div_up(n, bw);
	ctas = 1;
	if (vpt >= CM_MAX_VPT) {
		/* block_height is 1: the split across warps is a no-op. */
		c1 = (uint64_t)CM_NUM_SMS * (CM_SM_THREADS / bw);
		c2 = cm_div_up(vpt, CM_MIN_VPT);
		c3 = cm_div_up(vpt, CM_MAX_VPT);
		ctas = c1 < c2 ? c1 : c2;
		if (c3 > ctas)
			ctas = c3;
	}
	T = (uint64_t)bw * ctas;
	nvec = n / CM_VEC;
	tail = (unsigned)(n % CM_VEC);

	for (i = 0; i < bw; i++)
		part[i] = 0.0f;
	for (b = 0; b < ctas; b++) {
		/* The block's bw threads, vector by vector (rows of bw). */
		memset(acc, 0, sizeof(acc));
		for (k = b * bw; k < nvec; k += T) {
			const float *p = x + k * CM_VEC;
			unsigned m = (unsigned)(nvec - k < bw ? nvec - k : bw);

			for (x0 = 0; x0 < m; x0++)
				for (i = 0; i < CM_VEC; i++)
					acc[x0][i] = acc[x0][i] +
					    p[x0 * CM_VEC + i];
		}
		if (b == 0)
			for (x0 = 0; x0 < tail; x0++)
				acc[x0][0] = acc[x0][0] + x[nvec * CM_VEC + x0];
		/* T <= n / 4: every thread has an input_idx below n. */
		for (x0 = 0; x0 < bw; x0++)
			lane[x0] = cm_combine(acc[x0]);
		if (ctas == 1)
			return cm_block_reduce(lane, bw);
		/* The last block's lane b % bw adds this partial next. */
		part[b % bw] = part[b % bw] + cm_block_reduce(lane, bw);
	}
	return cm_block_reduce(part, bw);
}

/*
 * torch.mean() of the n floats at x as PyTorch 2.11 computes it on an
 * H100 SXM (132 SMs) for a contiguous, 16-byte aligned CUDA tensor.
 * Exact for n below 2^29 (torch reduces larger tensors in 32-bit-indexed
 * pieces) and, from n = 130561 on, only for a GPU with 132 SMs (the
 * block count depends on it); n == 0 gives NaN as torch does.  Uses
 * about 12 KiB of stack and no heap; O(n).
 */
float
peftio_cuda_mean_f32(const float *x, uint64_t n)
{
	float sum, factor;

	if (n == 0)
		return __builtin_nanf("");
	if (n < 128)
		sum = cm_sum_scalar(x, (unsigned)n);
	else
		sum = cm_sum_vector(x, n);
	/* MeanOps: factor = (float)num_outputs / numel, in float. */
	factor = 1.0f / (float)n;
	return sum * factor;
}
