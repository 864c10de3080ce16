module github.com/go-upgrade/upgrade/examples/wsframing

go 1.26.0

replace github.com/go-upgrade/upgrade => ../..

require (
	github.com/go-upgrade/upgrade v0.0.0-00010101000000-000000000000
	github.com/gobwas/ws v1.5.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
