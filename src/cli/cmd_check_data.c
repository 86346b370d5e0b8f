/* digits check_data (being written). */
#include "cli/cli.h"

#include <stdio.h>

int dg_cmd_check_data(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "digits: check_data: not available in this build yet\n");
    return 1;
}
