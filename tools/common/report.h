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

#endif
