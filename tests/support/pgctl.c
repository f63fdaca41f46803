#include "support/pgctl.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <libpq-fe.h>

#include "support/clock.h"
#include "support/server.h"

#define TOOL_TIMEOUT_MS 120000
#define START_ATTEMPTS 20
#define LOG_TAIL 3000

static bool as_other_user(void) { return geteuid() == 0; }

static char *read_whole(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(m);
    if (f != NULL) {
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
            fwrite(chunk, 1, n, m);
        fclose(f);
    }
    ck_assert_int_eq(fclose(m), 0);
    return out;
}

static const char *tail_of(const char *s)
{
    size_t n = strlen(s);
    return n > LOG_TAIL ? s + n - LOG_TAIL : s;
}

static void path_in(const test_pgctl *pg, const char *name, char *out, size_t cap)
{
    ck_assert_msg(snprintf(out, cap, "%s/%s", pg->dir, name) < (int)cap, "path too long");
}

/* Runs bindir/tool with args (NULL-terminated) as the server's user, from
 * the temp directory (the caller's may be closed to that user), output
 * appended to tools.log. Returns the exit status (128 + signal). */
static int run_tool(const test_pgctl *pg, const char *tool, const char *const *args)
{
    char exe[512], log[512];
    ck_assert(snprintf(exe, sizeof(exe), "%s/%s", pg->bindir, tool) < (int)sizeof(exe));
    path_in(pg, "tools.log", log, sizeof(log));
    const char *argv[32];
    size_t n = 0;
    if (as_other_user()) {
        argv[n++] = "runuser";
        argv[n++] = "-u";
        argv[n++] = pg->user;
        argv[n++] = "--";
    }
    argv[n++] = exe;
    for (const char *const *a = args; *a != NULL; a++) {
        ck_assert(n < sizeof(argv) / sizeof(argv[0]) - 1);
        argv[n++] = *a;
    }
    argv[n] = NULL;

    int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_msg(out >= 0, "%s: %s", log, strerror(errno));
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_msg(devnull >= 0, "/dev/null: %s", strerror(errno));
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        static const int sigs[] = {SIGTERM, SIGINT, SIGPIPE, SIGALRM, SIGCHLD, SIGHUP, SIGQUIT};
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
            signal(sigs[i], SIG_DFL);
        if (chdir(pg->dir) != 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 ||
            dup2(out, STDERR_FILENO) < 0)
            _exit(127);
        /* the postmaster pg_ctl leaves behind must hold none of the test's
         * descriptors (sockets, Check's message pipe) */
        close_range(3, ~0U, 0);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out);
    close(devnull);
    int64_t deadline = now_ms() + TOOL_TIMEOUT_MS;
    int wstatus = 0;
    for (;;) {
        pid_t w = waitpid(pid, &wstatus, WNOHANG);
        if (w == pid)
            break;
        ck_assert_msg(w == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            char *text = read_whole(log);
            ck_abort_msg("%s did not finish within %d ms:\n%s", tool, TOOL_TIMEOUT_MS, tail_of(text));
        }
        sleep_ms(5);
    }
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    return 128 + (WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
}

static void tool_failed(const test_pgctl *pg, const char *what, int status)
{
    char log[512];
    path_in(pg, "tools.log", log, sizeof(log));
    char *tools = read_whole(log);
    char *server = test_pgctl_log(pg);
    ck_abort_msg("%s failed with status %d:\n%s\n--- server log ---\n%s", what, status, tail_of(tools), tail_of(server));
}

static void find_bindir(test_pgctl *pg)
{
    const char *given = getenv("PG_BINDIR");
    const char *candidates[] = {given, "/usr/lib/postgresql/15/bin", NULL};
    for (size_t i = 0; i < 2; i++) {
        if (candidates[i] == NULL || candidates[i][0] == '\0')
            continue;
        char exe[512];
        snprintf(exe, sizeof(exe), "%s/pg_ctl", candidates[i]);
        if (access(exe, X_OK) == 0) {
            snprintf(pg->bindir, sizeof(pg->bindir), "%s", candidates[i]);
            return;
        }
    }
    /* not Debian's layout: whatever pg_ctl is on PATH */
    const char *path = getenv("PATH");
    char *copy = strdup(path != NULL ? path : "/usr/local/bin:/usr/bin:/bin");
    ck_assert_ptr_nonnull(copy);
    char *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d != NULL; d = strtok_r(NULL, ":", &save)) {
        char exe[512];
        snprintf(exe, sizeof(exe), "%s/pg_ctl", d);
        if (access(exe, X_OK) == 0) {
            snprintf(pg->bindir, sizeof(pg->bindir), "%s", d);
            free(copy);
            return;
        }
    }
    free(copy);
    ck_abort_msg("pg_ctl not found in PG_BINDIR, /usr/lib/postgresql/15/bin or PATH (apt-get install postgresql-15)");
}

/* ---- the watchdog ---- */

/* A process of its own session (Check kills the test's process group as
 * soon as the test ends) that waits for the death of the process that made
 * it, then stops the server as a crash and removes the directory. */
static bool keep_files(void)
{
    const char *keep = getenv("H2PG_TEST_KEEP_LOGS");
    return keep != NULL && keep[0] != '\0' && strcmp(keep, "0") != 0;
}

static pid_t start_watchdog(const test_pgctl *pg)
{
    ck_assert_msg(strchr(pg->dir, '\'') == NULL && strchr(pg->bindir, '\'') == NULL, "a quote in a path");
    char *cmd = NULL;
    ck_assert_int_ge(asprintf(&cmd, "cd / && %s%s%s '%s/pg_ctl' -D '%s/data' -m immediate -w -t 30 stop%s%s%s",
                              as_other_user() ? "runuser -u " : "", as_other_user() ? pg->user : "",
                              as_other_user() ? " --" : "", pg->bindir, pg->dir, keep_files() ? "" : "; rm -rf '",
                              keep_files() ? "" : pg->dir, keep_files() ? "" : "'"),
                     0);
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &old);
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        setsid();
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        close_range(3, ~0U, 0);
        if (getppid() == parent) {
            int sig;
            sigwait(&term, &sig);
        }
        /* The signal comes once per parent thread that dies: the dying
         * process's other threads adopt us one after the other. No more,
         * and none left pending, before SIGTERM may act again. */
        prctl(PR_SET_PDEATHSIG, 0);
        static const struct timespec none = {0, 0};
        while (sigtimedwait(&term, NULL, &none) == SIGTERM) {
        }
        sigprocmask(SIG_UNBLOCK, &term, NULL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(cmd);
    return pid;
}

/* ---- configuration ---- */

static void write_file(const char *path, const char *mode, const char *text)
{
    FILE *f = fopen(path, mode);
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    fputs(text, f);
    ck_assert_msg(fclose(f) == 0, "%s: %s", path, strerror(errno));
}

/* A later line wins in postgresql.conf: a new port is simply appended. */
static void set_port(test_pgctl *pg, int port)
{
    pg->port = port;
    char conf[512], line[64];
    path_in(pg, "data/postgresql.conf", conf, sizeof(conf));
    snprintf(line, sizeof(line), "port = %d\n", port);
    write_file(conf, "a", line);
}

static int pg_ctl_start(test_pgctl *pg)
{
    char log[512];
    path_in(pg, "postgres.log", log, sizeof(log));
    const char *args[] = {"-D", "data", "-l", log, "-w", "-t", "60", "start", NULL};
    int status = run_tool(pg, "pg_ctl", args);
    if (status == 0)
        pg->running = true;
    return status;
}

/* ---- public ---- */

void test_pgctl_create(test_pgctl *pg)
{
    memset(pg, 0, sizeof(*pg));
    find_bindir(pg);
    struct passwd *pw;
    if (as_other_user()) {
        pw = getpwnam("postgres");
        ck_assert_msg(pw != NULL, "running as root needs the postgres system user (apt-get install postgresql-15)");
    } else {
        pw = getpwuid(geteuid());
        ck_assert_msg(pw != NULL, "who am I?");
    }
    snprintf(pg->user, sizeof(pg->user), "%s", pw->pw_name);
    const char *tmp = getenv("TMPDIR");
    snprintf(pg->dir, sizeof(pg->dir), "%s/h2pg-pgctl.XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    ck_assert_msg(mkdtemp(pg->dir) != NULL, "mkdtemp %s: %s", pg->dir, strerror(errno));
    if (as_other_user())
        ck_assert_msg(chown(pg->dir, pw->pw_uid, pw->pw_gid) == 0, "chown %s: %s", pg->dir, strerror(errno));
    pg->watchdog = start_watchdog(pg);

    const char *initdb[] = {"-D", "data", "-U", pg->user, "--auth=trust", "--encoding=UTF8", "--locale=C",
                            "--no-sync", NULL};
    int status = run_tool(pg, "initdb", initdb);
    if (status != 0)
        tool_failed(pg, "initdb", status);

    char path[512];
    path_in(pg, "data/pg_hba.conf", path, sizeof(path));
    write_file(path, "w", "local all all trust\nhost all all 127.0.0.1/32 trust\n");
    path_in(pg, "data/postgresql.conf", path, sizeof(path));
    char *conf = NULL;
    ck_assert_int_ge(asprintf(&conf,
                              "\n# tests/support/pgctl.c\n"
                              "listen_addresses = '127.0.0.1'\n"
                              "unix_socket_directories = '%s'\n"
                              "fsync = off\n"
                              "full_page_writes = off\n"
                              "max_connections = 100\n"
                              "shared_buffers = 32MB\n"
                              "logging_collector = off\n",
                              pg->dir),
                     0);
    write_file(path, "a", conf);
    free(conf);

    /* another process may take the port between the pick and the bind */
    for (int attempt = 1;; attempt++) {
        set_port(pg, test_free_port());
        status = pg_ctl_start(pg);
        if (status == 0)
            return;
        char *log = test_pgctl_log(pg);
        bool port_taken = strstr(log, "could not bind") != NULL || strstr(log, "could not create any TCP/IP") != NULL;
        free(log);
        if (!port_taken || attempt == START_ATTEMPTS)
            tool_failed(pg, "pg_ctl start", status);
    }
}

void test_pgctl_start(test_pgctl *pg)
{
    int status = pg_ctl_start(pg);
    if (status != 0)
        tool_failed(pg, "pg_ctl start", status);
}

void test_pgctl_stop(test_pgctl *pg, const char *mode)
{
    const char *args[] = {"-D", "data", "-m", mode, "-w", "-t", "60", "stop", NULL};
    int status = run_tool(pg, "pg_ctl", args);
    if (status != 0)
        tool_failed(pg, "pg_ctl stop", status);
    pg->running = false;
}

void test_pgctl_restart(test_pgctl *pg, const char *mode)
{
    char log[512];
    path_in(pg, "postgres.log", log, sizeof(log));
    const char *args[] = {"-D", "data", "-l", log, "-m", mode, "-w", "-t", "60", "restart", NULL};
    int status = run_tool(pg, "pg_ctl", args);
    if (status != 0)
        tool_failed(pg, "pg_ctl restart", status);
    pg->running = true;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

void test_pgctl_destroy(test_pgctl *pg)
{
    if (pg->dir[0] == '\0')
        return;
    if (pg->watchdog > 0) {
        kill(pg->watchdog, SIGKILL);
        waitpid(pg->watchdog, NULL, 0);
        pg->watchdog = 0;
    }
    /* whatever this handle believes: a failed start may have left one */
    const char *args[] = {"-D", "data", "-m", "immediate", "-w", "-t", "60", "stop", NULL};
    run_tool(pg, "pg_ctl", args);
    pg->running = false;
    if (!keep_files())
        nftw(pg->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    pg->dir[0] = '\0';
}

char *test_pgctl_conninfo(const test_pgctl *pg, const char *dbname)
{
    char *s = NULL;
    ck_assert_int_ge(asprintf(&s, "host=127.0.0.1 port=%d user=%s dbname=%s connect_timeout=5", pg->port, pg->user,
                              dbname),
                     0);
    return s;
}

char *test_pgctl_create_db(test_pgctl *pg)
{
    static atomic_uint counter;
    char name[64];
    snprintf(name, sizeof(name), "h2pg_outage_%ld_%u", (long)getpid(), atomic_fetch_add(&counter, 1));
    char *admin_info = test_pgctl_conninfo(pg, "postgres");
    PGconn *admin = PQconnectdb(admin_info);
    free(admin_info);
    ck_assert_msg(admin != NULL && PQstatus(admin) == CONNECTION_OK, "cannot connect to the test's own server: %s",
                  admin ? PQerrorMessage(admin) : "out of memory");
    char sql[160];
    /* the name is ours and plain: no quoting needed */
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'", name);
    PGresult *r = PQexec(admin, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(admin);
    return test_pgctl_conninfo(pg, name);
}

char *test_pgctl_log(const test_pgctl *pg)
{
    char log[512];
    path_in(pg, "postgres.log", log, sizeof(log));
    return read_whole(log);
}
