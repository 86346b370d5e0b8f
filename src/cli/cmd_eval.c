/* digits eval (being written). */
#include "cli/cli.h"

#include <stdio.h>

int dg_cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "digits: eval: not available in this build yet\n");
    return 1;
}
