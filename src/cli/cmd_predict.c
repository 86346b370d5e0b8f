/* digits predict: score a file with a model and write a Kaggle submission (ImageId,Label,
 * ImageId from 1) and optionally the ten class probabilities per image; or score PNG and JPEG
 * pictures (and the pictures of directories), prepared as MNIST's digits were made, and write
 * "FILE: LABEL (probability)" lines or a JSON array. */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"
#include "cli/scoring.h"

#include "digits/io.h"
#include "digits/picture.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *usage_text =
    "usage: digits predict -m model.dgt TEST [-o submission.csv] [--probs FILE]\n"
    "       digits predict -m model.dgt PICTURE|DIR... [-o FILE] [--probs FILE] [--json]\n"
    "                      [--show]\n"
    "\n"
    "Writes the Kaggle submission (ImageId,Label; ImageId from 1) for every image of TEST\n"
    "(Kaggle test.csv[.gz]; a labelled file works too, its labels are ignored; MNIST IDX).\n"
    "\n"
    "Pictures: PNG and JPEG files, told by their content (not their names): any size, bit\n"
    "depth, grayscale, colour or palette, transparency composited over white or black, dark\n"
    "ink on a light background or the reverse. A directory stands for its PNG and JPEG files,\n"
    "sorted by name (not its subdirectories, nor hidden files; other files, and entries that\n"
    "are not regular files such as FIFOs, are skipped with a note). Each picture is prepared\n"
    "as MNIST's digits were made: grayscale, inverted when the ink is darker than the\n"
    "background (the median of the border), cropped to the ink (faint noise ignored), its\n"
    "longer side scaled to 20 pixels, placed in 28x28 with its centre of mass at the centre.\n"
    "One line per picture: FILE: LABEL (probability).\n"
    "A picture that cannot be used (not a PNG or JPEG, truncated or corrupt, empty, blank,\n"
    "over 100 megapixels or 65535 pixels a side) is named on stderr with the reason; the\n"
    "others are still scored and written, and the exit status is 2. A CSV or IDX file is\n"
    "scored alone, not together with pictures.\n"
    "\n"
    "options:\n"
    DG_SCORING_MODEL_HELP
    "  -o, --output FILE    submission or results to write (default: standard output)\n"
    "      --probs FILE     also write the class probabilities: ImageId,p0..p9 (TEST) or\n"
    "                       File,p0..p9 (pictures); - is standard output\n"
    "      --json           pictures: write a JSON array of {\"file\", \"label\",\n"
    "                       \"probability\", \"probabilities\": [p0..p9]} instead of lines;\n"
    "                       bytes of a file name that are not UTF-8 become U+FFFD there\n"
    "      --show           pictures: print each prepared 28x28 image as text on stderr,\n"
    "                       as the network saw it\n"
    "      --labels FILE    IDX label file (accepted for symmetry, ignored; not with pictures)\n"
    DG_SCORING_DATA_HELP
    "      --batch N        images per forward pass (256)\n"
    "      --threads N      CPU threads (all cores)\n"
    "      --device D       auto, cpu, cuda or cuda:N (auto)\n"
    "      --math M         fp32, tf32 (CUDA) or bf16 (AVX512-BF16 CPUs, CUDA cc 8.0+)\n"
    "                       (fp32)\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  digits predict -m model.dgt test.csv -o submission.csv\n"
    "  digits predict -m a.dgt -m b.dgt test.csv --tta -o submission.csv\n"
    "  digits predict -m model.dgt photo.png scans/ --json\n";

/* -o, --probs and the picture mode's options. */
struct picture_options {
    const char *output, *probs_path;
    int json, show;
};

/* Writes the submission (probs = 0) or the probabilities (probs = 1) into an open output. */
static enum dg_status write_csv(struct dg_atomic_file *file, const struct dg_scoring *s,
                                int probs)
{
    if (probs)
        fputs("ImageId,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9\n", file->fp);
    else
        fputs("ImageId,Label\n", file->fp);
    for (size_t i = 0; i < s->dataset.count; i++) {
        if (probs) {
            const float *p = s->probs + i * DG_CLASSES;
            fprintf(file->fp, "%zu", i + 1);
            for (int k = 0; k < DG_CLASSES; k++)
                fprintf(file->fp, ",%.6g", p[k]);
            fputc('\n', file->fp);
        } else {
            fprintf(file->fp, "%zu,%d\n", i + 1, s->predicted[i]);
        }
    }
    if (ferror(file->fp))
        return dg_error(DG_ERR_IO, "%s: write failed: %s",
                        file->fp == stdout ? "stdout" : file->path, strerror(errno));
    return DG_OK;
}

/* The submission and, when asked for, the probabilities: both or neither. Each is written to a
 * temporary file and completed (flushed, synced) before either is renamed into place; when the
 * second rename fails the message says that the first output was written. */
static enum dg_status write_outputs(const char *output, const char *probs_path,
                                    const struct dg_scoring *s)
{
    struct dg_atomic_file sub, probs;
    enum dg_status status;
    memset(&probs, 0, sizeof probs);
    if ((status = dg_atomic_open(&sub, output)) != DG_OK)
        return status;
    if (probs_path && (status = dg_atomic_open(&probs, probs_path)) != DG_OK) {
        dg_atomic_abort(&sub);
        return status;
    }
    if ((probs_path && (status = write_csv(&probs, s, 1)) != DG_OK) ||
        (probs_path && (status = dg_atomic_finish(&probs)) != DG_OK) ||
        (status = write_csv(&sub, s, 0)) != DG_OK || (status = dg_atomic_commit(&sub)) != DG_OK) {
        dg_atomic_abort(&sub);
        dg_atomic_abort(&probs);
        return status;
    }
    if (probs_path && (status = dg_atomic_commit(&probs)) != DG_OK)
        return dg_error_prefix(status, "%s was written, but the probabilities were not",
                               strcmp(output, "-") == 0 ? "the submission (stdout)" : output);
    return DG_OK;
}

/* Refuses -o or --probs naming an input (a -m file, --labels, one of `inputs`) or each other,
 * before anything is read; 0, or the exit code. */
static int check_outputs(const struct dg_scoring_args *args, char *const *inputs, size_t count,
                         const char *what, const struct picture_options *opt)
{
    if (opt->probs_path && strcmp(opt->probs_path, "-") == 0 && strcmp(opt->output, "-") == 0)
        return dg_cli_usage_error("predict",
                                  "--probs - and the predictions (-o, standard output unless "
                                  "given) would both go to standard output; give one of them "
                                  "a file (nothing was written)");
    size_t n = 0, size = (size_t)args->model_path_count + count + 3;
    struct dg_cli_file *files = calloc(size, sizeof *files);
    if (!files)
        return dg_cli_fail(dg_error(DG_ERR_NOMEM, "out of memory"));
    files[n++] = (struct dg_cli_file){opt->output, "-o", 1};
    files[n++] = (struct dg_cli_file){opt->probs_path, "--probs", 1};
    for (int m = 0; m < args->model_path_count; m++)
        files[n++] = (struct dg_cli_file){args->model_paths[m], "the model -m", 0};
    files[n++] = (struct dg_cli_file){args->labels_path, "--labels", 0};
    for (size_t i = 0; i < count; i++)
        files[n++] = (struct dg_cli_file){inputs[i], what, 0};
    int code = dg_cli_check_outputs("predict", files, n);
    free(files);
    return code;
}

/* ---- picture mode ---- */

/* What an operand is: a directory, a picture (by content; a file named *.png, *.jpg, *.jpeg
 * that is not one counts as a bad picture), or a data file (CSV / IDX, or anything else). */
enum operand_kind { OPERAND_DATA, OPERAND_PICTURE, OPERAND_DIR };

/* A picture file name (only used to choose which error a file that is not a picture gets). */
static int picture_name(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot && (strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".jpg") == 0 ||
                   strcasecmp(dot, ".jpeg") == 0);
}

static enum operand_kind classify(const char *path)
{
    struct stat st;
    enum dg_picture_kind kind = DG_PICTURE_UNKNOWN;
    int exists = stat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode))
        return OPERAND_DIR;
    /* only regular files are sniffed: reading a pipe's first bytes would take them from the
     * CSV loader */
    if (exists && S_ISREG(st.st_mode) && dg_picture_kind_of_file(path, &kind) == DG_OK &&
        kind != DG_PICTURE_UNKNOWN)
        return OPERAND_PICTURE;
    return picture_name(path) ? OPERAND_PICTURE : OPERAND_DATA;
}

/* The pictures to score: their paths, prepared images, and which failed. */
struct picture_set {
    char **paths;
    size_t count, capacity;
    uint8_t *images;  /* (count, 784); valid where !failed */
    uint8_t *failed;  /* (count) */
    struct dg_prepare_info *info;
    size_t failures;  /* failed pictures and directories */
    int exit_code;    /* of the failures: 2, or 1 when any was not an input error */
};

static void set_free(struct picture_set *set)
{
    for (size_t i = 0; i < set->count; i++)
        free(set->paths[i]);
    free(set->paths);
    free(set->images);
    free(set->failed);
    free(set->info);
    memset(set, 0, sizeof *set);
}

/* Prints the current error message and counts a failure of `status`. */
static void set_failure(struct picture_set *set, enum dg_status status)
{
    fprintf(stderr, "digits: predict: %s\n", dg_error_message());
    set->failures++;
    int code = dg_status_exit_code(status);
    set->exit_code = code == 1 || set->exit_code == 1 ? 1 : 2;
}

static enum dg_status set_add(struct picture_set *set, const char *path)
{
    if (set->count == set->capacity) {
        size_t capacity = set->capacity ? 2 * set->capacity : 16;
        char **paths = realloc(set->paths, capacity * sizeof *paths);
        if (!paths)
            return dg_error(DG_ERR_NOMEM, "out of memory for %zu pictures", capacity);
        set->paths = paths;
        set->capacity = capacity;
    }
    if (!(set->paths[set->count] = strdup(path)))
        return dg_error(DG_ERR_NOMEM, "out of memory");
    set->count++;
    return DG_OK;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* DIR/NAME (one '/' between them), or NULL when out of memory. */
static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    int slash = n > 0 && dir[n - 1] == '/';
    char *path = malloc(n + strlen(name) + 2);
    if (path)
        sprintf(path, slash ? "%s%s" : "%s/%s", dir, name);
    return path;
}

/* The entry names of `dir` not starting with '.', sorted (strcmp); NULL on failure. */
static char **list_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        dg_error_path(dir, "open the directory", 0, errno);
        return NULL;
    }
    char **names = NULL;
    size_t n = 0, capacity = 0;
    struct dirent *e;
    int ok = 1;
    while (ok && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            char **grown = realloc(names, capacity * sizeof *grown);
            ok = grown != NULL;
            names = grown ? grown : names;
        }
        if (ok && !(names[n] = strdup(e->d_name)))
            ok = 0;
        n += ok;
    }
    closedir(d);
    if (!ok) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        dg_error(DG_ERR_NOMEM, "%s: out of memory listing the directory", dir);
        return NULL;
    }
    if (n > 1)
        qsort(names, n, sizeof *names, compare_names);
    *count = n;
    if (!names && !(names = calloc(1, sizeof *names)))
        dg_error(DG_ERR_NOMEM, "%s: out of memory listing the directory", dir);
    return names;
}

/* Adds the pictures of `dir` (see classify; subdirectories and dangling links skipped, other
 * files skipped with a note on stderr, entries that are not regular files, or links to one,
 * too, without being opened); a directory without any is a failure. */
static enum dg_status add_dir(struct picture_set *set, const char *dir)
{
    size_t n = 0, added = 0;
    char **names = list_dir(dir, &n);
    if (!names) {
        set_failure(set, DG_ERR_IO);
        return DG_OK;
    }
    enum dg_status status = DG_OK;
    for (size_t i = 0; i < n; i++) {
        char *path = join(dir, names[i]);
        struct stat st;
        if (!path)
            status = dg_error(DG_ERR_NOMEM, "out of memory");
        else if (stat(path, &st) != 0 || S_ISDIR(st.st_mode))
            ; /* not recursive; a dangling link is not a picture either */
        else if (!S_ISREG(st.st_mode))
            /* a FIFO, a device, a socket (or a link to one): never opened, a FIFO would
             * block the command forever */
            fprintf(stderr, "digits: predict: %s: skipped (%s, not a regular file)\n", path,
                    S_ISFIFO(st.st_mode)                          ? "a FIFO"
                    : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                    : S_ISSOCK(st.st_mode)                        ? "a socket"
                                                                  : "not a file");
        else if (classify(path) == OPERAND_PICTURE) {
            status = set_add(set, path);
            added++;
        } else
            fprintf(stderr, "digits: predict: %s: skipped (not a PNG or JPEG picture)\n", path);
        free(path);
        free(names[i]);
        if (status != DG_OK) {
            while (++i < n)
                free(names[i]);
        }
    }
    free(names);
    if (status == DG_OK && added == 0) {
        dg_error(DG_ERR_INPUT, "%s: no PNG or JPEG pictures in the directory", dir);
        set_failure(set, DG_ERR_INPUT);
    }
    return status;
}

/* Decodes and prepares every picture of the set (failures printed and counted). */
static enum dg_status prepare_all(struct picture_set *set)
{
    set->images = malloc(set->count * DG_PIXELS + 1);
    set->failed = calloc(set->count + 1, 1);
    set->info = calloc(set->count + 1, sizeof *set->info);
    if (!set->images || !set->failed || !set->info)
        return dg_error(DG_ERR_NOMEM, "out of memory for %zu pictures", set->count);
    for (size_t i = 0; i < set->count; i++) {
        struct dg_picture picture;
        enum dg_status status = dg_picture_load(set->paths[i], &picture);
        if (status == DG_OK &&
            (status = dg_picture_prepare(&picture, set->images + i * DG_PIXELS,
                                         set->info + i)) != DG_OK)
            dg_error_prefix(status, "%s", set->paths[i]);
        dg_picture_free(&picture);
        if (status == DG_ERR_NOMEM)
            return status;
        if (status != DG_OK) {
            set->failed[i] = 1;
            set_failure(set, status);
        }
    }
    return DG_OK;
}

/* The good pictures' images, in order, as a dataset (malloc). */
static enum dg_status good_dataset(const struct picture_set *set, size_t good,
                                   struct dg_dataset *dataset)
{
    memset(dataset, 0, sizeof *dataset);
    dataset->allocator = *dg_allocator_default();
    dataset->images = dataset->allocator.alloc(good * DG_PIXELS, dataset->allocator.ctx);
    if (!dataset->images)
        return dg_error(DG_ERR_NOMEM, "out of memory for %zu pictures", good);
    for (size_t i = 0, k = 0; i < set->count; i++)
        if (!set->failed[i])
            memcpy(dataset->images + DG_PIXELS * k++, set->images + i * DG_PIXELS, DG_PIXELS);
    dataset->count = good;
    dataset->format = DG_FORMAT_CSV_TEST;
    return DG_OK;
}

/* `text` as a CSV field (quoted, quotes doubled, when it holds a comma, quote or line break). */
static void csv_field(FILE *fp, const char *text)
{
    if (!strpbrk(text, ",\"\r\n")) {
        fputs(text, fp);
        return;
    }
    fputc('"', fp);
    for (const char *p = text; *p; p++) {
        if (*p == '"')
            fputc('"', fp);
        fputc(*p, fp);
    }
    fputc('"', fp);
}

enum picture_output { OUT_LINES, OUT_JSON, OUT_PROBS };

/* One output of picture mode: the lines, the JSON array or the probabilities CSV; the k-th
 * good picture has row k of the scoring. */
static enum dg_status write_pictures(struct dg_atomic_file *file, const struct picture_set *set,
                                     const struct dg_scoring *s, enum picture_output kind)
{
    FILE *fp = file->fp;
    if (kind == OUT_JSON)
        fputc('[', fp);
    if (kind == OUT_PROBS)
        fputs("File,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9\n", fp);
    for (size_t i = 0, k = 0; i < set->count; i++) {
        if (set->failed[i])
            continue;
        const float *p = s->probs + k * DG_CLASSES;
        int label = s->predicted[k];
        if (kind == OUT_LINES)
            fprintf(fp, "%s: %d (%.4f)\n", set->paths[i], label, p[label]);
        if (kind == OUT_PROBS)
            csv_field(fp, set->paths[i]);
        if (kind == OUT_JSON) {
            fputs(k ? ",\n  {\"file\": " : "\n  {\"file\": ", fp);
            dg_cli_json_string(fp, set->paths[i]);
            fprintf(fp, ", \"label\": %d, \"probability\": %.6g, \"probabilities\": [", label,
                    p[label]);
        }
        for (int c = 0; kind != OUT_LINES && c < DG_CLASSES; c++)
            fprintf(fp, kind == OUT_JSON ? (c ? ", %.6g" : "%.6g") : ",%.6g", p[c]);
        if (kind != OUT_LINES)
            fputs(kind == OUT_JSON ? "]}" : "\n", fp);
        k++;
    }
    if (kind == OUT_JSON)
        fputs(s->dataset.count ? "\n]\n" : "]\n", fp);
    if (ferror(fp))
        return dg_error(DG_ERR_IO, "%s: write failed: %s", fp == stdout ? "stdout" : file->path,
                        strerror(errno));
    return DG_OK;
}

/* The results and, when asked for, the probabilities: both or neither (as write_outputs). */
static enum dg_status write_picture_outputs(const char *output, const char *probs_path, int json,
                                            const struct picture_set *set,
                                            const struct dg_scoring *s)
{
    struct dg_atomic_file main_file, probs;
    enum dg_status status;
    memset(&probs, 0, sizeof probs);
    if ((status = dg_atomic_open(&main_file, output)) != DG_OK)
        return status;
    if (probs_path && (status = dg_atomic_open(&probs, probs_path)) != DG_OK) {
        dg_atomic_abort(&main_file);
        return status;
    }
    if ((status = write_pictures(&main_file, set, s, json ? OUT_JSON : OUT_LINES)) != DG_OK ||
        (status = dg_atomic_finish(&main_file)) != DG_OK ||
        (probs_path && (status = write_pictures(&probs, set, s, OUT_PROBS)) != DG_OK) ||
        (probs_path && (status = dg_atomic_commit(&probs)) != DG_OK) ||
        (status = dg_atomic_commit(&main_file)) != DG_OK) {
        dg_atomic_abort(&main_file);
        dg_atomic_abort(&probs);
        return status;
    }
    return DG_OK;
}

/* --show: each scored picture's prepared image, two characters a pixel by intensity. */
static void show_pictures(const struct picture_set *set, const struct dg_scoring *s)
{
    static const char ramp[] = " .:-=+*#%@";
    for (size_t i = 0, k = 0; i < set->count; i++) {
        if (set->failed[i])
            continue;
        const struct dg_prepare_info *info = set->info + i;
        const uint8_t *image = set->images + i * DG_PIXELS;
        fprintf(stderr, "%s: %d, as the network saw it (ink %s; box %ux%u at %u,%u -> %dx%d)\n",
                set->paths[i], s->predicted[k++],
                info->inverted ? "dark on light, inverted" : "light on dark",
                (unsigned)info->box_width, (unsigned)info->box_height, (unsigned)info->box_x,
                (unsigned)info->box_y, info->scaled_width, info->scaled_height);
        for (int r = 0; r < 28; r++) {
            fputc('|', stderr);
            for (int c = 0; c < 28; c++) {
                char ch = ramp[image[r * 28 + c] * 10 / 256];
                fputc(ch, stderr);
                fputc(ch, stderr);
            }
            fputs("|\n", stderr);
        }
    }
}

/* The operands as a picture set: pictures as they are, directories expanded. */
static enum dg_status collect(struct picture_set *set, int argc, char **argv)
{
    enum dg_status status = DG_OK;
    for (int i = optind; i < argc && status == DG_OK; i++)
        status = classify(argv[i]) == OPERAND_DIR ? add_dir(set, argv[i])
                                                  : set_add(set, argv[i]);
    return status;
}

/* Picture mode: prepare, score what could be prepared, write; exit 2 (or 1) when any picture
 * or directory failed, after writing the others' results. */
static int predict_pictures(int argc, char **argv, const struct dg_scoring_args *args,
                            const struct picture_options *opt)
{
    struct picture_set set;
    struct dg_scoring scoring;
    struct dg_dataset dataset;
    memset(&set, 0, sizeof set);
    memset(&scoring, 0, sizeof scoring);
    enum dg_status status = collect(&set, argc, argv);
    if (status == DG_OK) {
        /* the pictures are known (directories listed): no output may be one of them */
        int code = check_outputs(args, set.paths, set.count, "the picture", opt);
        if (code) {
            set_free(&set);
            return code;
        }
        status = prepare_all(&set);
    }
    size_t good = 0;
    for (size_t i = 0; status == DG_OK && i < set.count; i++)
        good += !set.failed[i];
    if (status == DG_OK && good > 0 && (status = good_dataset(&set, good, &dataset)) == DG_OK &&
        (status = dg_scoring_run_dataset(&scoring, args, &dataset)) == DG_OK &&
        (status = write_picture_outputs(opt->output, opt->probs_path, opt->json, &set,
                                        &scoring)) == DG_OK) {
        if (opt->show)
            show_pictures(&set, &scoring);
        if (strcmp(opt->output, "-") != 0 && !args->quiet)
            fprintf(stderr, "digits: wrote %zu prediction%s to %s\n", good, good == 1 ? "" : "s",
                    opt->output);
    }
    int code = status == DG_OK ? 0 : dg_cli_fail(status);
    if (status == DG_OK && set.failures > 0) {
        fprintf(stderr, "digits: predict: %zu %s failed (named above); %zu of %zu pictures %s\n",
                set.failures, set.failures == 1 ? "picture or directory" : "pictures or directories",
                good, set.count, good ? "scored" : "scored: nothing was written");
        code = set.exit_code;
    }
    dg_scoring_free(&scoring);
    set_free(&set);
    return code;
}

/* CSV/IDX mode (one data operand) or picture mode; a data file among pictures is refused. */
static int choose_mode(const char *command, int argc, char **argv, int *pictures)
{
    int data = -1, other = 0;
    for (int i = optind; i < argc; i++) {
        if (classify(argv[i]) == OPERAND_DATA)
            data = data < 0 ? i : data;
        else
            other = 1;
    }
    *pictures = other;
    if (other && data >= 0)
        return dg_cli_usage_error(command,
                                  "%s is not a PNG or JPEG picture: a CSV or IDX file is scored "
                                  "alone, not with pictures or directories",
                                  argv[data]);
    return 0;
}

int dg_cmd_predict(int argc, char **argv)
{
    static const struct option long_options[] = {
        DG_SCORING_LONG_OPTIONS,
        {"output", required_argument, NULL, 'o'},
        {"probs", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'J'},
        {"show", no_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dg_scoring_args args;
    dg_scoring_args_default(&args);
    struct picture_options popt = {"-", NULL, 0, 0};
    int opt, taken, pictures = 0;
    static const char short_options[] = "m:o:qvh";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        if ((taken = dg_scoring_option("predict", opt, optarg, &args)) != 0) {
            if (taken < 0)
                return 2;
            continue;
        }
        switch (opt) {
        case 'o':
            popt.output = optarg;
            break;
        case 'p':
            popt.probs_path = optarg;
            break;
        case 'J':
            popt.json = 1;
            break;
        case 'S':
            popt.show = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return dg_cli_bad_option("predict", argv, short_options, long_options);
        }
    }
    if (args.model_path_count > 0 && optind < argc &&
        choose_mode("predict", argc, argv, &pictures) != 0)
        return 2;
    if (pictures) {
        if (args.held_out || args.labels_path || args.limit)
            return dg_cli_usage_error("predict", "%s is for a CSV or IDX file, not pictures",
                                      args.held_out      ? "--held-out"
                                      : args.labels_path ? "--labels"
                                                         : "--limit");
        return predict_pictures(argc, argv, &args, &popt);
    }
    if (popt.json || popt.show)
        return dg_cli_usage_error("predict", "%s is for pictures (PNG, JPEG), not a CSV or IDX "
                                             "file",
                                  popt.json ? "--json" : "--show");
    int code = dg_scoring_check_operands("predict", "TEST", argc, &args);
    if (code)
        return code;
    const char *output = popt.output, *probs_path = popt.probs_path;
    if ((code = check_outputs(&args, argv + optind, 1, "the TEST file", &popt)) != 0)
        return code;
    struct dg_scoring scoring;
    enum dg_status status =
        dg_scoring_run(&scoring, &args, argv[optind]);
    if (status == DG_OK)
        status = write_outputs(output, probs_path, &scoring);
    if (status == DG_OK && strcmp(output, "-") != 0 && !args.quiet)
        fprintf(stderr, "digits: wrote %zu prediction%s to %s\n", scoring.dataset.count,
                scoring.dataset.count == 1 ? "" : "s", output);
    /* Kaggle's test.csv has no labels: a labelled file is more likely train.csv by mistake */
    if (status == DG_OK && scoring.dataset.labels && !args.held_out && !args.quiet)
        fprintf(stderr,
                "digits: predict: note: %s is labelled (the train layout), so these are "
                "predictions of its %zu rows, not a Kaggle submission of test.csv; `digits eval` "
                "scores a labelled file\n",
                argv[optind], scoring.dataset.count);
    dg_scoring_free(&scoring);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
