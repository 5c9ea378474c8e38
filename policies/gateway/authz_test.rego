# Unit tests of gateway.authz; run with `opa test policies/`.
package gateway.authz_test

import data.gateway.authz

now_ns := 1700000000 * 1000000000

principal(trial, ends) := {"user_id": "u1", "customer_id": "c1", "roles": ["customer"], "trial_mode": trial, "trial_ends_at": ends, "plan": "trial"}

req(paid) := {"method": "GET", "path": "/api/v1/orders", "route_id": "orders-list", "gateway_type": "CP", "paid_only": paid, "headers": {}}

doc(trial, ends, paid) := {"principal": principal(trial, ends), "request": req(paid), "time": {"now_ns": now_ns}}

test_paying_customer_allowed if {
	authz.allow with input as doc(false, null, true)
	authz.reason == "allowed" with input as doc(false, null, true)
}

test_active_trial_allowed_on_normal_route if {
	authz.allow with input as doc(true, 1700000100, false)
}

test_active_trial_without_end_allowed if {
	authz.allow with input as doc(true, null, false)
}

test_ended_trial_denied if {
	not authz.allow with input as doc(true, 1699999999, false)
	authz.reason == "trial_expired" with input as doc(true, 1699999999, false)
}

test_trial_ending_exactly_now_denied if {
	authz.reason == "trial_expired" with input as doc(true, 1700000000, false)
}

test_trial_on_paid_only_route_denied if {
	not authz.allow with input as doc(true, 1700000100, true)
	authz.reason == "paid_only" with input as doc(true, 1700000100, true)
}

test_ended_trial_on_paid_route_reports_expiry if {
	authz.reason == "trial_expired" with input as doc(true, 1699999999, true)
}

test_trial_end_ignored_when_not_in_trial if {
	authz.allow with input as doc(false, 1, false)
}

test_missing_trial_flag_means_not_trial if {
	authz.allow with input as {"principal": {"user_id": "u1"}, "request": {"paid_only": true}, "time": {"now_ns": now_ns}}
}
