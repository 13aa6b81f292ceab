module github.com/procswitch/supervisor

go 1.26.0

require (
	github.com/cloudflare/tableflip v1.2.3
	github.com/rs/zerolog v1.35.1
	github.com/yuin/gopher-lua v1.1.2
	golang.org/x/sys v0.49.0
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
)
