/* The build links and the status helpers map to exit codes. */
#include <check.h>
#include <stdlib.h>

#include "cli_util.h"
#include "digits/status.h"

START_TEST(status_exit_codes)
{
    ck_assert_int_eq(dg_status_exit_code(DG_OK), 0);
    ck_assert_int_eq(dg_status_exit_code(DG_ERR_INPUT), 2);
    ck_assert_int_eq(dg_status_exit_code(DG_ERR_USAGE), 2);
    ck_assert_int_eq(dg_status_exit_code(DG_ERR_IO), 1);
    ck_assert_int_eq(dg_status_exit_code(DG_ERR_DEVICE), 1);
    dg_error(DG_ERR_INPUT, "a.csv:%d:%d: bad", 3, 7);
    dg_error_prefix(DG_ERR_INPUT, "loading");
    ck_assert_str_eq(dg_error_message(), "loading: a.csv:3:7: bad");
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("smoke");
    TCase *tc = tcase_create("status");
    tcase_add_test(tc, status_exit_codes);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
