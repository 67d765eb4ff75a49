/*
 * tuners_private.h - what the files of PEFT's other tuners share inside
 * the library: the type table, an opened tuner adapter and a prepared
 * module merge.  Not installed.
 */
#ifndef PEFTIO_TUNERS_PRIVATE_H
#define PEFTIO_TUNERS_PRIVATE_H

#include "peftio_private.h"

#define PEFT_PREFIX	"base_model.model."
#define MAX_DIM		(1ull << 32)
#define MAX_SLOTS	8
#define MAX_SHARED	2

enum ttype {
	T_ADALORA, T_LOHA, T_LOKR, T_VERA, T_OFT, T_BOFT, T_HRA, T_MISS,
	T_VBLORA, T_RANDLORA, T_SHIRA, T_C3A, T_DELORA, T_NTYPES
};

struct tdesc {
	const char	*type;		/* peft_type */
	const char	*marker;	/* part of every tensor name */
	const char	*slot[MAX_SLOTS];	/* tensor suffixes */
	const char	*shared[MAX_SHARED];	/* model-wide tensors */
	int		 fifo;		/* PEFT transposes for Conv1D */
	int		 rotation;
};

extern const struct tdesc peftio_tuner_descs[T_NTYPES];

struct tmod {
	char		*name;		/* module path, no prefix */
	char		*target;	/* name + ".weight" */
	long		 t[MAX_SLOTS];	/* adapter tensor indices, or -1 */
	uint64_t	 r;
	double		 scale;
	uint64_t	 out, in;	/* set by the plan; in: all but the
					 * first dimension of the weight */
	uint64_t	 inch, kk;	/* a convolution's input channels and
					 * kernel size */
};

struct peftio_tuner {
	enum ttype	 type;
	const char	*path;		/* the adapter's, not owned */
	struct peftio_ckpt *ck;		/* not owned */
	int		 fifo;
	long		 shared[MAX_SHARED];
	struct tmod	*mods;
	size_t		 nmods;
	/* OFT */
	int		 coft, block_share, neumann;
	long		 nterms;
	double		 eps;
	uint64_t	 bs;		/* OFT, BOFT, C3A block size */
	/* HRA */
	int		 apply_gs;
	/* MiSS */
	int		 mini, bat;
	uint64_t	 mini_r;
	/* VB-LoRA */
	uint64_t	 topk;
	/* AdaLoRA lora_alpha, RandLoRA randlora_alpha */
	double		 alpha;
};

/* One step of a rotation, applied to each row x of the weight. */
enum skind {
	S_BLOCKS, S_GATHER, S_SCATTER, S_HOUSE, S_GS, S_ROWSCALE, S_BAT
};

struct stage {
	enum skind	 kind;
	uint64_t	 n, b;		/* S_BLOCKS: n blocks of b x b (n = 1
					 * shared by all); S_HOUSE, S_GS: n
					 * vectors */
	double		*m;		/* blocks, vectors or row scales */
	uint64_t	*perm;
	int		 reverse;	/* S_HOUSE: last vector first;
					 * S_BAT: unmerge (m holds B, then
					 * the inverses of I + B) */
};

struct peftio_tuner_prep {
	uint64_t	 rows, cols;
	int		 unmerge;
	float		*d;		/* additive: the delta, target layout */
	struct stage	*st;
	size_t		 nst;
	double		*x, *y;		/* a row, and scratch */
};

/* tuners.c */
const struct peftio_tensor_info *peftio_tuner_tinfo(
	    const struct peftio_tuner *t, long idx);
const char *peftio_tuner_tname(const struct peftio_tuner *t,
	    const struct tmod *m, int slot);
int	peftio_tuner_load_f64(const struct peftio_tuner *t, long idx,
	    double **out, struct peftio_error *err);
const struct peftio_tensor_info *peftio_tuner_slot_info(
	    const struct peftio_tuner *t, const struct tmod *m, int slot);
int	peftio_tuner_want(const struct peftio_tuner *t, const struct tmod *m,
	    int slot, int ndim, uint64_t d0, uint64_t d1, uint64_t d2,
	    struct peftio_error *err);
uint64_t peftio_tuner_oft_block(uint64_t n);

/* tuner_delta.c */
void	peftio_tuner_matmul(const double *a, const double *b, double *c,
	    uint64_t m, uint64_t k, uint64_t n);
int	peftio_tuner_delta(const struct peftio_tuner *t,
	    const struct tmod *m, double *d, struct peftio_error *err);

#endif
