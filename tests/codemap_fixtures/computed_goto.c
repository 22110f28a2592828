/* A bytecode loop dispatched with computed goto (GNU C "labels as values"), as
 * CPython's eval loop is.  Each handler starts with an assembler label op_NAME.
 * Built -fPIE the label table holds R_X86_64_RELATIVE relocations; built
 * -fno-pic it holds plain addresses and only the `and $3` bound finds them. */
__attribute__((noinline)) int run(const unsigned char *code)
{
    static void *handlers[] = { &&add, &&sub, &&twice, &&halt };
    int acc = 0;
    goto *handlers[*code++ & 3];
add:
    __asm__ volatile("op_add:");
    acc += 3;
    goto *handlers[*code++ & 3];
sub:
    __asm__ volatile("op_sub:");
    acc -= 1;
    goto *handlers[*code++ & 3];
twice:
    __asm__ volatile("op_twice:");
    acc *= 2;
    goto *handlers[*code++ & 3];
halt:
    __asm__ volatile("op_halt:");
    return acc;
}

int main(int argc, char **argv)
{
    (void)argc;
    return run((const unsigned char *)argv[0]);
}
