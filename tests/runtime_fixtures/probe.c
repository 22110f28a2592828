/* Exercises what a static or static-PIE program needs from the runtime: the
 * initial stack (argv, envp, auxv), TLS through FS, brk and mmap through
 * malloc, glibc's IFUNC string routines (chosen from CPUID), stdio, x87 and
 * SSE arithmetic.  Prints only what native execution prints the same way, and
 * exits with the status given as its first argument. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

static __thread int tls_counter = 40;

static int compare(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        printf("argv[%d] = %s\n", i, i == 0 ? "(program)" : argv[i]);
    const char *probe = getenv("FEXAOT_PROBE");
    printf("FEXAOT_PROBE = %s\n", probe ? probe : "(unset)");
    printf("AT_PAGESZ = %lu, AT_SECURE = %lu, AT_PHENT = %lu\n", getauxval(AT_PAGESZ), getauxval(AT_SECURE),
           getauxval(AT_PHENT));
    printf("AT_PLATFORM = %s\n", (const char *)getauxval(AT_PLATFORM));

    tls_counter += 2;
    printf("tls = %d\n", tls_counter);

    /* Small blocks come from brk, big ones from mmap. */
    size_t total = 0;
    char *blocks[64];
    for (int i = 0; i < 64; i++) {
        size_t size = (size_t)(i + 1) * 4096 * (i % 8 == 7 ? 64 : 1);
        blocks[i] = malloc(size);
        memset(blocks[i], 'a' + i % 26, size);
        blocks[i][size - 1] = 0;
        total += strlen(blocks[i]);
    }
    blocks[3] = realloc(blocks[3], 1 << 22);
    for (int i = 0; i < 64; i++)
        free(blocks[i]);
    printf("strlen total = %zu\n", total);

    int values[1000];
    for (int i = 0; i < 1000; i++)
        values[i] = (i * 7919) % 1000;
    qsort(values, 1000, sizeof values[0], compare);
    printf("sorted: %d %d %d\n", values[0], values[500], values[999]);

    volatile double x = 2.0;
    long double e = 1.0L;
    for (int i = 1; i < 20; i++)
        e += 1.0L / tgammal(i + 1);
    printf("sqrt(2) = %.15f, e = %.15Lf, sin(1) = %.12f\n", sqrt(x), e, sin(1.0));

    char buffer[128];
    snprintf(buffer, sizeof buffer, "%s/%d/%x/%.3e", "fmt", -42, 0xbeef, 6.02214076e23);
    printf("%s\n", buffer);
    fflush(stdout);
    fprintf(stderr, "to stderr: %zu\n", strlen(buffer));
    return argc > 1 ? atoi(argv[1]) : 0;
}
