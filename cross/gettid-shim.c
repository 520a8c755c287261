/* gettid() for glibc older than 2.30, which has no wrapper for the system call.
 *
 * Linked into adaptd by `cross/build --glibc X.Y` for X.Y < 2.30. Rust's std refers to gettid
 * as a weak symbol and falls back to syscall(SYS_gettid) when it is absent, but after the
 * release profile's fat LTO the reference is a plain (strong) one, and linking against the
 * glibc 2.27 symbol stubs of zig fails with "undefined symbol: gettid". This definition, local
 * to the executable, does what glibc >= 2.30's wrapper does. */
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

pid_t gettid(void) { return (pid_t)syscall(SYS_gettid); }
