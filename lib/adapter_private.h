/*
 * adapter_private.h - what the PEFT adapter modules share inside the
 * library: the opened adapter (adapter.c), the merge plan (merge.c), the
 * weighted combinations (combine.c) and the Python-regex shim
 * (pyregex.c).  Not installed.
 */
#ifndef PEFTIO_ADAPTER_PRIVATE_H
#define PEFTIO_ADAPTER_PRIVATE_H

#include <regex.h>

#include "peftio_private.h"

#define PEFT_PREFIX	"base_model.model."
#define CONFIG_NAME	"adapter_config.json"
#define MODEL_NAME	"adapter_model.safetensors"
#define CONFIG_MAX	(16u << 20)	/* refuse larger adapter configs */
#define MAX_RANK	4294967296.0	/* r above 2^32 is refused */

enum mkind { M_LORA, M_IA3 };

struct lmod {
	char		*name;		/* module path, no prefix */
	char		*target;	/* name + ".weight" */
	char		*btarget;	/* name + ".bias" */
	long		 a, b, bias, mag, ia3;	/* adapter tensor indices */
	int		 embedding;
	int		 ff;		/* IA3: feed-forward (input columns) */
	int		 fifo;		/* a Conv1D: the weight is [in, out] */
	uint64_t	 r;
	double		 scale;
};

struct repl {
	char		*target;
	long		 idx;
};

/* A compiled rank_pattern / alpha_pattern entry. */
struct cpat {
	const char	*key;		/* in the config, while it is loaded */
	regex_t		 re;
	double		 v;
};

struct pats {
	struct cpat	*p;
	size_t		 n;
};

struct peftio_adapter {
	char		*path;
	struct peftio_ckpt *ck;
	enum peftio_adapter_type type;
	int		 fifo, dora, rslora;
	int		 fifo_ignored;	/* fan_in_fan_out on Linear layers */
	struct pats	 rank, alpha;
	int		 has_ff;	/* feedforward_modules is a regex */
	regex_t		 ff;
	uint64_t	 r;
	struct lmod	*mods;
	size_t		 nmods;
	struct repl	*repls;
	size_t		 nrepls;
	struct peftio_tuner *tuner;	/* other PEFT tuners (tuners.c) */
	json_t		*cfg;		/* adapter_config.json */
};

enum opkind { OP_REPL, OP_LORA, OP_BIAS, OP_IA3W, OP_IA3B, OP_TUNER };

struct op {
	enum opkind	 kind;
	size_t		 ad;
	size_t		 mod;		/* OP_LORA, OP_BIAS, OP_IA3* */
	long		 idx;		/* OP_REPL */
};

struct target {
	char		*name;
	int		 ndim;
	uint64_t	 rows, cols, numel;
	struct op	*ops;
	size_t		 nops;
};

/*
 * What the ops of the current target need, loaded once by
 * peftio_merge_begin() and used for every block of rows.
 */
struct pop {
	float		*a, *b;		/* OP_LORA factors */
	float		*mag;		/* DoRA magnitudes */
	float		*v;		/* OP_BIAS, OP_IA3* vector */
	struct peftio_tuner_prep *tp;	/* OP_TUNER */
};

struct prep {
	const struct target *t;
	struct pop	*pops;
	/* A combination (method other than none): its factors. */
	int		 comb;
	float		*ca, *cb;
	uint64_t	 cr;
	int		 ctrans;
	int		 peft;		/* set by the caller: svd factors in
					 * PEFT's layout (transposed for
					 * embeddings and Conv1D) */
};

struct peftio_merge {
	struct peftio_adapter *const *ads;
	size_t		 nads;
	struct peftio_merge_opts o;
	double		*w;
	struct target	*t;
	size_t		 nt;
	uint64_t	 newr;
	float		 newscale;
	struct peftio_scratch *slots;	/* per thread: ROW_CHUNK rows of
					 * a delta */
	struct prep	*prep;		/* the target being merged */
};

#define ROW_CHUNK	PEFTIO_MERGE_ROWS /* rows per BLAS call: fixed, so
				 * neither -j nor the blocks change a result */

/* pyregex.c */
/* The longest pattern compiled, and the longest path matched. */
#define RX_LEN_MAX	4096
int	peftio_rx_compile(regex_t *re, const char *py, int suffix,
	    const char **why);
int	peftio_rx_match(const regex_t *re, const char *p);

/* adapter.c */
const struct peftio_tensor_info *peftio_adapter_tinfo(
	    const struct peftio_adapter *a, long idx);

/* lowrank.c */
void	peftio_round_through(enum peftio_dtype dt, float *w, uint64_t n);
int	peftio_adapter_load_f32(struct peftio_adapter *a, long idx,
	    float **out, struct peftio_error *err);
int	peftio_merge_lora_delta(struct peftio_merge *m,
	    struct peftio_adapter *a, const struct lmod *md,
	    const struct target *t, float *d, struct peftio_error *err);

int	peftio_merge_fold_block(struct peftio_merge *m,
	    const struct target *t, int trans, const float *a, const float *b,
	    uint64_t r, float s, float wt, enum peftio_dtype adt,
	    const float *mag, float *w, uint64_t row0, uint64_t nrows,
	    struct peftio_error *err);

/* combine.c */
int	peftio_combine_factors(struct peftio_merge *m,
	    const struct target *t, struct prep *pr, struct peftio_error *err);

#endif
