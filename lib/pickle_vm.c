/*
 * pickle_vm.c - the pickle machine's primitives (pickle.c runs it):
 * errors, memory charged to a budget, the stack with its marks, the
 * memo, and the opcodes' arguments read from the stream.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickle_vm.h"

/* As said in messages: "REDUCE on a tuple". */
const char *const pk_kind_name[] = {
	"nothing", "None", "a bool", "an int", "a float", "a str", "a tuple",
	"a list", "a dict", "an OrderedDict", "a set", "a global",
	"a storage", "a tensor"
};

/*
 * The allowed globals.  The storage classes are those of torch's
 * _dtype_to_storage_type_map that have a safetensors dtype (quantized
 * and complex128 storages are left out, so they are refused);
 * UntypedStorage counts bytes.  The dtypes are those that
 * _rebuild_tensor_v3 is written with, and the classic ones.
 */
const struct global pk_globals[] = {
	{ "collections", "OrderedDict", G_ODICT, PEFTIO_U8 },
	{ "torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2, PEFTIO_U8 },
	{ "torch._utils", "_rebuild_tensor_v3", G_REBUILD_V3, PEFTIO_U8 },
	{ "torch._utils", "_rebuild_parameter", G_PARAMETER, PEFTIO_U8 },
	{ "torch", "DoubleStorage", G_STORAGE, PEFTIO_F64 },
	{ "torch", "FloatStorage", G_STORAGE, PEFTIO_F32 },
	{ "torch", "HalfStorage", G_STORAGE, PEFTIO_F16 },
	{ "torch", "BFloat16Storage", G_STORAGE, PEFTIO_BF16 },
	{ "torch", "LongStorage", G_STORAGE, PEFTIO_I64 },
	{ "torch", "IntStorage", G_STORAGE, PEFTIO_I32 },
	{ "torch", "ShortStorage", G_STORAGE, PEFTIO_I16 },
	{ "torch", "CharStorage", G_STORAGE, PEFTIO_I8 },
	{ "torch", "ByteStorage", G_STORAGE, PEFTIO_U8 },
	{ "torch", "BoolStorage", G_STORAGE, PEFTIO_BOOL },
	{ "torch", "ComplexFloatStorage", G_STORAGE, PEFTIO_C64 },
	{ "torch", "UntypedStorage", G_STORAGE, PEFTIO_U8 },
	{ "torch", "float64", G_DTYPE, PEFTIO_F64 },
	{ "torch", "float32", G_DTYPE, PEFTIO_F32 },
	{ "torch", "float16", G_DTYPE, PEFTIO_F16 },
	{ "torch", "bfloat16", G_DTYPE, PEFTIO_BF16 },
	{ "torch", "int64", G_DTYPE, PEFTIO_I64 },
	{ "torch", "int32", G_DTYPE, PEFTIO_I32 },
	{ "torch", "int16", G_DTYPE, PEFTIO_I16 },
	{ "torch", "int8", G_DTYPE, PEFTIO_I8 },
	{ "torch", "uint64", G_DTYPE, PEFTIO_U64 },
	{ "torch", "uint32", G_DTYPE, PEFTIO_U32 },
	{ "torch", "uint16", G_DTYPE, PEFTIO_U16 },
	{ "torch", "uint8", G_DTYPE, PEFTIO_U8 },
	{ "torch", "bool", G_DTYPE, PEFTIO_BOOL },
	{ "torch", "complex64", G_DTYPE, PEFTIO_C64 },
	{ "torch", "float8_e5m2", G_DTYPE, PEFTIO_F8_E5M2 },
	{ "torch", "float8_e4m3fn", G_DTYPE, PEFTIO_F8_E4M3 },
	{ "torch", "float8_e8m0fnu", G_DTYPE, PEFTIO_F8_E8M0 },
	{ "torch", "float8_e4m3fnuz", G_DTYPE, PEFTIO_F8_E4M3FNUZ },
	{ "torch", "float8_e5m2fnuz", G_DTYPE, PEFTIO_F8_E5M2FNUZ }
};

/* Opcode names, for messages (protocols 0 to 5). */
const char *const pk_opname[256] = {
	['('] = "MARK", ['.'] = "STOP", ['0'] = "POP", ['1'] = "POP_MARK",
	['2'] = "DUP", ['F'] = "FLOAT", ['I'] = "INT", ['J'] = "BININT",
	['K'] = "BININT1", ['L'] = "LONG", ['M'] = "BININT2",
	['N'] = "NONE", ['P'] = "PERSID", ['Q'] = "BINPERSID",
	['R'] = "REDUCE", ['S'] = "STRING", ['T'] = "BINSTRING",
	['U'] = "SHORT_BINSTRING", ['V'] = "UNICODE", ['X'] = "BINUNICODE",
	['a'] = "APPEND", ['b'] = "BUILD", ['c'] = "GLOBAL", ['d'] = "DICT",
	['}'] = "EMPTY_DICT", ['e'] = "APPENDS", ['g'] = "GET",
	['h'] = "BINGET", ['i'] = "INST", ['j'] = "LONG_BINGET",
	['l'] = "LIST", [']'] = "EMPTY_LIST", ['o'] = "OBJ", ['p'] = "PUT",
	['q'] = "BINPUT", ['r'] = "LONG_BINPUT", ['s'] = "SETITEM",
	['t'] = "TUPLE", [')'] = "EMPTY_TUPLE", ['u'] = "SETITEMS",
	['G'] = "BINFLOAT", ['B'] = "BINBYTES", ['C'] = "SHORT_BINBYTES",
	[0x80] = "PROTO", [0x81] = "NEWOBJ", [0x82] = "EXT1",
	[0x83] = "EXT2", [0x84] = "EXT4", [0x85] = "TUPLE1",
	[0x86] = "TUPLE2", [0x87] = "TUPLE3", [0x88] = "NEWTRUE",
	[0x89] = "NEWFALSE", [0x8a] = "LONG1", [0x8b] = "LONG4",
	[0x8c] = "SHORT_BINUNICODE", [0x8d] = "BINUNICODE8",
	[0x8e] = "BINBYTES8", [0x8f] = "EMPTY_SET", [0x90] = "ADDITEMS",
	[0x91] = "FROZENSET", [0x92] = "NEWOBJ_EX", [0x93] = "STACK_GLOBAL",
	[0x94] = "MEMOIZE", [0x95] = "FRAME", [0x96] = "BYTEARRAY8",
	[0x97] = "NEXT_BUFFER", [0x98] = "READONLY_BUFFER"
};

/* ------------------------------------------------------------------ */
/* Errors                                                              */

void
pk_fail(struct vm *vm, int code, const char *fmt, ...)
{
	char what[PEFTIO_ERRMSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (code == PEFTIO_EUNSUPPORTED)
		peftio_error_set(vm->err, code, "%s: unsupported pickle "
		    "content: %s (%s, byte %zu)", vm->label, what, vm->member,
		    vm->op);
	else
		peftio_error_set(vm->err, code, "%s: %s, byte %zu: %s",
		    vm->label, vm->member, vm->op, what);
}


const char *
pk_show_global(const struct global *g, char *buf, size_t len)
{
	snprintf(buf, len, "%s.%s", g->module, g->name);
	return buf;
}

/* ------------------------------------------------------------------ */
/* Memory                                                              */

/*
 * p with room for need elements of size bytes (capacity *cap), within
 * the budget.  On failure *rc is set and p is returned unchanged.
 */
void *
pk_grow(struct vm *vm, void *p, size_t *cap, size_t need, size_t size, int *rc)
{
	size_t ncap;
	void *np;

	*rc = 0;
	if (need <= *cap)
		return p;
	ncap = *cap < 8 ? 8 : *cap;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / size)
			goto toomuch;
		ncap *= 2;
	}
	if ((uint64_t)(ncap - *cap) * size > vm->budget)
		goto toomuch;
	if ((np = realloc(p, ncap * size)) == NULL) {
		*rc = peftio_error_set(vm->err, PEFTIO_ENOMEM,
		    "%s: %s: out of memory", vm->label, vm->member);
		return p;
	}
	vm->budget -= (uint64_t)(ncap - *cap) * size;
	*cap = ncap;
	return np;
toomuch:
	*rc = CORRUPT(vm, "needs more memory than a pickle of %zu bytes "
	    "can describe", (size_t)(vm->end - vm->start));
	return p;
}

/* Charge n bytes allocated outside pk_grow() to the budget. */
int
pk_charge(struct vm *vm, uint64_t n)
{
	if (n > vm->budget)
		return CORRUPT(vm, "needs more memory than a pickle of %zu "
		    "bytes can describe", (size_t)(vm->end - vm->start));
	vm->budget -= n;
	return 0;
}

int
pk_new_obj(struct vm *vm, enum kind kind, struct val *out)
{
	struct obj *o;
	int rc;

	if ((rc = pk_charge(vm, sizeof(*o))) != 0)
		return rc;
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return peftio_error_set(vm->err, PEFTIO_ENOMEM,
		    "%s: %s: out of memory", vm->label, vm->member);
	o->next = vm->objs;
	vm->objs = o;
	memset(out, 0, sizeof(*out));
	out->kind = (uint8_t)kind;
	out->u.o = o;
	return 0;
}

/* Move the values stack[first..sp) to the end of o's items. */
static int
obj_take(struct vm *vm, struct obj *o, size_t first)
{
	size_t n = vm->sp - first;
	int rc;

	/* Nothing to move (an empty tuple): no arithmetic on NULL. */
	if (n == 0)
		return 0;
	o->v = pk_grow(vm, o->v, &o->cap, o->n + n, sizeof(*o->v), &rc);
	if (rc != 0)
		return rc;
	memcpy(o->v + o->n, vm->stack + first, n * sizeof(*o->v));
	o->n += n;
	vm->sp = first;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Stack, marks and memo                                               */

int
pk_push(struct vm *vm, const struct val *v)
{
	int rc;

	vm->stack = pk_grow(vm, vm->stack, &vm->scap, vm->sp + 1, sizeof(*v),
	    &rc);
	if (rc != 0)
		return rc;
	vm->stack[vm->sp++] = *v;
	return 0;
}

int
pk_push_int(struct vm *vm, enum kind kind, int64_t i)
{
	struct val v;

	memset(&v, 0, sizeof(v));
	v.kind = (uint8_t)kind;
	v.u.i = i;
	return pk_push(vm, &v);
}

/* The stack above the last MARK may not be popped into. */
size_t
pk_fence(const struct vm *vm)
{
	return vm->nmarks > 0 ? vm->marks[vm->nmarks - 1] : 0;
}

int
pk_pop(struct vm *vm, struct val *v)
{
	if (vm->sp <= pk_fence(vm))
		return CORRUPT(vm, "stack underflow");
	*v = vm->stack[--vm->sp];
	return 0;
}

struct val *
pk_top(struct vm *vm)
{
	return vm->sp > pk_fence(vm) ? &vm->stack[vm->sp - 1] : NULL;
}

/* Remove the last MARK: its items are stack[*first .. sp). */
int
pk_pop_mark(struct vm *vm, size_t *first)
{
	if (vm->nmarks == 0)
		return CORRUPT(vm, "no MARK for this opcode");
	*first = vm->marks[--vm->nmarks];
	return 0;
}

int
pk_memo_put(struct vm *vm, uint64_t idx)
{
	size_t old = vm->mcount;
	struct val *t = pk_top(vm);
	int rc;

	if (t == NULL)
		return CORRUPT(vm, "stack underflow");
	/* A pickler numbers its memo from 0; an index beyond the size
	 * of the pickle is not one a pickler wrote. */
	if (idx >= (uint64_t)(vm->end - vm->start))
		return CORRUPT(vm, "memo index %" PRIu64 " is too large",
		    idx);
	vm->memo = pk_grow(vm, vm->memo, &vm->mcount, (size_t)idx + 1,
	    sizeof(*vm->memo), &rc);
	if (rc != 0)
		return rc;
	memset(vm->memo + old, 0, (vm->mcount - old) * sizeof(*vm->memo));
	vm->memo[idx] = *t;
	return 0;
}

int
pk_memo_get(struct vm *vm, uint64_t idx)
{
	if (idx >= vm->mcount || vm->memo[idx].kind == V_UNSET)
		return CORRUPT(vm, "memo entry %" PRIu64 " is not set", idx);
	return pk_push(vm, &vm->memo[idx]);
}

/* ------------------------------------------------------------------ */
/* Reading the stream                                                  */

int
pk_need(struct vm *vm, size_t n)
{
	if ((size_t)(vm->end - vm->p) < n)
		return CORRUPT(vm, "%s ends early (truncated pickle)",
		    pk_opname[vm->start[vm->op]]);
	return 0;
}

uint32_t
pk_rd_le(struct vm *vm, int n)
{
	uint32_t v = 0;
	int i;

	for (i = n - 1; i >= 0; i--)
		v = v << 8 | vm->p[i];
	vm->p += n;
	return v;
}

/* One "text\n" argument of GLOBAL. */
static int
rd_line(struct vm *vm, const unsigned char **s, size_t *len)
{
	const unsigned char *nl;

	nl = memchr(vm->p, '\n', (size_t)(vm->end - vm->p));
	if (nl == NULL)
		return CORRUPT(vm, "GLOBAL ends early (truncated pickle)");
	*s = vm->p;
	*len = (size_t)(nl - vm->p);
	vm->p = nl + 1;
	return 0;
}

int
pk_op_global(struct vm *vm)
{
	char mb[PEFTIO_SHOWBUF], nb[PEFTIO_SHOWBUF];
	const unsigned char *mod, *name;
	size_t mlen, nlen, i;
	struct val v;
	int rc;

	if ((rc = rd_line(vm, &mod, &mlen)) != 0 ||
	    (rc = rd_line(vm, &name, &nlen)) != 0)
		return rc;
	for (i = 0; i < sizeof(pk_globals) / sizeof(pk_globals[0]); i++)
		if (strlen(pk_globals[i].module) == mlen &&
		    memcmp(pk_globals[i].module, mod, mlen) == 0 &&
		    strlen(pk_globals[i].name) == nlen &&
		    memcmp(pk_globals[i].name, name, nlen) == 0)
			break;
	if (i == sizeof(pk_globals) / sizeof(pk_globals[0]))
		return UNSUPPORTED(vm, "global %s.%s",
		    peftio_show((const char *)mod, mlen, mb),
		    peftio_show((const char *)name, nlen, nb));
	memset(&v, 0, sizeof(v));
	v.kind = V_GLOBAL;
	v.u.g = &pk_globals[i];
	return pk_push(vm, &v);
}

/* LONG1: a little-endian two's complement integer of n <= 8 bytes. */
int
pk_op_long1(struct vm *vm)
{
	uint64_t u = 0;
	unsigned n, i;
	int rc;

	if ((rc = pk_need(vm, 1)) != 0)
		return rc;
	n = *vm->p++;
	if ((rc = pk_need(vm, n)) != 0)
		return rc;
	if (n > 8)
		return UNSUPPORTED(vm, "integer of %u bytes", n);
	for (i = n; i > 0; i--)
		u = u << 8 | vm->p[i - 1];
	if (n > 0 && n < 8 && (vm->p[n - 1] & 0x80))
		u |= UINT64_MAX << (8 * n);
	vm->p += n;
	/* Two's complement back to a signed value, without overflow. */
	return pk_push_int(vm, V_INT, u <= INT64_MAX ? (int64_t)u :
	    -(int64_t)(UINT64_MAX - u) - 1);
}

int
pk_op_string(struct vm *vm, size_t lenbytes)
{
	struct val v;
	uint32_t len;
	int rc;

	if ((rc = pk_need(vm, lenbytes)) != 0)
		return rc;
	len = pk_rd_le(vm, (int)lenbytes);
	if ((rc = pk_need(vm, len)) != 0)
		return rc;
	memset(&v, 0, sizeof(v));
	v.kind = V_STR;
	v.len = len;
	v.u.s = vm->p;
	vm->p += len;
	return pk_push(vm, &v);
}

/* TUPLE, TUPLE1-3: the last n values (or those above the MARK). */
int
pk_op_tuple(struct vm *vm, int n)
{
	struct val v;
	size_t first;
	int rc;

	if (n < 0) {
		if ((rc = pk_pop_mark(vm, &first)) != 0)
			return rc;
	} else {
		if (vm->sp - pk_fence(vm) < (size_t)n)
			return CORRUPT(vm, "stack underflow");
		first = vm->sp - (size_t)n;
	}
	if ((rc = pk_new_obj(vm, V_TUPLE, &v)) != 0 ||
	    (rc = obj_take(vm, v.u.o, first)) != 0)
		return rc;
	return pk_push(vm, &v);
}

/* APPEND(S) to a list, SETITEM(S) to a dict: the values from first. */
int
pk_add_items(struct vm *vm, size_t first, int dict)
{
	struct val *c;
	size_t n = vm->sp - first;

	/* The container is below the values, above the last MARK. */
	if (first <= pk_fence(vm))
		return CORRUPT(vm, "stack underflow");
	c = &vm->stack[first - 1];
	if (dict && c->kind != V_DICT && c->kind != V_ODICT)
		return UNSUPPORTED(vm, "SETITEM on %s", pk_kind_name[c->kind]);
	if (!dict && c->kind != V_LIST)
		return UNSUPPORTED(vm, "APPEND to %s", pk_kind_name[c->kind]);
	if (dict && n % 2 != 0)
		return CORRUPT(vm, "SETITEMS with an odd number of values");
	return obj_take(vm, c->u.o, first);
}
