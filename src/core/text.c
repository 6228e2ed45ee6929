/* text.c — see keyward/core/text.h. */
#include "keyward/core/text.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool kw_uuid_parse(const char *s, unsigned char out[16])
{
	return kw_is_uuid(s) && kw_hex_decode(s, 4, out) && kw_hex_decode(s + 9, 2, out + 4) &&
	       kw_hex_decode(s + 14, 2, out + 6) && kw_hex_decode(s + 19, 2, out + 8) &&
	       kw_hex_decode(s + 24, 6, out + 10);
}

void kw_uuid_format(const unsigned char b[16], char out[37])
{
	char hex[33];
	kw_hex_encode(b, 16, hex);
	memcpy(out, hex, 8);
	out[8] = '-';
	memcpy(out + 9, hex + 8, 4);
	out[13] = '-';
	memcpy(out + 14, hex + 12, 4);
	out[18] = '-';
	memcpy(out + 19, hex + 16, 4);
	out[23] = '-';
	memcpy(out + 24, hex + 20, 12);
	out[36] = '\0';
}

kw_err kw_random_uuid(char out[37])
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return KW_ERR_INTERNAL;
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	kw_uuid_format(b, out);
	return KW_OK;
}

kw_err kw_random_hex128(char out[33])
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return KW_ERR_INTERNAL;
	kw_hex_encode(b, sizeof(b), out);
	return KW_OK;
}

/* Longest base64url text kw_b64url_decode takes (bounds its allocations). */
#define KW_B64URL_MAX_IN (1u << 20)

int kw_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool kw_hex_decode(const char *hex, size_t n, unsigned char *out)
{
	for (size_t i = 0; i < n; i++) {
		int hi = kw_hex_value(hex[2 * i]);
		int lo = hi < 0 ? -1 : kw_hex_value(hex[2 * i + 1]);
		if (lo < 0)
			return false;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

void kw_hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

bool kw_is_lower_hex(const char *s, size_t n)
{
	if (s == NULL || strnlen(s, n + 1) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

bool kw_is_uuid(const char *s)
{
	if (s == NULL || strnlen(s, 37) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : kw_hex_value(s[i]) < 0)
			return false;
	}
	return true;
}

size_t kw_b64url_encode(const unsigned char *in, size_t len, char *out)
{
	int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	out[n] = '\0';
	return (size_t)n;
}

kw_err kw_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
	if (len % 4 == 1 || len > KW_B64URL_MAX_IN)
		return KW_ERR_INVALID;
	size_t padded = (len + 3) / 4 * 4;
	size_t want = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
	if (want > cap)
		return KW_ERR_INVALID;
	char *tmp = malloc(padded + 1);
	unsigned char *raw = malloc(padded / 4 * 3 + 1);
	char *check = malloc(padded + 1);
	kw_err err = KW_ERR_INVALID;
	if (tmp == NULL || raw == NULL || check == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			goto done;
		tmp[i] = c;
	}
	for (size_t i = len; i < padded; i++)
		tmp[i] = '=';
	tmp[padded] = '\0';
	if (EVP_DecodeBlock(raw, (const unsigned char *)tmp, (int)padded) < 0)
		goto done;
	/* Canonical encoding only: the unused low bits of the last character
	 * must be zero, so one token has exactly one spelling. */
	if (kw_b64url_encode(raw, want, check) != len || memcmp(check, in, len) != 0)
		goto done;
	memcpy(out, raw, want);
	*outlen = want;
	err = KW_OK;
done:
	free(tmp);
	free(raw);
	free(check);
	return err;
}

/* Length of the well-formed sequence at s[0..n) (1-4), or 0 with *bad the
 * length of its maximal ill-formed subpart (>= 1). Unicode 15, table 3-7. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t need;
	if (c >= 0x01 && c <= 0x7F)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		need = 1;
	else if (c >= 0xE0 && c <= 0xEF)
		need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
	else if (c >= 0xF0 && c <= 0xF4)
		need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
	else {
		*bad = 1; /* NUL, a continuation byte, C0, C1, F5-FF */
		return 0;
	}
	for (size_t i = 1; i <= need; i++) {
		if (i >= n || s[i] < lo || s[i] > hi) {
			*bad = i;
			return 0;
		}
		lo = 0x80, hi = 0xBF;
	}
	return need + 1;
}

size_t kw_utf8_clean(const char *in, size_t len, size_t max_chars, char *out, size_t cap, bool *cut)
{
	static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0, o = 0, chars = 0;
	if (cap == 0)
		kw_misuse("kw_utf8_clean: no room for the NUL");
	while (i < len && chars < max_chars) {
		size_t bad = 0, n = utf8_seq(s + i, len - i, &bad);
		const char *src = n > 0 ? in + i : replacement;
		size_t w = n > 0 ? n : 3;
		if (o + w >= cap)
			break;
		memcpy(out + o, src, w);
		o += w;
		i += n > 0 ? n : bad;
		chars++;
	}
	out[o] = '\0';
	if (cut != NULL)
		*cut = i < len;
	return o;
}

kw_err kw_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
	if (len % 4 != 0 || len > INT32_MAX || cap < kw_b64_decoded_max(len))
		return KW_ERR_INVALID;
	char *check = malloc(len + 1);
	int got = check ? EVP_DecodeBlock(out, (const unsigned char *)in, (int)len) : -1;
	size_t pad = len > 0 ? (size_t)(in[len - 1] == '=') + (size_t)(len > 1 && in[len - 2] == '=') : 0;
	bool ok = got >= 0 && (size_t)got >= pad &&
	          EVP_EncodeBlock((unsigned char *)check, out, got - (int)pad) == (int)len &&
	          memcmp(check, in, len) == 0;
	if (check != NULL) {
		OPENSSL_cleanse(check, len + 1);
		free(check);
	}
	if (!ok) {
		OPENSSL_cleanse(out, cap);
		return KW_ERR_INVALID;
	}
	*outlen = (size_t)got - pad;
	return KW_OK;
}
