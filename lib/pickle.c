/*
 * pickle.c - the state dict of a torch.save archive, read from its
 * data.pkl by a small machine that knows only the part of pickle such a
 * dict uses (formats.md section 3.3), and builds tensor descriptions.
 *
 * Nothing is imported, called or executed.  GLOBAL names are looked up
 * in a fixed table: collections.OrderedDict, torch's tensor rebuild
 * functions, the storage classes and the dtypes.  REDUCE applies only
 * those rebuild functions, and OrderedDict() without arguments, to
 * arguments of the expected types.  BUILD is accepted only where
 * nn.Module.state_dict() uses it, to set the _metadata of the
 * OrderedDict, which is ignored.  Every other global, call, BUILD or
 * opcode ends the run with "unsupported pickle content: ...".
 *
 * Python's data model is kept only as far as a state dict needs: ints
 * (64-bit), strings, None, booleans and floats (whose value is never
 * used) are held in the value itself; tuples, lists, dicts and sets
 * are objects shared by reference, as the memo shares them; storages
 * and tensors are records the values point to.  Nothing recurses, so
 * cyclic or deeply nested input cannot exhaust the C stack, and every
 * allocation is charged to a budget proportional to the size of the
 * pickle.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"
#include "pickle_vm.h"

/* Memory the machine may use: BUDGET_PER_BYTE per pickle byte, plus
 * BUDGET_BASE.  A state dict needs about 5 bytes per pickle byte. */
#define BUDGET_PER_BYTE	32
#define BUDGET_BASE	(1u << 20)

/* ------------------------------------------------------------------ */
/* What the allowed globals do                                         */

/* BINPERSID: ('storage', storage class, key, location, numel). */
static int
op_persid(struct vm *vm)
{
	char kb[PEFTIO_SHOWBUF];
	const struct global *g;
	struct val pid, *a;
	struct srec *s;
	uint64_t nbytes;
	int rc;

	if ((rc = pk_pop(vm, &pid)) != 0)
		return rc;
	if (pid.kind != V_TUPLE || pid.u.o->n != 5)
		return UNSUPPORTED(vm, "persistent id that is %s, not a "
		    "5-tuple", pk_kind_name[pid.kind]);
	a = pid.u.o->v;
	if (a[0].kind != V_STR || a[0].len != 7 ||
	    memcmp(a[0].u.s, "storage", 7) != 0)
		return UNSUPPORTED(vm, "persistent id that is not a storage");
	if (a[1].kind != V_GLOBAL || a[1].u.g->kind != G_STORAGE)
		return UNSUPPORTED(vm, "storage of %s, not a storage class",
		    pk_kind_name[a[1].kind]);
	g = a[1].u.g;
	if (a[2].kind != V_STR || a[2].len == 0 || a[2].len > KEY_MAX ||
	    memchr(a[2].u.s, '\0', a[2].len) != NULL)
		return CORRUPT(vm, "storage key is not a string of 1 to %d "
		    "bytes", KEY_MAX);
	if (a[3].kind != V_STR)
		return CORRUPT(vm, "storage location is %s, not a string",
		    pk_kind_name[a[3].kind]);
	if (a[4].kind != V_INT || a[4].u.i < 0)
		return CORRUPT(vm, "storage '%s': size is not a non-negative "
		    "integer", peftio_show((const char *)a[2].u.s, a[2].len,
		    kb));
	if (PEFTIO_MUL_OVERFLOW((uint64_t)a[4].u.i,
	    (uint64_t)peftio_dtype_bits(g->dtype) / 8, &nbytes))
		return CORRUPT(vm, "storage '%s': %" PRId64 " elements of %s "
		    "overflow 64 bits", peftio_show((const char *)a[2].u.s,
		    a[2].len, kb), a[4].u.i, g->name);
	vm->st = pk_grow(vm, vm->st, &vm->stcap, vm->nst + 1, sizeof(*vm->st),
	    &rc);
	if (rc != 0)
		return rc;
	s = &vm->st[vm->nst];
	s->key = a[2].u.s;
	s->keylen = a[2].len;
	s->dtype = g->dtype;
	s->nbytes = nbytes;
	memset(&pid, 0, sizeof(pid));
	pid.kind = V_STORAGE;
	pid.u.rec = vm->nst++;
	return pk_push(vm, &pid);
}

static int
is_dict(const struct val *v)
{
	return v->kind == V_DICT || v->kind == V_ODICT;
}

/* A tuple of at most PEFTIO_MAX_DIMS ints (their signs are checked
 * later, where the tensor's name is known). */
static int
int_tuple(const struct val *v, int64_t *out, int *n)
{
	size_t i;

	if (v->kind != V_TUPLE)
		return -1;
	if (v->u.o->n > PEFTIO_MAX_DIMS)
		return -2;
	for (i = 0; i < v->u.o->n; i++) {
		if (v->u.o->v[i].kind != V_INT)
			return -1;
		out[i] = v->u.o->v[i].u.i;
	}
	*n = (int)v->u.o->n;
	return 0;
}

/*
 * _rebuild_tensor_v2(storage, storage_offset, size, stride,
 *     requires_grad, backward_hooks[, metadata])
 * _rebuild_tensor_v3(storage, storage_offset, size, stride,
 *     requires_grad, backward_hooks, dtype[, metadata])
 */
static int
rebuild(struct vm *vm, const struct global *g, const struct obj *args,
    struct val *out)
{
	char gb[128];
	struct peftio_pickle_tensor *t;
	const struct val *a = args->v, *meta = NULL;
	size_t fixed = g->kind == G_REBUILD_V3 ? 7 : 6;
	int64_t stride[PEFTIO_MAX_DIMS];
	int nstride, rc;

	pk_show_global(g, gb, sizeof(gb));
	if (args->n != fixed && args->n != fixed + 1)
		return UNSUPPORTED(vm, "%s with %zu arguments", gb, args->n);
	if (a[0].kind != V_STORAGE)
		return UNSUPPORTED(vm, "%s of %s, not a storage", gb,
		    pk_kind_name[a[0].kind]);
	if (a[1].kind != V_INT)
		return UNSUPPORTED(vm, "%s with a storage offset that is %s",
		    gb, pk_kind_name[a[1].kind]);
	if (a[4].kind != V_BOOL)
		return UNSUPPORTED(vm, "%s with requires_grad that is %s", gb,
		    pk_kind_name[a[4].kind]);
	if (!is_dict(&a[5]))
		return UNSUPPORTED(vm, "%s with backward hooks that are %s", gb,
		    pk_kind_name[a[5].kind]);
	if (g->kind == G_REBUILD_V3 && (a[6].kind != V_GLOBAL ||
	    a[6].u.g->kind != G_DTYPE))
		return UNSUPPORTED(vm, "%s with a dtype that is %s", gb,
		    pk_kind_name[a[6].kind]);
	/* Metadata would carry conjugate or negative bits: none here. */
	if (args->n > fixed)
		meta = &a[fixed];
	if (meta != NULL && meta->kind != V_NONE &&
	    !(is_dict(meta) && meta->u.o->n == 0))
		return UNSUPPORTED(vm, "%s with tensor metadata", gb);

	vm->t = pk_grow(vm, vm->t, &vm->tcap, vm->nt + 1, sizeof(*vm->t), &rc);
	if (rc != 0)
		return rc;
	t = &vm->t[vm->nt];
	memset(t, 0, sizeof(*t));
	if ((rc = int_tuple(&a[2], t->size, &t->ndim)) != 0 ||
	    (rc = int_tuple(&a[3], stride, &nstride)) != 0) {
		if (rc == -2)
			return UNSUPPORTED(vm, "tensor of more than %d "
			    "dimensions", PEFTIO_MAX_DIMS);
		return UNSUPPORTED(vm, "%s with a size or stride that is not "
		    "a tuple of ints", gb);
	}
	if (nstride != t->ndim)
		return CORRUPT(vm, "tensor with %d sizes and %d strides",
		    t->ndim, nstride);
	memcpy(t->stride, stride, sizeof(stride));
	t->storage = a[0].u.rec;
	t->offset = a[1].u.i;
	t->dtype = g->kind == G_REBUILD_V3 ? a[6].u.g->dtype :
	    vm->st[a[0].u.rec].dtype;
	memset(out, 0, sizeof(*out));
	out->kind = V_TENSOR;
	out->u.rec = vm->nt++;
	return 0;
}

static int
op_reduce(struct vm *vm)
{
	char gb[128];
	struct val args, fn, res;
	const struct obj *a;
	int rc;

	if ((rc = pk_pop(vm, &args)) != 0 || (rc = pk_pop(vm, &fn)) != 0)
		return rc;
	if (fn.kind != V_GLOBAL)
		return UNSUPPORTED(vm, "REDUCE on %s", pk_kind_name[fn.kind]);
	if (args.kind != V_TUPLE)
		return UNSUPPORTED(vm, "REDUCE with arguments that are %s",
		    pk_kind_name[args.kind]);
	a = args.u.o;
	switch (fn.u.g->kind) {
	case G_ODICT:
		if (a->n != 0)
			return UNSUPPORTED(vm, "collections.OrderedDict called "
			    "with arguments");
		rc = pk_new_obj(vm, V_ODICT, &res);
		break;
	case G_REBUILD_V2:
	case G_REBUILD_V3:
		rc = rebuild(vm, fn.u.g, a, &res);
		break;
	case G_PARAMETER:
		/* (data, requires_grad, backward_hooks): the data. */
		if (a->n != 3 || a->v[0].kind != V_TENSOR ||
		    a->v[1].kind != V_BOOL || !is_dict(&a->v[2]))
			return UNSUPPORTED(vm, "torch._utils._rebuild_parameter"
			    " with other arguments than a tensor, a bool and "
			    "hooks");
		res = a->v[0];
		rc = 0;
		break;
	default:
		return UNSUPPORTED(vm, "call of %s",
		    pk_show_global(fn.u.g, gb, sizeof(gb)));
	}
	return rc != 0 ? rc : pk_push(vm, &res);
}

/* NEWOBJ: cls.__new__(cls, *args), for OrderedDict only. */
static int
op_newobj(struct vm *vm)
{
	char gb[128];
	struct val args, cls, res;
	int rc;

	if ((rc = pk_pop(vm, &args)) != 0 || (rc = pk_pop(vm, &cls)) != 0)
		return rc;
	if (cls.kind != V_GLOBAL)
		return UNSUPPORTED(vm, "NEWOBJ of %s", pk_kind_name[cls.kind]);
	if (cls.u.g->kind != G_ODICT)
		return UNSUPPORTED(vm, "NEWOBJ of %s",
		    pk_show_global(cls.u.g, gb, sizeof(gb)));
	if (args.kind != V_TUPLE || args.u.o->n != 0)
		return UNSUPPORTED(vm, "NEWOBJ of collections.OrderedDict "
		    "with arguments");
	if ((rc = pk_new_obj(vm, V_ODICT, &res)) != 0)
		return rc;
	return pk_push(vm, &res);
}

/* BUILD: only {'_metadata': ...} on an OrderedDict, ignored. */
static int
op_build(struct vm *vm)
{
	struct val state, *o;
	const struct val *k;
	int rc;

	if ((rc = pk_pop(vm, &state)) != 0)
		return rc;
	if ((o = pk_top(vm)) == NULL)
		return CORRUPT(vm, "stack underflow");
	if (o->kind != V_ODICT)
		return UNSUPPORTED(vm, "BUILD of %s", pk_kind_name[o->kind]);
	if (!is_dict(&state) || state.u.o->n != 2)
		return UNSUPPORTED(vm, "BUILD of an OrderedDict with a state "
		    "other than its _metadata");
	k = &state.u.o->v[0];
	if (k->kind != V_STR || k->len != 9 ||
	    memcmp(k->u.s, "_metadata", 9) != 0)
		return UNSUPPORTED(vm, "BUILD of an OrderedDict with a state "
		    "other than its _metadata");
	return 0;
}

/* ------------------------------------------------------------------ */
/* The machine                                                         */

static int
run(struct vm *vm, struct val *result)
{
	struct val v;
	size_t first;
	unsigned op;
	int rc = 0;

	for (;;) {
		vm->op = (size_t)(vm->p - vm->start);
		if (vm->p == vm->end)
			return CORRUPT(vm, "no STOP (truncated pickle)");
		op = *vm->p++;
		switch (op) {
		case 0x80:			/* PROTO */
			if ((rc = pk_need(vm, 1)) != 0)
				return rc;
			if (*vm->p < 2 || *vm->p > 5)
				return UNSUPPORTED(vm, "protocol %u", *vm->p);
			vm->p++;
			break;
		case 'c':			/* GLOBAL */
			rc = pk_op_global(vm);
			break;
		case 'Q':			/* BINPERSID */
			rc = op_persid(vm);
			break;
		case 'R':			/* REDUCE */
			rc = op_reduce(vm);
			break;
		case 0x81:			/* NEWOBJ */
			rc = op_newobj(vm);
			break;
		case 'b':			/* BUILD */
			rc = op_build(vm);
			break;
		case '(':			/* MARK */
			vm->marks = pk_grow(vm, vm->marks, &vm->mcap,
			    vm->nmarks + 1, sizeof(*vm->marks), &rc);
			if (rc == 0)
				vm->marks[vm->nmarks++] = vm->sp;
			break;
		case 't':			/* TUPLE */
			rc = pk_op_tuple(vm, -1);
			break;
		case ')':			/* EMPTY_TUPLE */
		case 0x85:			/* TUPLE1 */
		case 0x86:			/* TUPLE2 */
		case 0x87:			/* TUPLE3 */
			rc = pk_op_tuple(vm, op == ')' ? 0 : (int)op - 0x84);
			break;
		case ']':			/* EMPTY_LIST */
		case '}':			/* EMPTY_DICT */
		case 0x8f:			/* EMPTY_SET */
			rc = pk_new_obj(vm, op == ']' ? V_LIST : op == '}' ?
			    V_DICT : V_SET, &v);
			if (rc == 0)
				rc = pk_push(vm, &v);
			break;
		case 'a':			/* APPEND */
		case 's':			/* SETITEM */
			if (vm->sp - pk_fence(vm) < (op == 's' ? 3u : 2u))
				return CORRUPT(vm, "stack underflow");
			rc = pk_add_items(vm, vm->sp - (op == 's' ? 2 : 1),
			    op == 's');
			break;
		case 'e':			/* APPENDS */
		case 'u':			/* SETITEMS */
			if ((rc = pk_pop_mark(vm, &first)) == 0)
				rc = pk_add_items(vm, first, op == 'u');
			break;
		case 'h':			/* BINGET */
		case 'j':			/* LONG_BINGET */
			if ((rc = pk_need(vm, op == 'h' ? 1 : 4)) == 0)
				rc = pk_memo_get(vm, pk_rd_le(vm, op == 'h' ? 1 : 4));
			break;
		case 'q':			/* BINPUT */
		case 'r':			/* LONG_BINPUT */
			if ((rc = pk_need(vm, op == 'q' ? 1 : 4)) == 0)
				rc = pk_memo_put(vm, pk_rd_le(vm, op == 'q' ? 1 : 4));
			break;
		case 'K':			/* BININT1 */
		case 'M':			/* BININT2 */
			if ((rc = pk_need(vm, op == 'K' ? 1 : 2)) == 0)
				rc = pk_push_int(vm, V_INT,
				    pk_rd_le(vm, op == 'K' ? 1 : 2));
			break;
		case 'J':			/* BININT */
			if ((rc = pk_need(vm, 4)) == 0) {
				uint32_t u = pk_rd_le(vm, 4);

				rc = pk_push_int(vm, V_INT, u <= INT32_MAX ?
				    (int64_t)u : (int64_t)u - 0x100000000LL);
			}
			break;
		case 0x8a:			/* LONG1 */
			rc = pk_op_long1(vm);
			break;
		case 'G':			/* BINFLOAT: never used */
			if ((rc = pk_need(vm, 8)) == 0) {
				vm->p += 8;
				rc = pk_push_int(vm, V_FLOAT, 0);
			}
			break;
		case 'X':			/* BINUNICODE */
			rc = pk_op_string(vm, 4);
			break;
		case 'U':			/* SHORT_BINSTRING */
			rc = pk_op_string(vm, 1);
			break;
		case 'N':			/* NONE */
			rc = pk_push_int(vm, V_NONE, 0);
			break;
		case 0x88:			/* NEWTRUE */
		case 0x89:			/* NEWFALSE */
			rc = pk_push_int(vm, V_BOOL, op == 0x88);
			break;
		case '.':			/* STOP */
			if (vm->nmarks != 0 || vm->sp != 1)
				return CORRUPT(vm, "STOP with %zu values and "
				    "%zu marks on the stack", vm->sp,
				    vm->nmarks);
			if (vm->p != vm->end)
				return CORRUPT(vm, "%zu bytes after STOP",
				    (size_t)(vm->end - vm->p));
			*result = vm->stack[0];
			return 0;
		default:
			if (pk_opname[op] != NULL)
				return UNSUPPORTED(vm, "opcode %s (0x%02x)",
				    pk_opname[op], op);
			return CORRUPT(vm, "unknown opcode 0x%02x", op);
		}
		if (rc != 0)
			return rc;
	}
}

/* ------------------------------------------------------------------ */
/* The result                                                          */

static const struct vm *sort_vm;

static int
cmp_key(const void *a, const void *b)
{
	const struct srec *x = &sort_vm->st[*(const size_t *)a];
	const struct srec *y = &sort_vm->st[*(const size_t *)b];
	int d;

	d = memcmp(x->key, y->key, PEFTIO_MIN(x->keylen, y->keylen));
	if (d != 0)
		return d;
	if (x->keylen != y->keylen)
		return x->keylen < y->keylen ? -1 : 1;
	return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

static int
cmp_tname(const void *a, const void *b)
{
	return strcmp((*(const struct peftio_pickle_tensor *const *)a)->name,
	    (*(const struct peftio_pickle_tensor *const *)b)->name);
}

/*
 * One storage per key: torch loads a key once, whatever the number of
 * views, so every record of a key must say the same.
 */
static int
dedupe_storages(struct vm *vm)
{
	char kb[PEFTIO_SHOWBUF];
	struct srec *s, *c;
	size_t *ord, i;

	if ((ord = calloc(vm->nst + 1, sizeof(*ord))) == NULL)
		return peftio_error_set(vm->err, PEFTIO_ENOMEM,
		    "%s: out of memory", vm->label);
	for (i = 0; i < vm->nst; i++)
		ord[i] = i;
	sort_vm = vm;
	qsort(ord, vm->nst, sizeof(*ord), cmp_key);
	for (i = 0; i < vm->nst; i++) {
		s = &vm->st[ord[i]];
		s->out = SIZE_MAX;
		s->canon = ord[i];
		if (i == 0)
			continue;
		c = &vm->st[vm->st[ord[i - 1]].canon];
		if (c->keylen != s->keylen ||
		    memcmp(c->key, s->key, s->keylen) != 0)
			continue;
		s->canon = vm->st[ord[i - 1]].canon;
		if (c->dtype != s->dtype || c->nbytes != s->nbytes) {
			free(ord);
			return peftio_error_set(vm->err, PEFTIO_EFORMAT,
			    "%s: %s: storage '%s' is given twice, as %s of %"
			    PRIu64 " bytes and as %s of %" PRIu64 " bytes",
			    vm->label, vm->member, peftio_show((const char *)
			    s->key, s->keylen, kb), peftio_dtype_name(c->dtype),
			    c->nbytes, peftio_dtype_name(s->dtype), s->nbytes);
		}
	}
	free(ord);
	return 0;
}

/* The top-level dict as name -> tensor, in the dict's order. */
static int
collect(struct vm *vm, const struct val *root, struct peftio_state_dict *sd)
{
	char nb[PEFTIO_SHOWBUF];
	const struct peftio_pickle_tensor **byname = NULL;
	const struct val *k, *v;
	struct srec *s;
	uint64_t bytes = 0;
	size_t i, n;
	char *sp;
	int rc = 0;

	vm->op = (size_t)(vm->end - vm->start);
	if (!is_dict(root))
		return UNSUPPORTED(vm, "the archive holds %s, not a state "
		    "dict", pk_kind_name[root->kind]);
	n = root->u.o->n / 2;
	for (i = 0; i < n; i++) {
		k = &root->u.o->v[2 * i];
		v = &root->u.o->v[2 * i + 1];
		if (k->kind != V_STR)
			return UNSUPPORTED(vm, "a state dict key that is %s",
			    pk_kind_name[k->kind]);
		if (v->kind != V_TENSOR)
			return UNSUPPORTED(vm, "'%s' is %s, not a tensor "
			    "(only a flat dict of tensors is read)",
			    peftio_show((const char *)k->u.s, k->len, nb),
			    pk_kind_name[v->kind]);
		if (k->len > PEFTIO_MAX_NAME ||
		    memchr(k->u.s, '\0', k->len) != NULL ||
		    peftio_utf8_valid(k->u.s, k->len) != k->len)
			return CORRUPT(vm, "tensor name '%s' is not UTF-8 of "
			    "at most %d bytes without NUL",
			    peftio_show((const char *)k->u.s, k->len, nb),
			    PEFTIO_MAX_NAME);
		bytes += (uint64_t)k->len + 1;
		s = &vm->st[vm->st[vm->t[v->u.rec].storage].canon];
		if (s->out == SIZE_MAX) {
			s->out = sd->nstorage++;
			bytes += (uint64_t)s->keylen + 1;
		}
	}
	/* A name may be repeated through the memo: bound the copies. */
	if ((rc = pk_charge(vm, bytes + (uint64_t)n * sizeof(*sd->tensor))) != 0)
		return rc;
	sd->storage = calloc(sd->nstorage + 1, sizeof(*sd->storage));
	sd->tensor = calloc(n + 1, sizeof(*sd->tensor));
	sd->strings = malloc((size_t)bytes + 1);
	byname = calloc(n + 1, sizeof(*byname));
	if (sd->storage == NULL || sd->tensor == NULL || sd->strings == NULL ||
	    byname == NULL) {
		free(byname);
		return peftio_error_set(vm->err, PEFTIO_ENOMEM,
		    "%s: out of memory", vm->label);
	}
	sp = sd->strings;
	for (i = 0; i < n; i++) {
		k = &root->u.o->v[2 * i];
		v = &root->u.o->v[2 * i + 1];
		sd->tensor[i] = vm->t[v->u.rec];
		memcpy(sp, k->u.s, k->len);
		sp[k->len] = '\0';
		sd->tensor[i].name = sp;
		sp += k->len + 1;
		s = &vm->st[vm->st[sd->tensor[i].storage].canon];
		sd->tensor[i].storage = s->out;
		if (sd->storage[s->out].key == NULL) {
			memcpy(sp, s->key, s->keylen);
			sp[s->keylen] = '\0';
			sd->storage[s->out].key = sp;
			sd->storage[s->out].dtype = s->dtype;
			sd->storage[s->out].nbytes = s->nbytes;
			sp += s->keylen + 1;
		}
		byname[i] = &sd->tensor[i];
	}
	sd->ntensor = n;
	qsort(byname, n, sizeof(*byname), cmp_tname);
	for (i = 1; i < n; i++)
		if (strcmp(byname[i]->name, byname[i - 1]->name) == 0) {
			rc = peftio_error_set(vm->err, PEFTIO_EFORMAT,
			    "%s: tensor '%s' appears twice in the state dict",
			    vm->label, peftio_show(byname[i]->name, SIZE_MAX,
			    nb));
			break;
		}
	free(byname);
	return rc;
}

int
peftio_pickle_load(struct peftio_state_dict *sd, const unsigned char *p,
    size_t len, const char *label, const char *member,
    struct peftio_error *err)
{
	struct vm vm;
	struct val root;
	struct obj *o, *next;
	int rc;

	memset(sd, 0, sizeof(*sd));
	memset(&vm, 0, sizeof(vm));
	vm.start = vm.p = p;
	vm.end = p + len;
	vm.label = label;
	vm.member = member;
	vm.err = err;
	vm.budget = (uint64_t)len * BUDGET_PER_BYTE + BUDGET_BASE;
	if ((rc = run(&vm, &root)) == 0 && (rc = dedupe_storages(&vm)) == 0)
		rc = collect(&vm, &root, sd);
	for (o = vm.objs; o != NULL; o = next) {
		next = o->next;
		free(o->v);
		free(o);
	}
	free(vm.stack);
	free(vm.marks);
	free(vm.memo);
	free(vm.st);
	free(vm.t);
	if (rc != 0)
		peftio_state_dict_free(sd);
	return rc;
}

void
peftio_state_dict_free(struct peftio_state_dict *sd)
{
	free(sd->storage);
	free(sd->tensor);
	free(sd->strings);
	memset(sd, 0, sizeof(*sd));
}
