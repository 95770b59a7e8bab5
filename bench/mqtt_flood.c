/* QoS 1 MQTT 3.1.1 publisher in C: the load generator of every path in bench_ingest.py.
 *
 * It speaks the protocol itself over one TCP socket. libmosquitto's threaded loop costs
 * several system calls per message (a wake-up through a socket pair, a select, a send, a
 * receive of the PUBACK); it measured 27 us of CPU per message, taken on a 2-core machine
 * from the system under test. Here the PUBLISH packets are encoded before the clock starts,
 * sent in writes of up to 256 KiB and their PUBACKs read in bulk, so the publisher costs
 * little more than the kernel's copying.
 *
 * Still QoS 1 as a gateway would publish: at most WINDOW messages are unacknowledged, and
 * the program exits only when the broker has acknowledged every one. Packet identifiers
 * run 1..65535 and repeat, so WINDOW must stay below 65535.
 *
 * Why not mosquitto_pub: in 2.0.11 `mosquitto_pub -l -q 1` disconnects at end of input
 * while messages are still queued (about two thirds were never sent in our runs), and
 * `--repeat` waits for each PUBACK before the next publish.
 *
 * Input: a file of lines "topic<TAB>payload". Once the packets are encoded and the broker
 * has accepted the connection it prints "ready" and waits for a line (or end of file) on
 * stdin, so that several publishers start together and their start-up is not timed.
 * Output: "<messages> <seconds>", the seconds from the first PUBLISH to the last PUBACK.
 * Build: cc -O2 -o mqtt_flood mqtt_flood.c
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WRITE (256 * 1024)
#define PACKET_IDS 65535

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* MQTT's "remaining length": 7 bits per byte, least significant first. */
static size_t put_remaining_length(uint8_t *p, size_t value) {
    size_t n = 0;
    do {
        uint8_t byte = value % 128;
        value /= 128;
        p[n++] = byte | (value ? 0x80 : 0);
    } while (value);
    return n;
}

static int connect_tcp(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found;
    int rc = getaddrinfo(host, port, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "%s:%s: %s\n", host, port, gai_strerror(rc));
        exit(1);
    }
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) != 0) die("connect");
    freeaddrinfo(found);
    return fd;
}

static void write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t done = write(fd, p, n);
        if (done < 0) die("write");
        p += done;
        n -= (size_t)done;
    }
}

static void read_exact(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t got = read(fd, p, n);
        if (got <= 0) {
            fprintf(stderr, "broker closed the connection during CONNECT\n");
            exit(1);
        }
        p += got;
        n -= (size_t)got;
    }
}

/* CONNECT with a clean session and no keep-alive (a flood never idles), then CONNACK. */
static void mqtt_connect(int fd, const char *client_id) {
    size_t id_len = strlen(client_id);
    uint8_t packet[300];
    if (id_len > 200) {
        fprintf(stderr, "client id too long\n");
        exit(2);
    }
    size_t n = 0;
    packet[n++] = 0x10;
    n += put_remaining_length(packet + n, 10 + 2 + id_len);
    memcpy(packet + n, "\x00\x04MQTT\x04\x02\x00\x00", 10);
    n += 10;
    packet[n++] = (uint8_t)(id_len >> 8);
    packet[n++] = (uint8_t)id_len;
    memcpy(packet + n, client_id, id_len);
    write_all(fd, packet, n + id_len);
    uint8_t connack[4];
    read_exact(fd, connack, 4);
    if (connack[0] != 0x20 || connack[3] != 0) {
        fprintf(stderr, "broker refused the connection (CONNACK %02x %02x %02x %02x)\n",
                connack[0], connack[1], connack[2], connack[3]);
        exit(1);
    }
}

/* Every line as a QoS 1 PUBLISH, back to back in one buffer; ends[i] is where packet i
 * ends. Message i carries packet identifier i % 65535 + 1. */
static uint8_t *encode_publishes(FILE *in, size_t *count, size_t **ends_out) {
    size_t cap = 1 << 20, used = 0, ends_cap = 1024, n = 0;
    uint8_t *out = malloc(cap);
    size_t *ends = malloc(ends_cap * sizeof *ends);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    while ((got = getline(&line, &line_cap, in)) > 0) {
        if (line[got - 1] == '\n') line[--got] = '\0';
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        size_t topic_len = (size_t)(tab - line), payload_len = (size_t)got - topic_len - 1;
        size_t remaining = 2 + topic_len + 2 + payload_len;
        while (used + remaining + 5 > cap) out = realloc(out, cap *= 2);
        if (n == ends_cap) ends = realloc(ends, (ends_cap *= 2) * sizeof *ends);
        if (!out || !ends) die("realloc");
        uint16_t packet_id = (uint16_t)(n % PACKET_IDS + 1);
        out[used++] = 0x32; /* PUBLISH, QoS 1 */
        used += put_remaining_length(out + used, remaining);
        out[used++] = (uint8_t)(topic_len >> 8);
        out[used++] = (uint8_t)topic_len;
        memcpy(out + used, line, topic_len);
        used += topic_len;
        out[used++] = (uint8_t)(packet_id >> 8);
        out[used++] = (uint8_t)packet_id;
        memcpy(out + used, tab + 1, payload_len);
        used += payload_len;
        ends[n++] = used;
    }
    free(line);
    *count = n;
    *ends_out = ends;
    return out;
}

/* Counts the complete PUBACKs at the start of buf[0..len); returns the bytes consumed. */
static size_t count_pubacks(const uint8_t *buf, size_t len, size_t *acked) {
    size_t at = 0;
    while (len - at >= 4) {
        if (buf[at] != 0x40 || buf[at + 1] != 0x02) {
            fprintf(stderr, "unexpected packet %02x %02x from the broker\n", buf[at],
                    buf[at + 1]);
            exit(1);
        }
        (*acked)++;
        at += 4;
    }
    return at;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT CLIENT_ID FILE [WINDOW]\n", argv[0]);
        return 2;
    }
    size_t window = argc > 5 ? (size_t)atol(argv[5]) : 1000;
    if (window < 1 || window >= PACKET_IDS) {
        fprintf(stderr, "WINDOW must be between 1 and %d\n", PACKET_IDS - 1);
        return 2;
    }
    FILE *in = fopen(argv[4], "r");
    if (!in) die(argv[4]);
    size_t n, *ends;
    uint8_t *packets = encode_publishes(in, &n, &ends);
    fclose(in);

    int fd = connect_tcp(argv[1], argv[2]);
    mqtt_connect(fd, argv[3]);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) die("fcntl");

    printf("ready\n");
    fflush(stdout);
    char go[16];
    (void)!fgets(go, sizeof go, stdin);

    size_t sent_bytes = 0, acked = 0, pending = 0;
    uint8_t acks[64 * 1024];
    double t0 = now_s();
    while (acked < n) {
        /* Bytes of every packet that the window allows on the wire now. */
        size_t allowed = acked + window < n ? acked + window : n;
        size_t allowed_bytes = allowed ? ends[allowed - 1] : 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (sent_bytes < allowed_bytes) p.events |= POLLOUT;
        if (poll(&p, 1, 30000) <= 0) die("poll (no progress for 30 s)");
        if (p.revents & POLLOUT) {
            size_t chunk = allowed_bytes - sent_bytes;
            ssize_t done = write(fd, packets + sent_bytes, chunk < MAX_WRITE ? chunk : MAX_WRITE);
            if (done < 0 && errno != EAGAIN) die("write");
            if (done > 0) sent_bytes += (size_t)done;
        }
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t got = read(fd, acks + pending, sizeof acks - pending);
            if (got == 0) {
                fprintf(stderr, "broker closed the connection after %zu PUBACKs\n", acked);
                return 1;
            }
            if (got < 0 && errno != EAGAIN) die("read");
            if (got > 0) {
                pending += (size_t)got;
                size_t used = count_pubacks(acks, pending, &acked);
                memmove(acks, acks + used, pending - used);
                pending -= used;
            }
        }
    }
    double elapsed = now_s() - t0;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) die("fcntl");
    write_all(fd, (const uint8_t *)"\xe0\x00", 2); /* DISCONNECT */
    close(fd);
    printf("%zu %.3f\n", n, elapsed);
    return 0;
}
