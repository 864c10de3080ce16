module github.com/go-upgrade/upgrade/bench

go 1.26.0

replace github.com/go-upgrade/upgrade => ../

require (
	github.com/coder/websocket v1.8.15
	github.com/go-upgrade/upgrade v0.0.0-00010101000000-000000000000
	github.com/gobwas/ws v1.5.0
	github.com/gorilla/websocket v1.5.3
	github.com/quic-go/quic-go v0.65.0
	golang.org/x/net v0.62.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/quic-go/qpack v0.6.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
