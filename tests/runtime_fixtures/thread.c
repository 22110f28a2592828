/* Starts a thread: the runtime refuses threads with an error naming the call. */
#include <pthread.h>
#include <stdio.h>

static void *work(void *arg) { return arg; }

int main(void) {
    pthread_t thread;
    void *result = NULL;
    if (pthread_create(&thread, NULL, work, (void *)42) != 0)
        return 1;
    pthread_join(thread, &result);
    printf("thread returned %ld\n", (long)result);
    return 0;
}
