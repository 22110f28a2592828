/* A shared library for the symbol-based check: several functions, a jump table,
 * computed goto, a function pointer table, static helpers (local symbols only in
 * .symtab) and a constructor. */
static int counter;

__attribute__((constructor)) static void setup(void) { counter = 1; }

__attribute__((noinline)) static int square(int v) { return v * v; }
__attribute__((noinline)) static int negate(int v) { return -v; }
__attribute__((noinline)) static int halve(int v) { return v / 2; }

static int (*const operations[])(int) = { square, negate, halve };

int apply(unsigned which, int v)
{
    return which < 3 ? operations[which](v) : v;
}

int month_days(unsigned month)
{
    switch (month) {
    case 1: return 31; case 2: return 28 + counter; case 3: return 31;
    case 4: return square(5) + 5; case 5: return 31; case 6: return negate(-30);
    case 7: return 31; case 8: return 31 + counter; case 9: return halve(60);
    case 10: return 31; case 11: return 30; case 12: return 31 * counter;
    default: return -1;
    }
}

int interpret(const unsigned char *code)
{
    static void *handlers[] = { &&inc, &&dec, &&done, &&done };
    int acc = 0;
    goto *handlers[*code++ & 3];
inc:
    acc += square(acc + 1);
    goto *handlers[*code++ & 3];
dec:
    acc -= 1;
    goto *handlers[*code++ & 3];
done:
    return acc;
}
