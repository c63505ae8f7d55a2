/*
 * The baseline of the nginx benchmark: a Unix-domain-socket echo server, one
 * thread per connection, messages framed by a 4-byte big-endian length.
 * usage: uds_echo <socket path>
 */

#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>


static int
read_full(int fd, void *buf, size_t len)
{
    ssize_t  n;
    char    *p = buf;

    while (len > 0) {
        n = read(fd, p, len);
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t) n;
    }

    return 0;
}


static int
write_full(int fd, const void *buf, size_t len)
{
    ssize_t      n;
    const char  *p = buf;

    while (len > 0) {
        n = write(fd, p, len);
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t) n;
    }

    return 0;
}


static void *
serve(void *arg)
{
    int       fd = (int) (intptr_t) arg;
    char     *buf = NULL;
    uint32_t  be, len;

    while (read_full(fd, &be, 4) == 0) {
        len = ntohl(be);
        buf = realloc(buf, len + 4);
        if (buf == NULL || read_full(fd, buf + 4, len) != 0) {
            break;
        }
        memcpy(buf, &be, 4);
        if (write_full(fd, buf, len + 4) != 0) {
            break;
        }
    }

    free(buf);
    close(fd);
    return NULL;
}


int
main(int argc, char **argv)
{
    int                 lfd, fd;
    pthread_t           tid;
    struct sockaddr_un  addr;

    if (argc != 2 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "usage: uds_echo <socket path>\n");
        return 2;
    }

    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, argv[1]);
    unlink(argv[1]);

    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *) &addr, sizeof(addr)) != 0
        || listen(lfd, 1024) != 0)
    {
        perror("uds_echo");
        return 1;
    }

    for ( ;; ) {
        fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        if (pthread_create(&tid, NULL, serve, (void *) (intptr_t) fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(tid);
    }
}
