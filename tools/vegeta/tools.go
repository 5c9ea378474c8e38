//go:build tools

// Package tools pins vegeta, the open-loop constant-rate HTTP load generator used by `make bench`
// for fixed-rate runs (coordinated-omission free: requests are sent on schedule, not on reply).
package tools

import _ "github.com/tsenart/vegeta/v12"
