/* Awaiting file descriptors: readable, writable, hang-up, cancel, deadline. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/aio_check.h"

struct reader {
    int fd;
    char buf[64];
    ssize_t n;
    int rc;
};

static int read_when_ready(void *arg)
{
    struct reader *r = arg;
    aio_fd *w = aio_fd_open(r->fd);
    r->rc = aio_fd_wait(w, AIO_READABLE);
    if (r->rc > 0)
        r->n = read(r->fd, r->buf, sizeof(r->buf));
    aio_fd_close(w);
    return r->rc;
}

AIO_TEST(a_task_resumes_when_its_fd_becomes_readable)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    struct reader r = {.fd = p[0], .rc = 99};
    aio_task *t = aio_task_spawn(read_when_ready, &r);
    aio_sleep(AIO_MSEC(5));
    ck_assert_int_eq(r.rc, 99); /* nothing to read yet */
    ck_assert_int_eq(write(p[1], "hello", 5), 5);
    ck_assert_int_eq(aio_task_join(t), AIO_READABLE);
    ck_assert_int_eq(r.n, 5);
    ck_assert_int_eq(memcmp(r.buf, "hello", 5), 0);
    close(p[0]);
    close(p[1]);
    return 0;
}

AIO_TEST(a_closed_peer_wakes_a_reader)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct reader r = {.fd = sv[0]};
    aio_task *t = aio_task_spawn(read_when_ready, &r);
    aio_yield();
    close(sv[1]);
    ck_assert_int_gt(aio_task_join(t), 0);
    ck_assert_int_eq(r.n, 0); /* EOF */
    close(sv[0]);
    return 0;
}

AIO_TEST(waiting_for_writable_on_a_full_socket)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    char chunk[4096] = {0};
    while (write(sv[0], chunk, sizeof(chunk)) > 0)
        ;
    ck_assert_int_eq(errno, EAGAIN);
    aio_fd *w = aio_fd_open(sv[0]);
    /* full: a write wait times out */
    aio_timeout s;
    aio_timeout_open(&s, AIO_MSEC(10));
    ck_assert_int_eq(aio_fd_wait(w, AIO_WRITABLE), -ETIMEDOUT);
    ck_assert_int_eq(aio_timeout_close(&s), -ETIMEDOUT);
    /* drain the peer: now it becomes writable */
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    while (read(sv[1], chunk, sizeof(chunk)) > 0)
        ;
    ck_assert_int_eq(aio_fd_wait(w, AIO_WRITABLE), AIO_WRITABLE);
    ck_assert_int_eq(aio_fd_wait(w, AIO_READABLE | AIO_WRITABLE), AIO_WRITABLE);
    aio_fd_close(w);
    close(sv[0]);
    close(sv[1]);
    return 0;
}

AIO_TEST(an_fd_wait_is_cancellable_and_the_watcher_reusable)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    struct reader r = {.fd = p[0]};
    aio_task *t = aio_task_spawn(read_when_ready, &r);
    aio_sleep(AIO_MSEC(2));
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    /* the caller's fd is still open and usable */
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    r.rc = 0;
    ck_assert_int_eq(aio_task_join(aio_task_spawn(read_when_ready, &r)), AIO_READABLE);
    ck_assert_int_eq(r.n, 1);
    close(p[0]);
    close(p[1]);
    return 0;
}

static Suite *suite(void)
{
    Suite *s = suite_create("aio_fd");
    TCase *tc = tcase_create("fd");
    tcase_add_test(tc, a_task_resumes_when_its_fd_becomes_readable);
    tcase_add_test(tc, a_closed_peer_wakes_a_reader);
    tcase_add_test(tc, waiting_for_writable_on_a_full_socket);
    tcase_add_test(tc, an_fd_wait_is_cancellable_and_the_watcher_reusable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
