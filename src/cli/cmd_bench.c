/* digits bench (being written). */
#include "cli/cli.h"

#include <stdio.h>

int dg_cmd_bench(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "digits: bench: not available in this build yet\n");
    return 1;
}
