/* digits info (being written). */
#include "cli/cli.h"

#include <stdio.h>

int dg_cmd_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "digits: info: not available in this build yet\n");
    return 1;
}
