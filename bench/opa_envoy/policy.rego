# The OPA-Envoy configuration's policy: what the authz service's authenticate and authorize
# stages and policies/gateway/authz.rego decide, written for the OPA-Envoy input
# (input.attributes...). data.bench (issuer, audience, jwks_json, rbac) is written by the bench.
package envoy.authz

default allow := {"allowed": false, "http_status": 403, "body": "{\"type\":\"forbidden\"}"}

token := t if {
	header := input.attributes.request.http.headers.authorization
	startswith(header, "Bearer ")
	t := substring(header, 7, -1)
}

# signature (RS256 against the JWKS), iss, aud, exp and nbf
claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(token, {
		"cert": data.bench.jwks_json,
		"iss": data.bench.issuer,
		"aud": data.bench.audience,
		"alg": "RS256",
	})
	valid
}

route := input.attributes.contextExtensions

# RBAC: one of the principal's roles grants the route's permission ("*" grants every one)
granted if {
	some role in claims.roles
	some permission in data.bench.rbac[route.gateway_type][role]
	permission in {"*", route.permission}
}

trial_expired if {
	claims.trial_mode
	claims.trial_ends_at * 1000000000 <= time.now_ns()
}

paid_only if {
	claims.trial_mode
	route.paid_only == "true"
}

allow := {"allowed": true, "headers": {
	"x-user-id": claims.sub,
	"x-customer-id": object.get(claims, "customer_id", ""),
	"x-roles": concat(",", claims.roles),
	"x-plan": object.get(claims, "plan", ""),
}} if {
	granted
	not trial_expired
	not paid_only
}
