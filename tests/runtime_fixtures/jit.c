/* A tiny JIT: writes code into anonymous memory, runs it, rewrites it and runs it again.
 * The runtime must attribute the code to anonymous memory and drop its stale translation. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

typedef int (*function)(void);

static void emit_return(unsigned char *code, int value) {
    code[0] = 0xb8; /* mov eax, imm32 */
    memcpy(code + 1, &value, 4);
    code[5] = 0xc3; /* ret */
}

int main(void) {
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED)
        return 1;
    int total = 0;
    for (int round = 1; round <= 3; round++) {
        emit_return(code, 1000 * round);
        mprotect(code, 4096, PROT_READ | PROT_EXEC); /* W^X: write, then execute */
        for (int i = 0; i < 10; i++)
            total += ((function)code)();
        printf("round %d: %d\n", round, ((function)code)());
        mprotect(code, 4096, PROT_READ | PROT_WRITE);
    }
    unsigned char *rwx = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    emit_return(rwx, 7);
    int first = ((function)rwx)();
    emit_return(rwx, 8); /* rewritten in place, without mprotect */
    printf("rwx: %d then %d\n", first, ((function)rwx)());
    printf("total %d\n", total);
    return 0;
}
