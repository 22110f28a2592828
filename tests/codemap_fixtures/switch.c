/* A switch dense enough for gcc to emit a jump table.  Each case starts with an
 * assembler label case_N (a local symbol), so the test knows every table target
 * without reading the table: built -fPIE it is the lea/movslq/add/jmp form,
 * built -fno-pic the absolute `jmp *table(,%rdi,8)` form. */
#define CASE(n) case n: __asm__ volatile("case_" #n ":"); return scale(n * 7 + (int)x);

__attribute__((noinline)) int scale(int v) { return v * 3; }

__attribute__((noinline)) int dispatch(unsigned x)
{
    switch (x) {
    CASE(0) CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9)
    default:
        return -1;
    }
}

int main(int argc, char **argv)
{
    (void)argv;
    return dispatch((unsigned)argc);
}
