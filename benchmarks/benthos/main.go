// The Benthos peer of the benchmarks (v4.27.0, MIT): only the components the two
// pipelines use, so the binary builds from the Go module proxy in about a minute.
// `make bench` builds it into deploy/.cache/bin; benchmarks/peers.py runs it.
package main

import (
	"context"

	"github.com/benthosdev/benthos/v4/public/service"

	_ "github.com/benthosdev/benthos/v4/public/components/io"
	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
)

func main() {
	service.RunCLI(context.Background())
}
