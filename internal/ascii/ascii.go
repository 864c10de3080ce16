// Package ascii compares protocol tokens the way HTTP requires: ASCII
// case-insensitively, and never by Unicode case folding.
package ascii

// EqualFold reports whether a and b are equal under ASCII case folding.
// Unlike strings.EqualFold it never folds non-ASCII look-alikes, such as
// U+212A KELVIN SIGN or U+017F LATIN SMALL LETTER LONG S, onto ASCII
// letters, so "websoc\u212Aet" does not equal "websocket".
func EqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if Lower(a[i]) != Lower(b[i]) {
			return false
		}
	}
	return true
}

// Lower returns the lower-case form of an ASCII letter, and any other byte
// unchanged.
func Lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}
