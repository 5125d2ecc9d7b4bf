// Package options binds the injection settings to command-line flags, so
// that skiff-webhook and `skiff inject` take the same flags with the same
// defaults and therefore produce the same mutation. It never parses the
// command line itself: each main hands it the FlagSet it owns.
package options
