/*
 * report.h - the --json report of the peftio tools (report.c).  Not part
 * of the library.
 */
#ifndef PEFTIO_REPORT_H
#define PEFTIO_REPORT_H

#include <stdint.h>

#include <jansson.h>

#include "peftio.h"

json_t	*cli_jint(uint64_t v);
json_t	*cli_jshape(int ndim, const uint64_t *shape);

/*
 * What a transform of in wrote at out (read back from out's headers):
 * { "input", "output", "tensors": [ per input tensor: "name", "action"
 * (action(ctx, i)), "dtype_in", "shape_in", "bytes_in", "dtype_out",
 * "shape_out" (of the output tensor of the same name, or null),
 * "bytes_out" (of every output tensor from it), "outputs": [ "name",
 * "dtype", "shape", "bytes", "xxh3" ] ], "added" (outputs from no
 * input, when there are any), "totals": { "tensors_in", "tensors_out",
 * "bytes_in", "bytes_out", "ratio" } }.  NULL after a message.
 */
json_t	*cli_report_transform(struct peftio_ckpt *in, const char *out,
	    const char *(*action)(void *ctx, size_t i), void *ctx);
/* The tensors of the checkpoint at path, as "outputs" above, and the
 * sum of their bytes.  NULL after a message. */
json_t	*cli_report_files(const char *path, uint64_t *bytes);
/* Print doc (then freed) on standard output, indented, and a newline;
 * 0, or CLI_EXIT_ERROR after a message (doc NULL: nothing printed). */
int	cli_json_print(json_t *doc);

/*
 * What an adapter run of adapter-extract did, module by module: a
 * peftio report function (arg: the struct) counts the modules and the
 * largest rank, keeps an entry each in modules (when not NULL: --json)
 * and with -v prints one line each (f NULL: a zero delta).
 */
struct cli_adapter_report {
	json_t		*modules;	/* with --json, else NULL */
	uint64_t	 nmodules, rank;
	uint64_t	 in_bytes;	/* the step's total, from progress */
	int		 header;	/* the -v table's header printed */
};

void	cli_adapter_module(void *arg, const char *module,
	    const struct peftio_lora_factors *f);
/* A peftio_progress_fn (arg: the struct): cli_xf_progress(), and the
 * step's total kept in in_bytes. */
void	cli_adapter_progress(void *arg, uint64_t done, uint64_t total,
	    const char *what);
/*
 * The line that ends the run, and with json the report on standard
 * output: the mode, the inputs (tuned may be NULL), the output, the
 * residual (may be NULL), the modules, the tensors of the adapter at
 * out and the totals (in: bytes read).  With no module reported
 * (--convert), they are counted in the adapter written.  The exit
 * status.
 */
int	cli_adapter_finish(struct cli_adapter_report *r, const char *mode,
	    const char *base, const char *tuned, const char *out,
	    const char *residual, uint64_t in, int json);
/* Bytes of the tensors of the checkpoint at path (headers only; 0 when
 * it does not open). */
uint64_t cli_ckpt_bytes(const char *path);

/* The --json action of a tensor copied, converted or skipped (a 4-bit
 * weight's companion); NULL for PEFTIO_XF_CUSTOM, the tool's own. */
const char *cli_xf_action(const struct peftio_xf_item *xi);

/*
 * What nf4-quant did with the steps of its transform (report.c): with
 * -v, a line per weight as it is computed and the totals once written;
 * the --json action of input tensor i; the line that ends a run (with
 * index_only, the shards checked).  verb is "quantized" or
 * "dequantized", nq the weights of the n tensors it did that to.
 */
void	cli_quant_step_debug(const struct peftio_tensor_info *ti,
	    const struct peftio_bnb_step *s, enum peftio_q4type type, int dq);
void	cli_quant_written(struct peftio_ckpt *in, size_t nq, const char *verb,
	    int index_only, uint64_t in_bytes, uint64_t out_bytes);
const char *cli_quant_action(const struct peftio_xf_item *xi,
	    const struct peftio_bnb_step *s, enum peftio_q4type type);
void	cli_quant_summary(struct peftio_ckpt *in, size_t nq, const char *verb,
	    int index_only, const char *input, const char *out,
	    uint64_t out_bytes);

/*
 * The line that ends a lora-merge run, and with json the report on
 * standard output: the transform of the plan's base to out, or with
 * out NULL the input alone; with save_adapter, the combined adapter's
 * tensors under "adapter".  The exit status.
 */
int	cli_merge_summary(struct peftio_merge_plan *p, const char *base,
	    size_t nadapters, int method, const char *out,
	    const char *save_adapter, uint64_t out_bytes, int json);

#endif
