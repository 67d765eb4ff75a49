/*
 * peftio_private.h - declarations shared by the library's own files.
 * Not installed.
 */
#ifndef PEFTIO_PRIVATE_H
#define PEFTIO_PRIVATE_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include <jansson.h>

#include "peftio.h"

/* Checked arithmetic: return nonzero on overflow. */
#define PEFTIO_MUL_OVERFLOW(a, b, r)	__builtin_mul_overflow((a), (b), (r))
#define PEFTIO_ADD_OVERFLOW(a, b, r)	__builtin_add_overflow((a), (b), (r))

#define PEFTIO_MIN(a, b)	((a) < (b) ? (a) : (b))
#define PEFTIO_MAX(a, b)	((a) > (b) ? (a) : (b))

/* The bits of a float and back, without aliasing problems. */
static inline uint32_t
peftio_f2u(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float
peftio_u2f(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/*
 * text.c: bytes from a file as shown in a message: control characters
 * escaped as \xNN, cut after PEFTIO_SHOW_MAX bytes with "...".  len is
 * SIZE_MAX for a NUL-terminated s; buf holds PEFTIO_SHOWBUF bytes.
 */
#define PEFTIO_SHOW_MAX	256
#define PEFTIO_SHOWBUF	(4 * PEFTIO_SHOW_MAX + 4)
const char *peftio_show(const char *s, size_t len, char *buf);

/* text.c: length of the valid UTF-8 prefix of s (n when all of
 * it is), with Rust's rules: no overlong forms, no surrogates. */
size_t	peftio_utf8_valid(const unsigned char *s, size_t n);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* dtype.c: the CPU runs AVX (the OS saving its registers) and F16C;
 * CPUID is asked once. */
int	peftio_cpu_f16c(void);
#endif

/* select.c: the last dotted component of the first len bytes of name,
 * its length in *plen. */
const char *peftio_last_part(const char *name, size_t len, size_t *plen);

/* peftio_gpu_rcp() of a[0..n), the table reads of the batch overlapped. */
void	peftio_gpu_rcp_n(const float *a, float *r, size_t n);

/* The zlib-compressed GPU reciprocal table (lib/rcp_table.c, generated). */
extern const unsigned char peftio_rcp_delta_gz[];
extern const size_t peftio_rcp_delta_gz_len;

/* outfile.c: the registry of temporary paths removed on a signal. */
int	peftio_temp_register(const char *path, int is_dir);
void	peftio_temp_unregister(int slot);

/*
 * cudamean.c: x.mean() for a contiguous float32 tensor as PyTorch
 * computes it on an H100-class GPU (132 SMs), bit for bit: the double
 * quantization offset bitsandbytes stores.
 */
float	peftio_cuda_mean_f32(const float *x, uint64_t n);

/* An anonymous (already unlinked) temporary file in $TMPDIR or /tmp;
 * -1 with errno on failure. */
int	peftio_anon_file(void);

/* Full-length write/pwrite/read loops (EINTR and short counts). */
int	peftio_write_all(int fd, const void *buf, size_t len);
int	peftio_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* Returns bytes read (< len only at end of file), or -1. */
long long peftio_read_all(int fd, void *buf, size_t len);

/*
 * pyjson.c: v as Python's json.dumps() writes it: indent < 0 gives the
 * one-line form with ", " and ": "; indent >= 0 the indented form
 * followed by a newline (as transformers writes config.json).  Returns
 * a malloc'ed NUL-terminated string, or NULL when out of memory.
 */
char	*peftio_json_pydumps(const json_t *v, int indent, int sort_keys,
	    size_t *len);

/*
 * nf4.c, blockwise8.c: codec internals exposed for the unit tests.
 */
/* The scalar reference of peftio_q4_quantize() (the specification). */
int	peftio_q4_quantize_ref(enum peftio_q4type t, enum peftio_dtype dt,
	    const void *in, uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1,
	    uint8_t *packed, float *absmax);
/* peftio_q4_quantize() of blocks whose absmax (the same array) was
 * computed before by peftio_q4_absmax() on the same values: the fast
 * paths do not compute it again. */
int	peftio_q4_quantize_known(enum peftio_q4type t, enum peftio_dtype dt,
	    const void *in, uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1,
	    uint8_t *packed, float *absmax);
/* peftio_q4_absmax(), and 1 when it saw that every value is finite; 0
 * when one is not, or when its path cannot tell (a scan must say). */
int	peftio_q4_absmax_finite(enum peftio_dtype dt, const void *in,
	    uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1, float *absmax);
/* Select the implementation of the 4-bit and 8-bit codecs: 0 the
 * reference, 1 portable, 2 AVX-512, 3 AVX2; negative to query.  Returns
 * the previous one, or -1 if the CPU lacks it. */
int	peftio_q4_impl_set(int impl);
/* The 8-bit stage of peftio_dq_quantize() with a given offset. */
void	peftio_dq_quantize_offset(const float *absmax, uint64_t nb,
	    uint64_t nbs, float offset, uint8_t *qabsmax, float *nested);
/* The same for the nested blocks [b0, b1) only (of nbs absmax each):
 * their codes and nested absmax. */
void	peftio_dq_quantize_blocks(const float *absmax, uint64_t nb,
	    uint64_t nbs, float offset, uint64_t b0, uint64_t b1,
	    uint8_t *qabsmax, float *nested);

/*
 * zip.c: the members of a zip archive in memory (a torch.save file).
 * The buffer must outlive the handle.  Members are listed in central
 * directory order.
 */
struct peftio_zip;

#define PEFTIO_ZIP_STORED	0
#define PEFTIO_ZIP_DEFLATED	8

struct peftio_zip_member {
	const char	*name;		/* NUL-terminated */
	uint64_t	 csize;		/* bytes in the archive */
	uint64_t	 usize;		/* bytes once inflated */
	uint64_t	 offset;	/* of the data, in the buffer */
	uint32_t	 crc;
	unsigned	 method;	/* PEFTIO_ZIP_STORED or _DEFLATED */
};

int	peftio_zip_open(struct peftio_zip **out, const void *buf, size_t len,
	    const char *label, struct peftio_error *err);
void	peftio_zip_close(struct peftio_zip *z);
size_t	peftio_zip_count(const struct peftio_zip *z);
const struct peftio_zip_member *peftio_zip_member(const struct peftio_zip *z,
	    size_t i);
/* Index of the member with this name, or -1. */
long	peftio_zip_find(const struct peftio_zip *z, const char *name);
/*
 * Member i's usize bytes, CRC-32 checked: a STORED member in place
 * (*copy NULL), a DEFLATED one inflated into *copy (malloc'ed, the
 * caller frees it; *data == *copy).  ctx, if not NULL, says in messages
 * what the member is read for.
 */
int	peftio_zip_read(const struct peftio_zip *z, size_t i, const char *ctx,
	    const unsigned char **data, unsigned char **copy,
	    struct peftio_error *err);

/*
 * pickle.c: the state dict of a torch.save archive from its data.pkl,
 * by a machine that knows only the pickle a state dict of tensors
 * needs.  Tensors are in the dict's order; sizes, strides and offset
 * are as the pickle gives them (in elements of the tensor's dtype),
 * not yet checked against anything.
 */
struct peftio_pickle_storage {
	const char	*key;		/* record "<archive>/data/<key>" */
	enum peftio_dtype dtype;	/* of the storage class */
	uint64_t	 nbytes;
};

struct peftio_pickle_tensor {
	const char	*name;
	size_t		 storage;	/* index in the storage list */
	enum peftio_dtype dtype;
	int		 ndim;
	int64_t		 size[PEFTIO_MAX_DIMS];
	int64_t		 stride[PEFTIO_MAX_DIMS];
	int64_t		 offset;
};

struct peftio_state_dict {
	struct peftio_pickle_storage *storage;
	size_t		 nstorage;
	struct peftio_pickle_tensor *tensor;
	size_t		 ntensor;
	char		*strings;	/* the names and keys */
};

/* label names the file, member the pickle, in messages. */
int	peftio_pickle_load(struct peftio_state_dict *sd, const unsigned char *p,
	    size_t len, const char *label, const char *member,
	    struct peftio_error *err);
void	peftio_state_dict_free(struct peftio_state_dict *sd);

/*
 * torchbin.c: a torch.save archive (pytorch_model.bin) as a list of
 * tensors, for the safetensors reader, which hands such files over.
 */
struct peftio_torchbin;

/* buf must outlive the handle; mapped says it is an mmap of a file,
 * whose pages may be dropped when tensors are released. */
int	peftio_torchbin_open(struct peftio_torchbin **out, const void *buf,
	    size_t len, int mapped, const char *label,
	    struct peftio_error *err);
void	peftio_torchbin_close(struct peftio_torchbin *tb);
size_t	peftio_torchbin_count(const struct peftio_torchbin *tb);
const struct peftio_tensor_info *peftio_torchbin_tensor(
	    const struct peftio_torchbin *tb, size_t i);
/* Tensor i's bytes, contiguous: in place when the archive holds them
 * so, else a copy kept until peftio_torchbin_release(). */
int	peftio_torchbin_data(struct peftio_torchbin *tb, size_t i,
	    const void **data, struct peftio_error *err);
void	peftio_torchbin_release(struct peftio_torchbin *tb, size_t i);

/* source.c: drop the whole pages inside [p, p + n) of a private
 * file mapping (madvise MADV_DONTNEED); a hint, never fails. */
void	peftio_drop_pages(const void *p, uint64_t n);
/* Tensor i's bytes where they lie in a file's mapping (a safetensors
 * file, or the spool of a stream), whose pages peftio_drop_pages() may
 * give back: 0; 1 when they lie elsewhere (a torch archive, memory),
 * to be read; a negative PEFTIO_E* value on failure. */
int	peftio_ckpt_view(struct peftio_ckpt *c, size_t i, const void **data,
	    struct peftio_error *err);

/* progress.c: the hook of peftio_set_read_progress(), if any. */
void	peftio_read_progress(uint64_t done, uint64_t total, const char *what);


/*
 * tuners.c: PEFT's tuners other than LoRA and IA3, read by lora.c's
 * adapter and merged through its plan.  peftio_tuner_handles() is 1 for
 * a peft_type that tuners.c reads or refuses; load() classifies the
 * adapter's tensors (the others go to repl as modules_to_save) and
 * checks them; check() fits module i to its base tensor's shape;
 * prepare() computes its merge (or unmerge) for a rows x cols tensor,
 * rows() applies it to a block of rows.
 */
struct peftio_ckpt;
struct peftio_tuner;
struct peftio_tuner_prep;

int	peftio_tuner_handles(const char *type);
int	peftio_tuner_load(struct peftio_tuner **out, const char *type,
	    json_t *cfg, const char *cfgpath, const char *path,
	    struct peftio_ckpt *ck,
	    int (*repl)(void *arg, const char *target, size_t len, long idx),
	    void *arg, struct peftio_error *err);
void	peftio_tuner_free(struct peftio_tuner *t);
const char *peftio_tuner_type(const struct peftio_tuner *t);
size_t	peftio_tuner_nmodules(const struct peftio_tuner *t);
const char *peftio_tuner_module(const struct peftio_tuner *t, size_t i,
	    uint64_t *rank);
const char *peftio_tuner_target(const struct peftio_tuner *t, size_t i);
int	peftio_tuner_invertible(const struct peftio_tuner *t);
int	peftio_tuner_check(struct peftio_tuner *t, size_t i, int ndim,
	    const uint64_t *shape, struct peftio_error *err);
int	peftio_tuner_prepare(const struct peftio_tuner *t, size_t i,
	    uint64_t rows, uint64_t cols, int unmerge,
	    struct peftio_tuner_prep **out, struct peftio_error *err);
void	peftio_tuner_rows(struct peftio_tuner_prep *p, float *w,
	    uint64_t row0, uint64_t nrows);
void	peftio_tuner_prep_free(struct peftio_tuner_prep *p);
/*
 * The parameters PEFT trains (*n) and those it adds untrained (*fixed:
 * AdaLoRA's ranknum) for the tuner of plan o on a Linear weight [out,
 * in], shared ones (VB-LoRA's vector bank) not included;
 * PEFTIO_EINVAL for a method that is no tuner, PEFTIO_EMISMATCH with *why
 * for sizes PEFT refuses on this layer, PEFTIO_EFORMAT on overflow.
 */
struct peftio_plan_opts;
int	peftio_tuner_plan_params(const struct peftio_plan_opts *o,
	    uint64_t out, uint64_t in, uint64_t *n, uint64_t *fixed,
	    const char **why);

/* ------------------------------------------------------------------ */
/* The 4-bit writing direction (bnb_quantize.c)                        */

/* What passes over tensors reuse from one tensor to the next. */
struct peftio_bnb_buffers {
	struct peftio_scratch	 raw[PEFTIO_MAX_JOBS];	/* read, per thread */
	struct peftio_scratch	 vals[PEFTIO_MAX_JOBS];	/* as f32 */
	struct peftio_scratch	 conv[PEFTIO_MAX_JOBS];	/* in qs->dtype */
	struct peftio_scratch	 absmax;	/* the offset's pass */
	struct peftio_scratch	 whole[2];	/* a weight whole in memory */
};

/* peftio_bnb_quantize_tensor() and peftio_bnb_prepass() through b;
 * known, when not NULL, holds every block's absmax already (found by
 * the offset's pass), copied to absmax instead of computed again. */
int	peftio_bnb_pass(struct peftio_ckpt *c, size_t i,
	    const struct peftio_quant_state *qs, uint8_t *packed,
	    float *absmax, const float *known, int check, unsigned nthreads,
	    struct peftio_bnb_buffers *b, struct peftio_error *err);
/* The offset's pass; the absmax go to keep (every block's) when it is
 * not NULL, else to b's scratch. */
struct peftio_bnb_out;
int	peftio_bnb_offset(struct peftio_ckpt *c, size_t i,
	    struct peftio_bnb_out *bo, float *keep, int check,
	    unsigned nthreads, struct peftio_bnb_buffers *b,
	    struct peftio_error *err);

/* ------------------------------------------------------------------ */
/* Writers (st_write.c)                                                */

/* Where in its file the first byte of tensor i goes (after the layout;
 * 0 before). */
uint64_t peftio_stw_start(const struct peftio_stw *w, size_t i);
/* The same for output tensor name of a checkpoint writer. */
uint64_t peftio_ckptw_start(const struct peftio_ckptw *w, const char *name);

/*
 * Direct writes take the whole pages of a buffer straight from it when
 * the buffer lies in memory as the bytes will lie in the file: at the
 * same offset within a page.  PEFTIO_PAGE_MAX is a multiple of every
 * page size served.  peftio_scratch_placed() gives len bytes of s that
 * start at offset (mod PEFTIO_PAGE_MAX) within a page.
 */
#define PEFTIO_PAGE_MAX	((uint64_t)64 << 10)
void	*peftio_scratch_placed(struct peftio_scratch *s, size_t len,
	    uint64_t offset);

#endif /* PEFTIO_PRIVATE_H */
