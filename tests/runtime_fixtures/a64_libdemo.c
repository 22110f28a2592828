/* A shared library in two versions (DEMO_VERSION): a cache built for one must not be used for the other. */
int demo_value(int x) {
    int sum = 0;
    for (int i = 0; i < x; i++)
        sum += i * DEMO_VERSION;
    return sum + DEMO_VERSION;
}
