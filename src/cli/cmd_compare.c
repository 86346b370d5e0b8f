/* digits compare (being written). */
#include "cli/cli.h"

#include <stdio.h>

int dg_cmd_compare(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "digits: compare: not available in this build yet\n");
    return 1;
}
