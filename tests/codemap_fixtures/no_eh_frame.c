/* A freestanding static program without .eh_frame (-nostdlib,
 * -fno-asynchronous-unwind-tables): discovery can only descend from the entry.
 * It still has calls, a loop and a jump table (labels case_N as in switch.c). */
#define CASE(n) case n: __asm__ volatile("case_" #n ":"); return weight(n + (int)x);

__asm__(".globl _start\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov (%rsp), %rdi\n"
        "    and $-16, %rsp\n"
        "    call main\n"
        "    mov %eax, %edi\n"
        "    mov $60, %eax\n"
        "    syscall\n"
        "    hlt\n");

__attribute__((noinline)) int weight(int v) { return v * 5 + 1; }

__attribute__((noinline)) int classify(unsigned x)
{
    switch (x) {
    CASE(0) CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7)
    default:
        return 0;
    }
}

__attribute__((noinline)) int sum(int n)
{
    int total = 0;
    for (int i = 0; i < n; i++)
        total += classify((unsigned)i);
    return total;
}

int main(long argc)
{
    return sum((int)argc) & 0x7f;
}
