/* x87 through translated code: long double arithmetic and libm's long double
 * functions, conversions to and from float, double and integers in every
 * rounding mode and at reduced precision, compares, and the printing of long
 * doubles (printf's %La/%Lg go through x87 code in glibc).  Every result is
 * printed exactly (hexadecimal floating point), so any bit that differs from
 * the native run shows.  No transcendental functions: the reference engine
 * (QEMU's x87) computes f2xm1/fyl2x/fpatan/fprem through host doubles, so
 * they differ from the CPU's in the last bits whichever engine runs them. */
#include <fenv.h>
#include <fpu_control.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static volatile long double inputs[] = {
    1.0L, -2.5L, 3.14159265358979323846264338327950288L, 1e-4940L, 1e4930L, 0.1L, -0.0L,
    1.0000000000000000001L, 123456789.123456789L, 2.5L, -3.5L, 4503599627370496.5L, 1e-310L,
    9223372036854775807.0L, -9223372036854775808.0L, 65535.5L, -32768.49L,
};
static const int modes[] = {FE_TONEAREST, FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO};

static void arithmetic(void) {
    unsigned n = sizeof inputs / sizeof inputs[0];
    for (unsigned i = 0; i < n; i++) {
        for (unsigned j = 0; j < n; j += 3) {
            long double a = inputs[i], b = inputs[j];
            printf("%La %La %La %La|", a + b, a - b, a * b, a / b);
        }
        printf("%La %La\n", sqrtl(fabsl(inputs[i])), rintl(inputs[i]));
    }
}

static void conversions(void) {
    unsigned n = sizeof inputs / sizeof inputs[0];
    for (unsigned m = 0; m < 4; m++) {
        fesetround(modes[m]);
        for (unsigned i = 0; i < n; i++) {
            long double x = inputs[i];
            volatile double d = (double)x;
            volatile float f = (float)x;
            printf("%a %a %lld %ld %d|", d, (double)f, llrintl(x), lrintl(x), (int)x);
            volatile long long k = (long long)(x * 3);
            printf("%La %La\n", (long double)k, (long double)(int16_t)k);
        }
    }
    fesetround(FE_TONEAREST);
}

static void precision(void) {
    fpu_control_t saved, cw;
    _FPU_GETCW(saved);
    const unsigned short pcs[] = {_FPU_SINGLE, _FPU_DOUBLE, _FPU_EXTENDED};
    for (unsigned p = 0; p < 3; p++) {
        cw = (saved & ~_FPU_EXTENDED) | pcs[p];
        _FPU_SETCW(cw);
        volatile long double third = 1.0L / 3.0L, big = inputs[8] * inputs[2];
        long double sum = third + big;
        _FPU_SETCW(saved);
        printf("pc%u %La %La %La\n", p, third, big, sum);
    }
}

static void functions(void) {
    for (int i = 1; i < 12; i++) {
        long double x = i * 0.37L;
        int exponent;
        long double fraction = frexpl(x * 1e300L, &exponent);
        printf("%.21Lg %La %d %La %La %La %La %La\n", hypotl(x, 1.0L), fraction, exponent, ldexpl(x, 5000),
               floorl(-x), ceill(x), roundl(x * 2), fmal(x, x, -1.0L));
    }
}

static void compares(void) {
    volatile long double nan = __builtin_nanl(""), values[] = {1.0L, -1.0L, 0.0L, -0.0L, 1.0L / 0.0L};
    int count = 0;
    for (unsigned i = 0; i < 5; i++)
        for (unsigned j = 0; j < 5; j++)
            count = count * 3 + (values[i] < values[j]) + 2 * (values[i] == values[j]);
    printf("compares %d %d %d %d\n", count, nan == nan, nan < 1.0L, isnan(nan));
}

int main(void) {
    arithmetic();
    conversions();
    precision();
    functions();
    compares();
    long double e = 0.0L, term = 1.0L;
    for (int i = 1; i < 25; i++) {
        e += term;
        term /= i;
    }
    printf("e = %.20Lf\n", e);
    return 0;
}
