/*
 * report_private.h - what dq-inspect says about one checkpoint, shared
 * by the JSON document (report.c) and the text (report_text.c).
 */
#ifndef PEFTIO_REPORT_PRIVATE_H
#define PEFTIO_REPORT_PRIVATE_H

#include <jansson.h>

#include "peftio_private.h"

struct peftio_report {
	const char	*path;
	struct peftio_inspect in;
	json_t		*adapter;	/* rank and size per module */
	const char	*compare;	/* what it was compared with */
	json_t		*verify;	/* the checksums */
	int		 planned;
	struct peftio_plan_opts po;	/* as asked */
	double		 alpha;
	struct peftio_plan plan;
};

#endif
