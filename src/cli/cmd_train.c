/* digits train (being written). */
#include "cli/cli.h"

#include <stdio.h>

int dg_cmd_train(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "digits: train: not available in this build yet\n");
    return 1;
}
