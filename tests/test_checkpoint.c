/* Training that can be left running: checkpoints after every epoch, bit-exact --resume (after
 * an epoch, after kill -9, after SIGINT mid-epoch, with another thread count), refusals of a
 * checkpoint of other data, another format version, a model file or contradicting options,
 * the divergence guard, a failed checkpoint write (full disk) keeping the previous checkpoint,
 * --save-best, --early-stop and the --log history across a resume. Every run is a real
 * `digits train` on the bundled sample (a few hundred rows, so that the sanitizer pass stays
 * short); "the same model" means byte-identical `digits predict --probs` output. Every run
 * names --device cpu: with the default (auto) a GPU machine would train on CUDA, where two
 * processes may choose different convolution algorithms and so round differently. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "cli_util.h"
#include "history_util.h"

/* a few hundred rows (fewer under the sanitizers), batch 32 */
static char TRAIN_ARGS[128];
static int rows;

static char dir[256];
static char train[1024], test_file[1024];

static void setup(void)
{
    dg_test_dir_create(dir, sizeof dir, "ckpt");
    const char *source = getenv("DIGITS_SOURCE_DIR");
    ck_assert_ptr_nonnull(source);
    snprintf(train, sizeof train, "%s/data/sample/train.csv.gz", source);
    /* the predictions compared: of the sample's first 200 test images (every parameter
     * takes part in each one) */
    char command[2048];
    snprintf(test_file, sizeof test_file, "%s", dg_test_dir_path(dir, "test200.csv"));
    snprintf(command, sizeof command, "gzip -dc '%s/data/sample/test.csv.gz' | head -n 201 > '%s'",
             source, test_file);
    ck_assert_int_eq(system(command), 0);
    rows = getenv("DIGITS_TEST_SANITIZED") ? 200 : 500;
    snprintf(TRAIN_ARGS, sizeof TRAIN_ARGS, "--limit %d --batch 32 --threads 2 --device cpu -q",
             rows);
}

static void teardown(void)
{
    dg_test_dir_remove(dir);
}

/* `digits ARGS` in DIR, its exit code; DIR/name */
#define run(...) dg_test_run_digits(dir, NULL, NULL, __VA_ARGS__)
#define at(name) dg_test_dir_path(dir, name)

static int exists(const char *name)
{
    struct stat st;
    return stat(at(name), &st) == 0;
}

/* The whole file, or NULL when absent. */
static char *read_file(const char *name, size_t *size)
{
    FILE *fp = fopen(at(name), "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(data);
    *size = fread(data, 1, (size_t)n, fp);
    data[*size] = '\0';
    fclose(fp);
    return data;
}

static void expect_same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *da = read_file(a, &na), *db = read_file(b, &nb);
    ck_assert_msg(da && db, "%s or %s missing", a, b);
    ck_assert_msg(na == nb && memcmp(da, db, na) == 0, "%s and %s differ", a, b);
    printf("ok   %s and %s are byte-identical (%zu bytes)\n", a, b, na);
    free(da);
    free(db);
}

/* Models a and b (DIR/a.dgt, DIR/b.dgt) are the same: their parameters bit for bit, and the
 * predictions of each (a.probs, b.probs) byte for byte. */
static void expect_same_model(const char *a, const char *b)
{
    char ma[1024], mb[1024], pa[128], pb[128];
    snprintf(ma, sizeof ma, "%s/%s.dgt", dir, a);
    snprintf(mb, sizeof mb, "%s/%s.dgt", dir, b);
    dg_test_expect_same_params(ma, mb);
    snprintf(pa, sizeof pa, "%s.probs", a);
    snprintf(pb, sizeof pb, "%s.probs", b);
    expect_same_file(pa, pb);
}

/* The probabilities of the first 200 sample test images under model `model` into `probs`. */
static void probs_of(const char *model, const char *probs)
{
    ck_assert_int_eq(run("predict -m %s %s --device cpu -o %s.csv --probs %s", model, test_file,
                         probs, probs),
                     0);
}

/* `digits ARGS` started in the background, stderr to DIR/NAME. */
static pid_t start(const char *err_name, const char *args)
{
    char command[2048];
    snprintf(command, sizeof command, "cd '%s' && exec '%s' %s 2>'%s'", dir, dg_test_bin(), args,
             at(err_name));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Waits (up to five minutes) until `name` exists; 0 when the process ended first. */
static int wait_for_file(const char *name, pid_t pid)
{
    for (int i = 0; i < 30000; i++) {
        if (exists(name))
            return 1;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return 0;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return 0;
}

static int finish(pid_t pid)
{
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* The reference: 3 epochs left alone. */
static void reference_run(void)
{
    ck_assert_int_eq(run("train %s %s --epochs 3 -o ref.dgt --log ref.csv", train, TRAIN_ARGS),
                     0);
    probs_of("ref.dgt", "ref.probs");
}

/* A run of 2 epochs with `opts` (TAGref.dgt) against one of 1 epoch resumed to 2 (TAGpart.dgt):
 * the same predictions, byte for byte. */
static void resumed_equals_whole(const char *tag, const char *opts)
{
    ck_assert_int_eq(run("train %s %s --epochs 2 %s -o %sref.dgt", train, TRAIN_ARGS, opts, tag),
                     0);
    char model[64], probs[64];
    snprintf(model, sizeof model, "%sref.dgt", tag);
    snprintf(probs, sizeof probs, "%sref.probs", tag);
    probs_of(model, probs);
    ck_assert_int_eq(run("train %s %s --epochs 1 %s -o %spart.dgt", train, TRAIN_ARGS, opts, tag),
                     0);
    ck_assert_int_eq(run("train %s --resume %spart.dgt.ckpt --epochs 2 --device cpu", train, tag),
                     0);
    char part_model[64], part_probs[64];
    snprintf(part_model, sizeof part_model, "%spart.dgt", tag);
    snprintf(part_probs, sizeof part_probs, "%spart.probs", tag);
    probs_of(part_model, part_probs);
    snprintf(model, sizeof model, "%sref", tag);
    snprintf(part_model, sizeof part_model, "%spart", tag);
    expect_same_model(model, part_model);
}

START_TEST(resume_after_an_epoch)
{
    reference_run();
    ck_assert(exists("ref.dgt.ckpt"));
    ck_assert_int_eq(run("train %s %s --epochs 1 -o part.dgt --log part.csv", train, TRAIN_ARGS),
                     0);
    /* --epochs raised, another thread count; -o, --limit and the settings from the checkpoint */
    ck_assert_int_eq(run("train %s --resume part.dgt.ckpt --epochs 3 --threads 1 --device cpu "
                         "--log part.csv",
                         train),
                     0);
    probs_of("part.dgt", "part.probs");
    expect_same_model("ref", "part");
    /* the model file's history: the three epochs of the run left alone, the resumed one's too */
    char ref_path[1024];
    snprintf(ref_path, sizeof ref_path, "%s", at("ref.dgt"));
    dg_test_expect_same_history(ref_path, "history", at("part.dgt"), "history", 3);
    /* the log continues: epochs 1, 2, 3 once each, the values of the run left alone */
    size_t na, nb;
    char *ref_log = read_file("ref.csv", &na), *log = read_file("part.csv", &nb);
    int lines = 0;
    for (char *p = log; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    ck_assert_int_eq(lines, 4);
    for (int epoch = 1; epoch <= 3; epoch++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "\n%d,", epoch);
        char *a = strstr(ref_log, prefix), *b = strstr(log, prefix);
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        /* epoch, loss, accuracy, val_loss, val_accuracy, lr: the first six fields */
        int commas = 0;
        size_t n = 1;
        while (commas < 6 && a[n] && a[n] == b[n])
            commas += a[n++] == ',';
        ck_assert_msg(commas == 6, "log line of epoch %d differs", epoch);
    }
    free(ref_log);
    free(log);
    /* resumed when all its epochs are done: it says so and how to train on, and writes the
     * same model again */
    char command[2048], err[512];
    snprintf(command, sizeof command, "cp '%s' '%s'", at("part.dgt"), at("part_before.dgt"));
    ck_assert_int_eq(system(command), 0);
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --resume part.dgt.ckpt --epochs 3 --device cpu",
                                        train),
                     0);
    dg_test_expect_in(err, "digits: part.dgt.ckpt: its run has trained all 3 epochs, so nothing "
                           "is left to train: its model is written again (raise --epochs to "
                           "train on)\n");
    expect_same_file("part_before.dgt", "part.dgt");
}
END_TEST

/* Another network (--net): resumed after an epoch it gives the same predictions as the run
 * left alone; the checkpoint's network is kept, and --net contradicting it is refused. */
START_TEST(resume_of_another_network)
{
    const char *net = "--net 8C3-P2-16C3L-P2-D0.2-24-10";
    resumed_equals_whole("n", net);
    char err[512];
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --resume nref.dgt.ckpt --epochs 3 --net "
                                        "reference",
                                        train),
                     2);
    dg_test_expect_in(err, "nref.dgt.ckpt: --net reference contradicts the checkpoint (its "
                           "network is 8C3-P2-16C3L-P2-D0.2-F-24-10); leave it out to use the "
                           "checkpoint's");
    /* the same spelled otherwise is the same network */
    ck_assert_int_eq(run("train %s --resume nref.dgt.ckpt --epochs 3 --net "
                         "8c3-p2-16c3l-p2-d0.2-f-24-10",
                         train),
                     0);
}
END_TEST

/* Batchnorm and strided / "valid" convolutions: the running statistics live in the parameters,
 * so a resumed run gives the same predictions (inference mode, running statistics) as the run
 * left alone; a spec differing only in a stride or the padding contradicts the checkpoint. */
START_TEST(resume_of_a_batchnorm_network)
{
    const char *net = "--net 8C3V-B-8C5S2-B-D0.2-16-B-10";
    resumed_equals_whole("b", net);
    static const char *const others[2] = {"8C3-B-8C5S2-B-D0.2-16-B-10",
                                          "8C3V-B-8C5-B-D0.2-16-B-10"};
    for (int i = 0; i < 2; i++) {
        char err[512];
        ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                            "train %s --resume bref.dgt.ckpt --epochs 3 --net %s",
                                            train, others[i]),
                         2);
        dg_test_expect_in(err, "contradicts the checkpoint (its network is "
                               "8C3V-B-8C5S2-B-D0.2-F-16-B-10)");
    }
}
END_TEST

/* --label-smoothing: kept in the checkpoint and the model file's settings (resumed bit for
 * bit), refused when it contradicts the checkpoint; it changes what is trained. */
START_TEST(label_smoothing_resumes_and_is_kept)
{
    resumed_equals_whole("s", "--label-smoothing 0.1");
    char out[512];
    ck_assert_int_eq(dg_test_run_digits(dir, out, NULL, "info --model sref.dgt"), 0);
    dg_test_expect_in(out, "label_smoothing=0.1\n");
    char err[512];
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --resume sref.dgt.ckpt --epochs 3 "
                                        "--label-smoothing 0.2",
                                        train),
                     2);
    dg_test_expect_in(err, "sref.dgt.ckpt: --label-smoothing 0.2 (the checkpoint's is 0.1) "
                           "contradicts the checkpoint");
    /* without smoothing the same run ends elsewhere, and its file says nothing of it */
    ck_assert_int_eq(run("train %s %s --epochs 2 -o plain.dgt", train, TRAIN_ARGS), 0);
    probs_of("plain.dgt", "plain.probs");
    size_t na, nb;
    char *a = read_file("sref.probs", &na), *b = read_file("plain.probs", &nb);
    ck_assert(na != nb || memcmp(a, b, na) != 0);
    free(a);
    free(b);
    ck_assert_int_eq(dg_test_run_digits(dir, out, NULL, "info --model plain.dgt"), 0);
    char *info = dg_test_slurp(out);
    ck_assert_ptr_null(strstr(info, "label_smoothing"));
    free(info);
}
END_TEST

static int contains_bytes(const char *data, size_t size, const char *what)
{
    size_t len = strlen(what);
    for (size_t i = 0; i + len <= size; i++)
        if (memcmp(data + i, what, len) == 0)
            return 1;
    return 0;
}

/* --optimizer adam (with --save-best: a checkpoint of four blocks) and sgd (Nesterov, another
 * momentum): resumed after an epoch to the same model bit for bit (Adam's step count and
 * moments, SGD's momentum buffer in the checkpoint), the optimizer and its constants in the
 * model file, a contradicting --optimizer or constant refused on --resume. */
START_TEST(optimizer_resumes_and_is_kept)
{
    static const char *const opts[] = {"--optimizer adam --save-best",
                                       "--optimizer sgd --lr 0.02 --momentum 0.5 --nesterov"};
    static const char *const kept[] = {"optimizer=adam\nbeta1=0.9\nbeta2=0.999\nadam_eps=1e-07\n",
                                       "optimizer=sgd\nmomentum=0.5\nnesterov=1\n"};
    const char *opt = opts[_i];
    resumed_equals_whole("o", opt);
    char out[512];
    ck_assert_int_eq(dg_test_run_digits(dir, out, NULL, "info --model oref.dgt"), 0);
    dg_test_expect_in(out, kept[_i]);
    char err[512];
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --resume oref.dgt.ckpt --epochs 3 "
                                        "--optimizer rmsprop",
                                        train),
                     2);
    dg_test_expect_in(err, _i == 0 ? "oref.dgt.ckpt: --optimizer rmsprop (the checkpoint's is "
                                     "adam) contradicts the checkpoint"
                                   : "oref.dgt.ckpt: --optimizer rmsprop (the checkpoint's is "
                                     "sgd) contradicts the checkpoint");
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --resume oref.dgt.ckpt --epochs 3 %s", train,
                                        _i == 0 ? "--beta2 0.99" : "--momentum 0.9"),
                     2);
    dg_test_expect_in(err, _i == 0 ? "--beta2 0.99 (the checkpoint's is 0.999) contradicts"
                                   : "--momentum 0.9 (the checkpoint's is 0.5) contradicts");
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --resume oref.dgt.ckpt --epochs 3 %s", train,
                                        _i == 0 ? "--momentum 0.9" : "--beta1 0.8"),
                     2);
    dg_test_expect_in(err, _i == 0 ? "--momentum (the checkpoint's optimizer is adam)"
                                   : "--beta1 (the checkpoint's optimizer is sgd)");
    /* the same optimizer named again is no contradiction */
    ck_assert_int_eq(run("train %s --resume oref.dgt.ckpt --epochs 3 --device cpu -q --optimizer %s",
                         train, _i == 0 ? "adam" : "sgd"),
                     0);
    /* RMSprop's run ends elsewhere, and its files say nothing of an optimizer */
    ck_assert_int_eq(run("train %s %s --epochs 2 -o orms.dgt", train, TRAIN_ARGS), 0);
    probs_of("orms.dgt", "orms.probs");
    size_t na, nb;
    char *a = read_file("oref.probs", &na), *b = read_file("orms.probs", &nb);
    ck_assert(na != nb || memcmp(a, b, na) != 0);
    free(a);
    free(b);
    ck_assert_int_eq(dg_test_run_digits(dir, out, NULL, "info --model orms.dgt"), 0);
    char *info = dg_test_slurp(out);
    ck_assert_ptr_null(strstr(info, "optimizer"));
    free(info);
    char *ck = read_file("orms.dgt.ckpt", &na);
    ck_assert(!contains_bytes(ck, na, "optimizer=") && !contains_bytes(ck, na, "state_adam_t"));
    free(ck);
}
END_TEST

/* --schedule onecycle:MAX_LR sets the learning rate of every step from (epoch, step): a run
 * killed after a checkpoint resumes to the model of the run left alone. */
START_TEST(onecycle_resumes_after_kill_9)
{
    const char *opts = "--optimizer adam --schedule onecycle:0.005";
    ck_assert_int_eq(run("train %s %s --epochs 3 %s -o cref.dgt", train, TRAIN_ARGS, opts), 0);
    probs_of("cref.dgt", "cref.probs");
    char args[2048];
    snprintf(args, sizeof args, "train %s %s --epochs 3 %s -o ckill.dgt", train, TRAIN_ARGS,
             opts);
    pid_t pid = start("ckill.err", args);
    ck_assert_msg(wait_for_file("ckill.dgt.ckpt", pid), "no checkpoint appeared");
    kill(pid, SIGKILL);
    finish(pid);
    ck_assert_int_eq(run("train %s --resume ckill.dgt.ckpt --device cpu -q", train), 0);
    probs_of("ckill.dgt", "ckill.probs");
    expect_same_model("cref", "ckill");
}
END_TEST

/* --ema: the average is a block of the checkpoint (resumed bit for bit, with Adam's two and
 * --save-best's, five blocks), the model file holds the average and says so, another --ema
 * on resume is refused, and the averaged model differs from the plain run's. */
START_TEST(ema_resumes_and_is_kept)
{
    const char *opts = "--ema 0.9 --optimizer adam --save-best";
    resumed_equals_whole("e", opts);
    char out[512], err[512];
    ck_assert_int_eq(dg_test_run_digits(dir, out, NULL, "info --model eref.dgt"), 0);
    dg_test_expect_in(out, "\nema=0.9\n");
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --resume eref.dgt.ckpt --epochs 3 --ema 0.99",
                                        train),
                     2);
    dg_test_expect_in(err, "eref.dgt.ckpt: --ema 0.99 (the checkpoint's is 0.9) contradicts");
    ck_assert_int_eq(run("train %s %s --epochs 2 --optimizer adam --save-best -o eplain.dgt", train,
                         TRAIN_ARGS),
                     0);
    probs_of("eplain.dgt", "eplain.probs");
    size_t na, nb;
    char *a = read_file("eref.probs", &na), *b = read_file("eplain.probs", &nb);
    ck_assert(na != nb || memcmp(a, b, na) != 0);
    free(a);
    free(b);
    ck_assert_int_eq(dg_test_run_digits(dir, out, NULL, "info --model eplain.dgt"), 0);
    char *info = dg_test_slurp(out);
    ck_assert_ptr_null(strstr(info, "ema="));
    free(info);
}
END_TEST

START_TEST(resume_after_kill_9)
{
    reference_run();
    char args[2048];
    snprintf(args, sizeof args, "train %s %s --epochs 3 -o kill.dgt", train, TRAIN_ARGS);
    pid_t pid = start("kill.err", args);
    ck_assert_msg(wait_for_file("kill.dgt.ckpt", pid), "no checkpoint appeared");
    kill(pid, SIGKILL);
    ck_assert_int_eq(finish(pid), 128 + SIGKILL);
    ck_assert(!exists("kill.dgt"));
    ck_assert_int_eq(run("train %s --resume kill.dgt.ckpt --device cpu -q", train), 0);
    probs_of("kill.dgt", "kill.probs");
    expect_same_model("ref", "kill");
}
END_TEST

/* SIGINT (and SIGTERM) after the first checkpoint: the step in progress finishes, a
 * checkpoint of the middle of epoch 2 is written, exit 130 (143), and it resumes to the same
 * model. */
START_TEST(resume_after_a_signal)
{
    static const int signals[2] = {SIGINT, SIGTERM};
    int signo = signals[_i];
    reference_run();
    char args[2048];
    snprintf(args, sizeof args, "train %s %s --epochs 3 -o sig.dgt --checkpoint s.ckpt", train,
             TRAIN_ARGS);
    pid_t pid = start("sig.err", args);
    ck_assert_msg(wait_for_file("s.ckpt", pid), "no checkpoint appeared");
    kill(pid, signo);
    int code = finish(pid);
    if (code == 0) {
        /* the run ended before the signal arrived: nothing to resume */
        printf("SKIP: training finished before the signal (a very fast machine)\n");
        return;
    }
    ck_assert_int_eq(code, 128 + signo);
    dg_test_expect_in(at("sig.err"), signo == SIGINT ? "by SIGINT" : "by SIGTERM");
    dg_test_expect_in(at("sig.err"), "resume with: digits train");
    dg_test_expect_in(at("sig.err"), "--resume s.ckpt");
    ck_assert(!exists("sig.dgt"));
    ck_assert_int_eq(run("train %s --resume s.ckpt --threads 1 --device cpu -q", train), 0);
    probs_of("sig.dgt", "sig.probs");
    expect_same_model("ref", "sig");
}
END_TEST

START_TEST(refusals)
{
    char err[512];
    ck_assert_int_eq(run("train %s %s --epochs 1 -o m.dgt", train, TRAIN_ARGS), 0);
    /* other data */
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --resume m.dgt.ckpt --limit %d", train,
                                        rows - 1),
                     2);
    char want[64];
    snprintf(want, sizeof want, "a checkpoint of other data (%d rows", rows);
    dg_test_expect_in(err, want);
    /* contradicting options, each named; --epochs may be raised */
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err, "train %s --resume m.dgt.ckpt --batch 64",
                                        train),
                     2);
    dg_test_expect_in(err, "--batch 64 (the checkpoint's is 32) contradicts the checkpoint");
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err, "train %s --resume m.dgt.ckpt --seed 7",
                                        train),
                     2);
    dg_test_expect_in(err, "--seed 7 (the checkpoint's is 42)");
    ck_assert_int_eq(
        dg_test_run_digits(dir, NULL, err, "train %s --resume m.dgt.ckpt --no-augment", train), 2);
    dg_test_expect_in(err, "--no-augment (the checkpoint's run augments)");
    /* a model file given as the checkpoint */
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err, "train %s --resume m.dgt", train), 2);
    dg_test_expect_in(err, "m.dgt: a model file, not a checkpoint");
    /* another format version (the version field follows the 8-byte magic) */
    size_t size;
    char *data = read_file("m.dgt.ckpt", &size);
    ck_assert_ptr_nonnull(data);
    data[8] = 2;
    FILE *fp = fopen(at("v2.ckpt"), "wb");
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    fclose(fp);
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err, "train %s --resume v2.ckpt", train), 2);
    dg_test_expect_in(err, "v2.ckpt: checkpoint format version 2, this digits reads version 1");
    /* a layer's units changed (CRC recomputed, so only that differs): another network, whose
     * parameter count is not the file's */
    data[8] = 1;
    data[16 + 4] ^= 1; /* layer 0's units */
    uLong crc = crc32(0L, (const Bytef *)data, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        data[size - 4 + (size_t)i] = (char)(crc >> (8 * i));
    fp = fopen(at("arch.ckpt"), "wb");
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    fclose(fp);
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err, "train %s --resume arch.ckpt", train), 2);
    dg_test_expect_in(err, "arch.ckpt: corrupted checkpoint file (887530 parameters, the "
                           "architecture has 888356)");
    /* a corrupted byte in the weights */
    data[16 + 4] ^= 1;
    data[size - 100] ^= 0x40;
    fp = fopen(at("bad.ckpt"), "wb");
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    fclose(fp);
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err, "train %s --resume bad.ckpt", train), 2);
    dg_test_expect_in(err, "bad.ckpt: corrupted checkpoint file (CRC32");
    /* truncated */
    fp = fopen(at("short.ckpt"), "wb");
    ck_assert_uint_eq(fwrite(data, 1, size / 2, fp), size / 2);
    fclose(fp);
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err, "train %s --resume short.ckpt", train),
                     2);
    dg_test_expect_in(err, "short.ckpt: truncated checkpoint file");
    free(data);
    /* --save-best and --early-stop need validation rows */
    ck_assert_int_eq(
        dg_test_run_digits(dir, NULL, err, "train %s --val-split 0 --save-best -o n.dgt", train),
        2);
    dg_test_expect_in(err, "need validation rows");
}
END_TEST

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Copies checkpoint `from` to `to` with the text `old` of its settings replaced by `new` (when
 * not NULL) and float `index` of parameter block `block` (0 weights, 1 accumulators, 2 best;
 * block < 0: none) set to `value`, the lengths and the CRC32 made right again, so only that
 * differs. */
static void rewrite_checkpoint(const char *from, const char *to, const char *old,
                               const char *new, int block, size_t index, float value)
{
    size_t size;
    unsigned char *data = (unsigned char *)read_file(from, &size);
    ck_assert_ptr_nonnull(data);
    size_t fixed = 16 + (size_t)le32(data + 12) * 20 + 16;
    size_t param_count = le32(data + fixed - 16), text_len = le32(data + fixed - 4);
    size_t floats = fixed + text_len;
    if (block >= 0) {
        ck_assert_uint_lt((size_t)block, le32(data + fixed - 8));
        uint32_t bits;
        memcpy(&bits, &value, 4);
        put_le32(data + floats + ((size_t)block * param_count + index) * 4, bits);
    }
    size_t old_len = old ? strlen(old) : 0, new_len = new ? strlen(new) : 0;
    unsigned char *out = malloc(size + new_len);
    ck_assert_ptr_nonnull(out);
    size_t at_text = 0;
    if (old) {
        char *text = malloc(text_len + 1);
        ck_assert_ptr_nonnull(text);
        memcpy(text, data + fixed, text_len);
        text[text_len] = '\0';
        char *hit = strstr(text, old);
        ck_assert_ptr_nonnull(hit);
        at_text = (size_t)(hit - text);
        free(text);
    }
    size_t n = 0;
    memcpy(out, data, fixed + at_text);
    n = fixed + at_text;
    memcpy(out + n, new ? new : "", new_len);
    n += new_len;
    size_t rest = fixed + at_text + old_len;
    memcpy(out + n, data + rest, size - 4 - rest);
    n += size - 4 - rest;
    put_le32(out + fixed - 4, (uint32_t)(text_len - old_len + new_len));
    put_le32(out + n, (uint32_t)crc32(0L, out, (uInt)n));
    n += 4;
    FILE *fp = fopen(at(to), "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(out, 1, n, fp), n);
    fclose(fp);
    free(out);
    free(data);
}

/* A checkpoint with a non-finite value (valid CRC) in the weights, the RMSprop accumulators or
 * the best weights, or with a setting beyond the CLI's range for it: --resume refuses it with
 * exit 2, naming the vector, the tensor and the index, or the setting with the CLI's own range
 * message. Before, a NaN was carried into the new model and checkpoint (exit 0) and
 * epochs=2000000000 failed later as "out of memory" (exit 1). An untouched rewrite resumes. */
START_TEST(refuses_non_finite_state_and_out_of_range_settings)
{
    char err[512];
    ck_assert_int_eq(run("train %s %s --epochs 1 --save-best -o m.dgt", train, TRAIN_ARGS), 0);
    rewrite_checkpoint("m.dgt.ckpt", "same.ckpt", NULL, NULL, -1, 0, 0.0f);
    ck_assert_int_eq(run("train %s --resume same.ckpt --epochs 2 -o same.dgt", train), 0);
    static const struct {
        int block;
        size_t index;
        float value;
        const char *want;
    } poisoned[] = {
        {0, 5, NAN, "p.ckpt: non-finite value in the weights: conv1.weight[5] is NaN"},
        {1, 7, NAN, "p.ckpt: non-finite value in the accumulators: conv1.weight[7] is NaN"},
        {1, 887529, INFINITY,
         "p.ckpt: non-finite value in the accumulators: dense2.bias[9] is +Inf"},
        {2, 832, -INFINITY,
         "p.ckpt: non-finite value in the best weights: conv2.weight[0] is -Inf"},
    };
    for (size_t c = 0; c < sizeof poisoned / sizeof poisoned[0]; c++) {
        rewrite_checkpoint("m.dgt.ckpt", "p.ckpt", NULL, NULL, poisoned[c].block,
                           poisoned[c].index, poisoned[c].value);
        ck_assert_int_eq(
            dg_test_run_digits(dir, NULL, err, "train %s --resume p.ckpt --epochs 2", train), 2);
        dg_test_expect_in(err, poisoned[c].want);
    }
    static const struct {
        const char *old, *new, *want;
    } settings[] = {
        {"\nepochs=1\n", "\nepochs=2000000000\n",
         "r.ckpt: corrupted checkpoint file (epochs=2000000000: --epochs expects an integer in "
         "1..100000)"},
        {"\nbatch=32\n", "\nbatch=2000000000\n",
         "r.ckpt: corrupted checkpoint file (batch=2000000000: --batch expects an integer in "
         "1..65536)"},
        {"\nbatch=32\n", "\nbatch=0\n",
         "r.ckpt: corrupted checkpoint file (batch=0: --batch expects an integer in 1..65536)"},
        {"\nlr=", "\nlr=1e9\nold_lr=",
         "r.ckpt: corrupted checkpoint file (lr=1e9: --lr expects a number in [1e-12, "
         "1e+06])"},
        {"\nlr=", "\nlr=nan\nold_lr=", "r.ckpt: corrupted checkpoint file (lr=nan: --lr"},
        {"\nval_split=", "\nval_split=0.995\nold_val_split=",
         "r.ckpt: corrupted checkpoint file (val_split=0.995: --val-split expects a number "
         "in [0, 0.99])"},
        {"\nearly_stop=0\n", "\nearly_stop=100001\n",
         "r.ckpt: corrupted checkpoint file (early_stop=100001: --early-stop expects an "
         "integer in 1..100000)"},
        {"\nrho=", "\nrho=inf\nold_rho=", "r.ckpt: corrupted checkpoint file (bad settings)"},
        {"\nbatch=32\n", "\nbatch=32\noptimizer=adamw\n",
         "r.ckpt: corrupted checkpoint file (bad optimizer)"},
        {"\nbatch=32\n", "\nbatch=32\noptimizer=rmsprop\n",
         "r.ckpt: corrupted checkpoint file (bad optimizer)"},
        {"\nbatch=32\n", "\nbatch=32\noptimizer=sgd\nmomentum=1\nnesterov=0\n",
         "r.ckpt: corrupted checkpoint file (bad SGD settings)"},
        {"\nbatch=32\n", "\nbatch=32\noptimizer=sgd\nmomentum=0.9\n",
         "r.ckpt: corrupted checkpoint file (no nesterov)"},
        {"\nbatch=32\n", "\nbatch=32\noptimizer=adam\nbeta1=0.9\nbeta2=1\nadam_eps=1e-7\n",
         "r.ckpt: corrupted checkpoint file (bad Adam settings)"},
        /* Adam's settings on a checkpoint without its state */
        {"\nbatch=32\n", "\nbatch=32\noptimizer=adam\nbeta1=0.9\nbeta2=0.999\nadam_eps=1e-7\n",
         "r.ckpt: corrupted checkpoint file (no state_adam_t)"},
        {"\nstate_lr=", "\nstate_lr=nan\nold_state_lr=",
         "r.ckpt: corrupted checkpoint file (bad state)"},
    };
    for (size_t c = 0; c < sizeof settings / sizeof settings[0]; c++) {
        rewrite_checkpoint("m.dgt.ckpt", "r.ckpt", settings[c].old, settings[c].new, -1, 0, 0.0f);
        ck_assert_int_eq(
            dg_test_run_digits(dir, NULL, err, "train %s --resume r.ckpt --epochs 2", train), 2);
        dg_test_expect_in(err, settings[c].want);
    }
    ck_assert(!exists("p.dgt") && !exists("r.dgt"));
}
END_TEST

/* A learning rate of 10,000 diverges at the second step: exit 1, the message names the epoch
 * and step, no model file, and a checkpoint already at that path stays as it was. */
START_TEST(divergence_guard)
{
    ck_assert_int_eq(run("train %s %s --epochs 1 -o d.dgt", train, TRAIN_ARGS), 0);
    ck_assert_int_eq(unlink(at("d.dgt")), 0);
    size_t before_size, after_size;
    char *before = read_file("d.dgt.ckpt", &before_size);
    char err[512];
    ck_assert_int_eq(
        dg_test_run_digits(dir, NULL, err, "train %s %s --lr 10000 -o d.dgt", train, TRAIN_ARGS),
        1);
    dg_test_expect_in(err, "training diverged: the loss is");
    dg_test_expect_in(err, "at epoch 1, step 2 of");
    dg_test_expect_in(err, "no model written");
    ck_assert(!exists("d.dgt"));
    char *after = read_file("d.dgt.ckpt", &after_size);
    ck_assert(before && after && before_size == after_size &&
              memcmp(before, after, before_size) == 0);
    free(before);
    free(after);
}
END_TEST

/* A full disk while writing the second checkpoint (a 10 MiB tmpfs holds one 7.1 MB checkpoint
 * but not its successor's temporary file beside it): exit 1, a clear message,
 * the first checkpoint intact and resumable. Needs root (mount); skipped otherwise. */
START_TEST(full_disk_keeps_the_previous_checkpoint)
{
    char small[600];
    snprintf(small, sizeof small, "%s/small", dir);
    ck_assert_int_eq(mkdir(small, 0755), 0);
    if (geteuid() != 0 || mount("tmpfs", small, "tmpfs", 0, "size=10m") != 0) {
        printf("SKIP full disk: needs root to mount a small tmpfs (%s)\n", strerror(errno));
        return;
    }
    char err[512];
    int code = dg_test_run_digits(dir, NULL, err,
                                  "train %s %s --epochs 3 -o f.dgt --checkpoint small/f.ckpt",
                                  train, TRAIN_ARGS);
    size_t size = 0;
    FILE *fp = fopen(at("small/f.ckpt"), "rb");
    if (fp) {
        fseek(fp, 0, SEEK_END);
        size = (size_t)ftell(fp);
        fclose(fp);
    }
    ck_assert_int_eq(code, 1);
    dg_test_expect_in(err, "writing the checkpoint (the previous one is kept)");
    dg_test_expect_in(err, "No space left on device");
    ck_assert(!exists("f.dgt"));
    ck_assert_uint_gt(size, 1000000);
    /* the first checkpoint is whole: it resumes (on a disk with room) */
    char copy[2048];
    snprintf(copy, sizeof copy, "cp '%s/small/f.ckpt' '%s/f1.ckpt'", dir, dir);
    ck_assert_int_eq(system(copy), 0);
    ck_assert_int_eq(umount(small), 0);
    ck_assert_int_eq(run("train %s --resume f1.ckpt --epochs 1 --device cpu -q", train), 0);
}
END_TEST

/* --save-best: the model holds the best epoch's weights, i.e. those of a run that stops at
 * that epoch. --early-stop N ends N epochs after the best one. */
START_TEST(save_best_and_early_stop)
{
    char err[512];
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --limit %d --batch 32 --threads 2 --epochs 4 "
                                        "--device cpu --save-best --early-stop 2 -o best.dgt",
                                        train, rows),
                     0);
    ck_assert_int_eq(run("info --model=best.dgt"), 0);
    size_t size;
    char *info = read_file("stdout", &size);
    const char *at_best = strstr(info, "best_epoch=");
    ck_assert_ptr_nonnull(at_best);
    int best = atoi(at_best + 11);
    const char *at_run = strstr(info, "epochs_run=");
    ck_assert_ptr_nonnull(at_run);
    int epochs_run = atoi(at_run + 11);
    ck_assert_ptr_nonnull(strstr(info, "save_best=1"));
    char weights[32];
    snprintf(weights, sizeof weights, "weights_of_epoch=%d", best);
    ck_assert_ptr_nonnull(strstr(info, weights));
    printf("best epoch %d of %d run\n", best, epochs_run);
    ck_assert_int_ge(best, 1);
    if (epochs_run < 4) {
        dg_test_expect_in(err, "stopped early after epoch");
        ck_assert_int_eq(epochs_run, best + 2);
    } else {
        ck_assert_int_ge(best + 2, 4);
    }
    free(info);
    ck_assert_int_eq(run("train %s %s --epochs %d -o upto.dgt", train, TRAIN_ARGS, best), 0);
    probs_of("best.dgt", "best.probs");
    probs_of("upto.dgt", "upto.probs");
    expect_same_model("best", "upto");
}
END_TEST

/* A fresh run over the checkpoint of an interrupted run refuses (exit 2, the checkpoint and
 * the model untouched), naming --resume and --restart; --restart starts over; a finished
 * run's checkpoint is replaced without a word; the final line says the checkpoint is kept. */
START_TEST(a_fresh_run_keeps_an_interrupted_checkpoint)
{
    char err[512];
    /* TRAIN_ARGS without its -q: the final lines */
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err,
                                        "train %s --limit %d --batch 32 --threads 2 --device cpu "
                                        "--epochs 1 -o p.dgt",
                                        train, rows),
                     0);
    dg_test_expect_in(err, "; kept: --resume p.dgt.ckpt --epochs N trains on from epoch 1\n");
    /* finished: replaced by a fresh run */
    ck_assert_int_eq(run("train %s %s --epochs 1 -o p.dgt -q", train, TRAIN_ARGS), 0);
    /* the same checkpoint as planned for 3 epochs: 1 of 3 done, an interrupted run */
    rewrite_checkpoint("p.dgt.ckpt", "q.dgt.ckpt", "epochs=1\n", "epochs=3\n", -1, 0, 0.0f);
    size_t before_size;
    char *before = read_file("q.dgt.ckpt", &before_size);
    ck_assert_int_eq(
        dg_test_run_digits(dir, NULL, err, "train %s %s --epochs 2 -o q.dgt", train, TRAIN_ARGS),
        2);
    char want[3072];
    snprintf(want, sizeof want,
             "digits: train: q.dgt.ckpt: the checkpoint of an interrupted run (1 of 3 epochs done, "
             "on %s) would be replaced; continue it with `digits train %s --resume q.dgt.ckpt`, "
             "or start over with --restart\n",
             train, train);
    dg_test_expect_in(err, want);
    ck_assert(!exists("q.dgt"));
    size_t after_size;
    char *after = read_file("q.dgt.ckpt", &after_size);
    ck_assert_uint_eq(after_size, before_size);
    ck_assert(memcmp(before, after, before_size) == 0);
    free(after);
    /* --restart with --resume is refused; --restart starts over and replaces it */
    ck_assert_int_eq(dg_test_run_digits(dir, NULL, err, "train %s --resume q.dgt.ckpt --restart",
                                        train),
                     2);
    dg_test_expect_in(err, "--restart starts over and --resume continues: give one of them");
    ck_assert_int_eq(run("train %s %s --epochs 1 -o q.dgt --restart -q", train, TRAIN_ARGS), 0);
    ck_assert(exists("q.dgt"));
    after = read_file("q.dgt.ckpt", &after_size);
    ck_assert(after_size != before_size || memcmp(before, after, before_size) != 0);
    free(after);
    free(before);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, resume_after_an_epoch);
    tcase_add_test(tc, resume_of_another_network);
    tcase_add_test(tc, label_smoothing_resumes_and_is_kept);
    tcase_add_test(tc, resume_of_a_batchnorm_network);
    tcase_add_loop_test(tc, optimizer_resumes_and_is_kept, 0, 2);
    tcase_add_test(tc, resume_after_kill_9);
    tcase_add_test(tc, onecycle_resumes_after_kill_9);
    tcase_add_test(tc, ema_resumes_and_is_kept);
    tcase_add_loop_test(tc, resume_after_a_signal, 0, 2);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, refuses_non_finite_state_and_out_of_range_settings);
    tcase_add_test(tc, divergence_guard);
    tcase_add_test(tc, full_disk_keeps_the_previous_checkpoint);
    tcase_add_test(tc, save_best_and_early_stop);
    tcase_add_test(tc, a_fresh_run_keeps_an_interrupted_checkpoint);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
