/* The floors of bench/bench_gc.py: bare loops doing the least I/O a GC pass can do, with no
 * interpreter around them. Built by the benchmark with gcc -O2. Prints "<count> <seconds>",
 * timing only the loop (reading the path list is not timed).
 *
 *   floor_gc stat LIST          lstat every path of LIST (one per line)
 *   floor_gc touch LIST         utimensat(atime now, mtime omitted) every path of LIST
 *   floor_gc scan CHUNKS        readdir every prefix dir 0000..ffff of CHUNKS, lstat each entry
 *   floor_gc unlink CHUNKS T    the scan, unlinking each entry whose atime is before T (s)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static char **read_list(const char *file, long *count)
{
    FILE *f = fopen(file, "r");
    if (!f) { perror(file); exit(2); }
    long cap = 1 << 20, n = 0;
    char **paths = malloc(cap * sizeof *paths);
    char *line = NULL;
    size_t len = 0;
    ssize_t got;
    while ((got = getline(&line, &len, f)) > 0) {
        if (line[got - 1] == '\n') line[got - 1] = '\0';
        if (n == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
        paths[n++] = strdup(line);
    }
    fclose(f);
    *count = n;
    return paths;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: see the source\n"); return 2; }
    const char *mode = argv[1];
    long n = 0;
    double t0, t1;
    if (!strcmp(mode, "stat") || !strcmp(mode, "touch")) {
        long count;
        char **paths = read_list(argv[2], &count);
        struct timespec times[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
        struct stat st;
        int touch = !strcmp(mode, "touch");
        t0 = now();
        for (long i = 0; i < count; i++) {
            int r = touch ? utimensat(AT_FDCWD, paths[i], times, AT_SYMLINK_NOFOLLOW)
                          : fstatat(AT_FDCWD, paths[i], &st, AT_SYMLINK_NOFOLLOW);
            if (r != 0) { perror(paths[i]); return 1; }
            n++;
        }
        t1 = now();
    } else if (!strcmp(mode, "scan") || !strcmp(mode, "unlink")) {
        int chunks = open(argv[2], O_RDONLY | O_DIRECTORY);
        if (chunks < 0) { perror(argv[2]); return 1; }
        long cutoff = argc > 3 ? atol(argv[3]) : 0;
        int unlink_old = !strcmp(mode, "unlink");
        char name[8];
        t0 = now();
        for (int i = 0; i < 0x10000; i++) {
            snprintf(name, sizeof name, "%04x", i);
            int fd = openat(chunks, name, O_RDONLY | O_DIRECTORY);
            if (fd < 0) continue;
            DIR *d = fdopendir(fd);
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (e->d_name[0] == '.') continue;
                struct stat st;
                if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
                n++;
                if (unlink_old && st.st_atim.tv_sec < cutoff)
                    unlinkat(fd, e->d_name, 0);
            }
            closedir(d);
        }
        t1 = now();
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("%ld %.6f\n", n, t1 - t0);
    return 0;
}
