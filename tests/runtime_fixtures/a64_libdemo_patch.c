/* Rewrites a function of a (cached) shared library in place: mprotect RW, write, mprotect RX, call again. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
int demo_value(int x);
int main(void) {
    printf("before %d\n", demo_value(100));
    uintptr_t start = (uintptr_t)demo_value & ~(uintptr_t)4095;
    uintptr_t end = ((uintptr_t)demo_value + 6 + 4095) & ~(uintptr_t)4095;
    static const unsigned char patch[] = {0xb8, 0x92, 0x10, 0x00, 0x00, 0xc3}; /* mov eax, 4242; ret */
    if (mprotect((void *)start, end - start, PROT_READ | PROT_WRITE) != 0) { perror("mprotect rw"); return 1; }
    memcpy((void *)demo_value, patch, sizeof patch);
    if (mprotect((void *)start, end - start, PROT_READ | PROT_EXEC) != 0) { perror("mprotect rx"); return 1; }
    printf("after %d\n", demo_value(100));
    return 0;
}
