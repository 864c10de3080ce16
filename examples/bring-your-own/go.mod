module github.com/go-upgrade/upgrade/examples/bring-your-own

go 1.26.0

replace github.com/go-upgrade/upgrade => ../..

require (
	github.com/coder/websocket v1.8.15
	github.com/go-upgrade/upgrade v0.0.0-00010101000000-000000000000
	github.com/gobwas/ws v1.5.0
	github.com/gorilla/websocket v1.5.3
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
