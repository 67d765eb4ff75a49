/*
 * clash.c - an output that would destroy one of the inputs: the output
 * is an input, holds one (a directory replaced), or lies inside one,
 * compared by device and inode along each path up to the root; and two
 * outputs, which need not exist yet, that would overlap.
 */
#include <sys/stat.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/*
 * path made absolute, for comparing outputs that need not exist yet: its
 * directory resolved when it exists, else taken from the working
 * directory, with "." and ".." components and repeated slashes removed.
 */
static void
resolved(const char *path, char *buf, size_t len)
{
	char dir[PATH_MAX], real[PATH_MAX], tmp[2 * PATH_MAX + 2], *s, *tok;
	char *save = NULL;
	const char *base = ".";
	size_t n = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((s = strrchr(dir, '/')) != NULL) {
		*s = '\0';
		base = s + 1;
	}
	if (realpath(s == NULL ? "." : dir[0] == '\0' ? "/" : dir,
	    real) != NULL)
		snprintf(tmp, sizeof(tmp), "%s/%s", real, s == NULL ? path :
		    base);
	else if (path[0] == '/' || getcwd(real, sizeof(real)) == NULL)
		snprintf(tmp, sizeof(tmp), "%s", path);
	else
		snprintf(tmp, sizeof(tmp), "%s/%s", real, path);
	buf[0] = '\0';
	for (tok = strtok_r(tmp, "/", &save); tok != NULL;
	    tok = strtok_r(NULL, "/", &save)) {
		if (strcmp(tok, ".") == 0)
			continue;
		if (strcmp(tok, "..") == 0) {
			while (n > 0 && buf[--n] != '/')
				;
			buf[n] = '\0';
			continue;
		}
		n += (size_t)snprintf(buf + n, len - n, "/%s", tok);
		if (n >= len)
			n = len - 1;
	}
	if (n == 0)
		snprintf(buf, len, "/");
}

int
peftio_outputs_overlap(const char *a, const char *b,
    struct peftio_error *err)
{
	char ra[PATH_MAX + 8], rb[PATH_MAX + 8];
	size_t la, lb, n;

	if (a == NULL || b == NULL || strcmp(a, "-") == 0 ||
	    strcmp(b, "-") == 0)
		return 0;
	resolved(a, ra, sizeof(ra));
	resolved(b, rb, sizeof(rb));
	la = strlen(ra);
	lb = strlen(rb);
	n = la < lb ? la : lb;
	/* The same path, or one a directory above the other ("/" holds
	 * everything); a common name prefix ("ad" and "ad2") is none. */
	if (strncmp(ra, rb, n) == 0 && (la == lb || ra[n] == '/' ||
	    rb[n] == '/' || (n == 1 && ra[0] == '/')))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: would overlap the output %s", a, b);
	return 0;
}
