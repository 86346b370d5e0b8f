/* Test support library anchor (helpers are added beside it). */
int dg_test_support_anchor;
