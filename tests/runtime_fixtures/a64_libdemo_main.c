#include <stdio.h>
int demo_value(int x);
int main(void) {
    printf("demo %d\n", demo_value(100));
    return 0;
}
