/* Calls a function pointer into unmapped memory: the kernel would send SIGSEGV. */
int main(void) {
    void (*target)(void) = (void (*)(void))0xdead0000;
    target();
    return 0;
}
