/* Ensembles across processes through MPI (built with -DDIGITS_MPI when an MPI library is found):
 * under mpirun / srun, rank r of n trains members r, r+n, r+2n, ... and rank 0 receives every
 * member's parameters (float32, param_count each) and writes the one ensemble file. Without MPI
 * (or when not launched by an MPI launcher) this is a one-process job: rank 0 of 1. */
#include "cli/mpi_job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DIGITS_HAVE_MPI
#include <mpi.h>

static int started; /* MPI_Init was called */

/* An MPI launcher (Open MPI, MPICH/Hydra, Slurm's PMI) sets one of these. */
static int launched_by_mpi(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                       "SLURM_STEP_NUM_TASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

void dg_mpi_start(int *argc, char ***argv, struct dg_mpi_job *job)
{
    job->rank = 0;
    job->size = 1;
    job->local_size = 1;
    if (!launched_by_mpi())
        return;
    if (MPI_Init(argc, argv) != MPI_SUCCESS)
        return;
    started = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &job->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &job->size);
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, job->rank, MPI_INFO_NULL,
                            &local) == MPI_SUCCESS) {
        MPI_Comm_rank(local, &job->local_rank);
        MPI_Comm_size(local, &job->local_size);
        MPI_Comm_free(&local);
    }
}

void dg_mpi_stop(void)
{
    if (started)
        MPI_Finalize();
    started = 0;
}

enum dg_status dg_mpi_agree(const struct dg_mpi_job *job, enum dg_status status)
{
    if (job->size == 1)
        return status;
    /* the lowest failing rank and its message reach every rank */
    int mine = status == DG_OK ? job->size : job->rank, first;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == job->size)
        return DG_OK;
    char reason[1024];
    int code = (int)status;
    snprintf(reason, sizeof reason, "%s", dg_error_message());
    MPI_Bcast(reason, (int)sizeof reason, MPI_CHAR, first, MPI_COMM_WORLD);
    MPI_Bcast(&code, 1, MPI_INT, first, MPI_COMM_WORLD);
    if (first == job->rank)
        return status;
    return dg_error(code == DG_OK ? DG_ERR_RUNTIME : (enum dg_status)code, "rank %d failed: %s",
                    first, reason);
}

enum dg_status dg_mpi_collect(const struct dg_mpi_job *job, int member, float *params,
                              size_t count)
{
    int owner = member % job->size;
    if (job->size == 1 || owner == 0)
        return DG_OK;
    int ok = 1;
    if (job->rank == owner)
        ok = MPI_Send(params, (int)count, MPI_FLOAT, 0, member, MPI_COMM_WORLD) == MPI_SUCCESS;
    else if (job->rank == 0)
        ok = MPI_Recv(params, (int)count, MPI_FLOAT, owner, member, MPI_COMM_WORLD,
                      MPI_STATUS_IGNORE) == MPI_SUCCESS;
    return ok ? DG_OK
              : dg_error(DG_ERR_RUNTIME, "MPI: member %d from rank %d did not arrive", member + 1,
                         owner);
}

enum dg_status dg_mpi_collect_text(const struct dg_mpi_job *job, int member, char **text)
{
    int owner = member % job->size;
    if (job->size == 1 || owner == 0)
        return DG_OK;
    int ok = 1;
    if (job->rank == owner) {
        unsigned long long length = *text ? strlen(*text) : 0;
        ok = MPI_Send(&length, 1, MPI_UNSIGNED_LONG_LONG, 0, member, MPI_COMM_WORLD) ==
                 MPI_SUCCESS &&
             (length == 0 || MPI_Send(*text, (int)length, MPI_CHAR, 0, member,
                                      MPI_COMM_WORLD) == MPI_SUCCESS);
    } else if (job->rank == 0) {
        unsigned long long length = 0;
        ok = MPI_Recv(&length, 1, MPI_UNSIGNED_LONG_LONG, owner, member, MPI_COMM_WORLD,
                      MPI_STATUS_IGNORE) == MPI_SUCCESS;
        char *received = ok && length < (1ull << 30) ? malloc((size_t)length + 1) : NULL;
        if (ok && !received)
            return dg_error(DG_ERR_NOMEM, "MPI: no memory for member %d's history", member + 1);
        if (ok && length)
            ok = MPI_Recv(received, (int)length, MPI_CHAR, owner, member, MPI_COMM_WORLD,
                          MPI_STATUS_IGNORE) == MPI_SUCCESS;
        if (received) {
            received[length] = '\0';
            free(*text);
            *text = received;
        }
    }
    return ok ? DG_OK
              : dg_error(DG_ERR_RUNTIME, "MPI: member %d's history from rank %d did not arrive",
                         member + 1, owner);
}

int dg_mpi_built(void)
{
    return 1;
}

#else

void dg_mpi_start(int *argc, char ***argv, struct dg_mpi_job *job)
{
    (void)argc, (void)argv;
    job->rank = 0;
    job->size = 1;
    job->local_rank = 0;
    job->local_size = 1;
}

void dg_mpi_stop(void)
{
}

enum dg_status dg_mpi_agree(const struct dg_mpi_job *job, enum dg_status status)
{
    (void)job;
    return status;
}

enum dg_status dg_mpi_collect(const struct dg_mpi_job *job, int member, float *params,
                              size_t count)
{
    (void)job, (void)member, (void)params, (void)count;
    return DG_OK;
}

enum dg_status dg_mpi_collect_text(const struct dg_mpi_job *job, int member, char **text)
{
    (void)job, (void)member, (void)text;
    return DG_OK;
}

int dg_mpi_built(void)
{
    return 0;
}

#endif
