// Package upgrade implements HTTP/1.1 protocol upgrades: the Upgrade header
// field, 101 Switching Protocols and 426 Upgrade Required (RFC 9110 §7.8,
// §15.2.2, §15.5.22).
//
// TODO: overview.
package upgrade
