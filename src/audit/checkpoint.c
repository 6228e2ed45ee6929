/* checkpoint.c — reading and printing audit checkpoints (see audit.h).
 *
 * A checkpoint line is parsed strictly: exact field names in order, a
 * lower-case UUID, decimal numbers without sign, exactly 64 lower-case hex
 * digits per MAC; anything else on a line that carries the tag is an
 * error, never a skipped line (a damaged checkpoint file must not pass for
 * an empty one). Logging them is chain.c's (it owns the registry). */
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "audit_internal.h"
#include "keyward/core/text.h"

/* Reads "<name><value>" at *p, the value running
 * up to a space or the end (at most cap - 1 bytes); advances *p past it. */
static bool field(const char **p, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name), n = 0;
	if (strncmp(*p, name, nl) != 0)
		return false;
	const char *v = *p + nl;
	while (v[n] != '\0' && v[n] != ' ' && v[n] != '\n' && v[n] != '\r')
		n++;
	if (n == 0 || n >= cap)
		return false;
	memcpy(out, v, n);
	out[n] = '\0';
	*p = v + n;
	return true;
}

static bool decimal(const char *s, uint64_t max, uint64_t *out)
{
	if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && s[1] != '\0') || strlen(s) > 20)
		return false;
	errno = 0;
	char *end = NULL;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return false;
	*out = v;
	return true;
}

kw_err kw_audit_checkpoint_parse(const char *line, kw_audit_checkpoint *out)
{
	const char *p = strstr(line, KW_AUDIT_CHECKPOINT_TAG " ");
	if (p == NULL)
		return KW_ERR_NOT_FOUND;
	p += strlen(KW_AUDIT_CHECKPOINT_TAG " ");
	char chain[40], seq[24], key[24], mac[70], head[70];
	uint64_t s = 0, k = 0;
	kw_audit_checkpoint cp;
	memset(&cp, 0, sizeof(cp));
	bool ok = field(&p, "chain=", chain, sizeof(chain)) && *p++ == ' ' &&
	          field(&p, "seq=", seq, sizeof(seq)) && *p++ == ' ' && field(&p, "key=", key, sizeof(key)) &&
	          *p++ == ' ' && field(&p, "mac=", mac, sizeof(mac)) && *p++ == ' ' &&
	          field(&p, "head_mac=", head, sizeof(head));
	ok = ok && (*p == '\0' || *p == '\n' || *p == '\r' || *p == ' ');
	ok = ok && kw_is_uuid(chain) && decimal(seq, INT64_MAX, &s) && s >= 1 &&
	     decimal(key, UINT32_MAX, &k) && k >= 1 && kw_is_lower_hex(mac, 2 * KW_AUDIT_MAC_LEN) &&
	     kw_is_lower_hex(head, 2 * KW_AUDIT_MAC_LEN);
	for (size_t i = 0; ok && chain[i] != '\0'; i++)
		ok = !(chain[i] >= 'A' && chain[i] <= 'F');
	ok = ok && kw_hex_decode(mac, KW_AUDIT_MAC_LEN, cp.mac) &&
	     kw_hex_decode(head, KW_AUDIT_MAC_LEN, cp.head_mac);
	if (!ok)
		return KW_ERR_INVALID;
	memcpy(cp.chain_id, chain, sizeof(cp.chain_id));
	cp.seq = s;
	cp.key_version = (uint32_t)k;
	*out = cp;
	return KW_OK;
}

kw_err kw_audit_checkpoints_current(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, FILE *out)
{
	kw_db_result *heads = NULL;
	char cursor[KW_AUDIT_UUID_LEN + 1] = "";
	kw_err err = kw_audit_read_begin(db);
	while (err == KW_OK) {
		err = kw_audit_heads_page(db, cursor, &heads);
		if (err != KW_OK)
			break;
		int n = kw_db_nrows(heads);
		for (int i = 0; i < n && err == KW_OK; i++) {
			kw_audit_checkpoint cp;
			uint64_t seq = 0, key = 0;
			unsigned char want[KW_AUDIT_MAC_LEN];
			const kw_hsm_key *k = NULL;
			snprintf(cp.chain_id, sizeof(cp.chain_id), "%s", kw_db_text(heads, i, 0));
			bool ok = decimal(kw_db_text(heads, i, 1), INT64_MAX, &seq) &&
			          decimal(kw_db_text(heads, i, 3), UINT32_MAX, &key) &&
			          kw_hex_decode(kw_db_text(heads, i, 2), KW_AUDIT_MAC_LEN, cp.mac) &&
			          strlen(kw_db_text(heads, i, 2)) == 2 * KW_AUDIT_MAC_LEN &&
			          kw_hex_decode(kw_db_text(heads, i, 4), KW_AUDIT_MAC_LEN, cp.head_mac) &&
			          strlen(kw_db_text(heads, i, 4)) == 2 * KW_AUDIT_MAC_LEN;
			cp.seq = seq;
			cp.key_version = (uint32_t)key;
			if (ok && kw_hsm_key_get(hsm, KW_KEY_AUDIT, cp.key_version, &k) == KW_OK)
				err = kw_audit_head_mac(s, k, cp.chain_id, cp.seq, cp.mac, want);
			else
				ok = false;
			if (err == KW_OK &&
			    (!ok || CRYPTO_memcmp(want, cp.head_mac, KW_AUDIT_MAC_LEN) != 0)) {
				fprintf(
				    stderr,
				    "audit chain %s: its head does not verify; run keywardctl audit verify\n",
				    cp.chain_id);
				err = KW_ERR_VERIFY;
			}
			if (err == KW_OK) {
				char line[256];
				kw_audit_checkpoint_format(&cp, line, sizeof(line));
				fprintf(out, "%s\n", line);
			}
			snprintf(cursor, sizeof(cursor), "%s", cp.chain_id);
		}
		kw_db_result_free(heads);
		heads = NULL;
		if (n < KW_AUDIT_PAGE)
			break;
	}
	if (kw_db_in_tx(db))
		kw_db_rollback(db);
	fflush(out);
	return err;
}
