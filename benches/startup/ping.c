/* The floor for `xrat daemon status` as a whole process: connect to the daemon's socket, send
 * one daemon_ping, read the reply line, print it. What a 30-line C client costs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(void) {
    const char *root = getenv("XRAT_ROOT");
    if (!root) { fputs("XRAT_ROOT is not set\n", stderr); return 2; }
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s/runtime/daemon.sock", root);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("connect"); return 3; }
    static const char req[] = "{\"protocol_version\":1,\"id\":1,\"request\":{\"type\":\"daemon_ping\"}}\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) { perror("write"); return 1; }
    char buf[4096];
    size_t len = 0;
    while (len < sizeof buf) {
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n <= 0) { fputs("no reply\n", stderr); return 1; }
        len += (size_t)n;
        if (memchr(buf, '\n', len)) break;
    }
    fwrite(buf, 1, len, stdout);
    return strstr(buf, "\"ok\":true") ? 0 : 1;
}
