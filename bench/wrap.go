package bench

// ChildWrapper, if set, is a command line that StartChild runs the server
// process under, with the executable appended as its last argument: a
// profiler such as valgrind (see cmd/benchcount).
var ChildWrapper []string

// Pid returns the process id of the server process.
func (c *Child) Pid() int { return c.cmd.Process.Pid }
