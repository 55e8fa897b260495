# uag access policy: who may use which provider and which knowledge-base collections.
# Rego v1, evaluated in process by regorus. The input document is described in docs/POLICY.md;
# `data` is policy-data.json. Installed as /etc/uag/policy/uag.rego (+ policy-data.json);
# edits reload within a few seconds (or on `systemctl reload uag`, which sends SIGHUP).
# The appliance config (deploy/uag.toml) uses it from /etc/uag/policy/ with the keys it makes:
# admin (role admin), kiosk (role kiosk: ask only) and inbox (role editor).
package uag

default allow := false

# The caller's roles; anonymous callers (auth not required) get the role "anonymous".
roles contains role if some role in input.identity.roles

roles contains "anonymous" if input.identity.anonymous

# Operators may do everything.
allow if "admin" in roles

# Inference: a role may use the providers its data entry names, by name or by type.
allow if {
	input.kind == "inference"
	some role in roles
	provider_allowed(data.roles[role])
}

provider_allowed(entry) if input.provider in entry.providers

provider_allowed(entry) if input.provider_type in entry.provider_types

# Documents API: known callers may list and search (a kiosk key only asks); editors may upload
# and delete. Listing, upload and delete stay within the caller's allowed_collections.
allow if {
	input.kind == "documents"
	input.method == "GET"
	not input.identity.anonymous
	not "kiosk" in roles
}

allow if {
	input.kind == "documents"
	"editor" in roles
}

# Transcription, speech and embeddings run on the local models: any known caller.
allow if {
	input.kind in {"audio", "embeddings"}
	not input.identity.anonymous
}

# Collections the caller's answers may draw on ("*": every collection). Queried as
# `collections_query = "data.uag.allowed_collections"`.
allowed_collections contains c if {
	some role in roles
	some c in data.roles[role].collections
}
