/* pretok.c — GPT-2 pre-tokenization: UTF-8 decoding, Unicode classes, and
 * the split of text into pre-tokens that BPE merges never cross.
 *
 * The pattern is GPT-2's, evaluated the way a backtracking regex engine with
 * leftmost-first alternation evaluates it (HF tokenizers, llama.cpp):
 *
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * Rather than a regex engine, smj_pretok_next hand-codes what the pattern
 * does at a given start position (every character belongs to exactly one
 * class: letter, number, whitespace, other — so some alternative always
 * matches and the pieces tile the input):
 *   1. "'" followed by s t m d (or re ve ll), case-sensitive: the contraction.
 *   2. An optional U+0020 then a maximal run of letters, or of numbers, or of
 *      "other" characters (the space only joins a following non-space run).
 *   3. A whitespace run: \s+(?!\S) takes the run up to the end of text, or
 *      backtracks one character to leave the last whitespace character in
 *      front of the following non-space; when the run is one character long
 *      that fails and \s+ takes the single character.
 * Invariants: pieces are non-empty, contiguous and cover the input; any byte
 * sequence is accepted. An invalid UTF-8 byte is one "other" character of
 * length one. "\s" is the White_Space property; classes come from the
 * generated unicode_tables.h (binary search over sorted ranges).
 * Patterns 2 (Llama-3) and 3 (Qwen2) are hand-coded the same way in
 * pretok_llama3 below. Normalization (NFC) is not done here but before, by encode (nfc.c).
 */
#include "tokenizer.h"
#include "unicode_tables.h"

/* Whether cp lies in one of the n sorted disjoint ranges r. */
static int in_ranges(const smj_urange *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].lo) hi = mid;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

smj_uclass smj_unicode_class(uint32_t cp) {
    if (cp < 0x80) { /* ASCII fast path */
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return SMJ_UCLASS_LETTER;
        if (cp >= '0' && cp <= '9') return SMJ_UCLASS_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return SMJ_UCLASS_SPACE;
        return SMJ_UCLASS_OTHER;
    }
    if (cp > 0x10FFFF) return SMJ_UCLASS_OTHER;
    if (in_ranges(smj_uletter_ranges, sizeof smj_uletter_ranges / sizeof *smj_uletter_ranges, cp))
        return SMJ_UCLASS_LETTER;
    if (in_ranges(smj_unumber_ranges, sizeof smj_unumber_ranges / sizeof *smj_unumber_ranges, cp))
        return SMJ_UCLASS_NUMBER;
    if (in_ranges(smj_uspace_ranges, sizeof smj_uspace_ranges / sizeof *smj_uspace_ranges, cp))
        return SMJ_UCLASS_SPACE;
    return SMJ_UCLASS_OTHER;
}

int smj_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t b = s[0];
    *cp = 0xFFFFFFFFu;
    if (b < 0x80) { *cp = b; return 1; }
    int len;
    uint32_t c, min;
    if (b >= 0xC2 && b <= 0xDF) { len = 2; c = b & 0x1F; min = 0x80; }
    else if (b >= 0xE0 && b <= 0xEF) { len = 3; c = b & 0x0F; min = 0x800; }
    else if (b >= 0xF0 && b <= 0xF4) { len = 4; c = b & 0x07; min = 0x10000; }
    else return 1; /* continuation byte, C0/C1, F5..FF */
    if (n < (size_t)len) return 1;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 1;
        c = c << 6 | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 1;
    *cp = c;
    return len;
}

/* Class and length of the character at s[pos] (pos < n). */
static smj_uclass char_at(const uint8_t *s, size_t n, size_t pos, int *len) {
    uint32_t cp;
    *len = smj_utf8_decode(s + pos, n - pos, &cp);
    return smj_unicode_class(cp);
}

/* End of the maximal run of class cls starting at pos (pos itself may be past
 * the run, then pos is returned). */
static size_t run_end(const uint8_t *s, size_t n, size_t pos, smj_uclass cls) {
    while (pos < n) {
        int len;
        if (char_at(s, n, pos, &len) != cls) break;
        pos += (size_t)len;
    }
    return pos;
}

/* Length of a contraction ('s 't 'm 'd 're 've 'll) at s[pos] == '\'', or 0. */
static size_t contraction(const uint8_t *s, size_t n, size_t pos) {
    if (pos + 1 >= n) return 0;
    uint8_t a = s[pos + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= n) return 0;
    uint8_t b = s[pos + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

size_t smj_pretok_next(const uint8_t *s, size_t n, size_t pos) {
    if (s[pos] == '\'') {
        size_t c = contraction(s, n, pos);
        if (c) return pos + c;
    }
    int len;
    smj_uclass cls = char_at(s, n, pos, &len);
    if (s[pos] == ' ' && pos + 1 < n) { /* " ?X+" with the optional space taken */
        int len2;
        smj_uclass next = char_at(s, n, pos + 1, &len2);
        if (next != SMJ_UCLASS_SPACE) return run_end(s, n, pos + 1, next);
    }
    if (cls != SMJ_UCLASS_SPACE) return run_end(s, n, pos, cls); /* "X+" without the space */
    /* Whitespace: find the run and the start of its last character. */
    size_t end = pos, last = pos;
    int count = 0;
    while (end < n) {
        int l;
        if (char_at(s, n, end, &l) != SMJ_UCLASS_SPACE) break;
        last = end;
        end += (size_t)l;
        count++;
    }
    if (end == n) return end;       /* \s+(?!\S) at the end of text */
    if (count >= 2) return last;    /* \s+(?!\S) after backtracking one character */
    return end;                     /* \s+ : a single whitespace character */
}

/* ---- Llama-3 (pattern 2) and Qwen2 (pattern 3)
 *
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * (Qwen2: \p{N} instead of \p{N}{1,3}.) At a start position, in order:
 *   1. "'" + a contraction, case-insensitively: s t m d re ve ll in any case,
 *      and U+017F LATIN SMALL LETTER LONG S, which Unicode case folding
 *      equates with s (the regex engines do too).
 *   2. A letter run, optionally preceded by one character that is neither
 *      \r, \n, a letter nor a number (so " word", "\tword", "(word").
 *   3. One to three numbers (Qwen2: one).
 *   4. An optional U+0020, a run of "other" characters (not whitespace,
 *      letter or number), then any \r/\n characters.
 *   5. A whitespace run that contains \r or \n: \s*[\r\n]+ backtracks to end
 *      right after the run's last \r/\n.
 *   6./7. As in GPT-2: \s+(?!\S) then \s+.
 */

static int is_crlf(const uint8_t *s, size_t pos) { return s[pos] == '\r' || s[pos] == '\n'; }

/* Whether s[pos..] starts with letter c in any case (or long s for 's'); the
 * matched length in *len. */
static int ci_char(const uint8_t *s, size_t n, size_t pos, char c, size_t *len) {
    if (pos >= n) return 0;
    if (s[pos] == (uint8_t)c || s[pos] == (uint8_t)(c - 32)) { *len = 1; return 1; }
    if (c == 's' && pos + 1 < n && s[pos] == 0xC5 && s[pos + 1] == 0xBF) { *len = 2; return 1; }
    return 0;
}

/* Length of a case-insensitive contraction at s[pos] == '\'', or 0. */
static size_t contraction_ci(const uint8_t *s, size_t n, size_t pos) {
    size_t a, b;
    static const char one[] = "stmd";
    static const char two[3][3] = {"re", "ve", "ll"};
    for (int i = 0; i < 4; i++)
        if (ci_char(s, n, pos + 1, one[i], &a)) return 1 + a;
    for (int i = 0; i < 3; i++)
        if (ci_char(s, n, pos + 1, two[i][0], &a) && ci_char(s, n, pos + 1 + a, two[i][1], &b)) return 1 + a + b;
    return 0;
}

static size_t pretok_llama3(const uint8_t *s, size_t n, size_t pos, int max_digits) {
    if (s[pos] == '\'') {
        size_t c = contraction_ci(s, n, pos);
        if (c) return pos + c;
    }
    int len;
    smj_uclass cls = char_at(s, n, pos, &len);
    size_t nxt = pos + (size_t)len;
    /* 2. [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (cls == SMJ_UCLASS_LETTER) return run_end(s, n, pos, SMJ_UCLASS_LETTER);
    if (cls != SMJ_UCLASS_NUMBER && !is_crlf(s, pos) && nxt < n) {
        int l2;
        if (char_at(s, n, nxt, &l2) == SMJ_UCLASS_LETTER) return run_end(s, n, nxt, SMJ_UCLASS_LETTER);
    }
    /* 3. \p{N}{1,max} */
    if (cls == SMJ_UCLASS_NUMBER) {
        size_t end = pos;
        for (int k = 0; k < max_digits && end < n; k++) {
            int l;
            if (char_at(s, n, end, &l) != SMJ_UCLASS_NUMBER) break;
            end += (size_t)l;
        }
        return end;
    }
    /* 4.  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t start = pos;
    if (s[pos] == ' ' && nxt < n) {
        int l2;
        if (char_at(s, n, nxt, &l2) == SMJ_UCLASS_OTHER) start = nxt;
    }
    int l0;
    if (char_at(s, n, start, &l0) == SMJ_UCLASS_OTHER) {
        size_t end = run_end(s, n, start, SMJ_UCLASS_OTHER);
        while (end < n && is_crlf(s, end)) end++;
        return end;
    }
    /* cls is whitespace here. 5. \s*[\r\n]+ */
    size_t end = pos, last = pos, after_crlf = 0;
    int count = 0;
    while (end < n) {
        int l;
        if (char_at(s, n, end, &l) != SMJ_UCLASS_SPACE) break;
        if (is_crlf(s, end)) after_crlf = end + 1;
        last = end;
        end += (size_t)l;
        count++;
    }
    if (after_crlf) return after_crlf;
    /* 6. \s+(?!\S)  7. \s+ */
    if (end == n) return end;
    if (count >= 2) return last;
    return end;
}

size_t smj_pretok_next_pattern(int pattern, const uint8_t *s, size_t n, size_t pos) {
    if (pattern == (int)SMJ_TOK_PATTERN_LLAMA3) return pretok_llama3(s, n, pos, 3);
    if (pattern == (int)SMJ_TOK_PATTERN_QWEN2) return pretok_llama3(s, n, pos, 1);
    return smj_pretok_next(s, n, pos);
}
