// wsbridge's preload library for wrap mode without a target (websockify's rebind.so, same variables):
//
//     LD_PRELOAD=libwsbridge-rebind.so REBIND_PORT_OLD=5901 REBIND_PORT_NEW=40123 Xvnc -rfbport 5901 ...
//
// A bind() of the wrapped program to port REBIND_PORT_OLD (on any address) binds to the loopback port
// REBIND_PORT_NEW instead, where the bridge relays; the bridge itself listens on the old port. IPv4 sockets go to
// 127.0.0.1, IPv6 sockets to ::ffff:127.0.0.1 (reached by the bridge's IPv4 connection while the socket is
// dual-stack, Linux's default), and to ::1 when the socket is IPv6-only. Every other bind() is passed through
// unchanged. Written here because no package provides it: it is a few lines of C around dlsym(RTLD_NEXT).
//
// Built by scripts/build-rebind with the system's C compiler, not by SwiftPM: SwiftPM links the Swift runtime into
// every library it makes, and a library preloaded into other programs must need nothing beyond libc.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

static int port_from_environment(const char *name) {
    const char *text = getenv(name);
    if (text == NULL || *text == '\0') return 0;
    char *end = NULL;
    long port = strtol(text, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) return 0;
    return (int)port;
}

int bind(int fd, const struct sockaddr *address, socklen_t length) {
    static bind_function next = NULL;
    if (next == NULL) next = (bind_function)dlsym(RTLD_NEXT, "bind");
    if (next == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int old_port = port_from_environment("REBIND_PORT_OLD");
    int new_port = port_from_environment("REBIND_PORT_NEW");
    if (address == NULL || old_port == 0 || new_port == 0) return next(fd, address, length);

    if (address->sa_family == AF_INET && length >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in moved;
        memcpy(&moved, address, sizeof(moved));
        if (ntohs(moved.sin_port) != old_port) return next(fd, address, length);
        moved.sin_port = htons((uint16_t)new_port);
        moved.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return next(fd, (const struct sockaddr *)&moved, sizeof(moved));
    }
    if (address->sa_family == AF_INET6 && length >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 moved;
        memcpy(&moved, address, sizeof(moved));
        if (ntohs(moved.sin6_port) != old_port) return next(fd, address, length);
        moved.sin6_port = htons((uint16_t)new_port);
        int only_v6 = 0;
        socklen_t option_length = sizeof(only_v6);
        if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only_v6, &option_length) != 0) only_v6 = 0;
        if (only_v6) {
            moved.sin6_addr = in6addr_loopback;
        } else {
            static const unsigned char mapped_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
            memcpy(&moved.sin6_addr, mapped_loopback, sizeof(mapped_loopback));
        }
        return next(fd, (const struct sockaddr *)&moved, sizeof(moved));
    }
    return next(fd, address, length);
}
