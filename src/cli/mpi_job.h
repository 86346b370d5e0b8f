/* A job of MPI ranks (or of one process): who trains which ensemble members, agreeing on
 * failure, and bringing every member's parameters to rank 0. */
#ifndef DIGITS_CLI_MPI_JOB_H
#define DIGITS_CLI_MPI_JOB_H

#include <stddef.h>

#include "digits/status.h"

struct dg_mpi_job {
    int rank, size;             /* in the whole job (0 of 1 without MPI) */
    int local_rank, local_size; /* among the ranks on this machine */
};

/* Joins the MPI job when launched by mpirun/srun (MPI built in); otherwise rank 0 of 1. */
void dg_mpi_start(int *argc, char ***argv, struct dg_mpi_job *job);
void dg_mpi_stop(void);
/* Collective: every rank passes its status; DG_OK when all are DG_OK, else every rank gets
 * the lowest failing rank's status and message ("rank R failed: ..."). */
enum dg_status dg_mpi_agree(const struct dg_mpi_job *job, enum dg_status status);
/* Member `member` (trained by rank member % size) into `params` on rank 0; a no-op elsewhere.
 * Every rank calls it for every member, in the same order. */
enum dg_status dg_mpi_collect(const struct dg_mpi_job *job, int member, float *params,
                              size_t count);
/* Member `member`'s text (*text, malloc'd, NUL-terminated; NULL allowed on rank 0 before) to
 * rank 0, replacing rank 0's *text; a no-op elsewhere. Collective like dg_mpi_collect. */
enum dg_status dg_mpi_collect_text(const struct dg_mpi_job *job, int member, char **text);
/* 1 when this build has MPI. */
int dg_mpi_built(void);

#endif
