/*
 * pickle_vm.h - the pickle machine's values, state and primitives,
 * shared by pickle_vm.c (memory, stack, memo, reading the stream) and
 * pickle.c (the opcodes, what torch's globals do, the result).  Not
 * installed.
 */
#ifndef PEFTIO_PICKLE_VM_H
#define PEFTIO_PICKLE_VM_H

#include <stdint.h>
#include <stddef.h>

#include "peftio_private.h"

#define KEY_MAX		256	/* bytes in a storage key */

enum kind {
	V_UNSET = 0,		/* an empty memo slot */
	V_NONE,
	V_BOOL,
	V_INT,
	V_FLOAT,
	V_STR,
	V_TUPLE,
	V_LIST,
	V_DICT,
	V_ODICT,		/* collections.OrderedDict */
	V_SET,
	V_GLOBAL,
	V_STORAGE,
	V_TENSOR
};

enum gkind {
	G_ODICT,		/* collections.OrderedDict */
	G_REBUILD_V2,		/* torch._utils._rebuild_tensor_v2 */
	G_REBUILD_V3,		/* torch._utils._rebuild_tensor_v3 */
	G_PARAMETER,		/* torch._utils._rebuild_parameter */
	G_STORAGE,		/* torch.FloatStorage, ... */
	G_DTYPE			/* torch.float32, ... */
};

struct global {
	const char	*module;
	const char	*name;
	enum gkind	 kind;
	enum peftio_dtype dtype;	/* G_STORAGE, G_DTYPE */
};

struct obj;

struct val {
	uint8_t		 kind;		/* enum kind */
	uint32_t	 len;		/* V_STR */
	union {
		int64_t		 i;	/* V_BOOL, V_INT */
		const unsigned char *s;	/* V_STR, inside the pickle */
		struct obj	*o;	/* V_TUPLE ... V_SET */
		const struct global *g;	/* V_GLOBAL */
		size_t		 rec;	/* V_STORAGE, V_TENSOR */
	} u;
};

/* A tuple, list, set or dict (whose items are key, value pairs). */
struct obj {
	struct val	*v;
	size_t		 n, cap;
	struct obj	*next;		/* every object, to free them */
};

struct srec {
	const unsigned char *key;
	uint32_t	 keylen;
	enum peftio_dtype dtype;
	uint64_t	 nbytes;
	size_t		 canon;		/* first record with this key */
	size_t		 out;		/* index in the result, or SIZE_MAX */
};

struct vm {
	const unsigned char *start, *p, *end;
	size_t		 op;		/* offset of the current opcode */
	const char	*label;
	const char	*member;
	struct peftio_error *err;
	uint64_t	 budget;
	struct val	*stack;
	size_t		 sp, scap;
	size_t		*marks;
	size_t		 nmarks, mcap;
	struct val	*memo;
	size_t		 mcount;
	struct obj	*objs;
	struct srec	*st;
	size_t		 nst, stcap;
	struct peftio_pickle_tensor *t;
	size_t		 nt, tcap;
};

/* pickle_vm.c: kind names for messages, the allowed globals, opcode
 * names. */
extern const char *const pk_kind_name[];
extern const struct global pk_globals[];
extern const char *const pk_opname[256];

void	pk_fail(struct vm *vm, int code, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* Set the error; evaluate to its code (which the compiler can see). */
#define CORRUPT(vm, ...)	\
	(pk_fail((vm), PEFTIO_EFORMAT, __VA_ARGS__), PEFTIO_EFORMAT)
#define UNSUPPORTED(vm, ...)	\
	(pk_fail((vm), PEFTIO_EUNSUPPORTED, __VA_ARGS__), PEFTIO_EUNSUPPORTED)

int	pk_add_items(struct vm *vm, size_t first, int dict);
int	pk_charge(struct vm *vm, uint64_t n);
size_t	pk_fence(const struct vm *vm);
void	*pk_grow(struct vm *vm, void *p, size_t *cap, size_t need,
	    size_t size, int *rc);
int	pk_memo_get(struct vm *vm, uint64_t idx);
int	pk_memo_put(struct vm *vm, uint64_t idx);
int	pk_need(struct vm *vm, size_t n);
int	pk_new_obj(struct vm *vm, enum kind kind, struct val *out);
int	pk_op_global(struct vm *vm);
int	pk_op_long1(struct vm *vm);
int	pk_op_string(struct vm *vm, size_t lenbytes);
int	pk_op_tuple(struct vm *vm, int n);
int	pk_pop(struct vm *vm, struct val *v);
int	pk_pop_mark(struct vm *vm, size_t *first);
int	pk_push(struct vm *vm, const struct val *v);
int	pk_push_int(struct vm *vm, enum kind kind, int64_t i);
uint32_t	pk_rd_le(struct vm *vm, int n);
const char	*pk_show_global(const struct global *g, char *buf, size_t len);
struct val	*pk_top(struct vm *vm);

#endif /* PEFTIO_PICKLE_VM_H */
