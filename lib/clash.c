/*
 * clash.c - an output that would destroy one of the inputs: the output
 * is an input, holds one (a directory replaced), or lies inside one,
 * compared by device and inode along each path up to the root.
 */
#include <sys/stat.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

#define CHAIN_MAX	256

struct fid {
	dev_t	dev;
	ino_t	ino;
};

/*
 * The identities of path and of every directory above it, path first
 * (*self: whether path itself exists).  A path that does not exist
 * starts at its nearest existing ancestor.  Returns the count.
 */
static size_t
chain(const char *path, struct fid *ids, int *self)
{
	char buf[PATH_MAX], real[PATH_MAX], *slash;
	struct stat sb;
	size_t n = 0;

	*self = 1;
	if (strlen(path) >= sizeof(buf))
		return 0;
	strcpy(buf, path);
	while (realpath(buf, real) == NULL) {
		*self = 0;
		if ((slash = strrchr(buf, '/')) == NULL) {
			strcpy(buf, ".");
			if (realpath(buf, real) == NULL)
				return 0;
			break;
		}
		while (slash > buf && slash[-1] == '/')
			slash--;
		if (slash == buf)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	for (;;) {
		if (stat(real, &sb) == 0 && n < CHAIN_MAX) {
			ids[n].dev = sb.st_dev;
			ids[n].ino = sb.st_ino;
			n++;
		}
		if ((slash = strrchr(real, '/')) == NULL || strcmp(real, "/") == 0)
			break;
		if (slash == real)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	return n;
}

static int
in_chain(const struct fid *id, const struct fid *ids, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (ids[i].dev == id->dev && ids[i].ino == id->ino)
			return 1;
	return 0;
}

int
peftio_output_clash(const char *out, const char *const *in, size_t nin,
    struct peftio_error *err)
{
	struct fid ochain[CHAIN_MAX], ichain[CHAIN_MAX];
	struct stat sb;
	size_t on, inn, i;
	int oself, iself;

	/* Standard output, or a device or FIFO written in place. */
	if (strcmp(out, "-") == 0 || (stat(out, &sb) == 0 &&
	    !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)))
		return 0;
	on = chain(out, ochain, &oself);
	for (i = 0; i < nin; i++) {
		if (in[i] == NULL || strcmp(in[i], "-") == 0)
			continue;
		inn = chain(in[i], ichain, &iself);
		if (!iself || inn == 0)
			continue;
		if (oself && ochain[0].dev == ichain[0].dev &&
		    ochain[0].ino == ichain[0].ino)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: the output would overwrite the input %s",
			    out, in[i]);
		if (oself && in_chain(&ochain[0], ichain, inn))
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: the output would replace a directory "
			    "that holds the input %s", out, in[i]);
		if (in_chain(&ichain[0], ochain, on))
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: the output would lie inside the input %s",
			    out, in[i]);
	}
	return 0;
}
