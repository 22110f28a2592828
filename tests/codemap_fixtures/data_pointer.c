/* `secret` is reached only through a function pointer initialised in .data: in
 * a PIE that pointer is an R_X86_64_RELATIVE relocation, the only thing in the
 * (stripped, unwind-table-free) file that names the function. */
__attribute__((noinline)) static int secret(int v)
{
    return v * 11 + 7;
}

int (*volatile hook)(int) = secret;

int main(int argc, char **argv)
{
    (void)argv;
    return hook(argc);
}
