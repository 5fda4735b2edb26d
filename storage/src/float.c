/* INCRBYFLOAT as Redis computes it: strtold parsing, long double addition, and "%.17Lf"
 * with trailing zeros trimmed (Redis's ld2string LD_STR_HUMAN). Rust has no 80-bit float, and
 * doing the sum in f64 prints 10.5 + 0.1 as 10.59999999999999964 where Redis prints 10.6. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LONG_DOUBLE_CHARS (5 * 1024)

/* Redis's string2ld: the whole string must be a finite number, no leading space. */
static int parse_ld(const char *s, size_t len, long double *out) {
    char buf[MAX_LONG_DOUBLE_CHARS];
    char *end;
    if (len == 0 || len >= sizeof(buf)) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    long double value = strtold(buf, &end);
    if (isspace((unsigned char)buf[0]) || end != buf + len ||
        (errno == ERANGE && (value == HUGE_VALL || value == -HUGE_VALL || fpclassify(value) == FP_ZERO)) ||
        isnan(value))
        return 0;
    *out = value;
    return 1;
}

/* Returns the length written to out, or -1: the increment is not a float, -2: the current
 * value is not a float, -3: the result is NaN or infinite. */
int ringkv_incrbyfloat(const char *current, size_t current_len, int has_current,
                       const char *incr, size_t incr_len, char *out, size_t out_len) {
    long double value = 0, by;
    if (has_current && !parse_ld(current, current_len, &value)) return -2;
    if (!parse_ld(incr, incr_len, &by)) return -1;
    value += by;
    if (isnan(value) || isinf(value)) return -3;
    int l = snprintf(out, out_len, "%.17Lf", value);
    if (l < 0 || (size_t)l + 1 > out_len) return -3;
    if (strchr(out, '.') != NULL) {
        char *p = out + l - 1;
        while (*p == '0') { p--; l--; }
        if (*p == '.') l--;
    }
    if (l == 2 && out[0] == '-' && out[1] == '0') { out[0] = '0'; l = 1; }
    return l;
}

/* Redis's string2ld alone, for validating a float argument. */
int ringkv_is_float(const char *s, size_t len) {
    long double v;
    return parse_ld(s, len, &v);
}
