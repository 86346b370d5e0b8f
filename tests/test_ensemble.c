/* Ensembles and test-time augmentation through the CLI: member m of `digits train --ensemble K`
 * is bit-identical to `digits train --seed SEED+m --split-seed SEED` (with --member-splits, to
 * `--seed SEED+m` alone); predict averages the members' probabilities (an ensemble file and
 * the same models given as several -m give the same output); --tta averages each image with
 * its one-pixel shifts (checked against predictions of shifted copies written as CSV); eval
 * prints each member's accuracy next to the ensemble's; refusals. Real `digits` runs on a few
 * hundred sample rows. Probabilities are printed with 6 significant digits, hence the 2e-6
 * bound on averages recomputed from printed values. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "history_util.h"

#define ROWS 300
#define TEST_ROWS 200

static char dir[256];
static char train[1024];

static void setup(void)
{
    dg_test_dir_create(dir, sizeof dir, "ensemble");
    const char *source = getenv("DIGITS_SOURCE_DIR");
    ck_assert_ptr_nonnull(source);
    snprintf(train, sizeof train, "%s/data/sample/train.csv.gz", source);
}

static void teardown(void)
{
    dg_test_dir_remove(dir);
}

/* DIR/name; `digits ARGS` in DIR (stderr into err when not NULL), its exit code */
#define at(name) dg_test_dir_path(dir, name)
#define run(err, ...) dg_test_run_digits(dir, NULL, err, __VA_ARGS__)

/* DIR/head.csv: the first TEST_ROWS labelled rows of the sample, for the predictions and
 * evaluations that check what a command combines (not how it scales with the rows) */
static void write_head(void)
{
    char command[2048];
    snprintf(command, sizeof command, "gzip -dc '%s' | head -n %d > '%s'", train, TEST_ROWS + 1,
             at("head.csv"));
    ck_assert_int_eq(system(command), 0);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Member `member` of a model (version 1) or ensemble (version 2) file: its parameter bytes. */
static unsigned char *member_params(const char *name, int member, size_t *size)
{
    FILE *fp = fopen(at(name), "rb");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)n);
    ck_assert_uint_eq(fread(data, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    uint32_t version = le32(data + 8), layers = le32(data + 12);
    size_t off = 16 + 20 * (size_t)layers;
    size_t params = le32(data + off);
    uint32_t members = version == 2 ? le32(data + off + 8) : 1;
    size_t counts = version == 2 ? 16 : 12;
    size_t settings = le32(data + off + counts - 4);
    ck_assert_int_lt(member, (int)members);
    *size = params * 4;
    unsigned char *out = malloc(*size);
    memcpy(out, data + off + counts + settings + (size_t)member * *size, *size);
    free(data);
    return out;
}

static void expect_same_params(const char *a, int ma, const char *b, int mb)
{
    size_t na, nb;
    unsigned char *pa = member_params(a, ma, &na), *pb = member_params(b, mb, &nb);
    ck_assert_uint_eq(na, 887530 * 4);
    ck_assert_msg(na == nb && memcmp(pa, pb, na) == 0, "%s member %d != %s member %d", a, ma, b,
                  mb);
    printf("ok   %s member %d is bit-identical to %s member %d\n", a, ma + 1, b, mb + 1);
    free(pa);
    free(pb);
}

/* (TEST_ROWS, 10) probabilities from a --probs file. */
static double *read_probs(const char *name)
{
    FILE *fp = fopen(at(name), "r");
    ck_assert_ptr_nonnull(fp);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, fp));
    double *p = malloc(TEST_ROWS * 10 * sizeof *p);
    for (int r = 0; r < TEST_ROWS; r++) {
        int id;
        double *q = p + r * 10;
        ck_assert_ptr_nonnull(fgets(line, sizeof line, fp));
        ck_assert_int_eq(sscanf(line, "%d,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &id, &q[0],
                                &q[1], &q[2], &q[3], &q[4], &q[5], &q[6], &q[7], &q[8], &q[9]),
                         11);
        ck_assert_int_eq(id, r + 1);
    }
    fclose(fp);
    return p;
}

/* The first TEST_ROWS images of the sample (unlabelled layout), shifted by (dr, dc) pixels with
 * the border repeated, as CSV. */
static void write_shifted(const char *name, const unsigned char *images, int dr, int dc)
{
    FILE *fp = fopen(at(name), "w");
    ck_assert_ptr_nonnull(fp);
    for (int k = 0; k < 784; k++)
        fprintf(fp, k ? ",pixel%d" : "pixel%d", k);
    fputc('\n', fp);
    for (int n = 0; n < TEST_ROWS; n++) {
        for (int r = 0; r < 28; r++)
            for (int c = 0; c < 28; c++) {
                int sr = r - dr, sc = c - dc;
                sr = sr < 0 ? 0 : (sr > 27 ? 27 : sr);
                sc = sc < 0 ? 0 : (sc > 27 ? 27 : sc);
                fprintf(fp, r || c ? ",%d" : "%d", images[n * 784 + sr * 28 + sc]);
            }
        fputc('\n', fp);
    }
    ck_assert_int_eq(fclose(fp), 0);
}

START_TEST(members_are_single_runs)
{
    char err[512];
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs 1 --threads 2 --ensemble 3 "
                              "--device cpu -o e.dgt -q",
                         train, ROWS),
                     0);
    for (int m = 0; m < 3; m++) {
        char name[32];
        snprintf(name, sizeof name, "s%d.dgt", m);
        ck_assert_int_eq(run(err, "train %s --limit %d --epochs 1 --threads 2 --seed %d "
                                  "--split-seed 42 --device cpu -o %s --no-checkpoint -q",
                             train, ROWS, 42 + m, name),
                         0);
        expect_same_params("e.dgt", m, name, 0);
        char key[32], a[1024];
        snprintf(key, sizeof key, "member%d_history", m + 1);
        snprintf(a, sizeof a, "%s", at("e.dgt"));
        dg_test_expect_same_history(a, key, at(name), "history", 1);
    }
    /* --member-splits: member 2 is `--seed 43` alone, split included */
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs 1 --threads 2 --ensemble 2 "
                              "--member-splits --device cpu -o ms.dgt -q",
                         train, ROWS),
                     0);
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs 1 --threads 2 --seed 43 --device cpu "
                              "-o alone.dgt --no-checkpoint -q",
                         train, ROWS),
                     0);
    expect_same_params("ms.dgt", 1, "alone.dgt", 0);
    /* the ensemble file says what it is */
    write_head();
    ck_assert_int_eq(run(err, "predict -m e.dgt head.csv -o /dev/null"), 0);
    ck_assert_int_eq(run(err, "info --model=e.dgt"), 0);
    dg_test_expect_in(at("stdout"), "e.dgt (an ensemble of 3 members)");
    dg_test_expect_in(at("stdout"), "member3_history=1,1,");
    /* 22 files of 3 members: 66, more than one run combines */
    char many[22 * 9 + 1] = "";
    for (int f = 0; f < 22; f++)
        strcat(many, "-m e.dgt ");
    ck_assert_int_eq(run(err, "predict %s %s -o /dev/null", many, train), 2);
    dg_test_expect_in(err, "e.dgt: 3 more members would make more than 64 in all (the most one "
                           "run combines; 63 are already loaded)");
    ck_assert_int_eq(run(err, "train %s --ensemble 2 --resume x.ckpt", train), 2);
    dg_test_expect_in(err, "--ensemble writes no checkpoints");
}
END_TEST

START_TEST(averaging_and_tta)
{
    char err[512];
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs 2 --threads 2 --ensemble 2 "
                              "--device cpu -o e.dgt -q",
                         train, ROWS),
                     0);
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs 2 --threads 2 --device cpu -o a.dgt "
                              "--no-checkpoint -q",
                         train, ROWS),
                     0);
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs 2 --threads 2 --seed 43 "
                              "--split-seed 42 --device cpu -o b.dgt --no-checkpoint -q",
                         train, ROWS),
                     0);
    /* the first TEST_ROWS sample images as an unlabelled CSV, and their four shifts */
    char command[2048];
    snprintf(command, sizeof command,
             "gzip -dc '%s' | head -n %d | cut -d, -f2- > '%s'", train, TEST_ROWS + 1,
             at("test.csv"));
    ck_assert_int_eq(system(command), 0);
    unsigned char *images = malloc(TEST_ROWS * 784);
    FILE *fp = fopen(at("test.csv"), "r");
    ck_assert_ptr_nonnull(fp);
    char *line = NULL;
    size_t cap = 0;
    ck_assert_int_gt(getline(&line, &cap, fp), 0);
    for (int n = 0; n < TEST_ROWS; n++) {
        ck_assert_int_gt(getline(&line, &cap, fp), 0);
        char *p = line;
        for (int k = 0; k < 784; k++) {
            images[n * 784 + k] = (unsigned char)strtol(p, &p, 10);
            p++;
        }
    }
    free(line);
    fclose(fp);
    static const int shifts[5][2] = {{0, 0}, {-1, 0}, {1, 0}, {0, -1}, {0, 1}};
    for (int s = 0; s < 5; s++) {
        char name[32];
        snprintf(name, sizeof name, "shift%d.csv", s);
        write_shifted(name, images, shifts[s][0], shifts[s][1]);
    }
    free(images);

    /* the ensemble file and the same two models as -m -m: the mean of the two */
    ck_assert_int_eq(run(err, "predict -m e.dgt test.csv --device cpu -o e.csv "
                              "--probs e.probs"),
                     0);
    ck_assert_int_eq(run(err, "predict -m a.dgt -m b.dgt test.csv --device cpu -o ab.csv "
                              "--probs ab.probs"),
                     0);
    ck_assert_int_eq(run(err, "predict -m a.dgt test.csv --device cpu -o a.csv "
                              "--probs a.probs"),
                     0);
    ck_assert_int_eq(run(err, "predict -m b.dgt test.csv --device cpu -o b.csv "
                              "--probs b.probs"),
                     0);
    double *pe = read_probs("e.probs"), *pab = read_probs("ab.probs");
    double *pa = read_probs("a.probs"), *pb = read_probs("b.probs");
    double worst = 0.0;
    for (int i = 0; i < TEST_ROWS * 10; i++) {
        ck_assert(pe[i] == pab[i]);
        double d = fabs(pe[i] - 0.5 * (pa[i] + pb[i]));
        worst = d > worst ? d : worst;
    }
    printf("ensemble vs mean of members: worst %.3g (limit 2e-6)\n", worst);
    ck_assert_double_le(worst, 2e-6);
    free(pe), free(pab), free(pa), free(pb);

    /* --tta on one model: the mean over the five shifted copies */
    ck_assert_int_eq(run(err, "predict -m a.dgt test.csv --tta --device cpu -o t.csv "
                              "--probs t.probs"), 0);
    double *pt = read_probs("t.probs");
    double *mean = calloc(TEST_ROWS * 10, sizeof *mean);
    for (int s = 0; s < 5; s++) {
        char args[256];
        snprintf(args, sizeof args, "predict -m a.dgt shift%d.csv --device cpu -o x.csv "
                 "--probs x.probs", s);
        ck_assert_int_eq(run(err, "%s", args), 0);
        double *px = read_probs("x.probs");
        for (int i = 0; i < TEST_ROWS * 10; i++)
            mean[i] += px[i] / 5.0;
        free(px);
    }
    worst = 0.0;
    for (int i = 0; i < TEST_ROWS * 10; i++) {
        double d = fabs(pt[i] - mean[i]);
        worst = d > worst ? d : worst;
    }
    printf("--tta vs mean of the shifted copies: worst %.3g (limit 2e-6)\n", worst);
    ck_assert_double_le(worst, 2e-6);
    free(pt), free(mean);

    /* eval: each member's accuracy as eval of that model alone, then the ensemble's */
    write_head();
    ck_assert_int_eq(run(err, "eval -m a.dgt head.csv --all --device cpu"), 0);
    char *alone = dg_test_slurp(at("stdout"));
    char want[64];
    char *acc = strstr(alone, "accuracy: ");
    ck_assert_ptr_nonnull(acc);
    snprintf(want, sizeof want, "  member 1: accuracy %.6s", acc + 10);
    free(alone);
    ck_assert_int_eq(run(err, "eval -m e.dgt head.csv --all --device cpu"), 0);
    dg_test_expect_in(at("stdout"), want);
    dg_test_expect_in(at("stdout"), "  ensemble of 2: accuracy ");
}
END_TEST

/* --concurrent N: members trained N at a time in one process, each on its own CPU backend (its
 * share of the threads) from its own thread; every member stays bit-identical to the
 * sequential ensemble (and so to its single run), history included; the progress is one
 * "member M: epoch ..." line per epoch, no progress bar; each member its own log; a failing
 * member fails the command (saying which) and no file is written; --concurrent above K is
 * clamped; --devices is refused without CUDA devices, and with --device cpu. */
START_TEST(concurrent_members)
{
    char err[512];
    int epochs = getenv("DIGITS_TEST_SANITIZED") ? 1 : 2;
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs %d --threads 2 --ensemble 3 "
                              "--concurrent 1 --device cpu -o seq.dgt -q",
                         train, ROWS, epochs),
                     0);
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs %d --threads 2 --ensemble 3 "
                              "--concurrent 2 --device cpu --log log.csv -o con.dgt",
                         train, ROWS, epochs),
                     0);
    char *text = dg_test_slurp(err);
    ck_assert_msg(strchr(text, '\r') == NULL, "a progress bar in the concurrent output:\n%s",
                  text);
    free(text);
    dg_test_expect_in(err, "3 members here, 2 at a time, each on its own backend:");
    dg_test_expect_in(err, "cpu: 1 thread,");
    dg_test_expect_in(err, "member 3: epoch 1/");
    dg_test_expect_in(err, "2 at a time)");
    for (int m = 0; m < 3; m++) {
        expect_same_params("con.dgt", m, "seq.dgt", m);
        char key[32], a[1024], log[32];
        snprintf(key, sizeof key, "member%d_history", m + 1);
        snprintf(a, sizeof a, "%s", at("con.dgt"));
        dg_test_expect_same_history(a, key, at("seq.dgt"), key, epochs);
        snprintf(log, sizeof log, "log.member%d.csv", m + 1);
        dg_test_expect_in(at(log), "epoch,loss,accuracy,");
    }
    ck_assert_int_eq(run(err, "info --model=con.dgt"), 0);
    dg_test_expect_in(at("stdout"), "concurrent=2");
    /* above K: clamped (2 members, 2 at a time) */
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs %d --threads 2 --ensemble 2 "
                              "--concurrent 7 --device cpu -o two.dgt",
                         train, ROWS, epochs),
                     0);
    dg_test_expect_in(err, "2 members here, 2 at a time");
    for (int m = 0; m < 2; m++)
        expect_same_params("two.dgt", m, "seq.dgt", m);
    /* member 2 cannot write its log (a directory is in the way): the command fails, naming the
     * member, the others stop, and no ensemble file is written */
    char command[2048];
    snprintf(command, sizeof command, "mkdir '%s/bad.member2.csv'", dir);
    ck_assert_int_eq(system(command), 0);
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs 1 --threads 2 --ensemble 3 "
                              "--concurrent 2 --device cpu --log bad.csv -o bad.dgt -q",
                         train, ROWS),
                     2);
    dg_test_expect_in(err, "digits: member 2: ");
    dg_test_expect_in(err, "bad.member2.csv: cannot create the log file");
    ck_assert(access(at("bad.dgt"), F_OK) != 0);
    /* usage */
    ck_assert_int_eq(run(err, "train %s --concurrent 2", train), 2);
    dg_test_expect_in(err, "--concurrent needs --ensemble K");
    ck_assert_int_eq(run(err, "train %s --ensemble 2 --concurrent 0", train), 2);
    ck_assert_int_eq(run(err, "train %s --ensemble 2 --devices 0 --device cpu", train), 2);
    dg_test_expect_in(err, "it does not go with --device cpu");
    ck_assert_int_eq(run(err, "train %s --ensemble 2 --devices 0,x", train), 2);
    dg_test_expect_in(err, "--devices expects CUDA device numbers");
    ck_assert_int_eq(run(err, "train %s --ensemble 2 --devices 1,1", train), 2);
    dg_test_expect_in(err, "names device 1 twice");
    ck_assert_int_eq(run(err, "train %s --ensemble 2 --devices 1023 -o x.dgt", train), 2);
    dg_test_expect_in(err, "there is no CUDA device 1023");
    ck_assert(access(at("x.dgt"), F_OK) != 0);
}
END_TEST

/* Under mpirun -np 2, the members spread over the ranks: the file is bit-identical to the
 * one-process ensemble; a rank that fails fails the job (its rank and reason) and no file is
 * written. Skipped, saying why, when MPI is not built or mpirun is missing. */
START_TEST(mpi_ranks)
{
    char err[512];
    ck_assert_int_eq(run(err, "info"), 0);
    char *info = dg_test_slurp(at("stdout"));
    int built = strstr(info, "MPI: built") != NULL;
    free(info);
    if (!built || system("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("SKIP mpi: %s\n", built ? "no mpirun on the PATH" : "this digits has no MPI");
        return;
    }
    const char *root = geteuid() == 0 ? "--allow-run-as-root " : "";
    char command[4096];
    snprintf(command, sizeof command,
             "cd '%s' && mpirun %s--oversubscribe -np 2 '%s' train '%s' --limit %d --epochs 1 "
             "--ensemble 3 --device cpu -o mpi.dgt 2>mpi.err",
             dir, root, dg_test_bin(), train, ROWS);
    int status = system(command);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *text = dg_test_slurp(at("mpi.err"));
        ck_abort_msg("mpirun failed (%d):\n%s", status, text);
    }
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs 1 --ensemble 3 --device cpu "
                              "-o one.dgt -q",
                         train, ROWS),
                     0);
    for (int m = 0; m < 3; m++) {
        expect_same_params("mpi.dgt", m, "one.dgt", m);
        /* the members trained on rank 1 bring their history along */
        char key[32], a[1024];
        snprintf(key, sizeof key, "member%d_history", m + 1);
        snprintf(a, sizeof a, "%s", at("mpi.dgt"));
        dg_test_expect_same_history(a, key, at("one.dgt"), key, 1);
    }
    /* two members at a time on rank 0 (members 1 and 3), rank 1 alone: the same file */
    snprintf(command, sizeof command,
             "cd '%s' && mpirun %s--oversubscribe -np 2 '%s' train '%s' --limit %d --epochs 1 "
             "--ensemble 3 --concurrent 2 --device cpu -o mpic.dgt 2>mpic.err",
             dir, root, dg_test_bin(), train, ROWS);
    status = system(command);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *text = dg_test_slurp(at("mpic.err"));
        ck_abort_msg("mpirun --concurrent 2 failed (%d):\n%s", status, text);
    }
    dg_test_expect_in(at("mpic.err"), "2 members here, 2 at a time");
    for (int m = 0; m < 3; m++)
        expect_same_params("mpic.dgt", m, "one.dgt", m);
    /* rank 1 cannot write its member's log (a directory is in the way): the job fails */
    snprintf(command, sizeof command, "mkdir '%s/log.member2.csv'", dir);
    ck_assert_int_eq(system(command), 0);
    snprintf(command, sizeof command,
             "cd '%s' && mpirun %s--oversubscribe -np 2 '%s' train '%s' --limit %d --epochs 1 "
             "--ensemble 3 --log log.csv -o bad.dgt 2>bad.err",
             dir, root, dg_test_bin(), train, ROWS);
    status = system(command);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    dg_test_expect_in(at("bad.err"), "rank 1 failed: ");
    dg_test_expect_in(at("bad.err"), "log.member2.csv: cannot create the log file");
    ck_assert(access(at("bad.dgt"), F_OK) != 0);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("ensemble");
    TCase *tc = tcase_create("ensemble");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, members_are_single_runs);
    tcase_add_test(tc, averaging_and_tta);
    tcase_add_test(tc, concurrent_members);
    tcase_add_test(tc, mpi_ranks);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
