/* QoS 1 publisher in C (libmosquitto) for the broker-limit measurement in bench_ingest.py.
 *
 * Why not mosquitto_pub: in 2.0.11 `mosquitto_pub -l -q 1` disconnects at end of input
 * while messages are still queued (about two thirds were never sent in our runs), and
 * `--repeat` waits for each PUBACK before the next publish. This keeps up to WINDOW
 * messages unacknowledged and exits only when the broker has acknowledged every one.
 *
 * Input: a file of lines "topic<TAB>payload". Output: "<messages> <seconds>".
 * Build: cc -O2 -o mqtt_flood mqtt_flood.c -l:libmosquitto.so.1 -lpthread
 * (Debian ships the library without its header, so the few prototypes are declared here.)
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct mosquitto;
int mosquitto_lib_init(void);
struct mosquitto *mosquitto_new(const char *id, bool clean_session, void *obj);
int mosquitto_connect(struct mosquitto *m, const char *host, int port, int keepalive);
int mosquitto_max_inflight_messages_set(struct mosquitto *m, unsigned int max);
void mosquitto_publish_callback_set(struct mosquitto *m,
                                    void (*cb)(struct mosquitto *, void *, int));
int mosquitto_publish(struct mosquitto *m, int *mid, const char *topic, int len,
                      const void *payload, int qos, bool retain);
int mosquitto_loop_start(struct mosquitto *m);
int mosquitto_loop_stop(struct mosquitto *m, bool force);
int mosquitto_disconnect(struct mosquitto *m);

static volatile long acked = 0;

static void on_publish(struct mosquitto *m, void *obj, int mid) {
    (void)m; (void)obj; (void)mid;
    __atomic_add_fetch(&acked, 1, __ATOMIC_RELAXED);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT CLIENT_ID FILE [WINDOW]\n", argv[0]);
        return 2;
    }
    long window = argc > 5 ? atol(argv[5]) : 1000;
    FILE *in = fopen(argv[4], "r");
    if (!in) { perror(argv[4]); return 2; }
    /* Read everything first so that file I/O is not part of the measurement. */
    size_t cap = 1024, n = 0;
    char **lines = malloc(cap * sizeof *lines);
    char *line = NULL; size_t len = 0; ssize_t got;
    while ((got = getline(&line, &len, in)) > 0) {
        if (line[got - 1] == '\n') line[got - 1] = '\0';
        if (n == cap) { cap *= 2; lines = realloc(lines, cap * sizeof *lines); }
        lines[n++] = strdup(line);
    }
    fclose(in);

    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(argv[3], true, NULL);
    mosquitto_max_inflight_messages_set(m, (unsigned int)window);
    mosquitto_publish_callback_set(m, on_publish);
    if (mosquitto_connect(m, argv[1], atoi(argv[2]), 60) != 0) {
        fprintf(stderr, "cannot connect to %s:%s\n", argv[1], argv[2]);
        return 1;
    }
    mosquitto_loop_start(m);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        char *tab = strchr(lines[i], '\t');
        if (!tab) continue;
        *tab = '\0';
        while ((long)i - __atomic_load_n(&acked, __ATOMIC_RELAXED) >= window) usleep(50);
        if (mosquitto_publish(m, NULL, lines[i], (int)strlen(tab + 1), tab + 1, 1, false)) {
            fprintf(stderr, "publish failed at message %zu\n", i);
            return 1;
        }
    }
    while (__atomic_load_n(&acked, __ATOMIC_RELAXED) < (long)n) usleep(200);
    double elapsed = now_s() - t0;
    mosquitto_disconnect(m);
    mosquitto_loop_stop(m, false);
    printf("%zu %.3f\n", n, elapsed);
    return 0;
}
