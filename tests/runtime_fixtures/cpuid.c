/* Prints what CPUID says: the runtime must answer with its documented model. */
#include <cpuid.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    unsigned int eax, ebx, ecx, edx;
    char vendor[13];
    __cpuid(0, eax, ebx, ecx, edx);
    memcpy(vendor, &ebx, 4);
    memcpy(vendor + 4, &edx, 4);
    memcpy(vendor + 8, &ecx, 4);
    vendor[12] = 0;
    printf("max_leaf=%u vendor=%s\n", eax, vendor);
    __cpuid(1, eax, ebx, ecx, edx);
    printf("leaf1 eax=%#x ecx=%#x edx=%#x\n", eax, ecx, edx);
    __cpuid(0x80000001, eax, ebx, ecx, edx);
    printf("leaf80000001 ecx=%#x edx=%#x\n", ecx, edx);
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    printf("leaf7 ebx=%#x ecx=%#x edx=%#x\n", ebx, ecx, edx);
    __builtin_cpu_init();
    printf("sse2=%d sse3=%d avx2=%d\n", __builtin_cpu_supports("sse2") != 0, __builtin_cpu_supports("sse3") != 0,
           __builtin_cpu_supports("avx2") != 0);
    return 0;
}
