/* digits report: the page's content against `digits eval` of the same rows (held-out rows of
 * the training file by default, every row with --all or when the data is not the training
 * data), the training history the model file stores, an ensemble, a model without history,
 * the refusals, the PNG encoder against libpng's decoder, and the page rendered by headless
 * Chromium (skipped, saying so, when it is not installed): no console message, a screenshot
 * that is not blank. The page's accuracy must equal eval's to the printed digit, so the
 * models are trained and scored with --device cpu (under --device auto a GPU machine would use
 * CUDA, whose two processes may pick different algorithms and flip a near tie). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "cli_util.h"
#include "digits/io.h"
#include "digits/png.h"
#include "digits/report.h"
#include "digits/train.h"

static char dir[256];
static char train[1024];
static int rows; /* the model's training rows (--limit) */

static void setup(void)
{
    dg_test_dir_create(dir, sizeof dir, "report");
    const char *source = getenv("DIGITS_SOURCE_DIR");
    ck_assert_ptr_nonnull(source);
    snprintf(train, sizeof train, "%s/data/sample/train.csv.gz", source);
    rows = getenv("DIGITS_TEST_SANITIZED") ? 300 : 1000;
}

static void teardown(void)
{
    dg_test_dir_remove(dir);
}

#define run(err, ...) dg_test_run_digits(dir, NULL, err, __VA_ARGS__)
#define at(name) dg_test_dir_path(dir, name)

/* Occurrences of needle in text. */
static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* The page shows the accuracy `digits eval` printed (its stdout in DIR/stdout). */
static void expect_eval_accuracy(const char *page)
{
    char *out = dg_test_slurp(at("stdout"));
    const char *p = strstr(out, "accuracy: ");
    ck_assert_ptr_nonnull(p);
    char accuracy[64];
    snprintf(accuracy, sizeof accuracy, "accuracy %.4f</div>", strtod(p + 10, NULL));
    free(out);
    ck_assert_msg(strstr(page, accuracy), "the page lacks '%s'", accuracy);
}

static void train_model(const char *name, int epochs, const char *extra)
{
    char err[512];
    ck_assert_int_eq(run(err, "train %s --limit %d --epochs %d --batch 32 --device cpu "
                              "--no-checkpoint -q -o %s %s",
                         train, rows, epochs, name, extra),
                     0);
}

START_TEST(report_of_the_training_file)
{
    char err[512];
    train_model("m.dgt", 3, "");
    ck_assert_int_eq(run(err, "report -m m.dgt %s --device cpu -o r.html", train), 0);
    char expected[160];
    int held = rows / 10;
    snprintf(expected, sizeof expected, "wrote r.html (%d images, the %d validation rows held out",
             held, held);
    dg_test_expect_in(err, expected);
    char *page = dg_test_slurp(at("r.html"));
    /* the same accuracy as eval of the same held-out rows */
    ck_assert_int_eq(run(err, "eval -m m.dgt --held-out %s --device cpu", train), 0);
    expect_eval_accuracy(page);
    /* self-contained: a policy that forbids fetching, no script, no external reference */
    ck_assert_ptr_nonnull(strstr(page, "Content-Security-Policy\" content=\"default-src 'none'"));
    ck_assert_int_eq(count_of(page, "<script"), 0);
    ck_assert_int_eq(count_of(page, "http://") + count_of(page, "https://"), 0);
    /* two charts, each with a training (dashed) and a validation line of 3 epochs */
    ck_assert_int_eq(count_of(page, "<svg class=\"chart\""), 2);
    ck_assert_int_eq(count_of(page, "stroke-dasharray=\"6 4\""), 2);
    ck_assert_int_eq(count_of(page, "<polyline"), 4);
    ck_assert_int_eq(count_of(page, "<circle"), 4 * 3);
    /* the confusion matrix: 100 cells whose counts add up to the rows scored */
    ck_assert_int_eq(count_of(page, "<rect x="), 100);
    int total = 0;
    for (const char *p = page; (p = strstr(p, "</title></rect>")) != NULL; p++) {
        const char *colon = p;
        while (*colon != ':')
            colon--;
        total += atoi(colon + 1);
    }
    ck_assert_int_eq(total, held);
    /* the wrong images, at most --top, each a PNG */
    ck_assert_int_ge(count_of(page, "data:image/png;base64,"), 1);
    ck_assert_ptr_nonnull(strstr(page, "<h2>The most confidently wrong images</h2>"));
    /* augmentation sheet: 6 originals and 5 copies of each */
    ck_assert_int_eq(count_of(page, "alt=\"training image\""), 6);
    ck_assert_int_eq(count_of(page, "alt=\"augmented\""), 30);
    /* layers, settings, speed */
    ck_assert_ptr_nonnull(strstr(page, "<td>887530</td>"));
    ck_assert_ptr_nonnull(strstr(page, "<th>split_seed</th><td>42</td>"));
    ck_assert_ptr_nonnull(strstr(page, "Training speed: median "));
    ck_assert_ptr_null(strstr(page, "<th>history</th>"));
    free(page);

    /* --all: every row of the file, eval's accuracy over all of them */
    ck_assert_int_eq(run(err, "report -m m.dgt %s --all --top 5 --device cpu -o all.html", train),
                     0);
    dg_test_expect_in(err, "(5000 images, all 5000 rows)");
    ck_assert_int_eq(run(err, "eval -m m.dgt %s --all --device cpu", train), 0);
    page = dg_test_slurp(at("all.html"));
    expect_eval_accuracy(page);
    ck_assert_int_eq(count_of(page, "alt=\"a "), 5);
    free(page);
}
END_TEST

/* A copy of the training file with one pixel changed is not the training data: every row is
 * scored (and said why); eval --held-out refuses it. */
START_TEST(other_data_is_scored_whole)
{
    char err[512];
    train_model("m.dgt", 1, "");
    gzFile in = gzopen(train, "rb");
    ck_assert_ptr_nonnull(in);
    FILE *out = fopen(at("other.csv"), "w");
    ck_assert_ptr_nonnull(out);
    char line[8192];
    for (int n = 0; gzgets(in, line, sizeof line) && n <= rows; n++) {
        if (n == 1) { /* the first image's first pixel: "label,0,..." -> "label,7,..." */
            char *comma = strchr(line, ',');
            ck_assert(comma && comma[1] == '0' && comma[2] == ',');
            comma[1] = '7';
        }
        fputs(line, out);
    }
    gzclose(in);
    ck_assert_int_eq(fclose(out), 0);
    ck_assert_int_eq(run(err, "report -m m.dgt other.csv -o o.html"), 0);
    char expected[256];
    snprintf(expected, sizeof expected, "(%d images, all %d rows (other.csv: not the model's "
                                        "training data",
             rows, rows);
    dg_test_expect_in(err, expected);
    ck_assert_int_eq(run(err, "eval -m m.dgt --held-out other.csv"), 2);
    dg_test_expect_in(err, "other.csv: not the model's training data (its first");
}
END_TEST

START_TEST(ensemble_report)
{
    char err[512];
    train_model("e.dgt", 2, "--ensemble 2");
    ck_assert_int_eq(run(err, "report -m e.dgt %s --device cpu -o e.html", train), 0);
    char *page = dg_test_slurp(at("e.html"));
    ck_assert_ptr_nonnull(strstr(page, "(an ensemble of 2)"));
    ck_assert_ptr_nonnull(strstr(page, "<h2>Members</h2>"));
    ck_assert_ptr_nonnull(strstr(page, "member 2 of e.dgt"));
    /* both members' curves: 2 charts x 2 members x (training + validation) */
    ck_assert_int_eq(count_of(page, "<polyline"), 8);
    ck_assert_int_eq(run(err, "eval -m e.dgt --held-out %s --device cpu", train), 0);
    expect_eval_accuracy(page);
    free(page);
}
END_TEST

/* A model file that stores no history (as files from before it was kept): the page says so. */
START_TEST(model_without_history)
{
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    struct dg_model model;
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    dg_model_init_glorot(&model, 7);
    char path[1024];
    snprintf(path, sizeof path, "%s", at("old.dgt"));
    ck_assert_int_eq(dg_model_save(path, &model, "digits_version=0.1.0\nrows=500\nseed=7\n"), DG_OK);
    dg_model_free(&model);
    char err[512];
    ck_assert_int_eq(run(err, "report -m old.dgt %s --top 3 -o old.html", train), 0);
    /* no split recorded: every row */
    dg_test_expect_in(err, "all 5000 rows (old.dgt: the model does not record its split");
    dg_test_expect_in(at("old.html"), "No training history is stored in old.dgt");
    char *page = dg_test_slurp(at("old.html"));
    ck_assert_int_eq(count_of(page, "<svg class=\"chart\""), 0);
    free(page);
}
END_TEST

START_TEST(refusals)
{
    char err[512];
    train_model("m.dgt", 1, "");
    const char *source = getenv("DIGITS_SOURCE_DIR");
    /* unlabelled data */
    ck_assert_int_eq(run(err, "report -m m.dgt %s/data/sample/test.csv.gz -o t.html", source), 2);
    dg_test_expect_in(err, "has no labels (test layout); a report needs the train layout");
    ck_assert_int_ne(access(at("t.html"), F_OK), 0);
    /* options */
    ck_assert_int_eq(run(err, "report %s", train), 2);
    dg_test_expect_in(err, "missing -m MODEL");
    ck_assert_int_eq(run(err, "report -m m.dgt %s --top -1", train), 2);
    dg_test_expect_in(err, "--top");
    ck_assert_int_eq(run(err, "report -m m.dgt %s --held-out", train), 2);
    dg_test_expect_in(err, "--held-out is what report does by default");
    ck_assert_int_eq(run(err, "report -m missing.dgt %s", train), 2);
    dg_test_expect_in(err, "missing.dgt: cannot open");
    /* an output that cannot be written: nothing left behind */
    ck_assert_int_eq(run(err, "report -m m.dgt %s -o nodir/r.html", train), 2);
    dg_test_expect_in(err, "nodir/r.html: cannot create: No such file or directory (its "
                           "directory does not exist: create it, or choose another path)");
    ck_assert_int_ne(access(at("nodir"), F_OK), 0);
}
END_TEST

/* dg_png_encode_gray against libpng's own decoder: the same pixels. */
START_TEST(png_round_trip)
{
    const int width = 37, height = 5;
    unsigned char pixels[37 * 5];
    for (int i = 0; i < width * height; i++)
        pixels[i] = (unsigned char)(i * 7 + 3);
    unsigned char *png = NULL;
    size_t size = 0;
    ck_assert_int_eq(dg_png_encode_gray(pixels, width, height, &png, &size), DG_OK);
    ck_assert_mem_eq(png, "\x89PNG\r\n\x1a\n", 8);
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    ck_assert(png_image_begin_read_from_memory(&image, png, size));
    ck_assert_int_eq(image.width, width);
    ck_assert_int_eq(image.height, height);
    image.format = PNG_FORMAT_GRAY;
    unsigned char decoded[37 * 5];
    ck_assert(png_image_finish_read(&image, NULL, decoded, 0, NULL));
    ck_assert_mem_eq(decoded, pixels, sizeof pixels);
    free(png);
    ck_assert_int_eq(dg_png_encode_gray(pixels, 0, 5, &png, &size), DG_ERR_USAGE);
}
END_TEST

/* Headless Chromium opens the page: no console message (a blocked fetch or a script error
 * would print one), and a screenshot with the page's content on it. */
START_TEST(rendered_in_a_browser)
{
    const char *browser = NULL;
    static const char *names[] = {"chromium", "chromium-browser", "google-chrome"};
    char command[4096];
    for (int i = 0; i < 3 && !browser; i++) {
        snprintf(command, sizeof command, "command -v %s >/dev/null 2>&1", names[i]);
        if (system(command) == 0)
            browser = names[i];
    }
    if (!browser) {
        printf("SKIP browser: no chromium on the PATH (Debian: apt-get install chromium; "
               "scripts/test installs it as root)\n");
        return;
    }
    char err[512];
    train_model("m.dgt", 2, "");
    ck_assert_int_eq(run(err, "report -m m.dgt %s -o page.html", train), 0);
    snprintf(command, sizeof command,
             "cd '%s' && HOME='%s' timeout 120 %s --headless --no-sandbox --disable-gpu "
             "--hide-scrollbars --user-data-dir='%s/profile' --enable-logging=stderr --v=0 "
             "--window-size=1200,1800 --screenshot='%s/shot.png' 'file://%s/page.html' "
             ">browser.out 2>browser.err",
             dir, dir, browser, dir, dir, dir);
    int status = system(command);
    char *log = dg_test_slurp(at("browser.err"));
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (%d):\n%s", browser,
                  status, log);
    ck_assert_msg(strstr(log, "CONSOLE") == NULL, "console messages:\n%s", log);
    free(log);
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    ck_assert_msg(png_image_begin_read_from_file(&image, at("shot.png")), "no screenshot");
    image.format = PNG_FORMAT_GRAY;
    size_t n = (size_t)image.width * image.height;
    unsigned char *gray = malloc(n);
    ck_assert_ptr_nonnull(gray);
    ck_assert(png_image_finish_read(&image, NULL, gray, 0, NULL));
    size_t dark = 0, levels = 0;
    size_t histogram[256] = {0};
    for (size_t i = 0; i < n; i++) {
        dark += gray[i] < 128;
        histogram[gray[i]]++;
    }
    for (int v = 0; v < 256; v++)
        levels += histogram[v] > 0;
    free(gray);
    printf("screenshot %ux%u: %.1f%% dark pixels, %zu grey levels\n", image.width, image.height,
           100.0 * (double)dark / (double)n, levels);
    ck_assert_int_eq(image.width, 1200);
    /* text, charts, the heat map and the black digit images: a blank page has none of it */
    ck_assert_msg(dark > n / 50, "the screenshot is nearly blank (%zu dark pixels of %zu)", dark,
                  n);
    ck_assert_int_ge(levels, 64);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("report");
    TCase *tc = tcase_create("report");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, png_round_trip);
    tcase_add_test(tc, report_of_the_training_file);
    tcase_add_test(tc, other_data_is_scored_whole);
    tcase_add_test(tc, ensemble_report);
    tcase_add_test(tc, model_without_history);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, rendered_in_a_browser);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
