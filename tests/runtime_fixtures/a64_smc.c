/* Generated code rewritten in place: an RWX page whose instructions change between calls.
 * A runtime that keeps a stale translation prints the old results. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

typedef int (*function)(int);

/* mov eax, imm32; add eax, edi; ret */
static void emit_add(unsigned char *code, int value) {
    code[0] = 0xb8;
    memcpy(code + 1, &value, 4);
    code[5] = 0x01; code[6] = 0xf8;
    code[7] = 0xc3;
}

int main(void) {
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return 1;
    long total = 0;
    for (int round = 0; round < 40; round++) {
        emit_add(page, round * 3);
        int first = ((function)page)(round);
        /* A second function on the same page, written after the first one ran. */
        emit_add(page + 64, -round);
        int second = ((function)(page + 64))(1000);
        total += first + second;
        if (round % 10 == 0)
            printf("round %d: %d %d\n", round, first, second);
    }
    /* Rewrite only the immediate of the first function, keep the rest. */
    int value = 777;
    memcpy(page + 1, &value, 4);
    printf("patched: %d\n", ((function)page)(1));
    printf("total %ld\n", total);
    return 0;
}
