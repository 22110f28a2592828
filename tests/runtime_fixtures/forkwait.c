/* fork, a pipe from the child to the parent, waitpid and the child's status. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    int fds[2];
    if (pipe(fds) != 0)
        return 100;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 101;
    if (pid == 0) {
        close(fds[0]);
        char message[64];
        snprintf(message, sizeof message, "child sees getppid() == parent: %d\n", getppid() > 1);
        write(fds[1], message, strlen(message));
        _exit(7);
    }
    close(fds[1]);
    char buffer[128];
    ssize_t n = read(fds[0], buffer, sizeof buffer);
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return 102;
    printf("parent read %zd bytes: %.*s", n, (int)n, buffer);
    printf("child exited normally: %d, status %d\n", WIFEXITED(status), WEXITSTATUS(status));
    return 5;
}
