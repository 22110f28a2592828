/* A static PIE: libc linked in, IRELATIVE relocations for its IFUNCs (memcpy,
 * strlen, ...), no PT_INTERP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_value(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

int main(int argc, char **argv)
{
    int values[] = {5, 3, 9, (int)strlen(argv[0]), argc};
    qsort(values, 5, sizeof values[0], by_value);
    printf("%d %d\n", values[0], values[4]);
    return 0;
}
