// C++ exceptions: try/catch and a destructor cleanup give landing pads that only
// the LSDA in .gcc_except_table names.  The test finds them in gcc's assembly
// output (the call-site tables) and in the symbol table (assembled with -L).
#include <cstdio>
#include <stdexcept>

__attribute__((noinline)) int may_throw(int v)
{
    if (v > 3)
        throw std::runtime_error("too big");
    return v + 1;
}

struct Guard {
    int *counter;
    ~Guard() { ++*counter; }
};

__attribute__((noinline)) int catches(int v)
{
    int cleanups = 0;
    try {
        Guard guard{&cleanups};
        return may_throw(v) + may_throw(v + 1);
    } catch (const std::runtime_error &) {
        return -1 - cleanups;
    } catch (...) {
        return -2;
    }
}

int main(int argc, char **)
{
    std::printf("%d\n", catches(argc));
    return 0;
}
