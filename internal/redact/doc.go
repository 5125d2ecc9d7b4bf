// Package redact is skiff's one rule for keeping secrets out of errors, log
// lines, probe bodies, metric labels and command lines.
//
// The rule for URLs: everything from "://" to the LAST "@" is the user
// information and becomes "***". The last "@" (not the first) because a
// password may itself hold "@", and a password may hold "/", "#", "?" or
// ":" too, which end the authority for url.Parse: the rule never parses,
// so no password, however written, survives it. A string without "://"
// has everything up to its last "@" masked.
//
// Output that may quote a secret verbatim (a child process's stderr)
// goes through Secrets, which removes each secret, its URL-escaped forms
// and the password of any URL among them.
package redact
