package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// subcommand is a command of upgrade as its usage and errors present it.
type subcommand struct {
	name     string // "serve"
	synopsis string // one line: "upgrade serve [-addr HOST:PORT] ..."
	help     string // the text of "upgrade serve -h"
}

// flagSet returns an empty flag set for c that prints nothing by itself:
// flag.FlagSet would print every flag on an error, and parseFailed says
// instead what is wrong in one line.
func (c *subcommand) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("upgrade "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFailed reports err, the error of parsing c's command line, and
// returns the exit code: for -h (flag.ErrHelp), c's help on stdout and
// exitOK; otherwise the error and c's synopsis on stderr, one line each,
// and exitUsage.
func (c *subcommand) parseFailed(stdout, stderr io.Writer, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, c.help)
		return exitOK
	}
	fmt.Fprintf(stderr, "upgrade %s: %v\n", c.name, err)
	fmt.Fprintf(stderr, "usage: %s (see upgrade %s -h)\n", c.synopsis, c.name)
	return exitUsage
}

// durationValue is a flag.Value for a duration that must not be negative.
type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return errors.New("want a duration such as 500ms, 10s or 1m30s")
	case v < 0:
		return errors.New("must not be negative")
	}
	*d = durationValue(v)
	return nil
}

// durationVar defines a flag for a duration that must not be negative.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationValue)(p), name, usage)
}
