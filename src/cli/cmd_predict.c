/* digits predict (being written). */
#include "cli/cli.h"

#include <stdio.h>

int dg_cmd_predict(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "digits: predict: not available in this build yet\n");
    return 1;
}
