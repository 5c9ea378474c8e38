# Gateway authorization policy: trial-mode rules on top of RBAC (which the service checks first).
# Queried at POST /v1/data/gateway/authz; answers {"allow": bool, "reason": string}.
package gateway.authz

# Trial principals whose trial ended before now.
trial_expired if {
	input.principal.trial_mode
	input.principal.trial_ends_at != null
	input.principal.trial_ends_at * 1000000000 <= input.time.now_ns
}

# Trial principals on routes marked paid-only.
paid_only if {
	input.principal.trial_mode
	input.request.paid_only
}

default allow := false

allow if {
	not trial_expired
	not paid_only
}

# The first failing rule names the reason; an expired trial wins over paid-only.
default reason := "allowed"

reason := "trial_expired" if trial_expired

reason := "paid_only" if {
	not trial_expired
	paid_only
}
