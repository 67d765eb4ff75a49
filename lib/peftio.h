/*
 * peftio.h - the public interface of libpeftio.
 *
 * libpeftio reads and writes model checkpoints (safetensors files, sharded
 * directories; torch.save .bin files are read too), implements the
 * bitsandbytes 4-bit codecs (NF4, FP4) with double quantization bit for
 * bit, and the LoRA algebra shared by the peftio tools.
 *
 * Conventions:
 *  - Every name starts with peftio_ or PEFTIO_.
 *  - Functions that can fail return 0 on success or a negative
 *    PEFTIO_E* value, and fill a struct peftio_error whose message names
 *    the file and, where there is one, the tensor.  A message is one
 *    line: control characters in the names it quotes are written as
 *    \xNN.  The library never prints and never exits.
 *  - Handles are opaque; every *_free() and *_close() accepts NULL.
 *  - Sizes and offsets are uint64_t; all arithmetic on values read from a
 *    file is overflow-checked.
 */
#ifndef PEFTIO_H
#define PEFTIO_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The library is built with hidden visibility: what this header
 * declares is its whole interface, and all that libpeftio.so exports.
 */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define PEFTIO_VERSION_MAJOR	0
#define PEFTIO_VERSION_MINOR	1
#define PEFTIO_VERSION_PATCH	0
#define PEFTIO_VERSION_STRING	"0.1.0"

const char	*peftio_version(void);

/* ------------------------------------------------------------------ */
/* Errors (error.c)                                                    */
/* ------------------------------------------------------------------ */

/* Stable values; new ones are only ever appended. */
enum peftio_status {
	PEFTIO_OK = 0,
	PEFTIO_EIO = -1,	/* read/write/open failed (errno kept) */
	PEFTIO_EFORMAT = -2,	/* malformed input file */
	PEFTIO_ENOMEM = -3,
	PEFTIO_EINVAL = -4,	/* bad argument or unsupported combination */
	PEFTIO_EUNSUPPORTED = -5, /* valid input this build cannot handle */
	PEFTIO_ENOTFOUND = -6,	/* tensor, file or key missing */
	PEFTIO_EEXIST = -7,	/* destination exists and overwrite not allowed */
	PEFTIO_ENONFINITE = -8,	/* NaN or Inf where finite values are needed */
	PEFTIO_EMISMATCH = -9,	/* shapes/dtypes of two inputs do not fit */
	PEFTIO_ECHECKSUM = -10	/* stored checksum does not match the data */
};

#define PEFTIO_ERRMSG_MAX	1024

struct peftio_error {
	int	code;			/* enum peftio_status */
	int	sys_errno;		/* errno for PEFTIO_EIO, else 0 */
	char	msg[PEFTIO_ERRMSG_MAX];	/* "FILE: tensor NAME: what" */
};

/* Set err (which may be NULL) and return code. */
int	peftio_error_set(struct peftio_error *err, int code,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like peftio_error_set() with ": strerror(errno)" appended; code EIO. */
int	peftio_error_sys(struct peftio_error *err, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* Prepend "prefix: " to an error message already set (e.g. a file name). */
void	peftio_error_prefix(struct peftio_error *err, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
void	peftio_error_clear(struct peftio_error *err);
const char *peftio_status_name(int code);

/* ------------------------------------------------------------------ */
/* Progress (progress.c)                                               */
/* ------------------------------------------------------------------ */

/*
 * How a long step tells its caller how far it is: done of total units
 * (bytes, unless the step's documentation says tensors or modules;
 * total 0 when not known, as for a pipe), called before the item named
 * what, and once at the end with what NULL.  Calls of one step are
 * never concurrent, but may come from a worker thread.  The library
 * only calls it; the caller decides what to show and how often.
 */
typedef void (*peftio_progress_fn)(void *ctx, uint64_t done, uint64_t total,
    const char *what);

/* The progress of reading a stream (a pipe given as "-") into its spool
 * file, for every reader opened after this; NULL: none.  Not thread
 * safe: set it before opening inputs. */
void	peftio_set_read_progress(peftio_progress_fn fn, void *ctx);

/* ------------------------------------------------------------------ */
/* Data types (dtype.c)                                                */
/* ------------------------------------------------------------------ */

/*
 * In safetensors' enum order: its writer sorts tensors by this value,
 * descending, so the order of this list matters.
 */
enum peftio_dtype {
	PEFTIO_BOOL = 0,
	PEFTIO_F4,
	PEFTIO_F6_E2M3,
	PEFTIO_F6_E3M2,
	PEFTIO_U8,
	PEFTIO_I8,
	PEFTIO_F8_E5M2,
	PEFTIO_F8_E4M3,
	PEFTIO_F8_E8M0,
	PEFTIO_F8_E4M3FNUZ,
	PEFTIO_F8_E5M2FNUZ,
	PEFTIO_I16,
	PEFTIO_U16,
	PEFTIO_F16,
	PEFTIO_BF16,
	PEFTIO_I32,
	PEFTIO_U32,
	PEFTIO_F32,
	PEFTIO_C64,
	PEFTIO_F64,
	PEFTIO_I64,
	PEFTIO_U64,
	PEFTIO_DTYPE_COUNT
};

/* "F32", "BF16", ...; NULL for an invalid value. */
const char	*peftio_dtype_name(enum peftio_dtype dt);
/* Parse a safetensors dtype name (case-sensitive); -1 if unknown. */
int		 peftio_dtype_parse(const char *name, size_t len);
/* torch's name: "float32", "bfloat16", "float16", ...; NULL if none. */
const char	*peftio_dtype_torch_name(enum peftio_dtype dt);
/* Parse a torch dtype name ("bfloat16", "torch.float16", "float"); -1. */
int		 peftio_dtype_parse_torch(const char *name);
/* A float type as a command line or a recipe names it: "f32", "float32",
 * "fp32", "float", "f16", "float16", "fp16", "half", "bf16",
 * "bfloat16"; -1 if none. */
int		 peftio_dtype_parse_float(const char *name);
unsigned	 peftio_dtype_bits(enum peftio_dtype dt);
/* 1 for F64 F32 F16 BF16 F8_E4M3 F8_E5M2: convertible to/from f32. */
int		 peftio_dtype_is_float(enum peftio_dtype dt);
/* 1 for F32, F16 and BF16: the dtypes of the weights that tools
 * quantize, merge and convert. */
int		 peftio_dtype_is_model_float(enum peftio_dtype dt);

/*
 * Bytes for n elements of dt; fails on overflow or when n*bits is not a
 * whole number of bytes.  Returns 0 and sets *out, or PEFTIO_EFORMAT.
 */
int		 peftio_dtype_nbytes(enum peftio_dtype dt, uint64_t n,
		    uint64_t *out);

/* Exact scalar conversions.  f32 -> f16/bf16 round to nearest even;
 * NaN stays NaN (quiet, sign kept); overflow gives Inf. */
float		 peftio_f16_to_f32(uint16_t h);
uint16_t	 peftio_f32_to_f16(float f);
float		 peftio_bf16_to_f32(uint16_t h);
uint16_t	 peftio_f32_to_bf16(float f);
float		 peftio_f8e4m3_to_f32(uint8_t v);
uint8_t		 peftio_f32_to_f8e4m3(float f);	/* saturates to +-448 */
float		 peftio_f8e5m2_to_f32(uint8_t v);
uint8_t		 peftio_f32_to_f8e5m2(float f);

/*
 * Convert n elements between a float dtype (stored little-endian, any
 * alignment) and f32.  Return PEFTIO_EINVAL for a non-float dtype.
 */
int	peftio_to_f32(enum peftio_dtype dt, const void *src, float *dst,
	    uint64_t n);
int	peftio_from_f32(enum peftio_dtype dt, const float *src, void *dst,
	    uint64_t n);
/*
 * Index of the first NaN or infinity among n values of a float dtype
 * (F64, F32, F16, BF16, F8_E5M2; F8_E4M3 has no infinity: its NaN), or
 * -1 when all are finite or dt is not a float dtype.
 */
int64_t	peftio_first_nonfinite(enum peftio_dtype dt, const void *src,
	    uint64_t n);

/*
 * A buffer reused from one tensor to the next: it grows to the largest
 * size asked for and keeps its pages, so a long run does not pay for
 * fresh zero-filled pages on every tensor.  Zero-initialize; free with
 * peftio_scratch_free().
 */
struct peftio_scratch {
	void	*p;
	size_t	 cap;
};

/* At least len bytes (contents undefined), or NULL when out of memory. */
void	*peftio_scratch(struct peftio_scratch *s, size_t len);
void	 peftio_scratch_free(struct peftio_scratch *s);

/* ------------------------------------------------------------------ */
/* Tensor descriptions                                                 */
/* ------------------------------------------------------------------ */

#define PEFTIO_MAX_DIMS		16
#define PEFTIO_MAX_NAME		65536

struct peftio_tensor_info {
	const char	*name;		/* NUL-terminated, owned by the reader */
	enum peftio_dtype dtype;
	int		 ndim;
	uint64_t	 shape[PEFTIO_MAX_DIMS];
	uint64_t	 numel;
	uint64_t	 nbytes;
	uint64_t	 offset;	/* from the start of the data section
					 * (torch .bin: as if packed in
					 * listing order) */
};

/* ------------------------------------------------------------------ */
/* One safetensors file (safetensors.c)                                */
/* ------------------------------------------------------------------ */

/*
 * A reader validates the whole header before any data is touched
 * (the rules of the reference implementation, plus: duplicate names,
 * ranks above PEFTIO_MAX_DIMS and names with NUL are refused).
 * Tensors are listed in data (offset) order.  A regular file is
 * mmap'ed; a pipe is read sequentially and spooled to an anonymous
 * temporary file, so every tensor can be read in any order.
 *
 * The same reader takes a torch.save archive (pytorch_model.bin; a zip
 * holding a pickled state dict): the pickle is read by a machine that
 * knows only what a flat dict of tensors needs and never runs code;
 * anything else is refused with "unsupported pickle content: ...".
 * Its tensors are listed in the state dict's order, without metadata.
 * Strided views and DEFLATED members are served from a copy, freed by
 * peftio_st_release().  torch's formats before 1.6 are refused.
 */
struct peftio_st;

/* path "-" reads standard input. */
int	peftio_st_open(struct peftio_st **out, const char *path,
	    struct peftio_error *err);
/* Parse a file held in memory (not copied; buf must outlive the reader).
 * label names the buffer in error messages. */
int	peftio_st_open_mem(struct peftio_st **out, const void *buf,
	    size_t len, const char *label, struct peftio_error *err);
void	peftio_st_close(struct peftio_st *st);

const char *peftio_st_path(const struct peftio_st *st);
size_t	peftio_st_count(const struct peftio_st *st);
const struct peftio_tensor_info *peftio_st_tensor(const struct peftio_st *st,
	    size_t i);
/* Index of the tensor with this name, or -1. */
long	peftio_st_find(const struct peftio_st *st, const char *name);
/* __metadata__ entries, in the file's order; NULL past the end. */
size_t	peftio_st_meta_count(const struct peftio_st *st);
const char *peftio_st_meta_key(const struct peftio_st *st, size_t i);
const char *peftio_st_meta_value(const struct peftio_st *st, size_t i);
/* Value for key, or NULL. */
const char *peftio_st_meta_get(const struct peftio_st *st, const char *key);
/* Bytes of tensor i (nbytes long, no alignment guarantee).  Valid until
 * peftio_st_release(st, i) or the reader is closed.  May fail (I/O,
 * memory, a torch archive's CRC).  Calls may come from several threads. */
int	peftio_st_data(struct peftio_st *st, size_t i, const void **data,
	    struct peftio_error *err);
/* Copy len bytes of tensor i, from byte off, into buf: pread(2) where
 * the data is a file, which is faster than first touches of the
 * mapping and leaves no pages mapped.  Thread-safe. */
int	peftio_st_read(struct peftio_st *st, size_t i, uint64_t off, void *buf,
	    size_t len, struct peftio_error *err);
/* Tensor i's bytes are no longer needed: pages may be dropped, a copy
 * is freed. */
void	peftio_st_release(struct peftio_st *st, size_t i);

/*
 * Writer for one safetensors file.
 *
 * Declare every tensor, call peftio_stw_layout(), then hand each
 * tensor's bytes in any tensor order (within one tensor, in order, in
 * one or more pieces).  The file's layout is the reference writer's:
 * tensors sorted by dtype descending then name, back to back; the
 * header is compact JSON padded with spaces to a multiple of 8.
 * __metadata__ holds "format": "pt", the entries set by the caller,
 * and, per tensor, "xxh3.<name>": 16 lowercase hex digits of the XXH3
 * 64-bit hash of the payload; keys sorted bytewise.
 *
 * Output goes to DEST.tmp.XXXXXX beside the destination (or to an
 * anonymous spool for "-" when stdout is not seekable); commit checks
 * that every byte was written, fsyncs and renames.  A writer freed
 * before commit removes its temporary file.
 */
struct peftio_stw;

#define PEFTIO_W_FORCE		0x1	/* replace an existing destination */
#define PEFTIO_W_NOCHECKSUM	0x2	/* omit the xxh3 metadata entries */
#define PEFTIO_W_NOSYNC		0x4	/* skip fsync (tests) */

int	peftio_stw_create(struct peftio_stw **out, const char *path,
	    unsigned flags, struct peftio_error *err);
int	peftio_stw_meta(struct peftio_stw *w, const char *key,
	    const char *value, struct peftio_error *err);
int	peftio_stw_declare(struct peftio_stw *w, const char *name,
	    enum peftio_dtype dt, int ndim, const uint64_t *shape,
	    struct peftio_error *err);
int	peftio_stw_layout(struct peftio_stw *w, struct peftio_error *err);
/* Index of a declared tensor (after layout: in file order), or -1. */
long	peftio_stw_find(const struct peftio_stw *w, const char *name);
size_t	peftio_stw_count(const struct peftio_stw *w);
const struct peftio_tensor_info *peftio_stw_tensor(const struct peftio_stw *w,
	    size_t i);
/* Append len bytes to tensor i's payload. */
int	peftio_stw_write(struct peftio_stw *w, size_t i, const void *buf,
	    size_t len, struct peftio_error *err);
int	peftio_stw_commit(struct peftio_stw *w, struct peftio_error *err);
/* Total size the file will have (valid after layout). */
uint64_t peftio_stw_file_size(const struct peftio_stw *w);
void	peftio_stw_free(struct peftio_stw *w);

/* ------------------------------------------------------------------ */
/* Atomic output files (outfile.c)                                     */
/* ------------------------------------------------------------------ */

/*
 * Temporary files and directories created beside a destination are
 * registered here, so that a signal handler can remove them:
 * peftio_cleanup_temps() only calls unlink()/rmdir() and is
 * async-signal-safe.
 */
void	peftio_cleanup_temps(void);

struct peftio_outfile {
	int	 fd;
	char	*dest;		/* final path, or NULL for stdout */
	char	*tmp;		/* temporary path beside dest */
	int	 spool;		/* stdout is a pipe: fd is an anonymous spool */
	int	 slot;		/* registry slot, -1 if none */
	unsigned flags;
	int	 dfd;		/* tmp opened with O_DIRECT, or -1 */
	int	 dfail;		/* O_DIRECT writes refused: buffered only */
};

/* Open a temporary file for dest ("-" = stdout).  Without
 * PEFTIO_W_FORCE an existing dest is PEFTIO_EEXIST. */
int	peftio_outfile_open(struct peftio_outfile *of, const char *dest,
	    unsigned flags, struct peftio_error *err);
int	peftio_outfile_pwrite(struct peftio_outfile *of, const void *buf,
	    size_t len, uint64_t off, struct peftio_error *err);
/* fsync, close, rename into place (or copy the spool to stdout). */
int	peftio_outfile_commit(struct peftio_outfile *of,
	    struct peftio_error *err);
/* Remove the temporary file; harmless after commit. */
void	peftio_outfile_abort(struct peftio_outfile *of);

/*
 * Whether writing out would destroy one of the nin inputs in[]: out is
 * an input, an existing directory that holds one, or lies inside an
 * input directory; compared by device and inode along the paths up to
 * the root.  "-" (a stream) or NULL on either side never clashes, nor
 * does an output that is a device or FIFO.  0, or PEFTIO_EINVAL naming
 * both paths (clash.c).
 */
int	peftio_output_clash(const char *out, const char *const *in,
	    size_t nin, struct peftio_error *err);
/*
 * Whether two outputs of one run, which need not exist yet, would
 * overlap: the same path, or one inside the other, compared by name
 * once the existing directories above each are resolved ("." and ".."
 * taken out).  A common prefix of names ("ad" and "ad2") is no overlap.
 * "-" or NULL on either side never overlaps.  0, or PEFTIO_EINVAL
 * naming both paths (clash.c).
 */
int	peftio_outputs_overlap(const char *a, const char *b,
	    struct peftio_error *err);

/* Create a temporary directory beside dest; commit renames it over
 * dest (moving an existing dest aside first, removed afterwards). */
struct peftio_outdir {
	char	*dest;
	char	*tmp;
	int	 slot;
	unsigned flags;
};
int	peftio_outdir_open(struct peftio_outdir *od, const char *dest,
	    unsigned flags, struct peftio_error *err);
int	peftio_outdir_commit(struct peftio_outdir *od, struct peftio_error *err);
void	peftio_outdir_abort(struct peftio_outdir *od);

/* Whether name is one a checkpoint directory holds (what -f may
 * replace): not hidden, and LICENSE, NOTICE, README, tokenizer.*, or
 * ending in .safetensors, .bin, .json, .txt, .model, .jinja, .tiktoken,
 * .md, .py, .vocab, .pt, .pth, .ckpt, .msgpack, .h5, .onnx or .gguf. */
int	peftio_ckpt_dir_file(const char *name);

/* Write a whole small file atomically (temp + rename). */
int	peftio_write_file(const char *path, const void *buf, size_t len,
	    unsigned flags, struct peftio_error *err);
/* Read a whole small file (at most max bytes); *buf is NUL-terminated. */
int	peftio_read_file(const char *path, size_t max, char **buf,
	    size_t *len, struct peftio_error *err);
/* dir/config.json, read whole: 1 with *text (malloc'ed, *len bytes),
 * 0 when dir has none, or a negative PEFTIO_E* value. */
int	peftio_read_config(const char *dir, char **text, size_t *len,
	    struct peftio_error *err);

/* ------------------------------------------------------------------ */
/* Checkpoints: a file, a directory, a sharded index (checkpoint.c)    */
/* ------------------------------------------------------------------ */

/*
 * A checkpoint path is one .safetensors or torch .bin file, "-", or a
 * directory holding, in order of preference, model.safetensors.index.json,
 * model.safetensors, adapter_model.safetensors, a single *.safetensors,
 * pytorch_model.bin.index.json, pytorch_model.bin or adapter_model.bin.
 * Tensors are listed shard by shard (shards in sorted name order), each
 * shard in its reader's order.
 */
struct peftio_ckpt;

int	peftio_ckpt_open(struct peftio_ckpt **out, const char *path,
	    struct peftio_error *err);
/*
 * As peftio_ckpt_open(), but a stream ("-", a FIFO) is copied to a
 * spool file in $TMPDIR by a background thread once its header is read:
 * a tensor can be read as soon as its bytes have arrived, while later
 * ones still arrive.  A stream that ends early, or goes on after its
 * last tensor, is reported by the reads that reach that point and by
 * peftio_ckpt_complete(), not by the open.
 */
int	peftio_ckpt_open_stream(struct peftio_ckpt **out, const char *path,
	    struct peftio_error *err);
/* Wait until every stream of c has been read to its end: 0, or the
 * error that ended it (truncated, bytes after the last tensor, I/O).
 * 0 at once for files. */
int	peftio_ckpt_complete(struct peftio_ckpt *c, struct peftio_error *err);
/*
 * The shards names[0..n-1] of directory dir as one checkpoint, without
 * an index (as when the index is yet to be written).  A shard that is
 * not there is PEFTIO_ENOTFOUND, named in the message.
 */
int	peftio_ckpt_open_shards(struct peftio_ckpt **out, const char *dir,
	    size_t n, const char *const *names, struct peftio_error *err);
/* One safetensors file held in memory (not copied: buf must outlive
 * the checkpoint); label names it in messages. */
int	peftio_ckpt_open_mem(struct peftio_ckpt **out, const void *buf,
	    size_t len, const char *label, struct peftio_error *err);
void	peftio_ckpt_close(struct peftio_ckpt *c);

const char *peftio_ckpt_path(const struct peftio_ckpt *c);
/* The directory, or NULL when the checkpoint is a single file or "-". */
const char *peftio_ckpt_dir(const struct peftio_ckpt *c);
/* 1 when opened through a sharded index (safetensors or .bin). */
int	peftio_ckpt_sharded(const struct peftio_ckpt *c);
size_t	peftio_ckpt_nshards(const struct peftio_ckpt *c);
/* File name of shard s (basename for directories). */
const char *peftio_ckpt_shard_name(const struct peftio_ckpt *c, size_t s);
struct peftio_st *peftio_ckpt_shard(const struct peftio_ckpt *c, size_t s);
size_t	peftio_ckpt_count(const struct peftio_ckpt *c);
const struct peftio_tensor_info *peftio_ckpt_tensor(const struct peftio_ckpt *c,
	    size_t i);
size_t	peftio_ckpt_shard_of(const struct peftio_ckpt *c, size_t i);
long	peftio_ckpt_find(const struct peftio_ckpt *c, const char *name);
int	peftio_ckpt_data(struct peftio_ckpt *c, size_t i, const void **data,
	    struct peftio_error *err);
int	peftio_ckpt_read(struct peftio_ckpt *c, size_t i, uint64_t off,
	    void *buf, size_t len, struct peftio_error *err);
void	peftio_ckpt_release(struct peftio_ckpt *c, size_t i);
/* Tensor i will be read soon: its pages of a file are read ahead in
 * the background (a hint; nothing for memory and streams). */
void	peftio_ckpt_prefetch(struct peftio_ckpt *c, size_t i);
/*
 * Check tensor i against the XXH3 checksum stored for it ("xxh3.NAME"
 * in its shard's __metadata__): 0 when it matches, PEFTIO_ECHECKSUM
 * when it does not (the message names file, tensor, stored and computed
 * values), 1 when no checksum is stored for it, another error when its
 * data cannot be read (verify.c).
 */
int	peftio_ckpt_verify(struct peftio_ckpt *c, size_t i,
	    struct peftio_error *err);

/*
 * Writer mirroring an input layout: to a file (or "-"), one
 * safetensors file; to a directory, shards named after the caller's
 * shard list (e.g. the input's), model.safetensors.index.json when
 * there is more than one shard, and the auxiliary files added with
 * peftio_ckptw_file().  A torch shard name is given its safetensors
 * counterpart: pytorch_model-00001-of-00002.bin is written as
 * model-00001-of-00002.safetensors, adapter_model.bin as
 * adapter_model.safetensors.  The directory is built under a temporary
 * name and renamed into place by commit.
 */
struct peftio_ckptw;

/*
 * nshards output files named names[0..nshards-1] inside the directory
 * path (as_dir != 0), or one file at path ("-" = stdout; nshards must
 * be 1 and names may be NULL).  With more than one shard the directory
 * also gets model.safetensors.index.json.
 */
int	peftio_ckptw_create(struct peftio_ckptw **out, const char *path,
	    int as_dir, size_t nshards, const char *const *names,
	    unsigned flags, struct peftio_error *err);
/*
 * The last step of a directory whose shards were written one by one,
 * each as a file of its own (by separate jobs, say): shards is that
 * directory opened with peftio_ckpt_open_shards(), kept open by the
 * caller until the writer is freed.  Nothing is declared or written
 * to the shards; files are added as below, and commit writes them and
 * the index (the same bytes as a writer made with peftio_ckptw_create()
 * gives for these shards) into the directory, each file atomically and
 * the index last.  Without PEFTIO_W_FORCE, commit writes nothing when
 * one of them exists.
 */
int	peftio_ckptw_from_shards(struct peftio_ckptw **out,
	    const struct peftio_ckpt *shards, unsigned flags,
	    struct peftio_error *err);
int	peftio_ckptw_declare(struct peftio_ckptw *w, size_t shard,
	    const char *name, enum peftio_dtype dt, int ndim,
	    const uint64_t *shape, struct peftio_error *err);
int	peftio_ckptw_meta(struct peftio_ckptw *w, const char *key,
	    const char *value, struct peftio_error *err);
int	peftio_ckptw_layout(struct peftio_ckptw *w, struct peftio_error *err);
int	peftio_ckptw_write(struct peftio_ckptw *w, const char *name,
	    const void *buf, size_t len, struct peftio_error *err);
/* Write tensor i of c as name, converted to dt (a float dtype) unless
 * it is the stored one; read and written a piece at a time. */
int	peftio_ckptw_copy(struct peftio_ckptw *w, const char *name,
	    struct peftio_ckpt *c, size_t i, enum peftio_dtype dt,
	    struct peftio_error *err);
/* Add a file to the output directory (ignored for file output). */
int	peftio_ckptw_file(struct peftio_ckptw *w, const char *name,
	    const void *buf, size_t len, struct peftio_error *err);
/* Copy (at commit, a piece at a time, whatever its size) every file of
 * dir that is not a safetensors shard, a .bin, an index, training state
 * (peftio_is_training_state()) or already added.  Symbolic links are
 * followed.  Subfolders and training state are left out with a note; a
 * dangling link or a file that is not regular (a device, a pipe) is an
 * error naming it. */
int	peftio_ckptw_copy_aux(struct peftio_ckptw *w, const char *dir,
	    struct peftio_error *err);
/* Called with one line for each thing the writer leaves out on purpose. */
typedef void (*peftio_note_fn)(void *arg, const char *msg);
void	peftio_ckptw_set_note(struct peftio_ckptw *w, peftio_note_fn fn,
	    void *arg);
/* 1 if name is a file of a Hugging Face Trainer's training state
 * (optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json, ...). */
int	peftio_is_training_state(const char *name);
/* Bytes of all declared tensors (valid after layout): the index's
 * metadata.total_size. */
uint64_t peftio_ckptw_tensor_bytes(const struct peftio_ckptw *w);
int	peftio_ckptw_commit(struct peftio_ckptw *w, struct peftio_error *err);
void	peftio_ckptw_free(struct peftio_ckptw *w);
/* Shard file name as transformers writes it: model-00001-of-00003.safetensors */
void	peftio_shard_name(char *buf, size_t len, size_t i, size_t n);

/*
 * kind.c: refuse what quantizing would make nonsense of (0 for a plain
 * model): a PEFT adapter, or a checkpoint quantized already by
 * bitsandbytes (4-bit or 8-bit) or by any method its config.json's
 * quantization_config names.  The message says what it is and what to
 * do instead.
 */
int	peftio_check_unquantized(struct peftio_ckpt *c,
	    struct peftio_error *err);

/* ------------------------------------------------------------------ */
/* Which tensors the tools touch (select.c)                            */
/* ------------------------------------------------------------------ */

/* The module path (the first len bytes of module) is a Linear layer
 * that transformers quantizes and PEFT adapts by default: not an
 * embedding, an output head or a norm. */
int	peftio_linear_module(const char *module, size_t len);
/* name is the 2-D "MODULE.weight" of such a layer (ndim its rank). */
int	peftio_linear_weight(const char *name, int ndim);
/* name is the weight of one of GPT-2's Conv1D layers (stored [in, out]). */
int	peftio_conv1d_weight(const char *name);
/* PEFT's target rule: module equals pattern or ends with "." pattern;
 * or pattern is a shell glob matching module. */
int	peftio_module_match(const char *module, const char *pattern);
/* Some glob of globs[0..n) matches name (fnmatch(3), no flags). */
int	peftio_glob_any(const char *const *globs, size_t n, const char *name);
/* What nf4-quant quantizes: a float tensor with elements that is a
 * Linear weight or matches an include glob, and matches no exclude
 * glob. */
int	peftio_quant_selected(const struct peftio_tensor_info *ti,
	    const char *const *include, size_t ninclude,
	    const char *const *exclude, size_t nexclude);
/* What LoRA targets: module matches no exclude pattern, and some target
 * (peftio_module_match()), or is a Linear layer when there is none. */
int	peftio_module_selected(const char *module, const char *const *targets,
	    size_t ntargets, const char *const *exclude, size_t nexclude);

/* ------------------------------------------------------------------ */
/* Transforms: a checkpoint rewritten tensor by tensor (transform.c)   */
/* ------------------------------------------------------------------ */

/*
 * What every tool that rewrites a checkpoint does.  The caller plans
 * what becomes of each input tensor (an item each); peftio_transform()
 * then writes a directory mirroring the input's shards when the input
 * is a directory and the output is neither "-" nor a *.safetensors name
 * (one file otherwise), declares every output tensor, computes them in
 * input order while a background thread writes the previous result,
 * gives config.json to the caller's hook, copies the model's other
 * files, and commits: the output appears whole or not at all.
 */
enum peftio_xf_action {
	PEFTIO_XF_COPY = 0,	/* written as read */
	PEFTIO_XF_CONVERT,	/* converted to the item's float dtype */
	PEFTIO_XF_SKIP,		/* not written (a companion of another) */
	PEFTIO_XF_CUSTOM	/* declared and computed by the caller */
};

struct peftio_xf_item {
	enum peftio_xf_action	 act;
	enum peftio_dtype	 dt;	/* PEFTIO_XF_CONVERT: the target */
	size_t			 shard;	/* of the output; set by the driver */
};

struct peftio_xf;
struct peftio_xf_check;

#define PEFTIO_XF_NBUF	4

/* A write queued behind the computation.  The caller fills the slot it
 * gets from peftio_xf_slot() and submits a function that writes it. */
struct peftio_xf_job {
	struct peftio_ckptw	*w;
	const char		*name;
	struct peftio_scratch	 buf[PEFTIO_XF_NBUF];
	void			*data;	/* for peftio_xf_job_write: len */
	uint64_t		 len;	/* bytes at data */
	void			*ctx;	/* the caller's */
	struct peftio_error	 err;	/* set by a job that fails */
	struct peftio_xf	*xf;
};

struct peftio_xf_ops {
	/* PEFTIO_XF_CUSTOM tensor i: declare its outputs. */
	int	(*declare)(struct peftio_xf *x, size_t i, void *ctx,
		    struct peftio_error *err);
	/* PEFTIO_XF_CUSTOM tensor i: compute and submit its outputs. */
	int	(*compute)(struct peftio_xf *x, size_t i, void *ctx,
		    struct peftio_error *err);
	/* config.json of a directory output: text in, a malloc'ed
	 * replacement in *out, or *out NULL to copy it unchanged. */
	int	(*config)(void *ctx, const char *text, size_t len, char **out,
		    size_t *outlen, struct peftio_error *err);
	/* A peftio_progress_fn: before each input tensor (bytes of the
	 * input tensors), and once at the end (what NULL); in
	 * peftio_transform_index(), tensors checked. */
	void	(*progress)(void *ctx, uint64_t done, uint64_t total,
		    const char *what);
	/* After a successful commit, for the caller's report. */
	void	(*done)(void *ctx, const struct peftio_ckptw *w);
	/* peftio_transform_index(): PEFTIO_XF_CUSTOM tensor i as the
	 * shards must hold it (peftio_xf_expect() and the like). */
	int	(*expect)(struct peftio_xf_check *chk, size_t i, void *ctx,
		    struct peftio_error *err);
	/* A file of the input directory left out on purpose (training
	 * state, a subfolder): one line, as peftio_ckptw_set_note(). */
	void	(*note)(void *ctx, const char *msg);
};

/* Whether peftio_transform() of in writes a directory at output. */
int	peftio_output_is_dir(const struct peftio_ckpt *in, const char *output);
/* items has one entry per tensor of in; flags as for
 * peftio_ckptw_create(). */
int	peftio_transform(struct peftio_ckpt *in, struct peftio_xf_item *items,
	    const struct peftio_xf_ops *ops, void *ctx, const char *output,
	    unsigned flags, struct peftio_error *err);

/* For the hooks. */
struct peftio_ckpt *peftio_xf_input(const struct peftio_xf *x);
struct peftio_ckptw *peftio_xf_writer(const struct peftio_xf *x);
/* Declare an output tensor in the shard of input tensor i. */
int	peftio_xf_declare(struct peftio_xf *x, size_t i, const char *name,
	    enum peftio_dtype dt, int ndim, const uint64_t *shape,
	    struct peftio_error *err);
struct peftio_xf_job *peftio_xf_slot(struct peftio_xf *x);
/* Start fn on the filled slot once the job before has finished (that
 * job's failure is returned instead). */
int	peftio_xf_submit(struct peftio_xf *x,
	    int (*fn)(struct peftio_xf_job *), struct peftio_error *err);
/* Wait for the queued job. */
int	peftio_xf_drain(struct peftio_xf *x, struct peftio_error *err);
/*
 * len bytes of buf[0] for the bytes of output tensor j->name from byte
 * off (they become j->data and j->len), placed in memory as they will
 * lie in the file, so that they go to the disk with no copy.
 */
void	*peftio_xf_job_buffer(struct peftio_xf_job *j, uint64_t off,
	    uint64_t len);
/* A job: write data (len bytes) as name. */
int	peftio_xf_job_write(struct peftio_xf_job *j);

/*
 * The last step of a directory whose shards were written one at a time
 * (each by peftio_transform() of one input shard, as separate jobs):
 * check that the shards in outdir hold what peftio_transform() of the
 * whole input would have written there, reading headers only, then
 * write the index, config.json and the other files beside them.
 */
int	peftio_transform_index(struct peftio_ckpt *in,
	    struct peftio_xf_item *items, const struct peftio_xf_ops *ops,
	    void *ctx, const char *outdir, unsigned flags,
	    struct peftio_error *err);
/* For the expect hook: output tensor name must be in the shard of input
 * tensor i (*k its index in the output, when k is not NULL); with a
 * dtype and shape too. */
int	peftio_xf_expect_name(struct peftio_xf_check *chk, size_t i,
	    const char *name, size_t *k, struct peftio_error *err);
int	peftio_xf_expect(struct peftio_xf_check *chk, size_t i,
	    const char *name, enum peftio_dtype dt, int ndim,
	    const uint64_t *shape, struct peftio_error *err);
struct peftio_ckpt *peftio_xf_check_input(const struct peftio_xf_check *chk);
struct peftio_ckpt *peftio_xf_check_output(const struct peftio_xf_check *chk);

/* ------------------------------------------------------------------ */
/* Threads (parallel.c)                                                */
/* ------------------------------------------------------------------ */

/* The most threads a parallel loop uses. */
#define PEFTIO_MAX_JOBS		256

/*
 * Run fn(arg, b, e) over [0, n) on at most nthreads threads (the
 * calling thread is one), in contiguous ranges of grain items (the last
 * may be shorter) that the threads take in turn as they finish the one
 * before.  The split only decides who computes what: callers write
 * disjoint outputs, so results never depend on nthreads.
 */
void	peftio_parallel_for(unsigned nthreads, uint64_t n, uint64_t grain,
	    void (*fn)(void *arg, uint64_t b, uint64_t e), void *arg);
/* The same, telling each range its slot: a number below nthreads that
 * no concurrent range shares (for per-thread scratch buffers). */
void	peftio_parallel_slots(unsigned nthreads, uint64_t n, uint64_t grain,
	    void (*fn)(void *arg, unsigned slot, uint64_t b, uint64_t e),
	    void *arg);
/*
 * One job at a time on a thread beside the caller (background.c), for
 * writing one tensor while the next is computed.  peftio_bg_run()
 * waits for the job before, and returns its status if it failed
 * (without starting fn); otherwise starts fn(arg) and returns 0.
 * peftio_bg_wait() waits for the job and returns its status.  The
 * caller keeps arg, and what it points to, until the job is done.
 */
struct peftio_bg;

int	peftio_bg_new(struct peftio_bg **out, struct peftio_error *err);
int	peftio_bg_run(struct peftio_bg *bg, int (*fn)(void *arg), void *arg);
int	peftio_bg_wait(struct peftio_bg *bg);
void	peftio_bg_free(struct peftio_bg *bg);	/* waits first */

/* Online CPUs (at least 1). */
unsigned peftio_ncpus(void);

/* ------------------------------------------------------------------ */
/* 4-bit codecs (nf4.c) and the 8-bit dynamic codec (blockwise8.c)     */
/* ------------------------------------------------------------------ */

/*
 * Exactly what bitsandbytes' CUDA kernels compute.  Blocks of bs
 * elements run over the row-major flattened tensor; absmax per block
 * in f32; each element is scaled by the GPU's fast reciprocal of the
 * absmax (peftio_gpu_rcp) and coded by the kernel's decision
 * thresholds; two codes per byte, the first element in the high
 * nibble.  Non-finite input is quantized as the kernel does (NaN -> code
 * 0; an Inf makes its block's scale 0).  The functions work on a range
 * of blocks, so callers may split a tensor across threads; the output
 * does not depend on the split.
 */
enum peftio_q4type { PEFTIO_Q4_NF4 = 0, PEFTIO_Q4_FP4 = 1 };

/* The 16 code values of the type as bitsandbytes stores quant_map. */
const float *peftio_q4_code(enum peftio_q4type t);
/* 1 for the blocksizes bitsandbytes accepts: 32, 64, ..., 4096. */
int	peftio_q4_blocksize_ok(uint64_t bs);

/* Quantize blocks [b0, b1) of the n-element tensor in (dtype F32, F16
 * or BF16).  packed has (n+1)/2 bytes, absmax ceil(n/bs) floats; only
 * the bytes and entries of those blocks are written.  bs must be even. */
int	peftio_q4_quantize(enum peftio_q4type t, enum peftio_dtype dt,
	    const void *in, uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1,
	    uint8_t *packed, float *absmax);
/* Only the absmax of blocks [b0, b1). */
int	peftio_q4_absmax(enum peftio_dtype dt, const void *in, uint64_t n,
	    uint64_t bs, uint64_t b0, uint64_t b1, float *absmax);
/* Dequantize blocks [b0, b1): out[i] = dtype(code[nibble_i] * absmax[i/bs]),
 * with code the stored quant_map (16 floats). */
int	peftio_q4_dequantize(const float *code, const uint8_t *packed,
	    const float *absmax, uint64_t n, uint64_t bs, uint64_t b0,
	    uint64_t b1, enum peftio_dtype dt, void *out);

/* 1.0f/a as the GPU's rcp.approx.ftz computes it (bnb-nf4.md section 11). */
float	peftio_gpu_rcp(float a);
/* Load the reciprocal table (done lazily; call early to fail early). */
int	peftio_gpu_rcp_init(struct peftio_error *err);

/* bitsandbytes' create_dynamic_map(signed=True) as stored by x86 torch. */
const float *peftio_dynamic_map(void);
/* Quantize blocks [b0, b1) of x (n floats) with code (256 floats):
 * q[i] = dQuantize(code, x[i] * gpu_rcp(absmax[b])). */
void	peftio_q8_quantize(const float *code, const float *x, uint64_t n,
	    uint64_t bs, uint64_t b0, uint64_t b1, uint8_t *q, float *absmax);
void	peftio_q8_dequantize(const float *code, const uint8_t *q,
	    const float *absmax, uint64_t n, uint64_t bs, float *out);

/*
 * Double quantization of a 4-bit absmax vector (nb floats):
 * offset = mean (summed in double, rounded once), then absmax - offset
 * coded in 8-bit blocks of nbs.  qabsmax has nb bytes, nested
 * ceil(nb/nbs) floats.
 */
void	peftio_dq_quantize(const float *absmax, uint64_t nb, uint64_t nbs,
	    float *offset, uint8_t *qabsmax, float *nested);
/* The offset alone: absmax.mean() as bitsandbytes computes it on the GPU. */
float	peftio_dq_offset(const float *absmax, uint64_t nb);
/* absmax[j] = code[q[j]] * nested[j/nbs] + offset, in f32. */
void	peftio_dq_dequantize(const float *code, const uint8_t *qabsmax,
	    const float *nested, float offset, uint64_t nb, uint64_t nbs,
	    float *absmax);

/* ------------------------------------------------------------------ */
/* LLM.int8 row-wise quantization (int8.c)                             */
/* ------------------------------------------------------------------ */

/*
 * bitsandbytes' int8_vectorwise_quant as its CUDA kernel computes it
 * (bnb-nf4.md section 12): each value rounded to float16 first, SCB[r]
 * = max |x| of row r, code = rint(x * (127 * gpu_rcp(SCB[r]))); a row
 * of zeros codes to zeros.  Rows [r0, r1) of the row-major tensor in
 * (F32, F16 or BF16, cols values a row) are quantized into codes and
 * scb, both indexed from row 0.  PEFTIO_EINVAL for another dtype.
 */
int	peftio_int8_quantize(enum peftio_dtype dt, const void *in,
	    uint64_t cols, uint64_t r0, uint64_t r1, int8_t *codes,
	    float *scb);
/* The scale of a row: __fdividef(127.0f, absmax) on the GPU. */
float	peftio_int8_scale(float absmax);
/* int8_vectorwise_dequant: (code * SCB[r]) * (float)(1/127), rounded
 * after each product, then to dt.  Rows [r0, r1); codes and scb are
 * indexed from row 0, out from row r0. */
int	peftio_int8_dequantize(const int8_t *codes, const float *scb,
	    uint64_t cols, uint64_t r0, uint64_t r1, enum peftio_dtype dt,
	    void *out);
/* Bits per parameter of an 8-bit weight: 8 + 32 / cols. */
double	peftio_int8_bits_per_param(uint64_t cols);

/* ------------------------------------------------------------------ */
/* The bitsandbytes on-disk form (bnb.c)                               */
/* ------------------------------------------------------------------ */

struct peftio_quant_state {
	enum peftio_q4type type;
	uint64_t	 blocksize;
	enum peftio_dtype dtype;	/* dtype of the original weight */
	int		 ndim;
	uint64_t	 shape[PEFTIO_MAX_DIMS];
	uint64_t	 numel;
	int		 double_quant;
	uint64_t	 nested_blocksize;
	enum peftio_dtype nested_dtype;	/* F32 */
	float		 nested_offset;
};

/* Suffixes of the keys bitsandbytes stores beside "W" for weight W. */
#define PEFTIO_BNB_ABSMAX		".absmax"
#define PEFTIO_BNB_QUANT_MAP		".quant_map"
#define PEFTIO_BNB_NESTED_ABSMAX	".nested_absmax"
#define PEFTIO_BNB_NESTED_QUANT_MAP	".nested_quant_map"
#define PEFTIO_BNB_QUANT_STATE		".quant_state.bitsandbytes__"

/* The JSON blob of W.quant_state.bitsandbytes__nf4|fp4, byte for byte as
 * Python's json.dumps writes it.  *json is malloc'ed. */
int	peftio_quant_state_json(const struct peftio_quant_state *qs,
	    char **json, size_t *len, struct peftio_error *err);
/* Parse and check such a blob. */
int	peftio_quant_state_parse(const void *buf, size_t len,
	    struct peftio_quant_state *qs, struct peftio_error *err);
/* "nf4" / "fp4" */
const char *peftio_q4type_name(enum peftio_q4type t);
int	peftio_q4type_parse(const char *s);

/*
 * A 4-bit weight W inside a checkpoint: the indices of W and of its
 * companion tensors, and its parsed quant_state.
 */
struct peftio_bnb_weight {
	size_t		 weight;		/* W: packed codes, U8 */
	size_t		 absmax;		/* W.absmax */
	size_t		 quant_map;		/* W.quant_map */
	size_t		 nested_absmax;		/* W.nested_absmax (DQ) */
	size_t		 nested_quant_map;	/* W.nested_quant_map (DQ) */
	size_t		 quant_state;		/* W.quant_state.bitsandbytes__* */
	struct peftio_quant_state qs;
	enum peftio_dtype storage;		/* W's dtype: U8, BF16, F16, F32 */
};

/*
 * If tensor i of c is the quant_state blob of a 4-bit weight, check W
 * and its companions (presence, dtypes, sizes), fill *bw and return 1;
 * return 0 when tensor i is not a quant_state blob, or a negative
 * PEFTIO_E* value naming the tensor when the weight is malformed.
 */
int	peftio_bnb_lookup(struct peftio_ckpt *c, size_t i,
	    struct peftio_bnb_weight *bw, struct peftio_error *err);
/* Dequantize bw into out (qs.numel elements of dt: F32, F16 or BF16)
 * exactly as bitsandbytes' dequantize_4bit does. */
int	peftio_bnb_dequantize(struct peftio_ckpt *c,
	    const struct peftio_bnb_weight *bw, enum peftio_dtype dt, void *out,
	    unsigned nthreads, struct peftio_error *err);
/*
 * Plan a transform of c's quantized weights: for each 4-bit weight W,
 * xi[W] is PEFTIO_XF_CUSTOM and bw[W] describes it, its companion
 * tensors are PEFTIO_XF_SKIP; likewise each 8-bit weight (an I8 tensor)
 * into bw8[W] unless bw8 is NULL; every other tensor is PEFTIO_XF_COPY
 * (the arrays' other entries are left alone).  The number of quantized
 * weights, or a negative PEFTIO_E* value.
 */
struct peftio_xf_item;
struct peftio_bnb8_weight;
long	peftio_bnb_group(struct peftio_ckpt *c, struct peftio_xf_item *xi,
	    struct peftio_bnb_weight *bw, struct peftio_bnb8_weight *bw8,
	    struct peftio_error *err);
/* Only elements [e0, e0 + n) into out; e0 is a multiple of
 * peftio_bnb_part_align(bw) (a whole number of blocks, and of nested
 * blocks with double quantization). */
int	peftio_bnb_dequantize_part(struct peftio_ckpt *c,
	    const struct peftio_bnb_weight *bw, enum peftio_dtype dt, void *out,
	    uint64_t e0, uint64_t n, unsigned nthreads,
	    struct peftio_error *err);
uint64_t peftio_bnb_part_align(const struct peftio_bnb_weight *bw);

/*
 * Writing the 4-bit form (bnb_quantize.c).  A weight to be written is
 * planned as a quant_state: peftio_bnb_plan() gives tensor ti quantized
 * as type in blocks of blocksize, its values seen as dt (rounded to it
 * first when stored otherwise), with or without double quantization.
 */
void	peftio_bnb_plan(struct peftio_quant_state *qs,
	    const struct peftio_tensor_info *ti, enum peftio_q4type type,
	    uint64_t blocksize, int double_quant, enum peftio_dtype dt);
/*
 * One threaded pass over tensor i of c, read a piece at a time: the
 * absmax of every block, and the packed codes too unless packed is
 * NULL.  With check, a NaN or Inf is PEFTIO_ENONFINITE naming the
 * first such element.  The double-quantization offset qs.nested_offset
 * is peftio_dq_offset() of the absmax values such a pass gives.
 */
int	peftio_bnb_quantize_tensor(struct peftio_ckpt *c, size_t i,
	    const struct peftio_quant_state *qs, uint8_t *packed,
	    float *absmax, int check, unsigned nthreads,
	    struct peftio_error *err);
/* The same for qs->numel values of qs->dtype in memory. */
void	peftio_bnb_quantize_mem(const struct peftio_quant_state *qs,
	    const void *vals, uint8_t *packed, float *absmax,
	    unsigned nthreads);

/* A weight being written: its quant_state and that state's JSON blob
 * (set by peftio_bnb_declare(); peftio_bnb_out_free() frees it). */
struct peftio_bnb_out {
	struct peftio_quant_state qs;
	enum peftio_dtype storage;	/* of the packed codes: U8, BF16,
					 * F16, F32 (PEFTIO_BOOL, 0: U8) */
	char		*qs_json;
	size_t		 qs_len;
};

/* Declare weight name and its companions (absmax, quant_map, nested
 * absmax and map, quant_state blob) in shard; with double quantization
 * bo->qs.nested_offset must be set, the blob records it. */
int	peftio_bnb_declare(struct peftio_ckptw *w, size_t shard,
	    const char *name, struct peftio_bnb_out *bo,
	    struct peftio_error *err);
/* Write them from the packed codes and the f32 absmax of every block
 * (double-quantized here, in the two buffers of tmp). */
int	peftio_bnb_write(struct peftio_ckptw *w, const char *name,
	    const struct peftio_bnb_out *bo, const uint8_t *packed,
	    const float *absmax, struct peftio_scratch tmp[2],
	    struct peftio_error *err);
/* Write them from what is stored: the packed codes and, with double
 * quantization, the nb 8-bit absmax codes and the nested absmax
 * (bo->qs.nested_offset their offset); without, the nb f32 absmax. */
int	peftio_bnb_write_stored(struct peftio_ckptw *w, const char *name,
	    const struct peftio_bnb_out *bo, const uint8_t *packed,
	    const void *absmax, const float *nested,
	    struct peftio_error *err);
/*
 * Tensor i of c whole in memory as it is quantized: rounded to dt when
 * stored otherwise, and transposed from [in, out] to [out, in] when
 * transpose (GPT-2's Conv1D).  *vals is c's own data, or in buf.  With
 * check, a NaN or Inf is PEFTIO_ENONFINITE naming the first.  The
 * caller releases tensor i.
 */
int	peftio_bnb_values(struct peftio_ckpt *c, size_t i, int transpose,
	    enum peftio_dtype dt, int check, struct peftio_scratch buf[2],
	    const void **vals, struct peftio_error *err);
/* The double-quantization offset of tensor i quantized as bo->qs, into
 * bo->qs.nested_offset: a pass that reads the tensor and keeps only its
 * absmax values (looking for NaN and Inf with check). */
int	peftio_bnb_prepass(struct peftio_ckpt *c, size_t i,
	    struct peftio_bnb_out *bo, int check, unsigned nthreads,
	    struct peftio_error *err);
void	peftio_bnb_out_free(struct peftio_bnb_out *bo);
/* For peftio_transform_index(): weight name, of input tensor i, must be
 * in the shards as a 4-bit weight quantized and stored as bo says, with
 * all its companions. */
struct peftio_xf_check;
int	peftio_bnb_expect(struct peftio_xf_check *chk, size_t i,
	    const char *name, const struct peftio_bnb_out *bo,
	    struct peftio_error *err);

/*
 * bnb_4bit_quant_storage: the packed codes stored as elements of U8,
 * BF16, F16 or F32 (the same bytes).  parse: "u8", "bf16", "f16", "f32"
 * or the torch names; the dtype, or -1.  shape: the [k, 1] shape of an
 * n-element weight's codes in that storage; PEFTIO_EINVAL when the
 * packed bytes are not a whole number of elements.
 */
int	peftio_bnb_storage_parse(const char *s);
int	peftio_bnb_storage_shape(enum peftio_dtype storage, uint64_t numel,
	    uint64_t shape[2], struct peftio_error *err);

/*
 * GPT-2's Conv1D weights (peftio_conv1d_weight()) are stored [in, out];
 * transformers transposes them to [out, in] before quantizing them in 4
 * or 8 bit.  out[c][r] = in[r][c] for a rows x cols matrix of es-byte
 * elements.
 */
void	peftio_transpose(const void *in, void *out, uint64_t rows,
	    uint64_t cols, size_t es);

/*
 * An 8-bit weight as transformers' save_pretrained writes a
 * load_in_8bit model: "X.weight" (I8 [rows, cols]), "X.SCB" (F32
 * [rows], each row's absmax) and "X.weight_format" (U8, 0-d, 0 for
 * row-major).
 */
#define PEFTIO_BNB_SCB			".SCB"

struct peftio_bnb8_weight {
	size_t		 weight;	/* X.weight, I8 */
	size_t		 scb;		/* X.SCB, F32 */
	long		 format;	/* X.weight_format, or -1 */
	uint64_t	 rows, cols;
};

/*
 * If tensor i of c is the SCB of an 8-bit weight, check the weight
 * (2-D I8, not empty), the SCB (F32, one value a row in [0, 65504], the
 * absmax of float16 values) and weight_format (0), fill *bw and return
 * 1.  Return 0 when
 * tensor i is something else, and a negative PEFTIO_E* value naming
 * the tensor when the weight is malformed, or when tensor i is an I8
 * "X.weight" without "X.SCB".
 */
int	peftio_bnb8_lookup(struct peftio_ckpt *c, size_t i,
	    struct peftio_bnb8_weight *bw, struct peftio_error *err);
/*
 * An 8-bit weight does not record its dtype: the one to dequantize it
 * to by default is that of the checkpoint's first 2-D float tensor (the
 * embeddings, which stay unquantized), or F16, bitsandbytes' compute
 * dtype for 8-bit layers.
 */
enum peftio_dtype peftio_bnb8_dtype(struct peftio_ckpt *c);
/* Dequantize all rows, or rows [r0, r0 + nrows), into out (F32, F16 or
 * BF16) as int8_vectorwise_dequant does. */
int	peftio_bnb8_dequantize(struct peftio_ckpt *c,
	    const struct peftio_bnb8_weight *bw, enum peftio_dtype dt, void *out,
	    unsigned nthreads, struct peftio_error *err);
int	peftio_bnb8_dequantize_part(struct peftio_ckpt *c,
	    const struct peftio_bnb8_weight *bw, enum peftio_dtype dt, void *out,
	    uint64_t r0, uint64_t nrows, unsigned nthreads,
	    struct peftio_error *err);
/* peftio_int8_quantize over all rows on up to nthreads threads. */
int	peftio_bnb8_quantize(enum peftio_dtype dt, const void *in,
	    uint64_t rows, uint64_t cols, int8_t *codes, float *scb,
	    unsigned nthreads, struct peftio_error *err);
/* Declare weight name ("X.weight") with its SCB and weight_format in
 * shard; then write all three. */
int	peftio_bnb8_declare(struct peftio_ckptw *w, size_t shard,
	    const char *name, uint64_t rows, uint64_t cols,
	    struct peftio_error *err);
int	peftio_bnb8_write(struct peftio_ckptw *w, const char *name,
	    const int8_t *codes, const float *scb, uint64_t rows,
	    uint64_t cols, struct peftio_error *err);
/* For peftio_transform_index(): weight name, of input tensor i, must be
 * in the shards as an 8-bit weight of rows x cols with its SCB and
 * weight_format. */
int	peftio_bnb8_expect(struct peftio_xf_check *chk, size_t i,
	    const char *name, uint64_t rows, uint64_t cols,
	    struct peftio_error *err);

/*
 * One bitsandbytes weight as a step of peftio_transform() (bnb_step.c):
 * planned as transformers quantizes it (GPT-2's Conv1D weights
 * transposed to [out, in]) or as nf4-quant -d dequantizes it, then
 * declared, computed and checked from the transform's hooks.
 */
struct peftio_bnb_step {
	int			 quant;	/* quantize, else dequantize */
	int			 eight;	/* LLM.int8, else 4-bit */
	int			 transpose;	/* a Conv1D weight, [in, out] */
	struct peftio_bnb_out	 bo;	/* quantize: the plan; 8-bit: the
					 * values' dtype is bo.qs.dtype */
	struct peftio_bnb_weight bw;	/* 4-bit dequantize: the input */
	struct peftio_bnb8_weight bw8;	/* 8-bit: rows and columns */
	enum peftio_dtype	 dt;	/* dequantize: the output dtype */
	int			 ndim;	/* dequantize: the output shape */
	uint64_t		 shape[2];
	float			*absmax;	/* quantize: the blocks' absmax
					 * kept by peftio_bnb_steps_offsets()
					 * for _compute(), or NULL */
};

/* How peftio_bnb_step_quantize() quantizes. */
struct peftio_bnb_quant_opts {
	int			 eight;		/* LLM.int8, else 4-bit: */
	enum peftio_q4type	 type;
	uint64_t		 blocksize;
	int			 double_quant;
	enum peftio_dtype	 storage;	/* bnb_4bit_quant_storage */
	int			 dtype;		/* the weights' dtype, -1: kept */
};

/* Plan tensor i of c (a float weight) quantized as o says. */
int	peftio_bnb_step_quantize(struct peftio_bnb_step *s,
	    struct peftio_ckpt *c, size_t i,
	    const struct peftio_bnb_quant_opts *o, struct peftio_error *err);
/* Plan the 4-bit weight bw, or the 8-bit weight bw8 when not NULL,
 * dequantized to dtype (-1: the weight's own). */
void	peftio_bnb_step_dequantize(struct peftio_bnb_step *s,
	    struct peftio_ckpt *c, const struct peftio_bnb_weight *bw,
	    const struct peftio_bnb8_weight *bw8, int dtype);
/* What the steps reuse from one weight to the next (buffers); NULL when
 * out of memory.  _free(NULL) does nothing. */
struct peftio_bnb_buffers;
struct peftio_bnb_buffers *peftio_bnb_buffers_new(void);
void	peftio_bnb_buffers_free(struct peftio_bnb_buffers *buf);
/* Before the transform, for a 4-bit weight with double quantization:
 * its offset (peftio_bnb_prepass()), and with check its NaN and Inf. */
int	peftio_bnb_step_offset(struct peftio_bnb_step *s,
	    struct peftio_ckpt *c, size_t i, int check,
	    struct peftio_bnb_buffers *buf, unsigned nthreads,
	    struct peftio_error *err);
/* The same for qs->numel values of qs->dtype in memory. */
int	peftio_bnb_offset_mem(struct peftio_quant_state *qs, const void *vals,
	    unsigned nthreads, struct peftio_error *err);
/* The declare, compute and expect hooks' work for tensor i (the output
 * of input shard shard).  compute fills job slots of x and submits their
 * writes; with check a NaN or Inf is PEFTIO_ENONFINITE (a 4-bit weight
 * with double quantization was checked by peftio_bnb_step_offset()).
 * s must outlive the transform. */
int	peftio_bnb_step_declare(struct peftio_xf *x, size_t i, size_t shard,
	    struct peftio_bnb_step *s, struct peftio_error *err);
int	peftio_bnb_step_compute(struct peftio_xf *x, size_t i,
	    const struct peftio_bnb_step *s, int check,
	    struct peftio_bnb_buffers *buf, unsigned nthreads,
	    struct peftio_error *err);
int	peftio_bnb_step_expect(struct peftio_xf_check *chk, size_t i,
	    const struct peftio_bnb_step *s, struct peftio_error *err);
/* Quantize values computed in memory (vals, of the weight's shape) as
 * the quantizing step s plans, and submit them written as name. */
int	peftio_bnb_step_quantize_mem(struct peftio_xf *x, const char *name,
	    const struct peftio_bnb_step *s, const void *vals,
	    unsigned nthreads, struct peftio_error *err);
void	peftio_bnb_step_free(struct peftio_bnb_step *s);
/*
 * The steps of a whole model, one per tensor of c into xi and steps
 * (c's count of each, zeroed).  Quantizing (decode 0): c must be
 * unquantized (peftio_check_unquantized()), and the tensors
 * peftio_quant_selected() picks with the include and exclude globs are
 * planned quantized as o says.  Dequantizing: every 4-bit and 8-bit
 * weight (peftio_bnb_group()) is planned decoded to o->dtype.  Every
 * other tensor is copied, or converted when o->dtype is not -1 and it
 * is a float of another dtype.  The number of weights planned, or a
 * negative PEFTIO_E* value.
 */
long	peftio_bnb_steps_plan(struct peftio_ckpt *c, int decode,
	    const struct peftio_bnb_quant_opts *o,
	    const char *const *include, size_t ninclude,
	    const char *const *exclude, size_t nexclude,
	    struct peftio_xf_item *xi, struct peftio_bnb_step *steps,
	    struct peftio_error *err);
/*
 * Before a transform of those steps: peftio_bnb_step_offset() for every
 * 4-bit weight quantized, with progress (may be NULL) told the bytes
 * read so far before each weight, with its name, and once at the end
 * with what NULL.  The blocks' absmax found are kept in the steps
 * (absmax, freed by peftio_bnb_step_free()) for the quantizing pass, up
 * to the size of the checkpoint's largest tensor in all.  0, or a
 * negative PEFTIO_E* value.
 */
int	peftio_bnb_steps_offsets(struct peftio_ckpt *c,
	    const struct peftio_xf_item *xi, struct peftio_bnb_step *steps,
	    int check, struct peftio_bnb_buffers *buf, unsigned nthreads,
	    peftio_progress_fn progress, void *progress_arg,
	    struct peftio_error *err);

/* What transformers' BitsAndBytesConfig says. */
struct peftio_bnb_config {
	int		 bits;		/* 4 or 8 */
	enum peftio_q4type type;	/* 4-bit */
	int		 double_quant;	/* 4-bit */
	enum peftio_dtype compute;	/* 4-bit: bnb_4bit_compute_dtype */
	enum peftio_dtype storage;	/* 4-bit: bnb_4bit_quant_storage */
};

/* config.json with c's "quantization_config" (see below). */
int	peftio_config_add_bnb(const char *in, size_t inlen,
	    const struct peftio_bnb_config *c, char **out, size_t *outlen,
	    struct peftio_error *err);

/*
 * config.json: return a copy of the JSON text in with a
 * "quantization_config" block as transformers writes it for
 * BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=type,
 * bnb_4bit_use_double_quant=dq, bnb_4bit_compute_dtype=compute), and
 * the result formatted as transformers writes config.json.
 */
int	peftio_config_add_quant(const char *in, size_t inlen,
	    enum peftio_q4type type, int double_quant,
	    enum peftio_dtype compute, char **out, size_t *outlen,
	    struct peftio_error *err);
/* 1 if config.json (in) has a "quantization_config": method gets its
 * quant_method ("bitsandbytes", "gptq", ..., or "unnamed"), *bits 4 or 8
 * when it says load_in_4bit or load_in_8bit, else 0.  0 if it has none. */
int	peftio_config_quant(const char *in, size_t inlen, char *method,
	    size_t cap, int *bits, struct peftio_error *err);
/* The reverse: drop "quantization_config"; set "dtype" (and
 * "torch_dtype" where present) to dt unless dt is -1. */
int	peftio_config_remove_quant(const char *in, size_t inlen, int dt,
	    char **out, size_t *outlen, struct peftio_error *err);

/* ------------------------------------------------------------------ */
/* Fine-tuning plans: trainable parameters and memory (plan.c)         */
/* ------------------------------------------------------------------ */

/*
 * What a PEFT method would train on a model known from its header, in
 * PEFT's own counting (print_trainable_parameters: "all params" is the
 * base model's parameters plus the added ones), and the memory that
 * training needs for weights, gradients and optimizer states.
 */
enum peftio_plan_method {
	PEFTIO_PLAN_FULL = 0,
	PEFTIO_PLAN_LORA,
	PEFTIO_PLAN_QLORA,
	PEFTIO_PLAN_IA3,
	PEFTIO_PLAN_PROMPT,
	PEFTIO_PLAN_PREFIX,
	PEFTIO_PLAN_BITFIT,
	/* PEFT's other tuners on the targeted linear weights, with rank r
	 * (tuners.c) */
	PEFTIO_PLAN_LOHA,
	PEFTIO_PLAN_LOKR,
	PEFTIO_PLAN_ADALORA,
	PEFTIO_PLAN_VERA,
	PEFTIO_PLAN_HRA,
	PEFTIO_PLAN_MISS,
	PEFTIO_PLAN_DELORA,
	/* and those whose size is not (only) a rank: the sizes of struct
	 * peftio_plan_opts, PEFT's defaults where 0 */
	PEFTIO_PLAN_OFT,
	PEFTIO_PLAN_BOFT,
	PEFTIO_PLAN_VBLORA,
	PEFTIO_PLAN_RANDLORA,
	PEFTIO_PLAN_SHIRA,
	PEFTIO_PLAN_C3A,
	PEFTIO_PLAN_ROAD,
	PEFTIO_PLAN_FOURIERFT,
	PEFTIO_PLAN_BONE
};

enum peftio_optimizer {
	PEFTIO_OPT_ADAMW = 0,	/* two fp32 moments: 8 bytes/param */
	PEFTIO_OPT_ADAMW8BIT,	/* two 8-bit moments: 2 bytes/param */
	PEFTIO_OPT_SGD		/* no momentum: 0 bytes/param */
};

/* "full", "lora", ...; the value, or -1 for an unknown name. */
const char *peftio_plan_method_name(enum peftio_plan_method m);
int	peftio_plan_method_parse(const char *s);
/* "adamw", "adamw8bit", "sgd"; the value, or -1. */
const char *peftio_optimizer_name(enum peftio_optimizer o);
int	peftio_optimizer_parse(const char *s);
/* Bytes of optimizer state per trainable parameter. */
unsigned peftio_optimizer_state_bytes(enum peftio_optimizer o);

/* One tensor of the model as it was before quantization: a 4-bit weight
 * has its original shape and numel, and nbytes of all its pieces. */
struct peftio_plan_tensor {
	const char	*name;
	int		 ndim;
	const uint64_t	*shape;
	uint64_t	 numel;
	uint64_t	 nbytes;
	int		 quantized;
};

struct peftio_plan_opts {
	enum peftio_plan_method method;
	uint64_t	 r;		/* LoRA rank */
	const char	*targets;	/* comma-separated; NULL: the default */
	uint64_t	 virtual_tokens; /* prompt and prefix tuning */
	enum peftio_optimizer optimizer;
	/* From config.json (peftio_plan_config()); 0 where unknown.  Prefix
	 * tuning sizes keys and values as PEFT does: head_dim (or hidden /
	 * heads) x kv_heads when kv_heads is known; hidden when only heads
	 * is; with neither, the width of the k_proj weights. */
	uint64_t	 heads;		/* num_attention_heads */
	uint64_t	 kv_heads;	/* num_key_value_heads */
	uint64_t	 head_dim;
	/* The sizes of the tuners beyond their rank, as in their PEFT
	 * configs; 0 (false) gives PEFT's default. */
	uint64_t	 block_size;	/* OFT oft_block_size (32), BOFT
					 * boft_block_size (4), C3A
					 * block_size (256) */
	uint64_t	 block_num;	/* OFT r (blocks), BOFT
					 * boft_block_num: instead of
					 * block_size */
	uint64_t	 butterfly;	/* BOFT boft_n_butterfly_factor (1) */
	int		 block_share;	/* OFT */
	uint64_t	 num_vectors;	/* VB-LoRA (256) */
	uint64_t	 vector_length;	/* VB-LoRA (256) */
	uint64_t	 n_frequency;	/* FourierFT (1000) */
	unsigned	 road_variant;	/* RoAd road_1, road_2, road_4 (1) */
	uint64_t	 group_size;	/* RoAd (64) */
	int		 decompose_both; /* LoKr */
	long long	 decompose_factor; /* LoKr (-1; 0 counts as -1) */
};

/*
 * Training memory in bytes, activations excluded: weights (frozen and
 * trained, 16-bit; the 4-bit base for QLoRA), gradients (16-bit, of the
 * trained parameters) and optimizer states.
 */
struct peftio_plan_memory {
	uint64_t	 weights;
	uint64_t	 gradients;
	uint64_t	 optimizer;
	uint64_t	 total;
};

struct peftio_plan {
	uint64_t	 base_params;
	uint64_t	 trainable_params;
	uint64_t	 all_params;
	uint64_t	 modules;	/* modules the method adapts */
	uint64_t	 hidden_size;	/* 0 when not found */
	uint64_t	 num_layers;
	uint64_t	 lora_params;	/* LoRA with opts' r and targets */
	struct peftio_plan_memory full, lora, qlora;
	uint64_t	 prefix_dim;	/* width of a prefix key or value */
};

/* Default targets: "q_proj,v_proj" for LoRA and the other tuners,
 * "k_proj,v_proj,down_proj" for IA3 (PEFT's for Llama); NULL for the
 * other methods. */
const char *peftio_plan_default_targets(enum peftio_plan_method m);
/*
 * 1 when the module path matches one of the comma-separated names as
 * PEFT matches a list of target_modules: equal, or a suffix that
 * follows a dot ("q_proj" matches "model.layers.0.self_attn.q_proj").
 */
int	peftio_plan_target_match(const char *module, size_t len,
	    const char *list);
/* NF4 bytes of an n-element weight at blocksize 64 with double
 * quantization (blocksize 256), quant_state blob included. */
uint64_t peftio_plan_nf4_bytes(uint64_t n);
/* Compute the plan for the n tensors t.  PEFTIO_EINVAL on a bad option,
 * PEFTIO_EFORMAT when the model is too large to count. */
int	peftio_plan_compute(const struct peftio_plan_opts *o,
	    const struct peftio_plan_tensor *t, size_t n, struct peftio_plan *p,
	    struct peftio_error *err);
/* Fill o's heads, kv_heads and head_dim from the text of a config.json
 * (its text_config for a vision-language model), as PEFT reads them. */
int	peftio_plan_config(const char *text, size_t len,
	    struct peftio_plan_opts *o, struct peftio_error *err);
/*
 * Fill o from the text of a PEFT adapter_config.json: the method of its
 * peft_type, its rank (AdaLoRA's init_r), num_virtual_tokens, the
 * tuner's sizes; and *targets (malloc'ed; NULL when the config has
 * none) its target_modules joined by commas.  PEFTIO_EFORMAT for a
 * config that is not one, PEFTIO_EUNSUPPORTED for a peft_type the plan
 * does not count or target_modules given as a regular expression.
 */
int	peftio_plan_adapter_config(const char *text, size_t len,
	    struct peftio_plan_opts *o, char **targets,
	    struct peftio_error *err);
/* v with thousands separators, as Python's "{:,}" writes it. */
void	peftio_format_thousands(uint64_t v, char *buf, size_t len);
/* PEFT's line: "trainable params: 4,194,304 || all params:
 * 6,742,609,920 || trainable%: 0.0622" (no newline). */
void	peftio_plan_peft_line(uint64_t trainable, uint64_t all, char *buf,
	    size_t len);

/* ------------------------------------------------------------------ */
/* What a checkpoint holds and what quantization did (inspect.c,       */
/* compare.c)                                                          */
/* ------------------------------------------------------------------ */

/* The pieces of a 4-bit weight, in the order reports list them; an
 * 8-bit weight has codes and absmax (its SCB) only. */
enum peftio_inspect_part {
	PEFTIO_PART_CODES = 0,
	PEFTIO_PART_ABSMAX,
	PEFTIO_PART_NESTED_ABSMAX,
	PEFTIO_PART_QUANT_MAP,
	PEFTIO_PART_NESTED_QUANT_MAP,
	PEFTIO_PART_QUANT_STATE,
	PEFTIO_NPARTS
};
/* "codes", "absmax", "nested_absmax", "quant_map", "nested_quant_map",
 * "quant_state". */
const char *peftio_inspect_part_name(enum peftio_inspect_part p);

/* Sums for the error of values y against reference values x. */
struct peftio_stats {
	double		 sxx, syy, sxy, sdd;
	double		 max_abs_error;	/* NaN when a difference is NaN */
	uint64_t	 n;
};

void	peftio_stats_add(struct peftio_stats *a, const struct peftio_stats *b);
/* Root mean square of y - x (0 for no values), signal-to-noise ratio
 * 10 log10(sum x^2 / sum (x - y)^2) in dB, cosine similarity. */
double	peftio_stats_rmse(const struct peftio_stats *s);
double	peftio_stats_snr_db(const struct peftio_stats *s);
double	peftio_stats_cosine(const struct peftio_stats *s);

/* One tensor as the model sees it: a plain tensor, or a 4-bit or 8-bit
 * weight with its companion tensors counted in. */
struct peftio_inspect_row {
	size_t		 idx;		/* the tensor (W for a quantized one) */
	const char	*name;
	int		 quantized;	/* 4-bit or 8-bit */
	int		 int8;		/* 8-bit: bw8, not bw */
	struct peftio_bnb_weight bw;	/* when quantized to 4 bits */
	struct peftio_bnb8_weight bw8;	/* when quantized to 8 bits */
	int		 ndim;
	const uint64_t	*shape;		/* the weight's, not the codes' */
	uint64_t	 params;
	uint64_t	 bytes;		/* all pieces together */
	uint64_t	 part[PEFTIO_NPARTS];	/* bytes of each piece */
	int		 compared;	/* st is set (peftio_compare_tensor) */
	struct peftio_stats st;
};

/* The account of a whole checkpoint. */
struct peftio_inspect {
	struct peftio_ckpt *c;
	struct peftio_inspect_row *rows;
	size_t		 nrows;
	uint64_t	 params, bytes;		/* bytes: every tensor stored */
	uint64_t	 qparams, qbytes;	/* of the quantized weights */
	uint64_t	 orig_bytes;	/* with quantized weights in their
					 * dtype */
	int64_t		 dq_saved_bits;	/* negative for small tensors, where
					 * the 1 KiB nested map outweighs it */
	size_t		 nquant, ndq;	/* quantized weights, 4-bit with DQ */
	size_t		 nint8;		/* 8-bit weights among nquant */
	int		 qtype;		/* enum peftio_q4type,
					 * PEFTIO_INSPECT_INT8; -1: none */
	int		 mixed_types;	/* more than one of NF4, FP4, int8 */
	size_t		 compared;	/* rows compared */
	struct peftio_stats cmp;	/* over all rows compared */
};

/* qtype of an 8-bit (LLM.int8) weight, beside enum peftio_q4type. */
#define PEFTIO_INSPECT_INT8	2

/* Account for every tensor of c (which must outlive *r): one row a
 * plain tensor or a 4-bit or 8-bit weight, in checkpoint order.  Reads
 * headers and quant_state blobs only.  Free with peftio_inspect_free(). */
int	peftio_inspect_ckpt(struct peftio_inspect *r, struct peftio_ckpt *c,
	    struct peftio_error *err);
void	peftio_inspect_free(struct peftio_inspect *r);
/* Bits per parameter: 8 bytes / params, 0 for no parameters. */
double	peftio_bits_per_param(uint64_t bytes, uint64_t params);
/* Bits per quantized parameter that double quantization saves. */
double	peftio_inspect_dq_saving(const struct peftio_inspect *r);
/* "NF4", "FP4", "INT8" or the stored dtype's name. */
const char *peftio_inspect_dtype(const struct peftio_inspect *r,
	    const struct peftio_inspect_row *row);
/* The quantization types of r: "nf4", "fp4", "int8", "nf4 and fp4",
 * "int8 and 4-bit"; NULL when nothing is quantized. */
const char *peftio_inspect_qtypes(const struct peftio_inspect *r);

/*
 * The error of a row of checkpoint c against tensor k of orig, a
 * floating-point tensor with as many elements: a quantized weight is
 * dequantized (whole blocks, or whole rows of an 8-bit weight), another
 * tensor converted, both to 32 bits, a part at a time (tmp: scratch kept
 * between calls).  Sums are taken in a fixed number of pieces and added
 * in order, so *st does not depend on nthreads.
 */
int	peftio_compare_tensor(struct peftio_ckpt *c,
	    const struct peftio_inspect_row *row, struct peftio_ckpt *orig,
	    size_t k, unsigned nthreads, struct peftio_scratch tmp[3],
	    struct peftio_stats *st, struct peftio_error *err);

/* What peftio_inspect_compare() tells its caller as it goes. */
struct peftio_compare_ops {
	/* A peftio_progress_fn in tensors: before each tensor compared,
	 * and once at the end (what NULL). */
	void	(*progress)(void *ctx, uint64_t done, uint64_t total,
		    const char *what);
	/* A tensor that cannot be compared (it does not fit, its data
	 * cannot be read); the others are compared still. */
	void	(*failed)(void *ctx, const struct peftio_error *err);
};

struct peftio_compare_summary {
	size_t		 candidates;	/* rows to compare */
	size_t		 missing;	/* of them, without a tensor in orig */
	const char	*first_missing;	/* the first of those, or NULL */
};

/*
 * The quantized weights of r against the tensors of the same name in
 * orig; when r holds no quantized weight, every floating-point row (a
 * merge or an extraction against a reference).  Sets each row's st and
 * compared, and r's cmp and compared.  0 when every candidate was
 * compared, 1 when one was missing or failed.
 */
int	peftio_inspect_compare(struct peftio_inspect *r,
	    struct peftio_ckpt *orig, unsigned nthreads,
	    const struct peftio_compare_ops *ops, void *ctx,
	    struct peftio_compare_summary *sum);

/*
 * The plan (plan.c) for the checkpoint r accounts for, its quantized
 * weights counted at their original size, with the attention heads of the
 * config.json beside it when there is one (they are filled into o).
 */
int	peftio_plan_inspect(const struct peftio_inspect *r,
	    struct peftio_plan_opts *o, struct peftio_plan *p,
	    struct peftio_error *err);
/* o's targets, or the method's default ones (NULL when it has none). */
const char *peftio_plan_targets(const struct peftio_plan_opts *o);
/* One sentence of what a plan assumes: bytes per weight, gradient and
 * optimizer state, the LoRA and QLoRA settings compared. */
void	peftio_plan_assumptions(const struct peftio_plan_opts *o, char *buf,
	    size_t len);

/*
 * JSON text holding a list of documents, written as YAML (yamlout.c):
 * one YAML document each, mappings in block style, lists of scalars in
 * flow style, strings quoted where YAML would read them otherwise, reals
 * as Python's repr() writes them, key order kept.  *out (NUL-terminated,
 * *outlen bytes without the NUL) is the caller's to free().
 */
int	peftio_yaml_from_json(const char *json, size_t len, char **out,
	    size_t *outlen, struct peftio_error *err);

/*
 * What dq-inspect says about a checkpoint (report.c, report_text.c):
 * peftio_report_open() accounts for checkpoint c, named path (both must
 * outlive the report), and for an adapter the rank and size of its
 * modules; _compare() (orig, named name), _verify() (progress, unless
 * NULL, in bytes; failed, unless NULL, called for each tensor that
 * cannot be checked) and _plan() add their sections, and return 1 when
 * something was wrong, as peftio_inspect_compare() does.  _text()
 * writes the report as text to f (the verify and plan sections before
 * the table of tensors); a list collects reports as JSON documents and
 * writes them as one JSON object, {"inputs": [...], "totals": {...}}
 * (the totals of all the reports together), or as YAML, one
 * document each.  With PEFTIO_REPORT_SUMMARY in flags, only the totals:
 * no table of tensors, of an adapter's modules or of the tensors
 * compared.  The write functions return PEFTIO_EIO when f fails.
 */
#define PEFTIO_REPORT_SUMMARY	0x01

struct peftio_report;
struct peftio_report_list;
int	peftio_report_open(struct peftio_report **rp, struct peftio_ckpt *c,
	    const char *path, struct peftio_error *err);
struct peftio_inspect *peftio_report_inspect(struct peftio_report *rp);
int	peftio_report_compare(struct peftio_report *rp,
	    struct peftio_ckpt *orig, const char *name, unsigned nthreads,
	    const struct peftio_compare_ops *ops, void *ctx,
	    struct peftio_compare_summary *sum);
int	peftio_report_verify(struct peftio_report *rp,
	    peftio_progress_fn progress,
	    void (*failed)(void *ctx, const struct peftio_error *err),
	    void *ctx);
int	peftio_report_plan(struct peftio_report *rp,
	    const struct peftio_plan_opts *po, double alpha,
	    struct peftio_error *err);
void	peftio_report_text(FILE *f, const struct peftio_report *rp,
	    unsigned flags);
void	peftio_report_free(struct peftio_report *rp);
struct peftio_report_list *peftio_report_list_new(void);
int	peftio_report_list_add(struct peftio_report_list *l,
	    const struct peftio_report *rp, unsigned flags,
	    struct peftio_error *err);
size_t	peftio_report_list_count(const struct peftio_report_list *l);
int	peftio_report_list_json(FILE *f, const struct peftio_report_list *l,
	    struct peftio_error *err);
int	peftio_report_list_yaml(FILE *f, const struct peftio_report_list *l,
	    struct peftio_error *err);
void	peftio_report_list_free(struct peftio_report_list *l);

/* ------------------------------------------------------------------ */
/* Dense linear algebra (linalg.c)                                     */
/* ------------------------------------------------------------------ */

/*
 * Row-major single precision, thin wrappers over BLAS/LAPACK.
 * C[m,n] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; lda, ldb,
 * ldc are row strides.  The result of one call depends only on its
 * arguments: BLAS runs single-threaded inside the library (callers
 * split work into fixed pieces themselves).
 */
/*
 * The BLAS library takes a work buffer for each thread inside it at
 * once, and would wait forever for memory it cannot get.  The library
 * lets no more of its threads into BLAS at once than it has buffers
 * for.  peftio_blas_reserve() makes room for up to n (call it before
 * starting n threads that use BLAS; fewer when memory is short, and
 * the others then take turns), peftio_blas_ready() for at least one.
 * 0, or PEFTIO_ENOMEM when not even one fits (err may be NULL).  Call
 * one of them before peftio_sgemm().
 */
int	peftio_blas_reserve(unsigned n, struct peftio_error *err);
int	peftio_blas_ready(struct peftio_error *err);
void	peftio_sgemm(int trans_a, int trans_b, uint64_t m, uint64_t n,
	    uint64_t k, float alpha, const float *a, uint64_t lda,
	    const float *b, uint64_t ldb, float beta, float *c, uint64_t ldc);
/*
 * Thin SVD of the row-major m x n matrix a (destroyed): a = U S Vt with
 * p = min(m, n); u is m x p, s has p values (descending), vt is p x n.
 * PEFTIO_ENOMEM, or PEFTIO_EINVAL when LAPACK does not converge.
 */
int	peftio_svd(float *a, uint64_t m, uint64_t n, float *u, float *s,
	    float *vt, struct peftio_error *err);
/*
 * Orthonormalise the l columns of the row-major m x l matrix a in place
 * (Householder QR, a becomes Q); l <= m.
 */
int	peftio_orth(float *a, uint64_t m, uint64_t l, struct peftio_error *err);
/*
 * Randomized truncated SVD of the row-major m x n matrix a (kept):
 * Halko-Martinsson-Tropp subspace iteration with k + p Gaussian test
 * vectors (a fixed generator seeded by seed), q power iterations each
 * re-orthonormalised by QR, then the SVD of Q^T a.  Writes the top k
 * triplets: u is m x k, s has k values (descending), vt is k x n.
 * k <= min(m, n); p is cut to min(m, n) - k.
 */
int	peftio_rsvd(const float *a, uint64_t m, uint64_t n, uint64_t k,
	    uint64_t p, unsigned q, uint64_t seed, float *u, float *s,
	    float *vt, struct peftio_error *err);

/* ------------------------------------------------------------------ */
/* PEFT adapters and their merge (lora.c)                              */
/* ------------------------------------------------------------------ */

/*
 * An adapter as PEFT writes it: a directory with adapter_config.json
 * and adapter_model.safetensors (or the older adapter_model.bin).
 * LoRA (with rsLoRA, rank_pattern and alpha_pattern, fan_in_fan_out,
 * embeddings, DoRA, lora_B.bias, modules_to_save and base_layer
 * tensors), IA3 and PEFT's other weight tuners (AdaLoRA, LoHa, LoKr,
 * VeRA, OFT, BOFT, HRA, MiSS, VB-LoRA, RandLoRA, SHiRA, C3A, DeLoRA:
 * tuners.c, lora-merge(1)) are read; adapter types that cannot be folded into
 * weights (prompt, prefix and p-tuning, adaption prompts, bottleneck
 * adapters) and LoRA variants this library does not implement are
 * refused with PEFTIO_EUNSUPPORTED and a message saying why.
 */
struct peftio_adapter;

enum peftio_adapter_type {
	PEFTIO_ADAPTER_LORA = 0,
	PEFTIO_ADAPTER_IA3 = 1,
	PEFTIO_ADAPTER_TUNER = 2	/* another PEFT tuner (lora-merge(1)) */
};

int	peftio_adapter_open(struct peftio_adapter **out, const char *path,
	    struct peftio_error *err);
/* The same from memory: the text of adapter_config.json and the bytes
 * of adapter_model.safetensors (not copied: model must outlive the
 * adapter).  label stands for the directory in messages. */
int	peftio_adapter_open_mem(struct peftio_adapter **out, const char *cfg,
	    size_t cfglen, const void *model, size_t modellen,
	    const char *label, struct peftio_error *err);
void	peftio_adapter_free(struct peftio_adapter *a);
const char *peftio_adapter_path(const struct peftio_adapter *a);
enum peftio_adapter_type peftio_adapter_type(const struct peftio_adapter *a);
/* Number of adapted modules (LoRA pairs, IA3 vectors or the modules
 * of another tuner; for those, the rank where the tuner has one, else 0,
 * and scale 1). */
size_t	peftio_adapter_nmodules(const struct peftio_adapter *a);
/* Module i's path without "base_model.model." (e.g.
 * "model.layers.0.self_attn.q_proj"), its rank (0 for IA3) and scale. */
const char *peftio_adapter_module(const struct peftio_adapter *a, size_t i,
	    uint64_t *rank, double *scale);
/* 1 when a module uses DoRA. */
int	peftio_adapter_dora(const struct peftio_adapter *a);
/* 1 when the config sets fan_in_fan_out but modules are Linear layers:
 * as PEFT does, the flag is ignored for them (only GPT-2 style Conv1D
 * modules, .attn.c_attn, .attn.q_attn, .attn.c_proj, .mlp.c_fc and
 * .mlp.c_proj, hold [in, out] weights, with or without the flag). */
int	peftio_adapter_fifo_ignored(const struct peftio_adapter *a);

/*
 * PEFT's key matching for rank_pattern / alpha_pattern: 1 when pattern
 * (in Python's re syntax) matches module path p as Python's
 * re.match(r"(.*\.)?(pattern)$", p) does, 0 when not, PEFTIO_EINVAL
 * for a pattern Python's re refuses too, PEFTIO_EUNSUPPORTED for one
 * that POSIX cannot match the same way or within bounded work:
 * backreferences, lookarounds, inline flags, possessive repetitions,
 * \b \A \Z \x and other such escapes, counts above 255, patterns
 * whose repetitions would compile to more than 4000 nodes, patterns and
 * module paths longer than 4096 bytes.
 */
int	peftio_lora_pattern_match(const char *pattern, const char *p);
/* The POSIX ERE for Python pattern py into o (16 bytes per byte of py
 * and one): 0, PEFTIO_EINVAL or PEFTIO_EUNSUPPORTED, *why saying what
 * is wrong. */
int	peftio_rx_translate(const char *py, char *o, const char **why);

/* How several adapters are combined (PEFT's add_weighted_adapter). */
enum peftio_combine {
	PEFTIO_COMBINE_NONE = 0,	/* merge one after the other */
	PEFTIO_COMBINE_LINEAR,
	PEFTIO_COMBINE_CAT,
	PEFTIO_COMBINE_SVD,
	PEFTIO_COMBINE_TIES,
	PEFTIO_COMBINE_DARE_LINEAR,
	PEFTIO_COMBINE_DARE_TIES,
	PEFTIO_COMBINE_MAGNITUDE_PRUNE
};
/* "linear", "cat", ...; -1 if unknown.  The name of a value, or NULL. */
int	peftio_combine_parse(const char *s);
const char *peftio_combine_name(enum peftio_combine c);

struct peftio_merge_opts {
	enum peftio_combine method;
	const double	*weights;	/* one per adapter; NULL: all 1 */
	double		 density;	/* ties, dare_*, magnitude_prune */
	uint64_t	 seed;		/* dare_* */
	int		 unmerge;	/* subtract instead of add */
	unsigned	 nthreads;
};

/*
 * A merge plan: which base tensors change and how.  The base is
 * described by a lookup callback (name -> logical shape), so a 4-bit
 * base can be planned from its quant_state.  create() checks that every
 * adapter module exists in the base and that every shape fits, naming
 * the module on failure; nothing is computed yet.
 */
struct peftio_merge;

int	peftio_merge_create(struct peftio_merge **out,
	    struct peftio_adapter *const *adapters, size_t nadapters,
	    const struct peftio_merge_opts *opts,
	    int (*shape_of)(void *arg, const char *name, int *ndim,
	    uint64_t *shape), void *arg, struct peftio_error *err);
void	peftio_merge_free(struct peftio_merge *m);
/* 1 when base tensor name is changed or replaced by the merge. */
int	peftio_merge_touches(const struct peftio_merge *m, const char *name);
/* Number of base tensors the merge changes. */
size_t	peftio_merge_count(const struct peftio_merge *m);
/*
 * Apply the merge to base tensor name, given as numel f32 values in w
 * (changed in place).  round_dt is the dtype the result will be stored
 * in: where PEFT rounds between steps (one adapter after another), the
 * same rounding is done here.
 */
int	peftio_merge_apply(struct peftio_merge *m, const char *name, float *w,
	    uint64_t numel, enum peftio_dtype round_dt,
	    struct peftio_error *err);
/*
 * The same a block of rows at a time, so that a tensor need not be held
 * whole: begin loads what tensor name needs (nothing if the merge does
 * not touch it), rows applies the merge to rows [row0, row0 + nrows)
 * held in w (row0 a multiple of PEFTIO_MERGE_ROWS, and nrows too except
 * for the last block; a 1-D tensor has one value per row), end frees
 * what begin loaded.  The result does not depend on the blocks.
 */
#define PEFTIO_MERGE_ROWS	64
int	peftio_merge_begin(struct peftio_merge *m, const char *name,
	    uint64_t numel, struct peftio_error *err);
int	peftio_merge_rows(struct peftio_merge *m, float *w, uint64_t row0,
	    uint64_t nrows, enum peftio_dtype round_dt,
	    struct peftio_error *err);
void	peftio_merge_end(struct peftio_merge *m);
/*
 * The combined adapter of m (made with a method other than
 * PEFTIO_COMBINE_NONE) as the PEFT LoRA adapter directory dir, what
 * add_weighted_adapter() followed by save_pretrained() writes: per
 * module lora_A [r, in] and lora_B [out, r] (lora_embedding_A/B for
 * embeddings), float32, at the combination's rank r (cat: the sum of
 * the ranks; svd: the largest; the others: the common one), a module
 * of lower rank filled up with zeros; the replaced tensors
 * (modules_to_save) as they are; adapter_config.json the first
 * adapter's with r = lora_alpha = that rank, no rank or alpha
 * patterns, and target_modules and modules_to_save the inputs' union.
 * Merging it alone gives the combination's merge.  The writer is
 * returned in *out, not yet in place: peftio_ckptw_commit() renames it
 * into place, peftio_ckptw_free() discards it.  flags as for
 * peftio_ckptw_create() (PEFTIO_W_FORCE).
 */
int	peftio_merge_save_adapter(struct peftio_merge *m, const char *dir,
	    unsigned flags, struct peftio_ckptw **out,
	    struct peftio_error *err);

/*
 * A base checkpoint's tensor merged a block of rows at a time
 * (merge_stream.c): tensor i of c (or the 4-bit weight bw, or the 8-bit
 * weight bw8, dequantized as bitsandbytes does, when not NULL) is read, converted to f32,
 * given the change of the tensors m touches (none when m is NULL),
 * converted to dt and handed out: out->buffer() gives the memory for
 * the next block (nbytes of output at byte offset of the tensor), and
 * out->put(), when not NULL, takes it once it is filled.  Without
 * allow_nonfinite a merged value that is NaN or Inf is
 * PEFTIO_ENONFINITE naming the element.  The stream keeps its buffers
 * from one tensor to the next.
 */
struct peftio_merge_stream;

struct peftio_merge_out {
	void	*(*buffer)(void *arg, uint64_t offset, uint64_t nbytes);
	int	 (*put)(void *arg, struct peftio_error *err);
	void	*arg;
};

int	peftio_merge_stream_new(struct peftio_merge_stream **out,
	    struct peftio_merge *m, unsigned nthreads, int allow_nonfinite,
	    struct peftio_error *err);
int	peftio_merge_stream_tensor(struct peftio_merge_stream *s,
	    struct peftio_ckpt *c, size_t i, const struct peftio_bnb_weight *bw,
	    const struct peftio_bnb8_weight *bw8, enum peftio_dtype dt,
	    const struct peftio_merge_out *out, struct peftio_error *err);
void	peftio_merge_stream_free(struct peftio_merge_stream *s);

/*
 * What a merge writes for each base tensor (merge_plan.c), as PEFT's
 * merge_and_unload() leaves the model: merged tensors in dtype (-1: the
 * base's), 4-bit and 8-bit weights dequantized without their companion
 * tensors or, with requant, quantized again (those the merge leaves
 * alone keep their bytes).  init groups the base's quantized weights;
 * peftio_merge_plan_shape() is the shape_of of peftio_merge_create();
 * apply plans every tensor from the merge; offsets, with requant and
 * before the transform, merges each double-quantized weight once for
 * its offset (progress, if not NULL, in tensors of base); declare and compute are the work of the transform's
 * hooks for a PEFTIO_XF_CUSTOM tensor.
 */
enum peftio_merge_act {
	PEFTIO_MERGE_WRITE,	/* merged */
	PEFTIO_MERGE_DEQUANT,	/* a 4-bit or 8-bit weight, dequantized */
	PEFTIO_MERGE_REQUANT	/* merged and quantized again (step) */
};

struct peftio_merge_item {
	enum peftio_merge_act	 act;
	enum peftio_dtype	 dt;		/* of the output */
	int			 touched;	/* changed by the merge */
	struct peftio_bnb_weight *bw;		/* a 4-bit base weight */
	struct peftio_bnb8_weight *bw8;		/* an 8-bit one */
	struct peftio_bnb_step	 step;		/* PEFTIO_MERGE_REQUANT */
};

struct peftio_merge_plan {
	struct peftio_ckpt	*base;
	size_t			 n;		/* tensors of base */
	struct peftio_xf_item	*xi;		/* for peftio_transform() */
	struct peftio_merge_item *items;
	struct peftio_bnb_weight *bw;
	struct peftio_bnb8_weight *bw8;
	int			 dtype;
	int			 requant;
	int			 quantized;	/* base has 4/8-bit weights */
	size_t			 nmerged;	/* tensors changed */
	struct peftio_scratch	 whole;		/* a merged weight */
};

int	peftio_merge_plan_init(struct peftio_merge_plan *p,
	    struct peftio_ckpt *base, int dtype, int requant,
	    struct peftio_error *err);
int	peftio_merge_plan_shape(void *plan, const char *name, int *ndim,
	    uint64_t *shape);
int	peftio_merge_plan_apply(struct peftio_merge_plan *p,
	    const struct peftio_merge *m, struct peftio_error *err);
int	peftio_merge_plan_offsets(struct peftio_merge_plan *p,
	    struct peftio_merge_stream *ms, unsigned nthreads,
	    peftio_progress_fn progress, void *ctx, struct peftio_error *err);
int	peftio_merge_plan_declare(struct peftio_xf *x, size_t i,
	    struct peftio_merge_plan *p, struct peftio_error *err);
int	peftio_merge_plan_compute(struct peftio_xf *x, size_t i,
	    struct peftio_merge_plan *p, struct peftio_merge_stream *ms,
	    unsigned nthreads, struct peftio_error *err);
/* Frees what init allocated (not base). */
void	peftio_merge_plan_free(struct peftio_merge_plan *p);

/* ------------------------------------------------------------------ */
/* Merge recipes (recipe.c)                                            */
/* ------------------------------------------------------------------ */

/* A YAML recipe (peftio-recipe(5)).  Unset numbers have has_* == 0;
 * relative paths are resolved against the recipe's directory. */
struct peftio_recipe {
	char		*base;
	char		*output;
	char		**adapters;
	double		*weights;
	size_t		 nadapters;
	int		 has_weights;
	char		*method;
	double		 density;
	int		 has_density;
	uint64_t	 seed;
	int		 has_seed;
	char		*dtype;
	int		 unmerge;
	int		 requant;
	char		*save_adapter;
};

int	peftio_recipe_parse(const char *text, size_t len, const char *path,
	    struct peftio_recipe **out, struct peftio_error *err);
int	peftio_recipe_load(const char *path, struct peftio_recipe **out,
	    struct peftio_error *err);
void	peftio_recipe_free(struct peftio_recipe *r);

/*
 * What a merge is asked for on a command line.  Unset: base, output,
 * save_adapter and weights NULL, nadapters 0, method and dtype -1, has_density 0, seed 0.
 * peftio_recipe_apply() fills what is unset from r (its strings and
 * arrays: keep r while a is used) and ors in unmerge and requant;
 * PEFTIO_EINVAL, naming path, for a method or a dtype that r names and
 * that does not exist.
 */
struct peftio_merge_args {
	const char	*base;
	const char	*output;
	const char	**adapters;
	size_t		 nadapters;
	double		*weights;	/* one per adapter */
	size_t		 nweights;
	int		 method;	/* enum peftio_combine */
	double		 density;
	int		 has_density;
	uint64_t	 seed;
	int		 dtype;		/* a float enum peftio_dtype */
	int		 unmerge;
	int		 requant;
	const char	*save_adapter;	/* the combined adapter's directory */
};

int	peftio_recipe_apply(struct peftio_recipe *r, const char *path,
	    struct peftio_merge_args *a, struct peftio_error *err);

/* ------------------------------------------------------------------ */
/* LoRA extraction from a weight delta (extract.c)                     */
/* ------------------------------------------------------------------ */

struct peftio_extract_opts {
	uint64_t	 rank;		/* fixed rank; 0: chosen by energy */
	double		 energy;	/* fraction of |delta|_F^2 to keep */
	uint64_t	 max_rank;	/* cap on the chosen rank */
	uint64_t	 min_rank;	/* floor on the chosen rank */
	uint64_t	 oversample;	/* randomized SVD: extra test vectors */
	unsigned	 power_iters;	/* randomized SVD: power iterations */
	int		 exact;		/* full LAPACK SVD instead */
	uint64_t	 seed;		/* randomized SVD: test matrix seed */
};

/* delta ~= b a: b is m x rank (U_r S_r^1/2), a is rank x n (S_r^1/2 V_r^T). */
struct peftio_lora_factors {
	uint64_t	 m, n, rank;
	float		*a;
	float		*b;
	double		 energy;	/* |delta|_F^2 */
	double		 kept;		/* fraction of it in the rank-r part */
	double		 rel_err;	/* |delta - b a|_F / |delta|_F */
};

/* rank 16, energy unset, max_rank 256, min_rank 1, oversample 8,
 * power_iters 2, randomized, seed 0. */
void	peftio_extract_opts_init(struct peftio_extract_opts *o);
/*
 * Factor the row-major m x n delta.  With o->rank the rank is
 * min(rank, m, n); otherwise the smallest rank r <= max_rank whose
 * leading singular values keep o->energy of |delta|_F^2 (max_rank when
 * none does), raised to min_rank.  PEFTIO_ENONFINITE for NaN or Inf.
 */
int	peftio_extract_lora(const float *delta, uint64_t m, uint64_t n,
	    const struct peftio_extract_opts *o, struct peftio_lora_factors *f,
	    struct peftio_error *err);
void	peftio_lora_factors_free(struct peftio_lora_factors *f);

/* Format a double as Python's repr() does (shortest round trip). */
void	peftio_py_repr_double(double v, char *buf, size_t len);

/* ------------------------------------------------------------------ */
/* LoRA initialisations that change the base (loinit.c)                */
/* ------------------------------------------------------------------ */

/*
 * PEFT's init_lora_weights "pissa" (and "pissa_niter_K"), "olora" and
 * LoftQ, one weight at a time.  Each splits the weight W into an
 * adapter B A, applied with PEFT's scale (alpha / r), and a new base:
 *   pissa: scale B A is the best rank-r approximation of W (exact SVD,
 *          or the randomized one); B = U_r (S_r / scale)^1/2,
 *          A = (S_r / scale)^1/2 V_r^T; the base keeps W - scale B A.
 *   olora: W = Q R (Householder QR, signs normalised so that R's
 *          diagonal is not negative); B = Q_r, A = R_r (PEFT's
 *          factors, before its scale), the base keeps W - scale B A.
 *   loftq: alternate Q = q4(W - scale B A) and scale B A = the best
 *          rank-r approximation of W - deq(Q); the base is Q itself.
 */
enum peftio_init_method {
	PEFTIO_INIT_PISSA = 0,
	PEFTIO_INIT_OLORA,
	PEFTIO_INIT_LOFTQ
};

/* "pissa", "olora", "loftq"; -1 if unknown.  The name, or NULL. */
int	peftio_init_method_parse(const char *s);
const char *peftio_init_method_name(enum peftio_init_method m);

struct peftio_init_opts {
	enum peftio_init_method method;
	uint64_t	 rank;
	double		 scale;		/* PEFT's alpha / r */
	int		 exact;		/* pissa, loftq: full LAPACK SVD */
	uint64_t	 oversample;	/* randomized SVD */
	unsigned	 power_iters;	/* randomized SVD (pissa_niter_K) */
	uint64_t	 seed;
	unsigned	 loftq_iter;	/* loftq: alternations, >= 1 */
	enum peftio_q4type qtype;	/* loftq: the 4-bit codec */
	uint64_t	 blocksize;	/* loftq: 64 */
	int		 double_quant;	/* loftq */
};

/* pissa, rank 16, scale 1, randomized with extraction's defaults,
 * 1 LoftQ iteration, NF4 with blocksize 64 and double quantization. */
void	peftio_init_opts_init(struct peftio_init_opts *o);

/*
 * One weight in bitsandbytes' 4-bit form: the codes, the absmax of each
 * block (as decoded: after double quantization, the dequantized
 * values), and with double quantization the 8-bit absmax codes, the
 * nested absmax and offset.
 */
struct peftio_q4_weight {
	enum peftio_q4type type;
	uint64_t	 n, bs, nb;
	int		 double_quant;
	uint8_t		*packed;	/* (n + 1) / 2 */
	float		*absmax;	/* nb */
	uint8_t		*qabsmax;	/* nb, double quantization */
	float		*nested;	/* ceil(nb / 256), double quantization */
	float		 offset;
};

/*
 * Quantize the n f32 values x as bitsandbytes does (nf4-quant's bytes);
 * deq, when not NULL, receives the values a 4-bit load decodes.
 */
int	peftio_q4_weight_quantize(struct peftio_q4_weight *q,
	    enum peftio_q4type t, uint64_t bs, int double_quant,
	    const float *x, uint64_t n, float *deq, struct peftio_error *err);
void	peftio_q4_weight_free(struct peftio_q4_weight *q);
/* The quant_state of q for a weight of the given dtype and shape
 * (written with peftio_bnb_declare() and peftio_bnb_write_stored()). */
void	peftio_q4_weight_state(const struct peftio_q4_weight *q,
	    enum peftio_dtype dt, int ndim, const uint64_t *shape,
	    struct peftio_quant_state *qs);

/*
 * Initialise one m x n weight w (f32, row-major).  On return w holds
 * the new base (pissa, olora: the residual; loftq: deq(Q)), f the
 * factors (f->energy: |W|^2; f->rel_err: |W - scale B A| / |W| for
 * pissa and olora, the share of W left in the residual, and
 * |W - deq(Q) - scale B A| / |W| for loftq; f->kept: the fraction of
 * |W|^2 in scale B A) and, for loftq, q the 4-bit weight (q may be
 * NULL otherwise).  PEFTIO_EINVAL when the rank exceeds
 * min(m, n); PEFTIO_ENONFINITE for NaN or Inf.
 */
int	peftio_init_lora(const struct peftio_init_opts *o, float *w,
	    uint64_t m, uint64_t n, struct peftio_lora_factors *f,
	    struct peftio_q4_weight *q, struct peftio_error *err);

/*
 * A whole model: every selected Linear weight of base is initialised,
 * the adapter (adapter_config.json with init_lora_weights true, r,
 * lora_alpha, target_modules; tensors in f32) written to adapter_dir
 * and the new base to residual_dir: the base's shards, index and
 * auxiliary files, the initialised weights in the base's dtype or, with
 * quantize (and always for loftq), as bitsandbytes 4-bit weights with a
 * quantization_config in config.json.  One weight is held per job;
 * results wait in an unlinked spool file beside residual_dir until
 * both outputs are laid out.  Nothing is written on failure (the two
 * directories are renamed into place one after the other, the base
 * first).
 */
struct peftio_init_model_opts {
	struct peftio_init_opts init;
	double		 alpha;		/* lora_alpha; scale = alpha / rank */
	int		 quantize;	/* -1, or enum peftio_q4type */
	/* 1 when module (a weight's name without ".weight") is adapted;
	 * NULL: every 2-D float weight. */
	int		(*select)(void *arg, const char *module);
	void		*select_arg;
	/* Called once per module after it is initialised (may be NULL). */
	void		(*report)(void *arg, const char *module,
			    const struct peftio_lora_factors *f);
	void		*report_arg;
	unsigned	 flags;		/* PEFTIO_W_FORCE */
	unsigned	 jobs;		/* weights at a time (0: 1); the
					 * output does not depend on it */
	/* Bytes of the selected weights initialised, then of the base's
	 * tensors written to the new base (may be NULL). */
	peftio_progress_fn progress;
	void		*progress_arg;
};

int	peftio_init_model(const char *base, const char *adapter_dir,
	    const char *residual_dir, const struct peftio_init_model_opts *o,
	    struct peftio_error *err);

/*
 * A LoRA adapter extracted from a fine-tuned model (extractmodel.c):
 * for every selected 2-D float weight, the truncated SVD of tuned -
 * base (peftio_extract_lora(), x.rank 0: the rank by energy, r the
 * largest), written to adapter_dir with adapter_config.json.  Both
 * models must hold the same tensors and shapes, and their config.json
 * the same architecture.  *nmodules and *rank (may be NULL) receive the
 * modules written and r.
 */
struct peftio_extract_model_opts {
	struct peftio_extract_opts x;
	double		 alpha;		/* 0: alpha = r (scale 1); else B is
					 * scaled so that alpha / rank gives
					 * the delta back */
	/* 1 when module is extracted; NULL: peftio_linear_module(). */
	int		(*select)(void *arg, const char *module);
	void		*select_arg;
	/* The changed tensors that are not extracted, ", "-separated;
	 * called once before the extraction when there are any. */
	void		(*skipped)(void *arg, const char *names);
	/* Called once per selected module after all are extracted; f is
	 * NULL when its delta is zero (no factors written). */
	void		(*report)(void *arg, const char *module,
			    const struct peftio_lora_factors *f);
	void		*report_arg;	/* of skipped and report */
	unsigned	 flags;		/* PEFTIO_W_FORCE */
	unsigned	 jobs;		/* weights at a time (0: 1) */
	/* Bytes of the tuned model's selected weights extracted (may be
	 * NULL). */
	peftio_progress_fn progress;
	void		*progress_arg;
};

int	peftio_extract_model(const char *base, const char *tuned,
	    const char *adapter_dir, const struct peftio_extract_model_opts *o,
	    uint64_t *nmodules, uint64_t *rank, struct peftio_error *err);

/* ------------------------------------------------------------------ */
/* Rank surgery on LoRA adapters (resize.c)                            */
/* ------------------------------------------------------------------ */

/*
 * The best approximation of rank k of delta = scale b a (b m x r, a r x n)
 * without forming delta: b = Qb Rb and a^T = Qa Ra (QR), the SVD of the
 * r x r core scale Rb Ra^T = Uc S Vc^T, and b' = Qb Uc_k S_k^1/2,
 * a' = S_k^1/2 Vc_k^T Qa^T.  The rank comes from o as in
 * peftio_extract_lora() (o->rank, or by energy); the core is always
 * decomposed exactly.  f gets b' (m x k), a' (k x n), the energy of
 * delta, the fraction kept and the relative error.
 */
int	peftio_lora_resize(const float *b, const float *a, uint64_t m,
	    uint64_t n, uint64_t r, double scale,
	    const struct peftio_extract_opts *o, struct peftio_lora_factors *f,
	    struct peftio_error *err);

/*
 * An adapter directory resized module by module (scale folded into the
 * factors: lora_alpha = r' per module unless alpha > 0 is given), or
 * converted: given the adapter written by an initialisation that
 * changed the base (init) and the same adapter after training, the
 * plain LoRA of rank 2r with delta = scale (B1 A1 - B0 A0), as PEFT's
 * path_initial_model_for_weight_conversion writes it, for the original
 * base.  Only plain LoRA (no DoRA, no bias, no embeddings) is taken.
 */
struct peftio_resize_opts {
	struct peftio_extract_opts x;
	double		 alpha;		/* 0: alpha = rank (scale 1) */
	void		(*report)(void *arg, const char *module,
			    const struct peftio_lora_factors *f);
	void		*report_arg;
	unsigned	 flags;		/* PEFTIO_W_FORCE */
	/* Modules done (may be NULL); with the rank by energy, each
	 * module is counted twice (one pass finds the ranks). */
	peftio_progress_fn progress;
	void		*progress_arg;
};

int	peftio_resize_adapter(const char *in, const char *out,
	    const struct peftio_resize_opts *o, struct peftio_error *err);
int	peftio_convert_adapter(const char *init, const char *trained,
	    const char *out, unsigned flags, struct peftio_error *err);
/* The same, with o->flags, and o->progress told of the modules
 * converted (the rank options of o are not used). */
int	peftio_convert_adapter_opts(const char *init, const char *trained,
	    const char *out, const struct peftio_resize_opts *o,
	    struct peftio_error *err);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* PEFTIO_H */
