#include "support/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <curl/curl.h>

#include "support/clock.h"
#include "support/http.h"
#include "support/pg.h"

#ifndef H2PG_BINARY
#error "tests/CMakeLists.txt passes H2PG_BINARY"
#endif

#define START_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 20000
#define RUN_TIMEOUT_MS 60000
#define LOG_TAIL 4000

static int exit_status(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return -1;
}

/* ---- log files: removed at a normal exit of the process that made them ---- */

#define MAX_LOGS 64
static struct {
    pid_t owner;
    char path[256];
} logs[MAX_LOGS];
static int nlogs;

static void remove_logs(void)
{
    const char *keep = getenv("H2PG_TEST_KEEP_LOGS");
    if (keep != NULL && keep[0] != '\0' && strcmp(keep, "0") != 0)
        return;
    /* forked tests inherit the table: each removes only its own files */
    for (int i = 0; i < nlogs; i++)
        if (logs[i].owner == getpid())
            unlink(logs[i].path);
}

static void new_log_path(char *out, size_t cap)
{
    static bool registered;
    static unsigned counter;
    if (!registered) {
        atexit(remove_logs);
        registered = true;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(out, cap, "%s/h2pg-test-server-%ld-%u.log", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", (long)getpid(),
             counter++);
    if (nlogs < MAX_LOGS) {
        logs[nlogs].owner = getpid();
        snprintf(logs[nlogs].path, sizeof(logs[nlogs].path), "%s", out);
        nlogs++;
    }
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        char *empty = strdup("");
        ck_assert_ptr_nonnull(empty);
        return empty;
    }
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(m);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    ck_assert_int_eq(fclose(m), 0);
    return out;
}

/* The last LOG_TAIL bytes of the log, for failure messages. */
static const char *tail_of(const char *log)
{
    size_t len = strlen(log);
    return len > LOG_TAIL ? log + len - LOG_TAIL : log;
}

/* ---- the child's environment ---- */

static size_t key_len(const char *kv)
{
    const char *eq = strchr(kv, '=');
    ck_assert_msg(eq != NULL && eq != kv, "\"%s\" is not KEY=VALUE", kv);
    return (size_t)(eq - kv);
}

static bool has_key(const char *const *list, const char *kv)
{
    size_t n = key_len(kv);
    for (const char *const *p = list; p != NULL && *p != NULL; p++)
        if (key_len(*p) == n && strncmp(*p, kv, n) == 0)
            return true;
    return false;
}

/* A child's environment: env points into the given lists and at path,
 * the one string it owns. */
struct child_env {
    char **env;
    char *path;
};

/* Sanitizer settings of the test run reach the server too (a sanitized
 * build reads them at start: quarantine size, leak checking). */
static const char *const passed_through[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"};
#define NPASSED (sizeof(passed_through) / sizeof(passed_through[0]))

/* defaults (skipping keys that extra sets), then extra, then the test's
 * PATH unless one of them sets it, then the sanitizer settings. Free with
 * free_env. */
static struct child_env build_env(const char *const *defaults, const char *const *extra)
{
    size_t n = 0;
    for (const char *const *p = defaults; p != NULL && *p != NULL; p++)
        n++;
    for (const char *const *p = extra; p != NULL && *p != NULL; p++)
        n++;
    struct child_env e = {.env = calloc(n + 2 + NPASSED, sizeof(char *))};
    ck_assert_ptr_nonnull(e.env);
    size_t k = 0;
    for (const char *const *p = defaults; p != NULL && *p != NULL; p++)
        if (!has_key(extra, *p))
            e.env[k++] = (char *)*p;
    for (const char *const *p = extra; p != NULL && *p != NULL; p++)
        e.env[k++] = (char *)*p;
    if (!has_key(defaults, "PATH=") && !has_key(extra, "PATH=")) {
        const char *p = getenv("PATH");
        ck_assert_int_ge(asprintf(&e.path, "PATH=%s", p != NULL ? p : "/usr/local/bin:/usr/bin:/bin"), 0);
        e.env[k++] = e.path;
    }
    for (size_t i = 0; i < NPASSED; i++) {
        /* environ entries live as long as the process: point at them */
        size_t len = strlen(passed_through[i]);
        for (char **v = environ; *v != NULL; v++)
            if (strncmp(*v, passed_through[i], len) == 0 && (*v)[len] == '=')
                e.env[k++] = *v;
    }
    e.env[k] = NULL;
    return e;
}

static void free_env(struct child_env *e)
{
    free(e->path);
    free(e->env);
}

/* argv for execve: the binary's name, then args. */
static char **build_argv(const char *const *args)
{
    size_t n = 0;
    for (const char *const *p = args; p != NULL && *p != NULL; p++)
        n++;
    char **argv = calloc(n + 2, sizeof(*argv));
    ck_assert_ptr_nonnull(argv);
    argv[0] = (char *)"h2pg";
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    return argv;
}

/* Forks and execs the binary with out_fd as stdout and stderr and
 * /dev/null as stdin, with RLIMIT_NOFILE set to nofile when it is above 0.
 * Only async-signal-safe calls after the fork: the parent may hold
 * libcurl's and OpenSSL's locks. */
static pid_t spawn(char **argv, char **env, int out_fd, long nofile)
{
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_msg(devnull >= 0, "/dev/null: %s", strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* die with the test; if it is gone already, do not start at all */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        /* Check's timers and the runner's dispositions must not reach the
         * server: an inherited SIG_IGN for SIGTERM would defeat its sigwait */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        static const int sigs[] = {SIGTERM, SIGINT, SIGPIPE, SIGALRM, SIGCHLD, SIGHUP};
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
            signal(sigs[i], SIG_DFL);
        if (dup2(devnull, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 || dup2(out_fd, STDERR_FILENO) < 0)
            _exit(127);
        if (nofile > 0) {
            struct rlimit rl = {.rlim_cur = (rlim_t)nofile, .rlim_max = (rlim_t)nofile};
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
                static const char msg[] = "test support: cannot set RLIMIT_NOFILE\n";
                ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
                (void)ignored;
                _exit(127);
            }
        }
        execve(H2PG_BINARY, argv, env);
        static const char msg[] = "test support: cannot exec " H2PG_BINARY "\n";
        ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        (void)ignored;
        _exit(127);
    }
    close(devnull);
    return pid;
}

/* ---- ports and probes ---- */

int test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind: %s", strerror(errno));
    socklen_t len = sizeof(a);
    ck_assert_msg(getsockname(fd, (struct sockaddr *)&a, &len) == 0, "getsockname: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

int test_healthz_status(int port, int timeout_ms)
{
    int fd = test_raw_try_connect(port, 0);
    if (fd < 0)
        return -1;
    int status = -1;
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1)) {
        char buf[64];
        size_t got = 0;
        int64_t deadline = now_ms() + timeout_ms;
        while (got < 12) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            int64_t left = deadline - now_ms();
            if (left <= 0 || poll(&p, 1, (int)left) <= 0)
                break;
            ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        buf[got] = '\0';
        if (got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0)
            status = atoi(buf + 9);
    }
    close(fd);
    return status;
}

/* The same over TLS (the certificate is not checked: it is the test's). */
static int probe_healthz_tls(int port, int timeout_ms)
{
    CURL *c = curl_easy_init();
    if (c == NULL)
        return -1;
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/healthz", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return (int)status;
}

/* ---- servers ---- */

void test_server_start(test_server *s, const char *db_conninfo, const char *const *env)
{
    test_server_start_with(s, db_conninfo, env, NULL);
}

void test_server_start_with(test_server *s, const char *db_conninfo, const char *const *env,
                            const test_server_options *opts)
{
    memset(s, 0, sizeof(*s));
    char db_kv[2048], port_kv[32];
    ck_assert_msg(snprintf(db_kv, sizeof(db_kv), "DATABASE_URL=%s", db_conninfo) < (int)sizeof(db_kv),
                  "conninfo too long");
    s->port = -1;
    bool tls = false;
    for (const char *const *p = env; p != NULL && *p != NULL; p++) {
        if (strncmp(*p, "PORT=", 5) == 0)
            s->port = atoi(*p + 5);
        tls |= strncmp(*p, "TLS_CERT_FILE=", 14) == 0 && (*p)[14] != '\0';
    }
    if (s->port <= 0)
        s->port = test_free_port();
    snprintf(port_kv, sizeof(port_kv), "PORT=%d", s->port);
    snprintf(s->base_url, sizeof(s->base_url), "%s://127.0.0.1:%d", tls ? "https" : "http", s->port);
    new_log_path(s->log_path, sizeof(s->log_path));

    const char *const defaults[] = {db_kv, "HOST=127.0.0.1", port_kv, "THREADS=2", "LOG_LEVEL=info", NULL};
    struct child_env child_env = build_env(defaults, env);
    const char *const args[] = {"serve", NULL};
    char **argv = build_argv(args);
    int log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_msg(log_fd >= 0, "%s: %s", s->log_path, strerror(errno));
    s->pid = spawn(argv, child_env.env, log_fd, opts != NULL ? opts->nofile : 0);
    close(log_fd);
    free(argv);
    free_env(&child_env);

    int64_t deadline = now_ms() + START_TIMEOUT_MS;
    for (;;) {
        int wstatus;
        if (waitpid(s->pid, &wstatus, WNOHANG) == s->pid) {
            s->pid = 0;
            char *log = test_server_log(s);
            ck_abort_msg("h2pg serve exited with status %d before it answered /healthz; log:\n%s", exit_status(wstatus),
                         tail_of(log));
        }
        if ((tls ? probe_healthz_tls(s->port, 2000) : test_healthz_status(s->port, 2000)) == 200)
            return;
        if (now_ms() > deadline)
            break;
        sleep_ms(25);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    char *log = test_server_log(s);
    ck_abort_msg("h2pg serve did not answer /healthz with 200 within %d ms; log:\n%s", START_TIMEOUT_MS, tail_of(log));
}

int test_server_stop(test_server *s)
{
    ck_assert_msg(s->pid > 0, "the server is not running");
    pid_t pid = s->pid;
    ck_assert_msg(kill(pid, SIGTERM) == 0, "kill: %s", strerror(errno));
    int64_t deadline = now_ms() + STOP_TIMEOUT_MS;
    for (;;) {
        int wstatus;
        pid_t w = waitpid(pid, &wstatus, WNOHANG);
        ck_assert_msg(w >= 0, "waitpid: %s", strerror(errno));
        if (w == pid) {
            s->pid = 0;
            return exit_status(wstatus);
        }
        if (now_ms() > deadline)
            break;
        sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    s->pid = 0;
    char *log = test_server_log(s);
    ck_abort_msg("h2pg did not exit within %d ms of SIGTERM; log:\n%s", STOP_TIMEOUT_MS, tail_of(log));
    return -1;
}

char *test_server_log(const test_server *s) { return read_file(s->log_path); }

int test_server_log_wait(const test_server *s, const char *needle, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        char *log = test_server_log(s);
        bool found = strstr(log, needle) != NULL;
        free(log);
        if (found)
            return 1;
        if (now_ms() > deadline)
            return 0;
        sleep_ms(20);
    }
}

int test_run_binary(const char *const *args, const char *const *env, char **output)
{
    int fds[2];
    ck_assert_msg(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    struct child_env child_env = build_env(NULL, env);
    char **argv = build_argv(args);
    pid_t pid = spawn(argv, child_env.env, fds[1], 0);
    close(fds[1]);
    free(argv);
    free_env(&child_env);

    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(m);
    int64_t deadline = now_ms() + RUN_TIMEOUT_MS;
    bool timed_out = false;
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int n = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            timed_out = true;
            break;
        }
        char chunk[4096];
        ssize_t r = read(fds[0], chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        fwrite(chunk, 1, (size_t)r, m);
    }
    close(fds[0]);
    ck_assert_int_eq(fclose(m), 0);

    /* a child that closed its output but runs on hangs as much as a silent one */
    int wstatus = 0;
    for (;;) {
        if (!timed_out && now_ms() > deadline)
            timed_out = true;
        if (timed_out)
            kill(pid, SIGKILL);
        pid_t w = waitpid(pid, &wstatus, timed_out ? 0 : WNOHANG);
        if (w == pid)
            break;
        ck_assert_msg(w == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
        if (w == 0)
            sleep_ms(10);
    }
    if (timed_out)
        ck_abort_msg("h2pg %s did not finish within %d ms; output:\n%s", args && args[0] ? args[0] : "", RUN_TIMEOUT_MS,
                     tail_of(out));
    if (output != NULL)
        *output = out;
    else
        free(out);
    return exit_status(wstatus);
}

long test_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

long test_cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the name, in parentheses, may hold spaces: fields count from its end */
    const char *p = strrchr(buf, ')');
    unsigned long utime, stime;
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (long)((utime + stime) * 1000UL / (unsigned long)(hz > 0 ? hz : 100));
}

int test_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

void test_server_start_on_fresh_db(test_server *s, char **db, const char *const *env)
{
    *db = test_pg_create_db();
    test_server_start(s, *db, env);
}

void test_server_stop_and_drop_db(test_server *s, char **db)
{
    if (s->pid > 0)
        test_server_stop(s);
    if (*db != NULL)
        test_pg_drop_db(*db);
    *db = NULL;
}
