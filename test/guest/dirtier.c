/*
 * dirtier: the test guest's only program (runs as PID 1 from the initramfs).
 *
 * It allocates a working set of W MiB, rewrites it at R MiB/s, and keeps a checksum per page so
 * that it can tell when a page no longer holds what it last wrote (a migration that loses or
 * corrupts memory). It writes to the console (ttyS0):
 *
 *   dirtier start ws_mib=W rate_mib=R pages=N
 *   dirtier ready                                  once the working set has been filled
 *   hb <seq> <monotonic seconds.microseconds> <pages rewritten so far>   about every 10 ms
 *   integrity ok pass=<n> pages=<N>                after each full verification pass
 *   INTEGRITY FAIL page=<i> expected=<x> got=<y>   on the first bad page of a pass
 *
 * W and R come from the kernel command line: dirtier_ws=<MiB> dirtier_rate=<MiB/s>, where a rate
 * of 0 means idle (verify only) and "max" means as fast as the CPU allows. Defaults: 16 and 0.
 *
 * Disk checker, when the kernel command line has dirtier_disk=<MiB> (and the guest has a virtio
 * disk, /dev/vda): the first D MiB of the disk are rewritten, 4 KiB block by block at
 * pseudo-random places, at dirtier_disk_rate=<KiB/s> (default 256; 0 = verify only), with
 * O_DIRECT so that every write and read reaches the virtual disk. The content of block i at
 * generation g is a function of (i, g); generation 0 is all zeros (a fresh image). Every block of
 * the region is read back and compared about every 4 s:
 *
 *   disk start mib=D rate_kib=K blocks=N
 *   disk ok pass=<n> blocks=<N> writes=<total> lat_avg_us=<a> lat_max_us=<m>   after each pass
 *   DISK FAIL block=<i> gen=<g> word=<k>             on the first bad block of a pass
 *   disk error <what> errno=<e>                      when the device cannot be opened or used
 *
 * The write latencies are those of the writes made during the pass (the guest's view of a
 * migration that slows its disk).
 *
 * Commands, one per line, on the second serial port (/dev/ttyS1) when the VM has one. They are
 * carried out by a child process (the "hog"), which the guest's OOM killer picks first:
 *
 *   grow <MiB> [same]     allocate and touch MiB more (distinct content per page, or with "same"
 *                         one constant page pattern, which page sharing can merge)
 *   shrink <MiB>          free the MiB allocated last
 *   balloon-off           unload the balloon driver (its statistics stop; the balloon deflates)
 *
 * and it answers on the console:
 *
 *   hog held=<MiB>                                 after each grow or shrink
 *   hog killed signal=<s> oom_kill=<n>             when the hog dies (then it starts again, empty)
 *   balloon-off rc=<rc>
 *
 * Build: gcc -static -O2 -o dirtier dirtier.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <termios.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define TICK_NS 10000000L /* 10 ms */
#define VERIFY_PASS_TICKS 200u /* one full verification pass about every 2 s */

static int out_fd = 1;

static void say (const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say (const char *fmt, ...)
{
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
  /* one write per line, so lines never interleave with the kernel's */
  ssize_t off = 0;
  while (off < n) {
    ssize_t w = write(out_fd, buf + off, (size_t)(n - off));
    if (w < 0) { if (errno == EINTR) continue; return; }
    off += w;
  }
}

static uint64_t now_ns (void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64: the content of word k of page i at generation g is a function of (i, g, k) */
static inline uint64_t mix (uint64_t x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static inline uint64_t sum_step (uint64_t h, uint64_t w)
{
  return (h ^ w) * 0x100000001b3ull + (w >> 17);
}

static uint8_t *mem;
static uint64_t *csum;
static uint32_t *gen;
static size_t npages;

static void write_page (size_t i)
{
  uint64_t *p = (uint64_t *)(mem + i * PAGE);
  uint32_t g = ++gen[i];
  uint64_t seed = mix(((uint64_t)i << 32) ^ g);
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned k = 0; k < WORDS; k++) {
    uint64_t w = seed ^ (0x9e3779b97f4a7c15ull * (k + 1));
    w ^= w << 13;
    w ^= w >> 7;
    p[k] = w;
    h = sum_step(h, w);
  }
  csum[i] = h;
}

static int verify_page (size_t i, uint64_t *got)
{
  const uint64_t *p = (const uint64_t *)(mem + i * PAGE);
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned k = 0; k < WORDS; k++) h = sum_step(h, p[k]);
  *got = h;
  return h == csum[i];
}

/* ---- the hog: memory allocated and freed on command (a child process) ---- */

#define CHUNK_MIB 1u
#define CHUNKS_MAX 65536u

static void hog_main (int rfd)
{
  /* the OOM killer takes this process first; PID 1 never */
  int fd = open("/proc/self/oom_score_adj", O_WRONLY);
  if (fd >= 0) { if (write(fd, "1000", 4) < 0) {} close(fd); }
  static void *chunks[CHUNKS_MAX];
  size_t n = 0;
  char line[128];
  size_t len = 0;
  for (;;) {
    char c;
    ssize_t r = read(rfd, &c, 1);
    if (r == 0) _exit(0);
    if (r < 0) { if (errno == EINTR) continue; _exit(1); }
    if (c != '\n') { if (len < sizeof line - 1) line[len++] = c; continue; }
    line[len] = 0;
    len = 0;
    long mib = 0;
    char mode[16] = "";
    if (sscanf(line, "grow %ld %15s", &mib, mode) >= 1 && mib > 0) {
      int same = strcmp(mode, "same") == 0;
      for (long i = 0; i < mib && n < CHUNKS_MAX; i++) {
        uint8_t *p = mmap(NULL, CHUNK_MIB << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) break;
        for (size_t off = 0; off < (CHUNK_MIB << 20); off += PAGE) {
          uint64_t *w = (uint64_t *)(p + off);
          uint64_t seed = same ? 0x5354524c494e47ull : mix(((uint64_t)n << 20) ^ off);
          for (unsigned k = 0; k < WORDS; k++) w[k] = seed + k;
        }
        chunks[n++] = p;
      }
    } else if (sscanf(line, "shrink %ld", &mib) == 1 && mib > 0) {
      for (long i = 0; i < mib && n > 0; i++) munmap(chunks[--n], CHUNK_MIB << 20);
    } else {
      continue;
    }
    say("hog held=%zu\n", n * CHUNK_MIB);
  }
}

static int cmd_fd = -1;
static int hog_fd = -1;
static pid_t hog_pid = -1;

static void hog_start (void)
{
  int p[2];
  if (pipe(p) < 0) return;
  pid_t pid = fork();
  if (pid < 0) { close(p[0]); close(p[1]); return; }
  if (pid == 0) { close(p[1]); hog_main(p[0]); _exit(0); }
  close(p[0]);
  hog_fd = p[1];
  hog_pid = pid;
}

static long vmstat (const char *name)
{
  char buf[8192];
  int fd = open("/proc/vmstat", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  size_t len = strlen(name);
  for (char *s = buf; (s = strstr(s, name)) != NULL; s += len) {
    if ((s == buf || s[-1] == '\n') && s[len] == ' ') return strtol(s + len + 1, NULL, 10);
  }
  return -1;
}

static int run_cmd (char *const argv[])
{
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) { execv(argv[0], argv); _exit(127); }
  int st;
  while (waitpid(pid, &st, 0) < 0) if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Opens the command port, raw and non-blocking; -1 when the VM has none. */
static void cmd_open (void)
{
  int fd = open("/dev/ttyS1", O_RDWR | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return;
  struct termios tio;
  if (tcgetattr(fd, &tio) < 0) { close(fd); return; } /* no UART behind it */
  cfmakeraw(&tio);
  tcsetattr(fd, TCSANOW, &tio);
  cmd_fd = fd;
  signal(SIGPIPE, SIG_IGN);
  hog_start();
  say("dirtier commands on ttyS1\n");
}

/* Reads whatever arrived on the command port and carries out complete lines; reaps the hog. */
static void cmd_poll (void)
{
  static char line[128];
  static size_t len = 0;
  if (cmd_fd < 0) return;
  int st;
  if (hog_pid > 0 && waitpid(hog_pid, &st, WNOHANG) == hog_pid) {
    say("hog killed signal=%d oom_kill=%ld\n", WIFSIGNALED(st) ? WTERMSIG(st) : 0, vmstat("oom_kill"));
    close(hog_fd);
    hog_pid = -1;
    hog_start();
  }
  char buf[256];
  ssize_t n = read(cmd_fd, buf, sizeof buf);
  for (ssize_t i = 0; i < n; i++) {
    char c = buf[i];
    if (c == '\r') continue;
    if (c != '\n') { if (len < sizeof line - 2) line[len++] = c; continue; }
    line[len] = 0;
    if (strcmp(line, "balloon-off") == 0) {
      char *argv[] = { "/bin/rmmod", "virtio_balloon", NULL };
      say("balloon-off rc=%d\n", run_cmd(argv));
    } else if (hog_fd >= 0 && len > 0) {
      line[len++] = '\n';
      if (write(hog_fd, line, len) < 0) {}
    }
    len = 0;
  }
}

static long cmdline_param (const char *name, long dflt, int *is_max)
{
  char buf[4096];
  int fd = open("/proc/cmdline", O_RDONLY);
  if (fd < 0) return dflt;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return dflt;
  buf[n] = 0;
  size_t len = strlen(name);
  for (char *s = buf; (s = strstr(s, name)) != NULL; s += len) {
    if ((s != buf && s[-1] != ' ') || s[len] != '=') continue;
    const char *v = s + len + 1;
    if (is_max && strncmp(v, "max", 3) == 0) { *is_max = 1; return dflt; }
    char *end;
    long x = strtol(v, &end, 10);
    if (end != v && x >= 0) return x;
  }
  return dflt;
}

/* ---- disk checker ---- */
#define DBLK 4096u
#define DREAD_CHUNK 16u /* blocks per verification read */
#define DPASS_TICKS 400u /* one full verification pass about every 4 s */

static int disk_fd = -1;
static size_t dblocks;
static uint32_t *dgen;
static uint8_t *dbuf;
static uint64_t dwrites, dpass, dlat_sum_ns, dlat_max_ns, dlat_n, drand;

static inline uint64_t disk_word (size_t i, uint32_t g, unsigned k)
{
  return mix(mix(((uint64_t)i << 32) ^ g ^ 0xd15c000000000000ull) ^ k);
}

static int disk_open (long mib)
{
  for (int tries = 0; tries < 500 && disk_fd < 0; tries++) {
    disk_fd = open("/dev/vda", O_RDWR | O_DIRECT);
    if (disk_fd < 0) { struct timespec ts = { 0, 10000000L }; nanosleep(&ts, NULL); }
  }
  if (disk_fd < 0) { say("disk error open /dev/vda errno=%d\n", errno); return -1; }
  dblocks = (size_t)mib * (1024u * 1024u / DBLK);
  dgen = calloc(dblocks, sizeof *dgen);
  dbuf = aligned_alloc(DBLK, DBLK * DREAD_CHUNK);
  if (!dgen || !dbuf) { say("disk error alloc errno=%d\n", errno); close(disk_fd); disk_fd = -1; return -1; }
  return 0;
}

static void disk_write_one (void)
{
  size_t i = (size_t)(mix(++drand) % dblocks);
  uint32_t g = dgen[i] + 1;
  uint64_t *p = (uint64_t *)dbuf;
  for (unsigned k = 0; k < DBLK / 8u; k++) p[k] = disk_word(i, g, k);
  uint64_t t0 = now_ns();
  ssize_t w = pwrite(disk_fd, dbuf, DBLK, (off_t)i * DBLK);
  uint64_t dt = now_ns() - t0;
  if (w != (ssize_t)DBLK) { say("disk error write block=%zu errno=%d\n", i, errno); return; }
  dgen[i] = g;
  dwrites++;
  dlat_sum_ns += dt; dlat_n++;
  if (dt > dlat_max_ns) dlat_max_ns = dt;
}

/* verifies blocks [from, from+n); returns 0 when all match */
static int disk_verify (size_t from, size_t n, int report)
{
  ssize_t r = pread(disk_fd, dbuf, n * DBLK, (off_t)from * DBLK);
  if (r != (ssize_t)(n * DBLK)) { if (report) say("disk error read block=%zu errno=%d\n", from, errno); return -1; }
  for (size_t b = 0; b < n; b++) {
    const uint64_t *p = (const uint64_t *)(dbuf + b * DBLK);
    uint32_t g = dgen[from + b];
    for (unsigned k = 0; k < DBLK / 8u; k++) {
      uint64_t want = g == 0 ? 0 : disk_word(from + b, g, k);
      if (p[k] != want) {
        if (report) say("DISK FAIL block=%zu gen=%u word=%u\n", from + b, g, k);
        return -1;
      }
    }
  }
  return 0;
}

static void hang (void)
{
  for (;;) pause(); /* PID 1 must never exit */
}

int main (void)
{
  int fd = open("/dev/console", O_WRONLY | O_NOCTTY);
  if (fd >= 0) out_fd = fd;

  int flat_out = 0;
  long ws_mib = cmdline_param("dirtier_ws", 16, NULL);
  long rate_mib = cmdline_param("dirtier_rate", 0, &flat_out);
  if (ws_mib < 1) ws_mib = 1;
  npages = (size_t)ws_mib * (1024u * 1024u / PAGE);
  say("dirtier start ws_mib=%ld rate_mib=%s%ld pages=%zu\n", ws_mib, flat_out ? "max/" : "", rate_mib, npages);

  mem = aligned_alloc(PAGE, npages * PAGE);
  csum = calloc(npages, sizeof *csum);
  gen = calloc(npages, sizeof *gen);
  if (!mem || !csum || !gen) { say("dirtier cannot allocate %ld MiB\n", ws_mib); hang(); }
  for (size_t i = 0; i < npages; i++) write_page(i);

  long disk_mib = cmdline_param("dirtier_disk", 0, NULL);
  long disk_kib = cmdline_param("dirtier_disk_rate", 256, NULL);
  if (disk_mib > 0 && disk_open(disk_mib) == 0)
    say("disk start mib=%ld rate_kib=%ld blocks=%zu\n", disk_mib, disk_kib, dblocks);
  say("dirtier ready\n");
  uint64_t dwrite_milli = (uint64_t)disk_kib * 1024u / DBLK * 1000u / (1000000000u / TICK_NS);
  size_t dverify_chunks = disk_fd < 0 ? 0 : (dblocks / DREAD_CHUNK + DPASS_TICKS - 1) / DPASS_TICKS;
  uint64_t dcredit_milli = 0;
  size_t dvcur = 0;
  int dpass_failed = 0;
  cmd_open();

  /* pages to rewrite per tick, in 1/1000 pages so that low rates are exact on average */
  uint64_t write_milli = (uint64_t)rate_mib * (1024u * 1024u / PAGE) * 1000u / (1000000000u / TICK_NS);
  size_t verify_per_tick = (npages + VERIFY_PASS_TICKS - 1) / VERIFY_PASS_TICKS;
  uint64_t credit_milli = 0, seq = 0, written = 0, pass = 0;
  size_t wcur = 0, vcur = 0;
  int pass_failed = 0;
  uint64_t next = now_ns() + TICK_NS;

  for (;;) {
    if (flat_out) {
      /* rewrite until the tick is used up, leaving time to verify */
      uint64_t stop = next - TICK_NS / 4;
      while (now_ns() < stop) {
        for (int b = 0; b < 8; b++) { write_page(wcur); wcur = (wcur + 1) % npages; written++; }
      }
    } else {
      credit_milli += write_milli;
      while (credit_milli >= 1000) {
        credit_milli -= 1000;
        write_page(wcur); wcur = (wcur + 1) % npages; written++;
      }
    }
    for (size_t v = 0; v < verify_per_tick; v++) {
      uint64_t got;
      if (!verify_page(vcur, &got) && !pass_failed) {
        pass_failed = 1;
        say("INTEGRITY FAIL page=%zu expected=%016llx got=%016llx\n", vcur,
            (unsigned long long)csum[vcur], (unsigned long long)got);
      }
      if (++vcur == npages) {
        vcur = 0;
        pass++;
        if (!pass_failed) say("integrity ok pass=%llu pages=%zu\n", (unsigned long long)pass, npages);
        pass_failed = 0;
      }
    }
    if (disk_fd >= 0) {
      dcredit_milli += dwrite_milli;
      while (dcredit_milli >= 1000) { dcredit_milli -= 1000; disk_write_one(); }
      for (size_t c = 0; c < dverify_chunks; c++) {
        size_t n = dblocks - dvcur < DREAD_CHUNK ? dblocks - dvcur : DREAD_CHUNK;
        if (disk_verify(dvcur, n, !dpass_failed) != 0) dpass_failed = 1;
        dvcur += n;
        if (dvcur >= dblocks) {
          dvcur = 0;
          dpass++;
          if (!dpass_failed) say("disk ok pass=%llu blocks=%zu writes=%llu lat_avg_us=%llu lat_max_us=%llu\n", (unsigned long long)dpass, dblocks,
                                 (unsigned long long)dwrites, (unsigned long long)(dlat_n ? dlat_sum_ns / dlat_n / 1000u : 0), (unsigned long long)(dlat_max_ns / 1000u));
          dpass_failed = 0;
          dlat_sum_ns = dlat_max_ns = dlat_n = 0;
          break;
        }
      }
    }
    cmd_poll();
    uint64_t t = now_ns();
    say("hb %llu %llu.%06llu %llu\n", (unsigned long long)++seq, (unsigned long long)(t / 1000000000ull),
        (unsigned long long)(t % 1000000000ull / 1000u), (unsigned long long)written);
    if (t >= next + TICK_NS) next = t; /* behind schedule: do not burst to catch up */
    struct timespec ts = { (time_t)(next / 1000000000ull), (long)(next % 1000000000ull) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
    next += TICK_NS;
  }
}
