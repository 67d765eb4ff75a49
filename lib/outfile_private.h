/*
 * outfile_private.h - helpers of the atomic outputs shared by
 * outfile.c (files) and outdir.c (directories).  Not installed.
 */
#ifndef PEFTIO_OUTFILE_PRIVATE_H
#define PEFTIO_OUTFILE_PRIVATE_H

#include <sys/types.h>

#include <signal.h>

/* base (0666 or 0777) less the process umask. */
mode_t	peftio_out_file_mode(mode_t base);
/* A mkstemp() pattern beside path, "DIR/.BASE.KIND.XXXXXX", malloc'ed;
 * NULL when out of memory. */
char	*peftio_out_temp_name(const char *path, const char *kind);
/* Block every signal around a create-and-register step; restore. */
void	peftio_out_block_signals(sigset_t *old);
void	peftio_out_restore_signals(const sigset_t *old);
/* fsync of a directory, and of the one holding path. */
int	peftio_out_fsync_dir(const char *dir);
int	peftio_out_fsync_parent(const char *path);
/* rename() that never replaces an existing to. */
int	peftio_out_rename_noreplace(const char *from, const char *to,
	    int is_dir);
/* Forget the committed children of the temporary directory dir. */
void	peftio_out_drop_children(const char *dir);
/* Remove path and everything under it. */
int	peftio_out_rmtree(const char *path);

#endif /* PEFTIO_OUTFILE_PRIVATE_H */
